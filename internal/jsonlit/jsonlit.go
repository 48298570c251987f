// Package jsonlit parses the JSON literals that hand-written decoders of
// hot paths take as they are: integers and plain strings, exactly as
// encoding/json would decode them. Anything they do not take, the caller
// leaves to encoding/json.
package jsonlit

import "unicode/utf8"

// CutInt parses the integer at the start of b: at most 18 digits (so
// never out of range), no leading zero, an optional minus (not "-0"). ok
// is false for anything else, which encoding/json may still take or
// refuse in its own way.
func CutInt(b []byte) (n int64, rest []byte, ok bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	if i == 0 || i > 18 || (b[0] == '0' && (i > 1 || neg)) {
		return 0, nil, false
	}
	if neg {
		n = -n
	}
	return n, b[i:], true
}

// Int parses b, which must be an integer CutInt takes and nothing else.
func Int(b []byte) (int64, bool) {
	n, rest, ok := CutInt(b)
	return n, ok && len(rest) == 0
}

// String parses b, which must be a JSON string without escapes, control
// characters or invalid UTF-8, whose bytes are then the value.
func String(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	s := b[1 : len(b)-1]
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(s) {
		return "", false
	}
	return string(s), true
}

// Package jsonlit parses the JSON literals that hand-written decoders of
// hot paths take as they are: integers and plain strings, exactly as
// encoding/json would decode them. Anything they do not take, the caller
// leaves to encoding/json. AppendString writes strings for hand-written
// encoders, exactly as encoding/json would.
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

// CutInts parses the non-empty list of integers at the start of b: each
// one CutInt takes, space allowed around them.
func CutInts(b []byte) (ids []int64, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '[' {
		return nil, nil, false
	}
	b = b[1:]
	for {
		n, r, ok := CutInt(trimSpace(b))
		if !ok {
			return nil, nil, false
		}
		ids = append(ids, n)
		b = trimSpace(r)
		switch {
		case len(b) > 0 && b[0] == ']':
			return ids, b[1:], true
		case len(b) > 0 && b[0] == ',':
			b = b[1:]
		default:
			return nil, nil, false
		}
	}
}

// IsSpace reports whether c is JSON's white space.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && IsSpace(b[0]) {
		b = b[1:]
	}
	return b
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

// AppendString appends s as a JSON string exactly as encoding/json
// writes it: quotes, backslashes and control characters escaped, invalid
// UTF-8 as U+FFFD, U+2028 and U+2029 escaped, and with escapeHTML (as
// json.Marshal has it) '<', '>' and '&' too (FuzzAppendString).
func AppendString(b []byte, s string, escapeHTML bool) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!escapeHTML || (c != '<' && c != '>' && c != '&')) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + size
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

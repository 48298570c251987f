package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"

	"github.com/zhangban/zhangban/internal/jsonlit"
)

// strictUnmarshal decodes exactly one JSON value with no unknown fields, as
// a json.Decoder with DisallowUnknownFields does (decodeStrict).
//
// Frames come thousands a second, and a Decoder for each (its buffer, its
// extra passes over the bytes) was a fifth of all a busy node allocated
// (docs/benchmarks.md, session 13). So json.Unmarshal decodes, and when
// every key of the object is exactly the name of one of v's fields, that is
// the result. Anything else (an unknown, escaped or differently cased key,
// an error) is decoded again by decodeStrict, whose verdict and error
// stand: the result is always decodeStrict's (FuzzStrictUnmarshal).
// Before all that, the hottest frames try decodeFast.
func strictUnmarshal(buf []byte, v any) error {
	if decodeFast(buf, v) {
		return nil
	}
	if names := fieldNames(reflect.TypeOf(v)); names != nil {
		if json.Unmarshal(buf, v) == nil && keysKnown(buf, names) {
			return nil
		}
		reflect.ValueOf(v).Elem().SetZero()
	}
	return decodeStrict(buf, v)
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(buf []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(buf))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON object")
	}
	return nil
}

var fieldNamesOf sync.Map // reflect.Type → map[string]struct{}, or nil: not flat

// fieldNames returns the JSON names of the fields of *struct type t, or
// nil when t is not a pointer to a flat struct: one whose fields hold no
// struct (json.RawMessage aside), where only the top-level keys need
// checking.
func fieldNames(t reflect.Type) map[string]struct{} {
	if names, ok := fieldNamesOf.Load(t); ok {
		return names.(map[string]struct{})
	}
	var names map[string]struct{}
	if t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		names = map[string]struct{}{}
		for _, f := range reflect.VisibleFields(t.Elem()) {
			if !f.IsExported() {
				continue
			}
			if f.Anonymous || !flat(f.Type) {
				names = nil
				break
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch name {
			case "-":
				continue
			case "":
				name = f.Name
			}
			names[name] = struct{}{}
		}
	}
	fieldNamesOf.Store(t, names)
	return names
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// flat reports whether a field of type t decodes without struct fields.
func flat(t reflect.Type) bool {
	if t == rawMessage {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.String:
		return true
	case reflect.Pointer, reflect.Slice:
		return flat(t.Elem())
	case reflect.Map:
		return t.Key().Kind() == reflect.String && flat(t.Elem())
	}
	return false
}

// keysKnown reports whether buf, one valid JSON value, is null or an
// object whose keys are all plain (unescaped) names in names.
func keysKnown(buf []byte, names map[string]struct{}) bool {
	i := skipSpace(buf, 0)
	if i < len(buf) && buf[i] == 'n' {
		return true // null
	}
	if i >= len(buf) || buf[i] != '{' {
		return false
	}
	i++
	for {
		i = skipSpace(buf, i)
		if i >= len(buf) {
			return false
		}
		switch buf[i] {
		case '}':
			return true
		case ',':
			i = skipSpace(buf, i+1)
		}
		if i >= len(buf) || buf[i] != '"' {
			return false
		}
		j := i + 1
		for j < len(buf) && buf[j] != '"' {
			if buf[j] == '\\' {
				return false
			}
			j++
		}
		if j >= len(buf) {
			return false
		}
		if _, ok := names[string(buf[i+1:j])]; !ok {
			return false
		}
		i = skipSpace(buf, j+1)
		if i >= len(buf) || buf[i] != ':' {
			return false
		}
		i = skipValue(buf, skipSpace(buf, i+1))
	}
}

func skipSpace(buf []byte, i int) int {
	for i < len(buf) && jsonlit.IsSpace(buf[i]) {
		i++
	}
	return i
}

// skipValue returns the index just after the JSON value at buf[i:].
func skipValue(buf []byte, i int) int {
	depth := 0
	for ; i < len(buf); i++ {
		switch buf[i] {
		case '"':
			for i++; i < len(buf) && buf[i] != '"'; i++ {
				if buf[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth <= 0 {
				if depth == 0 {
					return i + 1
				}
				return i // the end of the enclosing object
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

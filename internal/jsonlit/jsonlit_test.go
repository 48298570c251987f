package jsonlit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestInt(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "7": 7, "-12": -12, "999999999999999999": 999999999999999999, "-999999999999999999": -999999999999999999} {
		if n, ok := Int([]byte(s)); !ok || n != want {
			t.Errorf("Int(%s) = %d, %v", s, n, ok)
		}
	}
	for _, s := range []string{"", "-", "-0", "01", "1.5", "1e3", "1 ", " 1", "+1", "1234567890123456789", `"1"`, "null"} {
		if _, ok := Int([]byte(s)); ok {
			t.Errorf("Int(%q) took it; encoding/json should decide", s)
		}
	}
}

func TestString(t *testing.T) {
	for s, want := range map[string]string{`""`: "", `"hi"`: "hi", `"你好"`: "你好", "\"a\x7fb\"": "a\x7fb"} {
		if v, ok := String([]byte(s)); !ok || v != want {
			t.Errorf("String(%s) = %q, %v", s, v, ok)
		}
	}
	for _, s := range []string{``, `"`, `"a`, `a"`, `"a\"b"`, `"a\\"`, `"\u0041"`, "\"a\tb\"", "\"\xff\"", `"a"b"`, `null`} {
		if _, ok := String([]byte(s)); ok {
			t.Errorf("String(%q) took it; encoding/json should decide", s)
		}
	}
}

func TestCutInts(t *testing.T) {
	for s, want := range map[string][]int64{"[1]": {1}, "[1,-2]x": {1, -2}, "[ 3 , 4 ]": {3, 4}} {
		ids, rest, ok := CutInts([]byte(s))
		if !ok || !slices.Equal(ids, want) || string(rest) != strings.TrimPrefix(s, s[:strings.IndexByte(s, ']')+1]) {
			t.Errorf("CutInts(%s) = %v, %q, %v", s, ids, rest, ok)
		}
	}
	for _, s := range []string{"", "1", "11]", "(1]", "[]", "[ ]", "[1", "[1,]", "[,1]", "[1 2]", "[1;2]", "[01]", `["1"]`, "[1.5]"} {
		if _, _, ok := CutInts([]byte(s)); ok {
			t.Errorf("CutInts(%q) took it", s)
		}
	}
}

// FuzzLiterals: what Int and String take, json.Unmarshal decodes to the
// same value.
func FuzzLiterals(f *testing.F) {
	for _, s := range []string{"0", "-12", "01", "-0", "1e3", "[1, -2 ]", "[1,]", `"hi"`, `"你好"`, `"a\"b"`, "\"\xff\"", `"\u0041"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, ok := Int(b); ok {
			var want int64
			if err := json.Unmarshal(b, &want); err != nil || want != n {
				t.Fatalf("Int(%q) = %d; json.Unmarshal: %d, %v", b, n, want, err)
			}
		}
		if ids, rest, ok := CutInts(b); ok && len(rest) == 0 {
			var want []int64
			if err := json.Unmarshal(b, &want); err != nil || !slices.Equal(ids, want) {
				t.Fatalf("CutInts(%q) = %v; json.Unmarshal: %v, %v", b, ids, want, err)
			}
		}
		if s, ok := String(b); ok {
			var want string
			if err := json.Unmarshal(b, &want); err != nil || want != s {
				t.Fatalf("String(%q) = %q; json.Unmarshal: %q, %v", b, s, want, err)
			}
		}
	})
}

// FuzzAppendString: AppendString writes the bytes encoding/json writes
// for any string, with HTML escaping (json.Marshal) and without.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "hi", "下午三点开会", `"q" \ <&>`, "\x00\b\f\n\r\t\x1f\x7f", "a\xffb\xc3", "\u2028\u2029", "😀\U0010ffff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, html := range []bool{true, false} {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetEscapeHTML(html)
			if err := enc.Encode(s); err != nil {
				t.Fatal(err)
			}
			if got := AppendString([]byte("x"), s, html); string(got) != "x"+strings.TrimSuffix(want.String(), "\n") {
				t.Fatalf("%q, escapeHTML %v: got %s, want %s", s, html, got[1:], want.String())
			}
		}
	})
}

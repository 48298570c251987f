package jsonlit

import (
	"encoding/json"
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

// FuzzLiterals: what Int and String take, json.Unmarshal decodes to the
// same value.
func FuzzLiterals(f *testing.F) {
	for _, s := range []string{"0", "-12", "01", "-0", "1e3", `"hi"`, `"你好"`, `"a\"b"`, "\"\xff\"", `"\u0041"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, ok := Int(b); ok {
			var want int64
			if err := json.Unmarshal(b, &want); err != nil || want != n {
				t.Fatalf("Int(%q) = %d; json.Unmarshal: %d, %v", b, n, want, err)
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

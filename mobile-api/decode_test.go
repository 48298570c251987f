package mobileapi

import (
	"testing"

	"github.com/zhangban/zhangban/internal/auth"
)

// FuzzDecodeBody feeds arbitrary bytes to the request decoder: it must never
// panic, and must either decode or name a documented error code.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"login":"a","password":"b"}`, `{"login":1}`, `{"login":"a"`, `[]`, `null`, `{}{}`, `"x"`,
		`{"login":"\ud800","password":"\u0000"}`, `{"display_name":"张三","superuser":"yes"}`, "\xff\xfe{", ` `,
		`{"login":"a","password":"b","device":{"nested":[1,2,{"x":null}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&loginRequest{}, &refreshRequest{}, &auth.NewAccount{}} {
			e := unmarshalStrict(body, v)
			if e == nil {
				continue
			}
			if _, ok := codeStatus[e.Code]; !ok || e.Message == "" {
				t.Fatalf("undocumented error %+v for %q", e, body)
			}
			if e.Code != CodeMalformedJSON && e.Code != CodeInvalidArgument {
				t.Fatalf("unexpected code %s for %q", e.Code, body)
			}
		}
	})
}

package auth

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerifyToken: an access token is outside input. Nothing but a token we
// signed may verify, and nothing may panic.
func FuzzVerifyToken(f *testing.F) {
	ring := NewKeyring([]byte(strings.Repeat("k", 32)))
	now := time.Unix(1_800_000_000, 0)
	good, _ := ring.sign(1, 1, now, time.Minute)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		a, s, _, err := ring.verify(tok, now)
		if err == nil && (tok != good || a != 1 || s != 1) {
			// Re-encodings of the same signed token may verify; anything else must not.
			if !strings.HasPrefix(tok, strings.SplitN(good, ".", 2)[0]) {
				t.Fatalf("foreign token verified: %q", tok)
			}
		}
		if err != nil && err != ErrTokenInvalid && err != ErrTokenExpired {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

package messaging

import (
	"regexp"
	"strings"
	"testing"
)

// The rules validClientID and validKind implement, as the regexps they
// replaced wrote them.
var (
	clientIDRule = regexp.MustCompile(`^[\x21-\x7e]{1,64}$`)
	kindRule     = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,31}$`)
)

func TestValidClientIDAndKind(t *testing.T) {
	for _, s := range []string{"", "a", "lg-1a2b-17", "a b", "a\tb", "\x7f", "é", "~!", strings.Repeat("x", 64), strings.Repeat("x", 65),
		"text", "task.card", "a_1", "1a", "A", "_a", "a-b", strings.Repeat("k", 32), strings.Repeat("k", 33)} {
		if got, want := validClientID(s), clientIDRule.MatchString(s); got != want {
			t.Errorf("validClientID(%q) = %v, want %v", s, got, want)
		}
		if got, want := validKind(s), kindRule.MatchString(s); got != want {
			t.Errorf("validKind(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzValidClientIDAndKind(f *testing.F) {
	for _, s := range []string{"lg-1", "text", "a.b_c", " ", "\x00", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validClientID(s), clientIDRule.MatchString(s); got != want {
			t.Errorf("validClientID(%q) = %v, want %v", s, got, want)
		}
		if got, want := validKind(s), kindRule.MatchString(s); got != want {
			t.Errorf("validKind(%q) = %v, want %v", s, got, want)
		}
	})
}

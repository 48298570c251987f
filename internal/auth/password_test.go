package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPasswordHash(t *testing.T) {
	p := HashParams{Time: 1, MemoryKiB: 1024}
	h := hashPassword("correct horse", p)
	if !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("not a PHC argon2id string: %s", h)
	}
	if h == hashPassword("correct horse", p) {
		t.Fatal("same salt twice")
	}
	ok, stale, err := checkPassword("correct horse", h, p)
	if !ok || stale || err != nil {
		t.Fatalf("check: %v %v %v", ok, stale, err)
	}
	if ok, _, _ := checkPassword("correct hors", h, p); ok {
		t.Fatal("wrong password accepted")
	}
	if _, stale, _ := checkPassword("correct horse", h, HashParams{Time: 2, MemoryKiB: 1024}); !stale {
		t.Fatal("changed parameters not reported as stale")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=1,t=1,p=1$a$b", "$argon2id$v=19$m=x$a$b", "$argon2id$v=19$m=1024,t=0,p=1$AAAA$AAAA", "$argon2id$v=19$m=1024,t=1,p=1$!!$AAAA"} {
		if _, _, err := checkPassword("x", bad, p); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestKeyringRotation(t *testing.T) {
	dir := t.TempDir()
	ring, created, err := LoadOrCreateKeyring(dir)
	if err != nil || !created {
		t.Fatal(created, err)
	}
	info, _ := os.Stat(filepath.Join(dir, KeyFile))
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", info.Mode())
	}
	now := time.Now()
	old, err := ring.sign(7, 9, now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if again, created, _ := LoadOrCreateKeyring(dir); created || again.active.ID != ring.active.ID {
		t.Fatal("key not kept across loads")
	}
	for i := 0; i < 2; i++ {
		if _, err := RotateKeyFile(dir); err != nil {
			t.Fatal(err)
		}
	}
	rotated, _, err := LoadOrCreateKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.active.ID == ring.active.ID {
		t.Fatal("rotation kept the signing key")
	}
	// Tokens signed before the rotation stay valid until they expire.
	if a, s, _, err := rotated.verify(old, now); err != nil || a != 7 || s != 9 {
		t.Fatalf("old token after rotation: %v", err)
	}
	if _, _, _, err := rotated.verify(old, now.Add(2*time.Minute)); err != ErrTokenExpired {
		t.Fatalf("expired old token: %v", err)
	}
	// After enough rotations the oldest key is dropped.
	RotateKeyFile(dir)
	dropped, _, _ := LoadOrCreateKeyring(dir)
	if _, _, _, err := dropped.verify(old, now); err != ErrTokenInvalid {
		t.Fatalf("token of a dropped key: %v", err)
	}
}

func TestTokenTampering(t *testing.T) {
	ring := NewKeyring([]byte(strings.Repeat("a", 32)))
	now := time.Now()
	tok, _ := ring.sign(1, 2, now, time.Minute)
	parts := strings.Split(tok, ".")
	for name, bad := range map[string]string{
		"alg none":      "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + parts[1] + ".",
		"other payload": parts[0] + ".eyJzaWQiOjEsImlzcyI6InpoYW5nYmFuIiwic3ViIjoiMSIsImV4cCI6OTk5OTk5OTk5OX0." + parts[2],
		"truncated":     tok[:len(tok)-3],
		"empty":         "",
	} {
		if _, _, _, err := ring.verify(bad, now); err != ErrTokenInvalid {
			t.Errorf("%s: %v", name, err)
		}
	}
	other := NewKeyring([]byte(strings.Repeat("b", 32)))
	if _, _, _, err := other.verify(tok, now); err != ErrTokenInvalid {
		t.Errorf("other key: %v", err)
	}
}

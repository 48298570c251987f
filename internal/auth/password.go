package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// HashParams are the argon2id costs for new hashes. Stored hashes carry their
// own parameters (PHC string), so changing these only affects new hashes and
// the rehash that follows each successful login.
type HashParams struct {
	Time      uint32 // passes
	MemoryKiB uint32
}

const (
	saltLen = 16
	keyLen  = 32
)

var b64 = base64.RawStdEncoding

// hashPassword returns a PHC string: $argon2id$v=19$m=…,t=…,p=1$salt$key.
func hashPassword(pw string, p HashParams) string {
	salt := make([]byte, saltLen)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, 1, keyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=1$%s$%s", argon2.Version, p.MemoryKiB, p.Time, b64.EncodeToString(salt), b64.EncodeToString(key))
}

var errBadHash = errors.New("unrecognised password hash")

// checkPassword reports whether pw matches the PHC string, and whether the
// hash was made with other parameters than p (so it should be redone).
func checkPassword(pw, phc string, p HashParams) (ok, stale bool, err error) {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false, false, errBadHash
	}
	var m, t uint32
	var par uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &par); err != nil || par == 0 || t == 0 {
		return false, false, errBadHash
	}
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false, false, errBadHash
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, par, uint32(len(want)))
	ok = subtle.ConstantTimeCompare(got, want) == 1
	return ok, m != p.MemoryKiB || t != p.Time || par != 1, nil
}

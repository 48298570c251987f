package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Keyring holds the HMAC keys for access tokens: one signs, all verify. After
// a rotation the previous keys stay in the ring so tokens they signed remain
// valid until they expire.
type Keyring struct {
	active key
	byID   map[string][]byte
}

type key struct {
	ID        string    `json:"id"`
	Secret    []byte    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
}

func newKey(secret []byte) key {
	sum := sha256.Sum256(secret)
	return key{ID: base64.RawURLEncoding.EncodeToString(sum[:6]), Secret: secret, CreatedAt: time.Now().UTC()}
}

// NewKeyring builds a ring from configured keys: current signs, previous only verify.
func NewKeyring(current []byte, previous ...[]byte) *Keyring {
	r := &Keyring{active: newKey(current), byID: map[string][]byte{}}
	r.byID[r.active.ID] = current
	for _, p := range previous {
		k := newKey(p)
		r.byID[k.ID] = p
	}
	return r
}

// KeyFile is where a generated keyring lives inside the data directory.
const KeyFile = "jwt-keys.json"

// keepKeys is how many keys a rotation keeps: the new one and the previous
// two, which covers any access TTL shorter than the time between rotations.
const keepKeys = 3

type keyFile struct {
	Keys []key `json:"keys"` // newest first; the first signs
}

// LoadOrCreateKeyring reads the keyring in dir, generating it (mode 0600) on
// first use. The secret is never logged.
func LoadOrCreateKeyring(dir string) (*Keyring, bool, error) {
	path := filepath.Join(dir, KeyFile)
	kf, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		kf = keyFile{Keys: []key{generateKey()}}
		if err := writeKeyFile(path, kf); err != nil {
			return nil, false, err
		}
		return ringOf(kf), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return ringOf(kf), false, nil
}

// LoadKeyring reads the keyring in dir and, unlike LoadOrCreateKeyring,
// never makes one: a tool that signs tokens for a server must use the
// server's key, and a new one would only sign tokens the server rejects.
func LoadKeyring(dir string) (*Keyring, error) {
	kf, err := readKeyFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	return ringOf(kf), nil
}

// RotateKeyFile puts a new signing key at the front of the keyring in dir and
// keeps the previous ones for verification. Running servers pick it up when
// they restart.
func RotateKeyFile(dir string) (newID string, err error) {
	path := filepath.Join(dir, KeyFile)
	kf, err := readKeyFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	k := generateKey()
	kf.Keys = append([]key{k}, kf.Keys...)
	if len(kf.Keys) > keepKeys {
		kf.Keys = kf.Keys[:keepKeys]
	}
	return k.ID, writeKeyFile(path, kf)
}

func generateKey() key {
	secret := make([]byte, 32)
	rand.Read(secret)
	return newKey(secret)
}

func ringOf(kf keyFile) *Keyring {
	r := &Keyring{active: kf.Keys[0], byID: map[string][]byte{}}
	for _, k := range kf.Keys {
		r.byID[k.ID] = k.Secret
	}
	return r
}

func readKeyFile(path string) (keyFile, error) {
	var kf keyFile
	b, err := os.ReadFile(path)
	if err != nil {
		return kf, err
	}
	if err := json.Unmarshal(b, &kf); err != nil || len(kf.Keys) == 0 {
		return kf, fmt.Errorf("%s is damaged (%v): restore it, or delete it to generate a new key (all signed-in users must then sign in again)", path, err)
	}
	for _, k := range kf.Keys {
		if len(k.Secret) < 32 {
			return kf, fmt.Errorf("%s: key %s is shorter than 32 bytes", path, k.ID)
		}
	}
	return kf, nil
}

func writeKeyFile(path string, kf keyFile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(kf, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/org"
)

// readSeeded reads the JSON lines of an accounts seed --out file.
func readSeeded(t *testing.T, file string) []seededAccount {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600: it holds tokens", file, st.Mode().Perm())
	}
	var out []seededAccount
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a seededAccount
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("%s: %v in %q", file, err, sc.Text())
		}
		out = append(out, a)
	}
	return out
}

// TestAccountsSeed seeds twice through the binary: the same accounts, new
// sessions; the tokens are accepted and the accounts are unit members.
func TestAccountsSeed(t *testing.T) {
	t.Parallel()
	url := testenv.URL(t)
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 32)))
	env := []string{"DATABASE_URL=" + url, "ZHANGBAN_JWT_KEY=" + key, "ZHANGBAN_ACCESS_TTL=2h", "ZHANGBAN_LOG_LEVEL=warn"}
	run := func(want int, args ...string) string {
		t.Helper()
		p := start(t, env, args...)
		if code := p.wait(30 * time.Second); code != want {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, want, p.output())
		}
		return p.output()
	}
	var unit, gone org.Unit
	json.Unmarshal([]byte(run(0, "org", "unit", "create", "--name", "压测省")), &unit)
	json.Unmarshal([]byte(run(0, "org", "unit", "create", "--name", "撤销省")), &gone)
	run(0, "org", "unit", "dissolve", itoa(gone.ID))
	out := filepath.Join(t.TempDir(), "accounts.jsonl")
	seed := func(want int, extra ...string) string {
		t.Helper()
		args := []string{"accounts", "seed", "--prefix", "lg-", "--count", "300", "--unit", itoa(unit.ID), "--password", "lg-password", "--device", "lg", "--out", out}
		return run(want, append(args, extra...)...)
	}
	text := seed(0)
	if !strings.Contains(text, "seeded lg-1 … lg-300 (300 created)") || !strings.Contains(text, "positions created") {
		t.Errorf("output:\n%s", text)
	}
	first := readSeeded(t, out)
	seed(0)
	second := readSeeded(t, out)
	if len(first) != 300 || len(second) != 300 {
		t.Fatalf("%d and %d lines, want 300", len(first), len(second))
	}

	ctx := t.Context()
	pool, err := db.Open(ctx, url, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	authSvc := auth.New(pool, auth.NewKeyring([]byte(strings.Repeat("s", 32))), auth.Settings{AccessTTL: 2 * time.Hour, RefreshTTL: 720 * time.Hour, Hash: auth.HashParams{Time: 1, MemoryKiB: 1024}}, log)
	var ids []int64
	for i, a := range second {
		if a.Login != "lg-"+itoa(int64(i+1)) || a.ID != first[i].ID || a.Unit != unit.ID {
			t.Fatalf("line %d: %+v, first run %+v", i+1, a, first[i])
		}
		p, err := authSvc.Authenticate(ctx, a.Token)
		if err != nil || p.AccountID != a.ID || time.Until(p.ExpiresAt) < 110*time.Minute {
			t.Fatalf("%s's token: %+v %v", a.Login, p, err)
		}
		ids = append(ids, a.ID)
	}
	if _, err := authSvc.Authenticate(ctx, first[0].Token); !errors.Is(err, auth.ErrSessionRevoked) {
		t.Errorf("the first seed's token after the second: %v, want revoked", err)
	}
	if _, err := authSvc.Login(ctx, auth.LoginRequest{Login: "lg-300", Password: "lg-password", Device: "x"}); err != nil {
		t.Errorf("lg-300 signs in with the password: %v", err)
	}
	var accounts, positions int
	pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts WHERE login LIKE 'lg-%'), (SELECT count(*) FROM org_positions WHERE NOT deleted)`).Scan(&accounts, &positions)
	if accounts != 300 || positions != 300 {
		t.Errorf("%d accounts and %d positions after two seeds, want 300 each", accounts, positions)
	}
	tree, err := org.LoadTree(ctx, pool, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	az, err := authz.New(ctx, pool, nil, tree, log)
	if err != nil {
		t.Fatal(err)
	}
	defer az.Close()
	seen, err := org.NewService(pool, az, tree, log).VisiblePeople(ctx, authz.Actor{AccountID: ids[0]}, ids)
	if err != nil || len(seen) != 300 {
		t.Errorf("lg-1 sees %d of the 300 as unit members: %v", len(seen), err)
	}

	// Bad input: a message saying what to do, no file, nothing written.
	os.Remove(out)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--unit", "999999"}, "give the id of an active unit"},
		{[]string{"--unit", itoa(gone.ID)}, "is dissolved: give an active unit"},
		{[]string{"--count", "0"}, "--count 0: want 1 to 1000000"},
		{[]string{"--count", "5000000"}, "want 1 to 1000000"},
		{[]string{"--prefix", ""}, "give --prefix"},
		{[]string{"--prefix", "LG-"}, "makes a bad login"},
		{[]string{"--password", "short"}, "give --password"},
		{[]string{"--out", "/nonexistent/dir/x.jsonl"}, "--out"},
	} {
		args := []string{"accounts", "seed", "--prefix", "new-", "--count", "10", "--unit", itoa(unit.ID), "--password", "lg-password", "--out", out}
		text := run(1, append(args, c.args...)...)
		if !strings.Contains(text, c.want) {
			t.Errorf("%v: output lacks %q:\n%s", c.args, c.want, text)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused seed wrote %s: %v", out, err)
	}
	pool.QueryRow(ctx, `SELECT count(*) FROM accounts`).Scan(&accounts)
	if accounts != 300 {
		t.Errorf("%d accounts after refused seeds, want 300", accounts)
	}
	// Without the server's key there is nothing to sign with.
	noKey := start(t, []string{"DATABASE_URL=" + url, "ZHANGBAN_DATA_DIR=" + t.TempDir()},
		"accounts", "seed", "--prefix", "new-", "--count", "10", "--unit", itoa(unit.ID), "--password", "lg-password", "--out", out)
	if code := noKey.wait(30 * time.Second); code != 1 || !strings.Contains(noKey.output(), "no signing key") {
		t.Errorf("without a key: exit %d\n%s", code, noKey.output())
	}
}

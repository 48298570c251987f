package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/testenv"
)

func newTestService(t *testing.T) (*Service, *pgxpool.Pool) {
	t.Helper()
	pool := testenv.DB(t)
	s := New(pool, NewKeyring([]byte(strings.Repeat("k", 32))), Settings{
		AccessTTL: time.Hour, RefreshTTL: 24 * time.Hour, Hash: HashParams{Time: 1, MemoryKiB: 1024},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return s, pool
}

func bulkLogins(prefix string, n int) []BulkAccount {
	out := make([]BulkAccount, n)
	for i := range out {
		l := fmt.Sprintf("%s%d", prefix, i+1)
		out[i] = BulkAccount{Login: l, DisplayName: l}
	}
	return out
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestBulkAccounts makes accounts and sessions twice: the second time
// reuses every account and replaces every session.
func TestBulkAccounts(t *testing.T) {
	t.Parallel()
	s, pool := newTestService(t)
	ctx := t.Context()
	pre, err := s.CreateAccount(ctx, NewAccount{Login: "bulk-3", DisplayName: "Made before", Password: "another-password"})
	if err != nil {
		t.Fatal(err)
	}
	const n, pw = 50, "bulk-password"
	res, err := s.EnsureAccounts(ctx, pool, bulkLogins("bulk-", n), pw)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != n-1 || res.NewPassword != 1 || len(res.IDs) != n || res.IDs[2] != pre.ID {
		t.Fatalf("first: %+v (bulk-3 is %d)", res, pre.ID)
	}
	if h := count(t, pool, `SELECT count(DISTINCT password_hash) FROM accounts WHERE login LIKE 'bulk-%'`); h != 1 {
		t.Errorf("%d password hashes, want one shared", h)
	}
	if a, _ := s.Account(ctx, pre.ID); a.DisplayName != "Made before" {
		t.Errorf("an existing account's name changed: %+v", a)
	}
	for _, login := range []string{"bulk-3", "bulk-50"} {
		if _, err := s.Login(ctx, LoginRequest{Login: login, Password: pw, Device: "phone"}); err != nil {
			t.Errorf("%s signs in: %v", login, err)
		}
	}

	first, err := s.SignInAll(ctx, pool, res.IDs, "seed", "test")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range first {
		got, err := s.Authenticate(ctx, p.AccessToken)
		if err != nil || got.AccountID != res.IDs[i] {
			t.Fatalf("token %d: %+v %v", i, got, err)
		}
	}
	// The refresh token is a real one of the session.
	if _, err := s.Refresh(ctx, first[7].RefreshToken, "seed"); err != nil {
		t.Errorf("refresh: %v", err)
	}

	again, err := s.EnsureAccounts(ctx, pool, bulkLogins("bulk-", n), pw)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created != 0 || again.NewPassword != 0 || fmt.Sprint(again.IDs) != fmt.Sprint(res.IDs) {
		t.Fatalf("second: %+v, want the same ids and nothing written", again)
	}
	second, err := s.SignInAll(ctx, pool, res.IDs, "seed", "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, first[0].AccessToken); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("a token of the replaced session: %v, want revoked", err)
	}
	if _, err := s.Authenticate(ctx, second[0].AccessToken); err != nil {
		t.Errorf("a new token: %v", err)
	}
	if got := count(t, pool, `SELECT count(*) FROM auth_sessions WHERE device = 'seed' AND revoked_at IS NULL`); got != n {
		t.Errorf("%d open seed sessions, want one per account (%d)", got, n)
	}
	if got := count(t, pool, `SELECT count(*) FROM auth_sessions WHERE device = 'phone' AND revoked_at IS NULL`); got != 2 {
		t.Errorf("the sessions of other devices: %d open, want 2", got)
	}
	if got := count(t, pool, `SELECT count(*) FROM accounts`); got != n {
		t.Errorf("%d accounts, want %d", got, n)
	}
}

// TestBulkAccountsRefused: bad input writes nothing.
func TestBulkAccountsRefused(t *testing.T) {
	t.Parallel()
	s, pool := newTestService(t)
	ctx := t.Context()
	if _, err := s.EnsureAccounts(ctx, pool, bulkLogins("ok-", 5), "password"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE accounts SET disabled_at = now() WHERE login = 'ok-4'`); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		accounts []BulkAccount
		pw       string
		want     error
	}{
		"disabled":   {bulkLogins("ok-", 10), "password", ErrAccountDisabled},
		"upper case": {bulkLogins("Bad-", 3), "password", ErrInvalidAccount},
		"mobile":     {[]BulkAccount{{Login: "13800001111", DisplayName: "x"}}, "password", ErrInvalidAccount},
		"twice":      {append(bulkLogins("new-", 3), BulkAccount{Login: "new-2", DisplayName: "x"}), "password", ErrInvalidAccount},
		"no name":    {[]BulkAccount{{Login: "new-1", DisplayName: " "}}, "password", ErrInvalidAccount},
		"short pw":   {bulkLogins("new-", 3), "short", ErrInvalidAccount},
	} {
		if _, err := s.EnsureAccounts(ctx, pool, c.accounts, c.pw); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if got := count(t, pool, `SELECT count(*) FROM accounts`); got != 5 {
		t.Errorf("%d accounts after refusals, want 5", got)
	}
	if _, err := s.SignInAll(ctx, pool, []int64{1, 2, 99999}, "seed", "test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("an unknown account: %v", err)
	}
	if _, err := s.SignInAll(ctx, pool, []int64{1, 1}, "seed", "test"); err == nil {
		t.Error("an account given twice was accepted")
	}
	if got := count(t, pool, `SELECT count(*) FROM auth_sessions`); got != 0 {
		t.Errorf("%d sessions after refusals", got)
	}
}

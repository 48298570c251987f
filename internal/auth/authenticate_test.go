package auth

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

// TestAuthenticateConcurrently checks many tokens at once, as a reconnect
// storm does: the session checks share queries, and each token still gets
// its own answer (valid, revoked session, disabled account, forged
// session id).
func TestAuthenticateConcurrently(t *testing.T) {
	t.Parallel()
	s, pool := newTestService(t)
	ctx := t.Context()
	res, err := s.EnsureAccounts(ctx, pool, bulkLogins("conc-", 60), "conc-password")
	if err != nil {
		t.Fatal(err)
	}
	pairs, err := s.SignInAll(ctx, pool, res.IDs, "phone", "test")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]error, len(pairs))
	for i := range pairs {
		switch i % 4 {
		case 1:
			p, err := s.Authenticate(ctx, pairs[i].AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.RevokeSession(ctx, res.IDs[i], p.SessionID, "test"); err != nil {
				t.Fatal(err)
			}
			want[i] = ErrSessionRevoked
		case 2:
			if _, err := pool.Exec(ctx, `UPDATE accounts SET disabled_at = now() WHERE id = $1`, res.IDs[i]); err != nil {
				t.Fatal(err)
			}
			want[i] = ErrAccountDisabled
		}
	}
	// A token signed with the right key for another account's session.
	p0, err := s.Authenticate(ctx, pairs[0].AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := s.keys.sign(res.IDs[3], p0.SessionID, s.now(), s.set.AccessTTL)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for round := range 5 {
		for i := range pairs {
			wg.Go(func() {
				p, err := s.Authenticate(ctx, pairs[i].AccessToken)
				if !errors.Is(err, want[i]) || err == nil && p.AccountID != res.IDs[i] {
					t.Errorf("round %d, token %d: %+v %v, want %v", round, i, p, err, want[i])
				}
			})
		}
		wg.Go(func() {
			if _, err := s.Authenticate(ctx, forged); !errors.Is(err, ErrTokenInvalid) {
				t.Errorf("a token naming another account's session: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestEndedSince: the sessions revoked and the accounts disabled after a
// cursor, whichever way it happened, and nothing before it.
func TestEndedSince(t *testing.T) {
	t.Parallel()
	s, pool := newTestService(t)
	ctx := t.Context()
	res, err := s.EnsureAccounts(ctx, pool, bulkLogins("ended-", 4), "ended-password")
	if err != nil {
		t.Fatal(err)
	}
	pairs, err := s.SignInAll(ctx, pool, res.IDs, "phone", "test")
	if err != nil {
		t.Fatal(err)
	}
	sid := make([]int64, len(pairs))
	for i, p := range pairs {
		pr, err := s.Authenticate(ctx, p.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		sid[i] = pr.SessionID
	}
	if err := s.RevokeSession(ctx, res.IDs[0], sid[0], "before the cursor"); err != nil {
		t.Fatal(err)
	}
	cursor, err := s.EndedCursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeSession(ctx, res.IDs[1], sid[1], "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE accounts SET disabled_at = now() WHERE id = $1`, res.IDs[2]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'by hand' WHERE id = $1`, sid[3]); err != nil {
		t.Fatal(err)
	}
	sessions, accounts, next, err := s.EndedSince(ctx, cursor)
	if err != nil {
		t.Fatal(err)
	}
	// The cursor is a snapshot's xmin: everything after it is there, and
	// what committed just before may be too (other tests' transactions
	// hold xmin back), but never a session that did not end.
	if !slices.Contains(sessions, sid[1]) || !slices.Contains(sessions, sid[3]) || slices.Contains(sessions, sid[2]) {
		t.Errorf("ended sessions %v, want %d and %d, not %d", sessions, sid[1], sid[3], sid[2])
	}
	if !slices.Contains(accounts, res.IDs[2]) || slices.Contains(accounts, res.IDs[1]) {
		t.Errorf("disabled accounts %v, want %d, not %d", accounts, res.IDs[2], res.IDs[1])
	}
	if next < cursor {
		t.Errorf("next cursor %d is before %d", next, cursor)
	}
}

package auth

import (
	"errors"
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

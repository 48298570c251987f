package auth

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/db"
)

// Throttling policy. Per login name: five failures are free, then each
// further attempt must wait twice as long as the last, up to 15 minutes.
// Per client address: 30 failures in 15 minutes block that address for the
// rest of the window, which stops spraying one password over many names.
const (
	throttleWindow      = 15 * time.Minute
	loginFreeFailures   = 5
	loginBaseDelay      = 30 * time.Second
	loginMaxDelay       = 15 * time.Minute
	addrFailuresAllowed = 30
)

func throttleKeys(login, addr string) [2]string {
	return [2]string{"login:" + login, "addr:" + addr}
}

// checkThrottle refuses an attempt while either key is blocked.
func (s *Service) checkThrottle(ctx context.Context, keys [2]string) error {
	var until *time.Time
	err := s.pool.QueryRow(ctx, `SELECT max(blocked_until) FROM auth_throttle WHERE key = ANY($1) AND blocked_until > now()`, keys[:]).Scan(&until)
	if err != nil {
		return err
	}
	if until != nil {
		return &ThrottledError{RetryAfter: max(time.Until(*until), time.Second)}
	}
	return nil
}

// failed counts a failed attempt against both keys and returns the error
// for the caller. It is the same for existing and unknown accounts.
func (s *Service) failed(ctx context.Context, keys [2]string) error {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		for i, key := range keys {
			var failures int
			var first time.Time
			err := tx.QueryRow(ctx, `
				INSERT INTO auth_throttle AS t (key, failures, first_failure_at) VALUES ($1, 1, now())
				ON CONFLICT (key) DO UPDATE SET
					failures = CASE WHEN t.first_failure_at < now() - $2::interval AND coalesce(t.blocked_until, '-infinity') < now()
						THEN 1 ELSE t.failures + 1 END,
					first_failure_at = CASE WHEN t.first_failure_at < now() - $2::interval AND coalesce(t.blocked_until, '-infinity') < now()
						THEN now() ELSE t.first_failure_at END
				RETURNING failures, first_failure_at`, key, throttleWindow).Scan(&failures, &first)
			if err != nil {
				return err
			}
			var until time.Time
			switch {
			case i == 0 && failures >= loginFreeFailures:
				until = s.now().Add(min(loginBaseDelay<<min(failures-loginFreeFailures, 10), loginMaxDelay))
			case i == 1 && failures >= addrFailuresAllowed:
				until = first.Add(throttleWindow)
			default:
				continue
			}
			if _, err := tx.Exec(ctx, `UPDATE auth_throttle SET blocked_until = $2 WHERE key = $1`, key, until); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ErrInvalidCredentials
}

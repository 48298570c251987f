package auth

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/db"
)

// Throttling policy. Per login name: five failures are free, then each
// further attempt must wait twice as long as the last, up to 15 minutes.
// Per client address: 30 failures in 15 minutes block that address for the
// rest of the window, which stops spraying one password over many names.
//
// An attempt on a login name is counted as a failure before the password is
// checked and forgiven if it was right. The row lock orders concurrent
// attempts, so forty simultaneous guesses still get only five checks. The
// address counter is kept after the fact (a burst of correct sign-ins from
// one office must not block it); it can overshoot by the attempts in flight
// at once, which the per-name limit and the hashing limiter bound.
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

// windowExpired is the SQL test that a counter row's window has passed and
// it is not blocked, so it starts again at one.
const windowExpired = `t.first_failure_at < now() - $2::interval AND coalesce(t.blocked_until, '-infinity') < now()`

// reserve refuses an attempt while either key is blocked, and otherwise
// counts it against the login name in advance.
func (s *Service) reserve(ctx context.Context, keys [2]string) error {
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var failures int
		err := tx.QueryRow(ctx, `
			INSERT INTO auth_throttle AS t (key, failures, first_failure_at) VALUES ($1, 1, now())
			ON CONFLICT (key) DO UPDATE SET
				failures = CASE WHEN `+windowExpired+` THEN 1 ELSE t.failures + 1 END,
				first_failure_at = CASE WHEN `+windowExpired+` THEN now() ELSE t.first_failure_at END
			WHERE coalesce(t.blocked_until, '-infinity') <= now()
			RETURNING failures`, keys[0], throttleWindow).Scan(&failures)
		if errors.Is(err, pgx.ErrNoRows) { // blocked: the update's condition failed
			return s.blocked(ctx, tx, keys)
		}
		if err != nil {
			return err
		}
		if failures >= loginFreeFailures {
			// This attempt may go on; the ones after it wait.
			delay := min(loginBaseDelay<<min(failures-loginFreeFailures, 10), loginMaxDelay)
			if _, err := tx.Exec(ctx, `UPDATE auth_throttle SET blocked_until = now() + $2::interval WHERE key = $1`, keys[0], delay); err != nil {
				return err
			}
		}
		var until *time.Time
		if err := tx.QueryRow(ctx, `SELECT blocked_until FROM auth_throttle WHERE key = $1 AND blocked_until > now()`, keys[1]).Scan(&until); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if until != nil {
			return s.blocked(ctx, tx, keys)
		}
		return nil
	})
}

// blocked builds the error for a refused attempt (rolling back the
// reservation with the transaction).
func (s *Service) blocked(ctx context.Context, tx pgx.Tx, keys [2]string) error {
	var until *time.Time
	if err := tx.QueryRow(ctx, `SELECT max(blocked_until) FROM auth_throttle WHERE key = ANY($1)`, keys[:]).Scan(&until); err != nil {
		return err
	}
	wait := time.Second
	if until != nil {
		wait = max(time.Until(*until), time.Second)
	}
	return &ThrottledError{RetryAfter: wait}
}

// succeeded forgives the reserved attempt: the login name starts afresh.
func succeeded(ctx context.Context, tx pgx.Tx, keys [2]string) error {
	_, err := tx.Exec(ctx, `DELETE FROM auth_throttle WHERE key = $1`, keys[0])
	return err
}

// failed counts a failed attempt against the address (the login name was
// charged by reserve) and returns the error for the caller. It is the same
// for existing and unknown accounts.
func (s *Service) failed(ctx context.Context, keys [2]string) error {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var failures int
		var first time.Time
		err := tx.QueryRow(ctx, `
			INSERT INTO auth_throttle AS t (key, failures, first_failure_at) VALUES ($1, 1, now())
			ON CONFLICT (key) DO UPDATE SET
				failures = CASE WHEN `+windowExpired+` THEN 1 ELSE t.failures + 1 END,
				first_failure_at = CASE WHEN `+windowExpired+` THEN now() ELSE t.first_failure_at END
			RETURNING failures, first_failure_at`, keys[1], throttleWindow).Scan(&failures, &first)
		if err != nil || failures < addrFailuresAllowed {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE auth_throttle SET blocked_until = $2 WHERE key = $1`, keys[1], first.Add(throttleWindow))
		return err
	})
	if err != nil {
		return err
	}
	return ErrInvalidCredentials
}

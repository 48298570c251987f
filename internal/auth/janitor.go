package auth

import (
	"context"
	"time"
)

// sessionRetention is how long ended sessions stay listed for administrators.
const sessionRetention = 7 * 24 * time.Hour

// Sweep deletes what no longer matters: sessions ended more than a week ago
// (with their tokens), rotated refresh tokens older than a session can live
// (their reuse could no longer be told from an expired token), and throttle
// counters whose window has passed. It returns the rows deleted.
func (s *Service) Sweep(ctx context.Context) (int64, error) {
	var total int64
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM auth_sessions WHERE coalesce(revoked_at, expires_at) < now() - $1::interval`, []any{sessionRetention}},
		{`DELETE FROM auth_refresh_tokens WHERE rotated_at < now() - $1::interval`, []any{s.set.RefreshTTL}},
		{`DELETE FROM auth_throttle WHERE first_failure_at < now() - $1::interval AND coalesce(blocked_until, '-infinity') < now()`, []any{throttleWindow}},
	} {
		tag, err := s.pool.Exec(ctx, q.sql, q.args...)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
	}
	return total, nil
}

// RunJanitor sweeps every interval until ctx ends.
func (s *Service) RunJanitor(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "auth sweep failed", "err", err)
			} else if n > 0 {
				s.log.InfoContext(ctx, "auth sweep", "deleted", n)
			}
		}
	}
}

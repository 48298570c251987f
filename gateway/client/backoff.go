package client

import (
	"math/rand/v2"
	"time"
)

// Back-off defaults (Config.MinBackoff, Config.MaxBackoff).
const (
	defaultMinBackoff = 250 * time.Millisecond
	defaultMaxBackoff = 30 * time.Second
)

// backoff is the wait before reconnect attempt n (0 for the first after a
// connection that synced): uniformly random between half and all of
// min(hi, lo·2^n), so that clients dropped together do not come back
// together ("equal jitter").
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(d-half+1)
}

// jitterUp adds up to a tenth to d: the server jitters the delay of a
// reconnect event already; this only keeps clients of one process apart.
func jitterUp(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(d/10+1)
}

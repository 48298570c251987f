package db

import (
	"context"
	"sync"
	"time"
)

// Coalescer answers lookups by key with one query for many keys: a lookup
// that arrives while Rounds queries are already running waits, and the next
// query takes every key waiting by then (up to MaxKeys). An idle system pays
// one query per lookup, as before; under load (a reconnect storm: thousands
// of session checks at once) a few queries answer hundreds of lookups, so
// the lookups stop queueing for pool connections one round trip at a time.
type Coalescer[K comparable, V any] struct {
	// Load reads the values of keys; a key it leaves out of the map has
	// no value. Its context is the coalescer's own (bounded by Timeout),
	// since the lookups it answers belong to many callers.
	Load    func(ctx context.Context, keys []K) (map[K]V, error)
	MaxKeys int           // keys per query (default 500)
	Rounds  int           // queries running at once (default 4)
	Timeout time.Duration // per query (default 10 s)

	mu      sync.Mutex
	queue   []*lookup[K, V]
	running int
}

type lookup[K comparable, V any] struct {
	key  K
	done chan struct{}
	val  V
	ok   bool
	err  error
}

// Get returns the value of key and whether it has one. When fewer than
// Rounds queries run, the caller runs the next one itself (no goroutine
// and no hand-off on an idle system), and leaves what queued meanwhile to a
// new goroutine. A caller returns early, with ctx's error, when ctx ends
// while it waits for another's query; one running a query waits for it
// (Timeout bounds it).
func (c *Coalescer[K, V]) Get(ctx context.Context, key K) (V, bool, error) {
	var zero V
	if err := ctx.Err(); err != nil {
		return zero, false, err
	}
	l := &lookup[K, V]{key: key, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, l)
	rounds := c.Rounds
	if rounds <= 0 {
		rounds = 4
	}
	lead := c.running < rounds
	if lead {
		c.running++
	}
	c.mu.Unlock()
	if lead && c.round() { // more queued meanwhile: a goroutine takes it on
		go c.run()
	}
	// The lookup may have been answered by this caller's query, or taken
	// by a query already running elsewhere, or (past MaxKeys) be left for
	// a later one: wait for it in every case.
	select {
	case <-l.done:
		return l.val, l.ok, l.err
	case <-ctx.Done():
		return zero, false, ctx.Err()
	}
}

// run queries for what is queued until nothing is.
func (c *Coalescer[K, V]) run() {
	for c.round() {
	}
}

// round runs one query for what is queued, up to MaxKeys keys, and reports
// whether more is queued; when not, it has given up its place in Rounds.
func (c *Coalescer[K, V]) round() bool {
	limit := c.MaxKeys
	if limit <= 0 {
		limit = 500
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c.mu.Lock()
	var batch []*lookup[K, V]
	keys := make([]K, 0, min(len(c.queue), limit))
	seen := make(map[K]bool, cap(keys))
	rest := c.queue[:0:0]
	for _, l := range c.queue {
		if !seen[l.key] && len(keys) == limit {
			rest = append(rest, l)
			continue
		}
		if !seen[l.key] {
			seen[l.key] = true
			keys = append(keys, l.key)
		}
		batch = append(batch, l)
	}
	c.queue = rest
	c.mu.Unlock()

	if len(keys) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		vals, err := c.Load(ctx, keys)
		cancel()
		for _, l := range batch {
			l.val, l.ok = vals[l.key]
			l.err = err
			close(l.done)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.running--
		return false
	}
	return true
}

package org

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/authz"
)

// treeSubject carries "the tree changed" between nodes; the payload is
// ignored: receivers reload what changed since their last version.
const treeSubject = "zhangban.org.tree.changed"

// Tree is the in-memory copy of every unit's chain of ancestors, the source
// the authorizer walks on every decision. Units are indexed densely by id.
type Tree struct {
	pool *pgxpool.Pool
	conn *nats.Conn
	log  *slog.Logger

	mu sync.RWMutex // guards anc and version
	// anc[id] is the unit's ancestors, itself first, up to the root. A
	// slice is never modified after it is stored: a change stores a new
	// one, so readers may keep what they got without the lock.
	anc     [][]int64
	version int64 // highest org_units.version loaded

	reload  chan struct{} // buffered(1): a change is pending
	sub     *nats.Subscription
	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

// LoadTree reads the tree and keeps it current: after a change on any node
// (NATS) and every interval as a safety net.
func LoadTree(ctx context.Context, pool *pgxpool.Pool, conn *nats.Conn, log *slog.Logger) (*Tree, error) {
	t := &Tree{pool: pool, conn: conn, log: log, reload: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := t.refresh(ctx); err != nil {
		return nil, err
	}
	if conn != nil {
		sub, err := conn.Subscribe(treeSubject, func(*nats.Msg) { t.poke() })
		if err != nil {
			return nil, err
		}
		t.sub = sub
	}
	go t.loop()
	return t, nil
}

func (t *Tree) poke() {
	select {
	case t.reload <- struct{}{}:
	default:
	}
}

// loop refreshes on notification and every 10 s.
func (t *Tree) loop() {
	defer close(t.done)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-t.reload:
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := t.refresh(ctx); err != nil {
			t.log.Warn("refreshing the org tree", "err", err)
		}
		cancel()
	}
}

// Changed refreshes this node now and tells the others; call after commit.
func (t *Tree) Changed(ctx context.Context) error {
	if err := t.refresh(ctx); err != nil {
		return err
	}
	if t.conn != nil {
		return t.conn.Publish(treeSubject, nil)
	}
	return nil
}

// refresh loads units changed since the last load and rebuilds the
// ancestor chains that depend on them.
func (t *Tree) refresh(ctx context.Context) error {
	t.mu.RLock()
	since := t.version
	t.mu.RUnlock()
	rows, err := t.pool.Query(ctx, `SELECT id, path::text, version FROM org_units WHERE version > $1`, since)
	if err != nil {
		return err
	}
	type entry struct {
		id  int64
		anc []int64
	}
	var changed []entry
	max := since
	for rows.Next() {
		var id, v int64
		var path string
		if err := rows.Scan(&id, &path, &v); err != nil {
			return err
		}
		anc, err := pathIDs(path)
		if err != nil {
			return fmt.Errorf("unit %d: %w", id, err)
		}
		// The path runs root first; ancestors run self first.
		for i, j := 0, len(anc)-1; i < j; i, j = i+1, j-1 {
			anc[i], anc[j] = anc[j], anc[i]
		}
		changed = append(changed, entry{id, anc})
		if v > max {
			max = v
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(changed) == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range changed {
		if int(e.id) >= len(t.anc) {
			grown := make([][]int64, max64(int64(len(t.anc))*2, e.id+1024))
			copy(grown, t.anc)
			t.anc = grown
		}
		t.anc[e.id] = e.anc
	}
	if max > t.version {
		t.version = max
	}
	return nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Ancestors returns the unit itself and its ancestors up to the root. The
// slice is shared: do not modify it.
func (t *Tree) Ancestors(unitID int64) ([]int64, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if unitID <= 0 || unitID >= int64(len(t.anc)) || t.anc[unitID] == nil {
		return nil, authz.ErrUnknownUnit
	}
	return t.anc[unitID], nil
}

// Contains reports whether unit is ancestor itself or lies below it.
func (t *Tree) Contains(ancestor, unit int64) bool {
	anc, err := t.Ancestors(unit)
	if err != nil {
		return false
	}
	for _, a := range anc {
		if a == ancestor {
			return true
		}
	}
	return false
}

// Close stops the refresh loop. Idempotent.
func (t *Tree) Close() {
	t.closeMu.Do(func() {
		if t.sub != nil {
			t.sub.Unsubscribe()
		}
		close(t.stop)
		<-t.done
	})
}

// pathIDs parses an ltree of ids ("1.12.345").
func pathIDs(path string) ([]int64, error) {
	var ids []int64
	var n int64
	digits := 0
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == '.' {
			if digits == 0 {
				return nil, fmt.Errorf("bad path %q", path)
			}
			ids = append(ids, n)
			n, digits = 0, 0
			continue
		}
		c := path[i]
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("bad path %q", path)
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return ids, nil
}

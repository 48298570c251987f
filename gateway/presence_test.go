package gateway

import (
	"context"
	"testing"
	"time"
)

// TestPresenceState checks the state query row by row: online on any live
// node (once, however many), offline on a node that stopped heart-beating,
// last seen only while offline.
func TestPresenceState(t *testing.T) {
	// No sweeps or node expiry during the test: the stale node stays.
	e := newEnvWith(t, 5, time.Hour, time.Second, func(d *Deps) { d.Tick = time.Hour })
	ctx := context.Background()
	seen := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	live, twice, stale, gone, never := e.ids[0], e.ids[1], e.ids[2], e.ids[3], e.ids[4]
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO gw_nodes (id, heartbeat_at) VALUES ('other', now()), ('stale', now() - interval '40 s')`, nil},
		{`INSERT INTO gw_presence (account_id, node_id) VALUES ($1, 'other'), ($2, 'other'), ($2, 'test'), ($3, 'stale')`, []any{live, twice, stale}},
		{`INSERT INTO gw_last_seen (account_id, at) VALUES ($1, $3), ($2, $3), ($4, $3)`, []any{live, stale, seen, gone}},
	} {
		if _, err := e.pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	st, err := e.gw.presence.state(ctx, []int64{never, gone, stale, twice, live})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]struct {
		online bool
		seen   bool
	}{live: {true, false}, twice: {true, false}, stale: {false, true}, gone: {false, true}, never: {false, false}}
	if len(st) != len(want) {
		t.Fatalf("%d rows for %d accounts: %+v", len(st), len(want), st)
	}
	for i, s := range st {
		if i > 0 && s.Account <= st[i-1].Account {
			t.Errorf("not in account order: %+v", st)
		}
		w := want[s.Account]
		if s.Online != w.online || (s.LastSeen != nil) != w.seen || (w.seen && !s.LastSeen.Equal(seen)) {
			t.Errorf("account %d: online %v, last seen %v; want online %v, last seen %v", s.Account, s.Online, s.LastSeen, w.online, w.seen)
		}
	}
}

package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/testenv"
)

// sweepGateway is a gateway with what the maintenance sweep uses, and
// connections of accounts 1 to n in its hub, which fill every shard.
func sweepGateway(n int, setup func(c *Conn)) (*Gateway, []*Conn) {
	g := &Gateway{hub: newHub(), tick: 5 * time.Second, heartbeat: 25 * time.Second, silence: time.Hour,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var conns []*Conn
	for a := int64(1); a <= int64(n); a++ {
		c := &Conn{g: g, account: a}
		setup(c)
		g.hub.attach(c)
		conns = append(conns, c)
	}
	return g, conns
}

func isClosing(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// TestSweepExpiresEveryConnectionWithinATick: a sweep checks the
// connections of its share of the hub's shards only, and any
// sweepsPerTick sweeps in a row check them all: an expired token's
// connection is closed within a tick, wherever it sits.
func TestSweepExpiresEveryConnectionWithinATick(t *testing.T) {
	expiry := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	g, conns := sweepGateway(3*hubShards, func(c *Conn) {
		c.expires = expiry
		c.lastRead.Store(expiry.UnixNano())
		c.writing = true // a writer runs: the close frame is only queued, and no ping goes out
	})
	step := g.tick / sweepsPerTick
	for k := range sweepsPerTick {
		g.sweep(k, expiry.Add(-time.Duration(sweepsPerTick-k)*step))
	}
	for _, c := range conns {
		if isClosing(c) {
			t.Fatalf("account %d closed before its token expired", c.account)
		}
	}
	closedBy := map[*Conn]int{}
	const first = 7 // any sweep number
	for k := first; k < first+sweepsPerTick; k++ {
		g.sweep(k, expiry.Add(time.Duration(k-first)*step+time.Millisecond))
		for _, c := range conns {
			if _, ok := closedBy[c]; ok || !isClosing(c) {
				continue
			}
			closedBy[c] = k
			if shard := shardOf(c.account); shard%sweepsPerTick != k%sweepsPerTick {
				t.Errorf("account %d (shard %d) closed by sweep %d, whose share is shards %d modulo %d", c.account, shard, k, k%sweepsPerTick, sweepsPerTick)
			}
		}
		if n := len(closedBy); n == len(conns) && k < first+sweepsPerTick-1 {
			t.Errorf("all %d closed by sweep %d of %d: a sweep checked more than its share", n, k-first+1, sweepsPerTick)
		}
	}
	for _, c := range conns {
		if _, ok := closedBy[c]; !ok {
			t.Errorf("account %d (shard %d) still open a tick after its token expired", c.account, shardOf(c.account))
		}
	}
}

// TestSweepPingsIdleConnectionsAHeartbeatApart: each idle connection is
// pinged at its first visit, then every heartbeat (25 s, five visits), by
// the sweeps of its share, though the ticker's times come a microsecond
// early or late: a ping is not put off to the next visit, a tick later.
func TestSweepPingsIdleConnectionsAHeartbeatApart(t *testing.T) {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	g, conns := sweepGateway(2*hubShards, func(c *Conn) {
		c.ws, c.fc = upgradeOver(t, &chunkConn{})
		c.lastRead.Store(start.UnixNano())
	})
	step := g.tick / sweepsPerTick
	pings := map[*Conn][]time.Time{}
	sweeps := int(4*g.heartbeat/step) + sweepsPerTick
	for k := 1; k <= sweeps; k++ {
		jitter := time.Duration(k%3-1) * time.Microsecond
		now := start.Add(time.Duration(k)*step + jitter)
		g.sweep(k, now)
		for _, c := range conns {
			if c.lastPing.Load() != now.UnixNano() {
				continue
			}
			pings[c] = append(pings[c], now)
			if shard := shardOf(c.account); shard%sweepsPerTick != k%sweepsPerTick {
				t.Fatalf("account %d (shard %d) pinged by sweep %d, whose share is shards %d modulo %d", c.account, shard, k, k%sweepsPerTick, sweepsPerTick)
			}
		}
	}
	for _, c := range conns {
		p := pings[c]
		if len(p) == 0 || p[0].After(start.Add(g.tick+time.Millisecond)) {
			t.Fatalf("account %d (shard %d): first ping %v, want within a tick of %v", c.account, shardOf(c.account), p, start)
		}
		if len(p) < 4 {
			t.Errorf("account %d: %d pings over %d heartbeats", c.account, len(p), 4)
		}
		for i := 1; i < len(p); i++ {
			if gap := p[i].Sub(p[i-1]); gap < g.heartbeat-step || gap > g.heartbeat+step {
				t.Errorf("account %d: pings %v apart, want %v", c.account, gap, g.heartbeat)
				break
			}
		}
	}
}

// noneEnded is an Authenticator with no ended session.
type noneEnded struct{ Authenticator }

func (noneEnded) EndedSince(_ context.Context, cursor uint64) ([]int64, []int64, uint64, error) {
	return nil, nil, cursor, nil
}

// TestMaintainReachesEveryShard: the maintenance loop, on its own ticker,
// closes the expired connections of every shard within a tick or so.
func TestMaintainReachesEveryShard(t *testing.T) {
	expiry := time.Now().Add(100 * time.Millisecond)
	g, conns := sweepGateway(3*hubShards, func(c *Conn) {
		c.expires = expiry
		c.lastRead.Store(time.Now().UnixNano())
		c.writing = true
	})
	g.tick = 50 * time.Millisecond
	g.auth = noneEnded{}
	g.evc = testenv.Bus(t).Events() // the loop checks the bus for lost events
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go g.maintain()
	defer func() { close(g.stop); <-g.done }()
	for end := expiry.Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var open []string
		for _, c := range conns {
			if !isClosing(c) {
				open = append(open, fmt.Sprintf("%d (shard %d)", c.account, shardOf(c.account)))
			}
		}
		if len(open) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("2 s (40 ticks) after their tokens expired, still open: accounts %v", open)
		}
	}
}

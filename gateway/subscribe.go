package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/event"
)

// A node is subscribed to the bus's events only while it has connections,
// and for eventLinger after the last one went: every event goes to every
// subscribed node, and a node without connections (one that serves only
// the HTTP API, or one drained) has no one to deliver it to. Receiving
// them cost such a node 1.2 s of CPU in 18 s of direct messages at
// 2,000/s (docs/benchmarks.md, session 17), and nats-server sent each
// event once more.
//
// The seam: a connection is set up only once the subscription is in
// place, confirmed by the server (a flush), so every event published
// after that reaches the node; the connection then loads its
// conversations and syncs from the database, which holds everything
// committed before. What was committed before but published after comes
// twice, once from each, as it always could: the connection's seam drops
// the second (seam.go).
const eventLinger = time.Minute

// subscribeWait bounds the wait for the bus to confirm a subscription.
const subscribeWait = 5 * time.Second

// errStopped: the gateway shut down; connections go elsewhere.
var errStopped = errors.New("the node is shutting down")

// eventSub is the node's subscription to events.
type eventSub struct {
	mu      sync.Mutex
	sub     *nats.Subscription // nil while unsubscribed
	last    time.Time          // when a connection was last known to be open
	linger  time.Duration
	failed  time.Time // when subscribing last failed
	stopped bool      // the gateway shut down: no more subscribing

	// What checkBus saw last: the NATS connection's reconnects, and the
	// events the current subscription dropped.
	reconnects uint64
	dropped    int
}

// subscribeEvents subscribes the node to events, if it is not already,
// and waits for the server to confirm it. A connection calls it before it
// is attached: from then on it counts in g.open until it ends, and
// unsubscribeIdle leaves the subscription alone while g.open is above 0.
func (g *Gateway) subscribeEvents() error {
	s := &g.events
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = time.Now()
	if s.sub != nil {
		return nil
	}
	if s.stopped {
		return errStopped
	}
	if time.Since(s.failed) < subscribeWait {
		return fmt.Errorf("subscribing to events failed %s ago", time.Since(s.failed).Round(time.Millisecond))
	}
	sub, err := g.evc.Subscribe(event.Subject, g.onEvent)
	if err != nil {
		s.failed = time.Now()
		return fmt.Errorf("subscribing to events: %w", err)
	}
	sub.SetPendingLimits(1<<20, 512<<20)
	// The flush returns once the server has the subscription: an event
	// published after that reaches it. Connections being set up wait
	// for it (they hold s.mu). A bus that does not answer within
	// subscribeWait fails this one, and those that come in the next
	// subscribeWait at once, with 4003: they come back with back-off.
	if err := g.evc.FlushTimeout(subscribeWait); err != nil {
		sub.Unsubscribe()
		s.failed = time.Now()
		return fmt.Errorf("subscribing to events: %w", err)
	}
	s.sub, s.dropped = sub, 0
	if g.evb != nil {
		g.evb.SetLocal(g.onLocalEvent)
	}
	g.metrics.subscribed.Set(1)
	g.log.Info("subscribed to events")
	return nil
}

// unsubscribeIdle ends the subscription of a node that has had no
// connection for the linger time. The maintenance goroutine calls it
// every tick.
func (g *Gateway) unsubscribeIdle(now time.Time) {
	s := &g.events
	s.mu.Lock()
	defer s.mu.Unlock()
	// A connection being set up counts in g.open before it subscribes
	// (accept), so one that found the subscription in place keeps it.
	if g.open.Load() > 0 {
		s.last = now
		return
	}
	if s.sub == nil || now.Sub(s.last) < s.linger {
		return
	}
	if err := g.unsubscribeLocked(); err != nil {
		g.log.Warn("unsubscribing from events", "err", err)
		return
	}
	g.log.Info("unsubscribed from events: no connection for a while", "linger", s.linger.String())
}

// unsubscribeLocked ends the subscription, if any; g.events.mu is held.
func (g *Gateway) unsubscribeLocked() error {
	s := &g.events
	if s.sub == nil {
		return nil
	}
	if err := s.sub.Unsubscribe(); err != nil {
		return err
	}
	if g.evb != nil {
		g.evb.SetLocal(nil)
	}
	s.sub = nil
	g.metrics.subscribed.Set(0)
	return nil
}

// stopEvents ends the subscription for good (Shutdown).
func (g *Gateway) stopEvents() {
	s := &g.events
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	g.unsubscribeLocked()
}

// checkBus tells the node's connections to sync again when events may
// have been lost on their way here: the NATS connection reconnected (what
// was published while it was away went to no one here), or the
// subscription dropped events it could not hold (nats.go's slow-consumer
// limit). Clients then sync (docs/protocol.md, resync), which brings what
// the node missed from the database; without it a message in a quiet
// conversation would wait for the next message there, or the next
// connect. The maintenance goroutine calls it every tick.
func (g *Gateway) checkBus() {
	s := &g.events
	s.mu.Lock()
	defer s.mu.Unlock()
	// Presence events travel on the node's other connection (g.nc, when
	// Deps.Events has one of its own): its reconnects count too, as the
	// resync also asks clients to watch presence again.
	conns := []*nats.Conn{g.evc}
	if g.nc != nil && g.nc != g.evc {
		conns = append(conns, g.nc)
	}
	var reconnects uint64
	for _, nc := range conns {
		reconnects += nc.Stats().Reconnects
	}
	if s.sub == nil {
		// No event was on its way here: nothing to recover.
		s.reconnects = reconnects
		return
	}
	dropped, err := s.sub.Dropped()
	if err != nil {
		dropped = s.dropped
	}
	if reconnects == s.reconnects && dropped == s.dropped {
		return
	}
	// Events published from here on reach this node: the server has its
	// subscription again (nats.go sends it on reconnecting). A node still
	// away tries again next tick.
	for _, nc := range conns {
		if err := nc.FlushTimeout(subscribeWait); err != nil {
			g.log.Warn("events may have been lost; the bus does not answer yet", "err", err)
			return
		}
	}
	g.log.Warn("events may have been lost on the way to this node: its connections sync again",
		"reconnects", reconnects-s.reconnects, "dropped", dropped-s.dropped, "connections", g.open.Load())
	s.reconnects, s.dropped = reconnects, dropped
	g.metrics.busGaps.Inc()
	g.hub.each(func(c *Conn) { c.send(serverEvent{Type: "resync", Data: emptyObject}) })
}

var emptyObject = json.RawMessage(`{}`)

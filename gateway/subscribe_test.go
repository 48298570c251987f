package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/messaging"
)

// subscribedToEvents reports what the node and the bus say: whether the
// gauge is 1 and how many subscriptions the node's NATS connection has.
func (e *env) subscribedToEvents() (gauge float64, subs int) {
	return gaugeValue(e.gw.metrics.subscribed), e.gw.evc.NumSubscriptions()
}

// A node listens to events only while it has connections, and for the
// linger after the last one went. What was sent while it did not listen
// reaches a connection that comes later by its sync, and what follows
// live.
func TestEventSubscriptionFollowsConnections(t *testing.T) {
	e := newEnvWith(t, 2, time.Hour, time.Second, func(d *Deps) { d.EventLinger = 2 * time.Second })
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	gauge, idle := e.subscribedToEvents()
	if gauge != 0 {
		t.Fatal("subscribed to events before any connection")
	}
	send := func(id string) {
		t.Helper()
		if _, err := e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: id, Text: id}); err != nil {
			t.Fatal(err)
		}
	}
	seqOf := func(f map[string]any) float64 { return f["data"].(map[string]any)["seq"].(float64) }

	b := e.online(1)
	if gauge, subs := e.subscribedToEvents(); gauge != 1 || subs != idle+1 {
		t.Fatalf("with a connection: gauge %v, %d subscriptions (%d without)", gauge, subs, idle)
	}
	send("live-1")
	if seq := seqOf(b.expect("message")); seq != 1 {
		t.Fatalf("live message with seq %v, want 1", seq)
	}
	b.c.Close(websocket.StatusNormalClosure, "")
	if gauge, subs := e.subscribedToEvents(); gauge != 1 || subs != idle+1 {
		t.Fatalf("at once after the last connection closed: gauge %v, %d subscriptions; want them kept for the linger", gauge, subs)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if gauge, subs := e.subscribedToEvents(); gauge != 0 || subs != idle {
			return fmt.Errorf("gauge %v, %d subscriptions (%d without)", gauge, subs, idle)
		}
		return nil
	})

	send("away")
	b = e.connect(1)
	r := b.request("s", "sync", map[string]any{"convs": map[string]int{fmt.Sprint(d.ID): 1}})
	msgs, _ := r["data"].(map[string]any)["messages"].([]any)
	if len(msgs) != 1 || seqOf(map[string]any{"data": msgs[0]}) != 2 {
		t.Fatalf("sync after the node listened to nothing: %v", r)
	}
	send("live-2")
	if seq := seqOf(b.expect("message")); seq != 3 {
		t.Fatalf("live message with seq %v, want 3", seq)
	}
}

// Connections come and go while messages flow, and the node subscribes
// and unsubscribes between them: each connection gets every message after
// the one it synced from, once and in order, by its sync and live.
func TestResubscribingLosesNothing(t *testing.T) {
	e := newEnvWith(t, 2, time.Hour, time.Second, func(d *Deps) { d.EventLinger = time.Nanosecond })
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	sent := make(chan error, 1)
	go func() {
		var err error
		for i := 0; !stop.Load() && err == nil; i++ {
			_, err = e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: fmt.Sprint("m", i), Text: "m"})
			time.Sleep(5 * time.Millisecond)
		}
		sent <- err
	}()
	defer func() {
		stop.Store(true)
		if err := <-sent; err != nil {
			t.Error(err)
		}
	}()
	last := 0.0 // the last seq received, by any connection
	for round := 0; round < 8; round++ {
		b := e.connect(1)
		r := b.request("s", "sync", map[string]any{"convs": map[string]int{fmt.Sprint(d.ID): int(last)}})
		if r["error"] != nil {
			t.Fatalf("sync: %v", r)
		}
		msgs, _ := r["data"].(map[string]any)["messages"].([]any)
		for _, m := range msgs {
			seq := m.(map[string]any)["seq"].(float64)
			if seq != last+1 {
				t.Fatalf("round %d: sync gave seq %v after %v", round, seq, last)
			}
			last = seq
		}
		// Live messages, each the one after the last, for at least
		// three ticks (the node's checks whether to let go): the
		// subscription stays while the connection does.
		for want, until := last+5, time.Now().Add(300*time.Millisecond); last < want || time.Now().Before(until); {
			seq := b.expect("message")["data"].(map[string]any)["seq"].(float64)
			if seq != last+1 {
				t.Fatalf("round %d: live seq %v after %v", round, seq, last)
			}
			last = seq
		}
		b.c.Close(websocket.StatusNormalClosure, "")
		// Wait until the node has let go of the subscription (messages
		// keep coming meanwhile), so that the next connection subscribes
		// again while they do.
		testenv.Eventually(t, 10*time.Second, func() error {
			if gauge, _ := e.subscribedToEvents(); gauge != 0 {
				return fmt.Errorf("still subscribed")
			}
			return nil
		})
	}
}

// A node that cannot subscribe (the bus is gone) refuses connections
// with 4003, which clients retry with back-off; it does not crash, and
// does not attach a connection that would miss every live event.
func TestNoBusNoConnection(t *testing.T) {
	e := newEnv(t, 1)
	e.bus.Close()
	for range 2 { // the second fails at once, without asking the bus again
		r := e.dial(nil)
		r.send(map[string]any{"type": "auth", "id": "a", "data": map[string]any{"token": e.tokens[0]}})
		if code := r.closeCode(); code != CloseInternal {
			t.Fatalf("close code %d, want %d", code, CloseInternal)
		}
	}
	if gauge, _ := e.subscribedToEvents(); gauge != 0 || e.gw.hub.accounts.Load() != 0 {
		t.Fatalf("gauge %v, %d accounts attached", gauge, e.gw.hub.accounts.Load())
	}
}

// A message whose event never reached the node (published while its bus
// connection was away) reaches a connection after the node reconnects:
// the node tells its connections to sync again, once.
func TestBusReconnectSendsResync(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	// A node without connections, so without a subscription, had nothing
	// on its way: a reconnect then is no gap.
	if err := e.gw.evc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := e.gw.evc.Stats().Reconnects; n != 1 || !e.gw.evc.IsConnected() {
			return fmt.Errorf("%d reconnects", n)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // three ticks
	if n := counterValue(e.gw.metrics.busGaps); n != 0 {
		t.Fatalf("bus gaps %v on a node that was not subscribed", n)
	}

	b := e.online(1)
	// The same database without events: a send whose event is lost.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lost := messaging.New(e.pool, e.vis, event.Discard{}, log, messaging.Options{})
	defer lost.Close(ctx)
	if _, err := lost.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: "lost", Text: "lost"}); err != nil {
		t.Fatal(err)
	}
	if err := e.gw.evc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	b.expect("resync")
	r := b.request("s", "sync", map[string]any{"convs": map[string]int{fmt.Sprint(d.ID): 0}})
	msgs, _ := r["data"].(map[string]any)["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["text"] != "lost" {
		t.Fatalf("sync after resync: %v", r)
	}
	if n := counterValue(e.gw.metrics.busGaps); n != 1 {
		t.Errorf("bus gaps %v, want 1", n)
	}
	// Once: the ticks after it (100 ms each here) send no other.
	time.Sleep(500 * time.Millisecond)
	if counterValue(e.gw.metrics.busGaps) != 1 {
		t.Errorf("bus gaps %v after more ticks, want 1", counterValue(e.gw.metrics.busGaps))
	}
	// Live events flow on: this node's own, and another node's through
	// the bus (a service publishing on another connection).
	other := messaging.New(e.pool, e.vis, event.NewBus(e.bus.Conn(), log), log, messaging.Options{})
	defer other.Close(ctx)
	for _, svc := range []*messaging.Service{e.msg, other} {
		if _, err := svc.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: fmt.Sprintf("after-%p", svc), Text: "after"}); err != nil {
			t.Fatal(err)
		}
		if f := b.expect("message"); f["data"].(map[string]any)["text"] != "after" {
			t.Fatalf("live after the resync: %v", f)
		}
	}
	// Presence travels on the node's other connection: losing it loses
	// presence events, and clients sync and watch again.
	if err := e.gw.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	b.expect("resync")
	if n := counterValue(e.gw.metrics.busGaps); n != 2 {
		t.Errorf("bus gaps %v after the presence connection's reconnect, want 2", n)
	}
}

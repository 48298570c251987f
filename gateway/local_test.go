package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/messaging"
)

// messagesSeen counts the message frames of conv with seq on r so far.
func messagesSeen(r *raw, conv int64, seq float64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.log {
		d, _ := f["data"].(map[string]any)
		if f["type"] == "message" && d["conv"] == float64(conv) && d["seq"] == seq {
			n++
		}
	}
	return n
}

// A node's own events go to its connections in process, not back through
// the bus (whose connection for events does not echo); another node's come
// through the bus. Each reaches every device once.
func TestOwnEventsInProcess(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	a, b := e.online(0), e.online(1)
	if !e.gw.evc.Opts.NoEcho {
		t.Fatal("the node's connection for events echoes")
	}
	bus0, local0 := counterValue(e.gw.metrics.events), counterValue(e.gw.metrics.localEvents)

	// Over the socket, as a phone sends.
	r := a.request("m", "send", map[string]any{"conv": d.ID, "client_id": "own-1", "text": "own"})
	if r["error"] != nil {
		t.Fatalf("send: %v", r)
	}
	seq := r["data"].(map[string]any)["seq"].(float64)
	// Through the HTTP API's path on another node: a service publishing
	// on a connection of its own.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	other := messaging.New(e.pool, e.vis, event.NewBus(e.bus.Conn(), log), log, messaging.Options{})
	defer other.Close(ctx)
	sent, err := other.Send(ctx, e.actor(1), messaging.SendRequest{Conv: d.ID, ClientID: "other-1", Text: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []float64{seq, float64(sent.Seq)} {
		testenv.Eventually(t, 5*time.Second, func() error {
			if na, nb := messagesSeen(a, d.ID, want), messagesSeen(b, d.ID, want); na != 1 || nb != 1 {
				return fmt.Errorf("message %v seen %d and %d times", want, na, nb)
			}
			return nil
		})
	}
	time.Sleep(200 * time.Millisecond) // a second copy would be here by now
	for _, want := range []float64{seq, float64(sent.Seq)} {
		if na, nb := messagesSeen(a, d.ID, want), messagesSeen(b, d.ID, want); na != 1 || nb != 1 {
			t.Errorf("message %v seen %d and %d times, want once each", want, na, nb)
		}
	}
	if n := counterValue(e.gw.metrics.localEvents) - local0; n != 1 {
		t.Errorf("%v events in process, want 1 (the node's own message)", n)
	}
	if n := counterValue(e.gw.metrics.events) - bus0; n != 1 {
		t.Errorf("%v events from the bus, want 1 (the other node's message)", n)
	}
}

// A node whose connections are gone, still subscribed for the linger,
// routes nothing of its own in process, as it decodes nothing from the bus.
func TestNoLocalEventsWithoutConnections(t *testing.T) {
	e := newEnv(t, 2) // the default linger, a minute
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	e.online(0).c.CloseNow()
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := e.gw.hub.accounts.Load(); n != 0 {
			return fmt.Errorf("%d accounts still attached", n)
		}
		return nil
	})
	if g, _ := e.subscribedToEvents(); g != 1 {
		t.Fatal("unsubscribed before the linger ended")
	}
	if _, err := e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: "x", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(e.gw.metrics.localEvents); n != 0 {
		t.Errorf("%v events routed in process by a node without connections", n)
	}
}

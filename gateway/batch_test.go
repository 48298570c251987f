package gateway

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
)

// notice is an event for account to, numbered n.
func notice(to int64, n int) event.Event {
	return event.Event{Type: "notice", To: []int64{to}, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// TestEventsWaitingAreWrittenTogether: events that wait in the
// subscription while the node is busy are routed first and their frames
// written to a connection in one message, not one write each. The events
// come through a subscription of their own (a test subject), whose handler
// holds the first until all are waiting and then hands each to onEvent a
// little apart, as a busy node would.
func TestEventsWaitingAreWrittenTogether(t *testing.T) {
	e := newEnv(t, 1)
	r := e.online(0)
	const events = 30
	release := make(chan struct{})
	first := true
	nc := testenv.Bus(t).Conn()
	sub, err := nc.Subscribe("test.batch", func(m *nats.Msg) {
		if first {
			first = false
			<-release
		}
		time.Sleep(time.Millisecond) // each event is routed a moment after the one before
		e.gw.onEvent(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range events {
		ev := notice(e.ids[0], i)
		buf, _ := json.Marshal(ev)
		if err := nc.Publish("test.batch", buf); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for n, _, _ := sub.Pending(); n < events; n, _, _ = sub.Pending() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events waiting", n, events)
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := counterValue(e.gw.metrics.writes)
	close(release)
	for i := range events {
		f := r.expect("notice")
		if n := f["data"].(map[string]any)["n"]; n != float64(i) {
			t.Fatalf("notice %d arrived as number %v", i, n)
		}
	}
	if w := counterValue(e.gw.metrics.writes) - before; w > 3 {
		t.Errorf("%d waiting events took %v writes; want them batched into at most 3", events, w)
	}
}

// TestBatchWithoutNextEventIsWritten: a batch kept open for an event that
// never comes (the subscription ended) is written when its time is up.
func TestBatchWithoutNextEventIsWritten(t *testing.T) {
	e := newEnv(t, 1)
	r := e.online(0)
	g := e.gw
	ev := notice(e.ids[0], 7)
	g.batch.mu.Lock()
	g.hub.route(&ev, func(c *Conn) { g.batch.conns = append(g.batch.conns, c) })
	g.batch.mu.Unlock()
	start := time.Now()
	if !g.deferBatch() {
		t.Fatal("a fresh batch was not kept open")
	}
	f := r.expect("notice")
	if n := f["data"].(map[string]any)["n"]; n != float64(7) {
		t.Fatalf("got notice %v", n)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the batch was written after %v; want about %v", d, batchDelayShared)
	}
}

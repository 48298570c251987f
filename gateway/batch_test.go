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
		time.Sleep(500 * time.Microsecond) // each event is routed a moment after the one before
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
	if w := counterValue(e.gw.metrics.writes) - before; w > 6 {
		t.Errorf("%d waiting events took %v writes; want them batched into at most 6", events, w)
	}
}

// TestBatchWithoutNextEventIsWritten: a batch kept open for an event that
// never comes (the subscription ended) is written when its time is up.
func TestBatchWithoutNextEventIsWritten(t *testing.T) {
	e := newEnv(t, 1)
	r := e.online(0)
	g := e.gw
	ev := notice(e.ids[0], 7)
	g.routeBatched(&ev)
	start := time.Now()
	if !g.keepOpen(true) {
		t.Fatal("a fresh batch with an event waiting behind it was closed")
	}
	f := r.expect("notice")
	if n := f["data"].(map[string]any)["n"]; n != float64(7) {
		t.Fatalf("got notice %v", n)
	}
	if d := time.Since(start); d > 10*batchDelay {
		t.Errorf("the batch was written after %v; want about %v", d, batchDelay)
	}
}

// TestBroadcastWaitsForTheWritersBeforeIt: a batch with an event for many
// connections stays open while the writers of the batch before it write,
// and is written when the last of them is done; a batch of direct
// messages does not wait for them, nor does a broadcast when no writer is
// busy.
func TestBroadcastWaitsForTheWritersBeforeIt(t *testing.T) {
	e := newEnv(t, largeFanout)
	var rs []*raw
	for i := range largeFanout {
		rs = append(rs, e.online(i))
	}
	g := e.gw
	routeBatch := func(ev event.Event) { g.routeBatched(&ev) }
	all := event.Event{Type: "notice", To: e.ids, Data: json.RawMessage(`{"n":1}`)}

	// No writer busy: written at once.
	routeBatch(all)
	if g.keepOpen(false) {
		t.Fatal("a broadcast batch stayed open with no writer busy")
	}
	g.flushBatch()
	for _, r := range rs {
		r.expect("notice")
	}
	waitWriters := func(n int) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			if w := g.batch.writing.Load(); w != int64(n) {
				return fmt.Errorf("%d writers running, want %d", w, n)
			}
			return nil
		})
	}
	waitWriters(0)

	// A writer of an earlier batch is busy (simulated): a direct message
	// does not wait for it, a broadcast does.
	g.batch.writing.Add(1)
	routeBatch(notice(e.ids[0], 2))
	if g.keepOpen(false) {
		t.Fatal("a direct message waited for the writers of an earlier batch")
	}
	g.flushBatch()
	if n := rs[0].expect("notice")["data"].(map[string]any)["n"]; n != float64(2) {
		t.Fatalf("got notice %v", n)
	}
	// Its writer ends (a writer still running would take the broadcast's
	// frame along without waiting for any batch).
	waitWriters(1)
	all.Data = json.RawMessage(`{"n":3}`)
	routeBatch(all)
	if !g.keepOpen(false) {
		t.Fatal("a broadcast did not wait for the writers of an earlier batch")
	}
	time.Sleep(3 * batchDelay)
	for i, r := range rs {
		if r.saw(func(f map[string]any) bool {
			d, _ := f["data"].(map[string]any)
			return f["type"] == "notice" && d["n"] == float64(3)
		}) {
			t.Fatalf("connection %d got the broadcast while its batch waited", i)
		}
	}
	done := time.Now()
	g.writerDone() // the busy writer finishes
	for _, r := range rs {
		if n := r.expect("notice")["data"].(map[string]any)["n"]; n != float64(3) {
			t.Fatalf("got notice %v", n)
		}
	}
	if d := time.Since(done); d > batchDelayShared/2 {
		t.Errorf("the broadcast came %v after the writer before it finished; want it at once, not when its batch timed out", d)
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
)

// notice is an event for account to, numbered n.
func notice(to int64, n int) event.Event {
	return event.Event{Type: "notice", To: []int64{to}, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// crowd is largeFanout accounts online, enough for their events to be
// batched, and an event for all of them numbered n.
func crowd(t *testing.T) (*env, []*raw, func(n int) event.Event) {
	e := newEnv(t, largeFanout)
	var rs []*raw
	for i := range largeFanout {
		rs = append(rs, e.online(i))
	}
	return e, rs, func(n int) event.Event {
		return event.Event{Type: "notice", To: e.ids, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
	}
}

// expectNotice waits for notice n on r.
func expectNotice(t *testing.T, r *raw, n int) {
	t.Helper()
	if got := r.expect("notice")["data"].(map[string]any)["n"]; got != float64(n) {
		t.Fatalf("got notice %v, want %d", got, n)
	}
}

// TestWaitingEventsArriveWholeAndInOrder: events for many connections
// that wait in a real subscription while the node is busy go through
// onEvent's batching and reach every connection, all of them, in order
// and without waiting out a batch's timer.
// The events come through a subscription of their own (a test subject),
// whose handler holds the first until all are waiting. A count of writes
// cannot show the batching here (writers that run while events are routed
// coalesce frames too: 64-122 writes without batching, 64 with it); its
// rules are checked one by one in TestBroadcastWaitsForTheWritersBeforeIt.
func TestWaitingEventsArriveWholeAndInOrder(t *testing.T) {
	e, rs, all := crowd(t)
	const events = 30
	release := make(chan struct{})
	first := true
	nc := testenv.Bus(t).Conn()
	sub, err := nc.Subscribe("test.batch", func(m *nats.Msg) {
		if first {
			first = false
			<-release
		}
		e.gw.onEvent(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range events {
		buf, _ := json.Marshal(all(i))
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
	start := time.Now()
	close(release)
	for _, r := range rs {
		for i := range events {
			expectNotice(t, r, i)
		}
	}
	// The last event leaves nothing waiting: its batch closes at once, not
	// when its timer runs out.
	if d := time.Since(start); d > batchDelayShared/2 {
		t.Errorf("the events took %v to arrive; want them without waiting for a batch's timer (%v)", d, batchDelayShared)
	}
}

// TestBatchWithoutNextEventIsWritten: a batch kept open for an event that
// never comes (the subscription ended) is written when its time is up.
func TestBatchWithoutNextEventIsWritten(t *testing.T) {
	e, rs, all := crowd(t)
	g := e.gw
	ev := all(7)
	g.routeBatched(&ev)
	start := time.Now()
	if !g.keepOpen(true) {
		t.Fatal("a fresh broadcast batch with an event waiting behind it was closed")
	}
	for _, r := range rs {
		expectNotice(t, r, 7)
	}
	if d := time.Since(start); d > 2*batchDelayShared {
		t.Errorf("the batch was written after %v; want about %v", d, batchDelayShared)
	}
}

// TestBroadcastWaitsForTheWritersBeforeIt: a batch with an event for many
// connections stays open while events wait behind it (at most batchDelay)
// and while the writers of the batch before it write, and is written when
// the last of them is done; a direct message waits for neither, and a
// broadcast is written at once when nothing waits and no writer is busy.
func TestBroadcastWaitsForTheWritersBeforeIt(t *testing.T) {
	e, rs, all := crowd(t)
	g := e.gw
	routeBatch := func(ev event.Event) { g.routeBatched(&ev) }
	waitWriters := func(n int) {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			if w := g.batch.writing.Load(); w != int64(n) {
				return fmt.Errorf("%d writers running, want %d", w, n)
			}
			return nil
		})
	}

	// Events waiting behind it: open, for batchDelay at most.
	routeBatch(all(1))
	if !g.keepOpen(true) {
		t.Fatal("a broadcast batch closed with events waiting behind it")
	}
	time.Sleep(batchDelay)
	if g.keepOpen(true) {
		t.Fatalf("a broadcast batch stayed open for waiting events beyond %v", batchDelay)
	}
	g.flushBatch()
	for _, r := range rs {
		expectNotice(t, r, 1)
	}
	waitWriters(0)

	// Nothing waiting, no writer busy: written at once.
	routeBatch(all(2))
	if g.keepOpen(false) {
		t.Fatal("a broadcast batch stayed open with nothing waiting and no writer busy")
	}
	g.flushBatch()
	for _, r := range rs {
		expectNotice(t, r, 2)
	}
	waitWriters(0)

	// A writer of an earlier broadcast is busy (simulated): a direct
	// message waits neither for it nor for events behind it, and its own
	// writer does not count as a broadcast's; a broadcast waits.
	g.batch.writing.Add(1)
	routeBatch(notice(e.ids[0], 3))
	if g.keepOpen(true) {
		t.Fatal("a direct message waited for the writers of an earlier batch or for the events behind it")
	}
	g.flushBatch()
	if w := g.batch.writing.Load(); w != 1 {
		t.Fatalf("%d writers counted after a direct message's; want only the simulated one", w)
	}
	expectNotice(t, rs[0], 3)
	// Its writer ends (a writer still running would take the broadcast's
	// frame along without waiting for any batch).
	u := g.hub.user(e.ids[0])
	u.mu.Lock()
	c0 := u.conns[0]
	u.mu.Unlock()
	testenv.Eventually(t, 5*time.Second, func() error {
		c0.mu.Lock()
		defer c0.mu.Unlock()
		if c0.writing {
			return fmt.Errorf("the direct message's writer still runs")
		}
		return nil
	})
	routeBatch(all(4))
	if !g.keepOpen(false) {
		t.Fatal("a broadcast did not wait for the writers of an earlier batch")
	}
	time.Sleep(3 * batchDelay)
	for i, r := range rs {
		if r.saw(func(f map[string]any) bool {
			d, _ := f["data"].(map[string]any)
			return f["type"] == "notice" && d["n"] == float64(4)
		}) {
			t.Fatalf("connection %d got the broadcast while its batch waited", i)
		}
	}
	done := time.Now()
	g.writerDone() // the busy writer finishes
	for _, r := range rs {
		expectNotice(t, r, 4)
	}
	if d := time.Since(done); d > batchDelayShared/2 {
		t.Errorf("the broadcast came %v after the writer before it finished; want it at once, not when its batch timed out", d)
	}
}

// TestBroadcastSlowConsumerIsCutAndOthersAreNot: broadcast rounds, written
// by the round writers, reach every client that reads, whole and in order,
// while one client of the same events stops reading: its socket stalls,
// and it is cut as a slow consumer.
func TestBroadcastSlowConsumerIsCutAndOthersAreNot(t *testing.T) {
	e := newEnvWith(t, largeFanout, time.Hour, time.Minute) // a heartbeat that does not cut the slow reader first
	var fast []*raw
	for i := 1; i < largeFanout; i++ {
		fast = append(fast, e.online(i))
	}
	// The slow client authenticates and syncs, then never reads again;
	// both its socket buffers are small, so its writes stall at once.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slow, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	slow.Write(ctx, websocket.MessageText, []byte(`{"type":"sync","id":"s"}`))
	var sc *Conn
	testenv.Eventually(t, 5*time.Second, func() error {
		u := e.gw.hub.user(e.ids[0])
		if u == nil {
			return fmt.Errorf("the slow client is not registered")
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		sc = u.conns[0]
		return nil
	})
	sc.fc.Conn.(*net.TCPConn).SetWriteBuffer(4096)

	nc := testenv.Bus(t).Conn()
	sub, err := nc.Subscribe("test.slow", e.gw.onEvent)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	const events = 100 // fewer than queueSize: a client that reads is not cut by the burst itself
	pad := strings.Repeat("广播", 125)
	start := time.Now()
	for i := range events {
		buf, _ := json.Marshal(event.Event{Type: "notice", To: e.ids, Data: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))})
		if err := nc.Publish("test.slow", buf); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range fast {
		for i := range events {
			expectNotice(t, r, i)
		}
	}
	// Waiting for the slow client would have taken writeTimeout (10 s)
	// or more. Reading everything took up to 5.4 s with -race beside the
	// other packages' tests (200 notices then).
	if took := time.Since(start); took >= writeTimeout {
		t.Errorf("the clients that read took %v for %d events", took, events)
	}
	// Cut when more than 1 MiB waits for its socket from round writes, or
	// when its writer has waited writeTimeout (10-15 s, the deadline's
	// grain) for the client.
	testenv.Eventually(t, writeTimeout+deadlineGrain+5*time.Second, func() error {
		if v := counterValue(e.gw.metrics.slow); v < 1 {
			return fmt.Errorf("no slow consumer cut")
		}
		if u := e.gw.hub.user(e.ids[0]); u != nil {
			return fmt.Errorf("the slow consumer is still registered")
		}
		return nil
	})
}

// TestNodeWithoutConnectionsSkipsEvents: a node nobody is connected to
// does not decode the events every node receives; once someone connects,
// events reach them again, and when they leave, the node skips again.
func TestNodeWithoutConnectionsSkipsEvents(t *testing.T) {
	e := newEnv(t, 1)
	g := e.gw
	msg := func(n int) *nats.Msg {
		ev := notice(e.ids[0], n)
		return &nats.Msg{Data: ev.AppendJSON(nil)}
	}
	g.onEvent(msg(1))
	if n := counterValue(g.metrics.events); n != 0 {
		t.Fatalf("%v events routed with nobody connected", n)
	}
	r := e.online(0)
	g.onEvent(msg(2))
	expectNotice(t, r, 2)
	if n := counterValue(g.metrics.events); n != 1 {
		t.Fatalf("%v events routed with one connection, want 1", n)
	}
	r.c.CloseNow()
	deadline := time.Now().Add(5 * time.Second)
	for g.hub.accounts.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the account is still counted after its connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.onEvent(msg(3))
	if n := counterValue(g.metrics.events); n != 1 {
		t.Fatalf("%v events routed, want 1: the node decoded with nobody connected", n)
	}
}

// TestBurstBeyondTheQueueReachesReadingClients: a broadcast batch that
// holds more events than the 256-frame queue (events that came while the
// batch was open: its writers start when it closes) reaches every client
// that reads, all of it and in order; none is cut as a slow consumer.
func TestBurstBeyondTheQueueReachesReadingClients(t *testing.T) {
	e, rs, all := crowd(t)
	g := e.gw
	const events = 3 * queueSize
	for i := range events {
		ev := all(i)
		g.routeBatched(&ev)
	}
	g.flushBatch()
	for _, r := range rs {
		for i := range events {
			expectNotice(t, r, i)
		}
	}
	if v := counterValue(g.metrics.slow); v != 0 {
		t.Errorf("%v clients that read were cut as slow consumers", v)
	}
}

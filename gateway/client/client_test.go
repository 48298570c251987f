package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const wait = 5 * time.Second

func TestDecodeServerMessage(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		types []string
		bad   int
	}{
		{"one", `{"type":"hello","data":{}}`, []string{"hello"}, 0},
		{"coalesced", "{\"type\":\"reply\",\"id\":\"1\",\"data\":{}}\n{\"type\":\"message\",\"data\":{\"conv\":1,\"seq\":1}}\n{\"type\":\"read\",\"data\":{}}",
			[]string{"reply", "message", "read"}, 0},
		{"blank lines and CRLF", "\n{\"type\":\"a\"}\r\n\n{\"type\":\"b\"}\n", []string{"a", "b"}, 0},
		{"bad line among good", "{\"type\":\"a\"}\nnot json\n{\"type\":\"b\"}", []string{"a", "b"}, 1},
		{"no type", `{"data":{}}`, nil, 1},
		{"not an object", `[1,2]`, nil, 1},
		{"empty", ``, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var types []string
			bad, _ := decodeServerMessage([]byte(tt.in), func(f serverFrame) { types = append(types, f.Type) })
			if !slices.Equal(types, tt.types) || bad != tt.bad {
				t.Errorf("got %v, %d bad; want %v, %d bad", types, bad, tt.types, tt.bad)
			}
		})
	}
}

func TestAuthByFrame(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, nil)
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	c.rec.mu.Lock()
	states := slices.Clone(c.rec.states)
	c.rec.mu.Unlock()
	if !slices.Equal(states, []State{StateConnecting, StateConnected, StateSynced}) {
		t.Errorf("states %v", states)
	}
	auth := s.framesOf("auth")
	if len(auth) != 1 || !strings.Contains(string(auth[0].Data), `"good"`) {
		t.Fatalf("auth frames %v", auth)
	}
	if s.last().header != "" {
		t.Error("the token went in a header too")
	}
	if h := c.rec.eventsOf(EventHello); len(h) != 1 {
		t.Errorf("hello events: %v", h)
	} else if hello, err := h[0].Hello(); err != nil || hello.AccountID != 7 {
		t.Errorf("hello %+v, %v", hello, err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAuthByHeader(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, func(cfg *Config) { cfg.HeaderAuth = true })
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	if s.last().header != "good" {
		t.Errorf("header token %q", s.last().header)
	}
	if a := s.framesOf("auth"); len(a) != 0 {
		t.Errorf("auth frames with header auth: %v", a)
	}
}

func TestSyncPagesAndResume(t *testing.T) {
	s := newFakeServer(t)
	for i := 0; i < 250; i++ {
		s.add(1, "a")
	}
	for i := 0; i < 3; i++ {
		s.add(2, "b")
	}
	c := start(t, s, func(cfg *Config) { cfg.SyncLimit = 100 })
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 250)) {
		t.Errorf("conv 1: %v", got)
	}
	if got := c.rec.seqs(2); !slices.Equal(got, seqRange(1, 3)) {
		t.Errorf("conv 2: %v", got)
	}
	if n := len(s.framesOf("sync")); n != 3 {
		t.Errorf("%d sync pages, want 3", n)
	}
	if n := len(c.rec.eventsOf(EventSync)); n != 3 {
		t.Errorf("%d sync events, want 3", n)
	}
	seqs, cursor := c.Seqs(), c.Cursor()
	if seqs[1] != 250 || seqs[2] != 3 || cursor == "" {
		t.Fatalf("state %v %q", seqs, cursor)
	}

	// A second run resumes: only what is new arrives.
	for i := 0; i < 5; i++ {
		s.add(1, "c")
	}
	seqs[1] = 248
	c2 := start(t, s, func(cfg *Config) { cfg.Seqs, cfg.Cursor = seqs, cursor })
	checkFor(t, wait, "synced", func() bool { return c2.rec.count(StateSynced) == 1 })
	if got := c2.rec.seqs(1); !slices.Equal(got, seqRange(249, 255)) {
		t.Errorf("resumed conv 1: %v", got)
	}
	if got := c2.rec.seqs(2); got != nil {
		t.Errorf("resumed conv 2: %v", got)
	}
	syncs := s.framesOf("sync")
	first := syncs[3]
	var d syncData
	if err := json.Unmarshal(first.Data, &d); err != nil || d.Cursor != cursor || d.Convs[1] != 248 || d.Convs[2] != 3 {
		t.Errorf("resume sync %s (%v)", first.Data, err)
	}
}

func TestResumeStateRejected(t *testing.T) {
	s := newFakeServer(t)
	s.add(1, "a")
	s.add(1, "b")
	c := start(t, s, func(cfg *Config) { cfg.Seqs, cfg.Cursor = map[int64]int64{1: 99}, "stale" })
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 2)) {
		t.Errorf("after reset: %v", got)
	}
	if len(c.rec.eventsOf(EventReset)) != 1 {
		t.Error("no reset event")
	}
	if n := len(s.framesOf("sync")); n != 3 { // with the cursor, without it, from the beginning
		t.Errorf("%d syncs", n)
	}
}

func TestFramesSplitAndRepliesMatched(t *testing.T) {
	s := newFakeServer(t)
	for conv := int64(1); conv <= 3; conv++ {
		for i := int64(0); i < conv; i++ {
			s.add(conv, "x")
		}
	}
	// History requests are held and answered together, newest first, in
	// one WebSocket message with an event among them.
	var mu sync.Mutex
	var held []clientFrame
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type != "history" {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		held = append(held, f)
		if len(held) < 3 {
			return true
		}
		var frames []any
		for _, h := range slices.Backward(held) {
			var q HistoryQuery
			json.Unmarshal(h.Data, &q)
			s.mu.Lock()
			frames = append(frames, reply(h.ID, historyReply{Messages: slices.Clone(s.msgs[q.Conv])}))
			s.mu.Unlock()
			if len(frames) == 1 {
				frames = append(frames, event(EventRead, ReadEvent{Conv: 1, Account: 7, Seq: 1}))
			}
		}
		fc.send(frames...)
		return true
	}
	c := start(t, s, nil)
	var wg sync.WaitGroup
	for conv := int64(1); conv <= 3; conv++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms, _, err := c.History(context.Background(), HistoryQuery{Conv: conv, After: 0, Limit: 10})
			if err != nil {
				t.Error(err)
				return
			}
			if len(ms) != int(conv) || ms[0].Conv != conv {
				t.Errorf("history of %d got %v", conv, ms)
			}
		}()
	}
	wg.Wait()
	checkFor(t, wait, "the read event", func() bool { return len(c.rec.eventsOf(EventRead)) == 1 })
	if r, err := c.rec.eventsOf(EventRead)[0].Read(); err != nil || r.Seq != 1 {
		t.Errorf("read event %+v %v", r, err)
	}
}

func TestDuplicatesDropped(t *testing.T) {
	eachDelivery(t, func(t *testing.T, onReader bool) {
		s := newFakeServer(t)
		c := start(t, s, func(cfg *Config) {
			// Conversation 1 known from the start: its next message can be
			// delivered on the read loop.
			cfg.Seqs, cfg.DeliverOnReader = map[int64]int64{1: 0}, onReader
		})
		checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
		m1, m2, m3 := s.add(1, "a"), s.add(1, "b"), s.add(1, "c")
		s.last().send(event(EventMessage, m1), event(EventMessage, m1), event(EventMessage, m2),
			event(EventMessage, m1), event(EventMessage, m2), event(EventMessage, m3), event(EventMessage, m3))
		c.barrier(t, s)
		if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 3)) {
			t.Errorf("delivered %v", got)
		}
		if n := len(s.framesOf("history")); n != 0 {
			t.Errorf("%d history requests for no gap", n)
		}
	})
}

func TestGapFilledWithHistory(t *testing.T) {
	eachDelivery(t, func(t *testing.T, onReader bool) {
		s := newFakeServer(t)
		c := start(t, s, func(cfg *Config) {
			// Conversation 1 known from the start: its next message can be
			// delivered on the read loop.
			cfg.Seqs, cfg.DeliverOnReader = map[int64]int64{1: 0}, onReader
		})
		checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })

		// A gap after a known sequence: history after it.
		s.broadcast(s.add(1, "1"))
		checkFor(t, wait, "message 1", func() bool { return len(c.rec.seqs(1)) == 1 })
		for i := 2; i <= 4; i++ {
			s.add(1, "x")
		}
		m5 := s.add(1, "5")
		s.broadcast(m5)
		checkFor(t, wait, "messages 2-5", func() bool { return len(c.rec.seqs(1)) == 5 })
		if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 5)) {
			t.Errorf("conv 1: %v", got)
		}
		h := s.framesOf("history")
		if len(h) != 1 || !strings.Contains(string(h[0].Data), `"after":1`) {
			t.Errorf("history frames %v", h)
		}

		// A gap from the beginning, part of it before the user joined: what
		// history gives is all there is.
		for i := 0; i < 3; i++ {
			s.add(2, "before joining")
		}
		s.mu.Lock()
		s.joined[2] = 3
		s.mu.Unlock()
		s.add(2, "4")
		s.broadcast(s.add(2, "5"))
		checkFor(t, wait, "conv 2", func() bool { return len(c.rec.seqs(2)) == 2 })
		if got := c.rec.seqs(2); !slices.Equal(got, []int64{4, 5}) {
			t.Errorf("conv 2: %v", got)
		}
		if seqs := c.Seqs(); seqs[1] != 5 || seqs[2] != 5 {
			t.Errorf("seqs %v", seqs)
		}
	})
}

// A message whose event was lost, in a conversation that then stays
// quiet, comes with the sync a resync event starts, on the same
// connection; the presence of watched accounts is read again.
func TestResyncEventSyncs(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, nil)
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	if _, err := c.Presence(context.Background(), []int64{9}, true); err != nil {
		t.Fatal(err)
	}
	s.broadcast(s.add(1, "1"))
	checkFor(t, wait, "message 1", func() bool { return len(c.rec.seqs(1)) == 1 })
	s.add(1, "2") // its event is lost
	s.last().send(event(EventResync, map[string]any{}))
	checkFor(t, wait, "message 2", func() bool { return len(c.rec.seqs(1)) == 2 })
	if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 2)) {
		t.Errorf("delivered %v", got)
	}
	if n, conns := len(s.framesOf("sync")), s.connectCount(); n != 2 || conns != 1 {
		t.Errorf("%d syncs on %d connections, want 2 on 1", n, conns)
	}
	checkFor(t, wait, "the watch set again", func() bool { return len(s.framesOf("presence")) == 2 })
	checkFor(t, wait, "a presence event", func() bool { return len(c.rec.eventsOf(EventPresence)) == 1 })
}

func TestLiveEventsHeldUntilSync(t *testing.T) {
	eachDelivery(t, func(t *testing.T, onReader bool) {
		s := newFakeServer(t)
		s.add(1, "1")
		s.add(1, "2")
		s.onHello = func(fc *fakeConn) {
			m3 := s.add(1, "3")
			fc.live(event(EventMessage, s.msgs[1][1])) // in the sync reply as well
			fc.live(event(EventMessage, m3))
		}
		c := start(t, s, func(cfg *Config) {
			// Conversation 1 known from the start: its next message can be
			// delivered on the read loop.
			cfg.Seqs, cfg.DeliverOnReader = map[int64]int64{1: 0}, onReader
		})
		checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
		c.barrier(t, s)
		if got := c.rec.seqs(1); !slices.Equal(got, seqRange(1, 3)) {
			t.Errorf("delivered %v", got)
		}
	})
}

func TestSendResentAfterDrop(t *testing.T) {
	s := newFakeServer(t)
	var dropped atomic.Bool
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type != "send" || dropped.Swap(true) {
			return false
		}
		// Commit, then lose the connection before the reply.
		var m Send
		json.Unmarshal(f.Data, &m)
		s.mu.Lock()
		msg := s.addLocked(m.Conv, m, 7)
		s.sent[m.ClientID] = Sent{Conv: msg.Conv, Seq: msg.Seq, At: msg.At}
		s.mu.Unlock()
		fc.ws.CloseNow()
		return true
	}
	c := start(t, s, nil)
	sent, err := c.Send(context.Background(), Send{Conv: 1, Text: "once"})
	if err != nil {
		t.Fatal(err)
	}
	if sent.Seq != 1 || !sent.Duplicate || sent.ClientID == "" {
		t.Errorf("sent %+v", sent)
	}
	sends := s.framesOf("send")
	if len(sends) != 2 {
		t.Fatalf("%d send frames", len(sends))
	}
	var a, b Send
	json.Unmarshal(sends[0].Data, &a)
	json.Unmarshal(sends[1].Data, &b)
	if a.ClientID != sent.ClientID || b.ClientID != a.ClientID || sends[0].ID != sends[1].ID {
		t.Errorf("resent as %+v/%s after %+v/%s", b, sends[1].ID, a, sends[0].ID)
	}
	s.mu.Lock()
	n := len(s.msgs[1])
	s.mu.Unlock()
	if n != 1 {
		t.Errorf("%d messages stored", n)
	}
	if s.connectCount() != 2 {
		t.Errorf("%d connections", s.connectCount())
	}
}

func TestSendsKeepOrderWhenResent(t *testing.T) {
	s := newFakeServer(t)
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		return f.Type == "send" && fc.n == 1 // the first connection never answers
	}
	c := start(t, s, nil)
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	results := make(chan Sent, 5)
	for i := range 5 {
		go func() {
			s, err := c.Send(context.Background(), Send{Conv: 1, Text: "x", ClientID: "cid-" + string(rune('a'+i))})
			if err != nil {
				t.Error(err)
			}
			results <- s
		}()
		checkFor(t, wait, "the send frame", func() bool { return len(s.framesOf("send")) == i+1 })
	}
	s.last().close(CloseInternal)
	for range 5 {
		<-results
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.msgs[1] {
		if want := "cid-" + string(rune('a'+i)); m.ClientID != want {
			t.Errorf("seq %d is %s, want %s", m.Seq, m.ClientID, want)
		}
	}
}

func TestSendFromOnMessage(t *testing.T) {
	s := newFakeServer(t)
	var c *running
	answered := make(chan Sent, 1)
	c = start(t, s, func(cfg *Config) {
		cfg.OnMessage = func(m Message) {
			if m.Text == "ping" {
				sent, err := c.Send(context.Background(), Send{Conv: m.Conv, Text: "pong"})
				if err != nil {
					t.Error(err)
				}
				answered <- sent
			}
		}
	})
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	s.broadcast(s.add(1, "ping"))
	select {
	case sent := <-answered:
		if sent.Seq != 2 {
			t.Errorf("pong %+v", sent)
		}
	case <-time.After(wait):
		t.Fatal("Send from OnMessage did not return")
	}
}

func TestOverflowResyncs(t *testing.T) {
	s := newFakeServer(t)
	release := make(chan struct{})
	var got []int64
	var mu sync.Mutex
	c := start(t, s, func(cfg *Config) {
		cfg.QueueSize = 4
		cfg.OnMessage = func(m Message) {
			if m.Seq == 1 {
				<-release
			}
			mu.Lock()
			got = append(got, m.Seq)
			mu.Unlock()
		}
	})
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	var ms []Message
	for range 50 {
		ms = append(ms, s.add(1, "x"))
	}
	s.broadcast(ms...)
	c.Ping(context.Background()) // the read loop has queued (or dropped) them all
	close(release)
	checkFor(t, wait, "50 messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 50 })
	c.barrier(t, s)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, seqRange(1, 50)) {
		t.Errorf("delivered %v", got)
	}
	if len(c.rec.eventsOf(EventOverflow)) == 0 {
		t.Error("no overflow event")
	}
}

func TestAutoAck(t *testing.T) {
	eachDelivery(t, func(t *testing.T, onReader bool) {
		s := newFakeServer(t)
		c := start(t, s, func(cfg *Config) {
			cfg.AutoAck, cfg.AckInterval, cfg.DeliverOnReader = true, 200*time.Millisecond, onReader
		})
		checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
		var ms []Message
		for range 30 {
			ms = append(ms, s.add(1, "x"))
		}
		s.broadcast(ms...)
		checkFor(t, wait, "an ack of 30", func() bool {
			for _, a := range s.framesOf("ack") {
				if a.ID == "" && string(a.Data) == `{"conv":1,"seq":30}` {
					return true
				}
			}
			return false
		})
		if n := len(s.framesOf("ack")); n > 10 {
			t.Errorf("%d ack frames for 30 messages", n)
		}
	})
}

// TestAcksTrail: an ack goes out AckInterval (less up to a half) after the
// first delivery it confirms, not at once, so that every member of a
// group does not answer a message at the same moment.
func TestAcksTrail(t *testing.T) {
	eachDelivery(t, func(t *testing.T, onReader bool) {
		s := newFakeServer(t)
		c := start(t, s, func(cfg *Config) {
			cfg.AutoAck, cfg.AckInterval, cfg.DeliverOnReader = true, time.Second, onReader
			cfg.Seqs = map[int64]int64{1: 0}
		})
		checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
		s.broadcast(s.add(1, "x"))
		checkFor(t, wait, "the message", func() bool { return len(c.rec.seqs(1)) == 1 })
		sent := time.Now()
		time.Sleep(400 * time.Millisecond) // the earliest an ack is due is 500 ms
		if n := len(s.framesOf("ack")); n != 0 {
			t.Fatalf("%d ack frames within 400 ms of the delivery, want none before 500 ms", n)
		}
		checkFor(t, wait, "the ack", func() bool { return len(s.framesOf("ack")) == 1 })
		if d := time.Since(sent); d > 3*time.Second {
			t.Errorf("the ack came %v after the delivery, want about 0.5-1 s", d)
		}
	})
}

func TestBackoffBounds(t *testing.T) {
	lo, hi := 250*time.Millisecond, 30*time.Second
	for n := range 12 {
		d := min(hi, lo<<n)
		var seenLow, seenHigh bool
		for range 2000 {
			b := backoff(n, lo, hi)
			if b < d/2 || b > d {
				t.Fatalf("attempt %d: %v outside [%v, %v]", n, b, d/2, d)
			}
			seenLow = seenLow || b < d/2+d/8
			seenHigh = seenHigh || b > d-d/8
		}
		if !seenLow || !seenHigh {
			t.Errorf("attempt %d: not spread over [%v, %v]", n, d/2, d)
		}
	}
	if b := backoff(1000, lo, hi); b > hi {
		t.Errorf("no cap: %v", b)
	}
}

func TestReconnectBacksOff(t *testing.T) {
	s := newFakeServer(t)
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type == "sync" { // never synced: the back-off keeps growing
			go fc.close(CloseInternal)
			return true
		}
		return false
	}
	c := start(t, s, func(cfg *Config) { cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 80*time.Millisecond })
	checkFor(t, wait, "6 connections", func() bool { return s.connectCount() >= 6 })
	s.mu.Lock()
	at := slices.Clone(s.connects)
	s.mu.Unlock()
	for i := 1; i < len(at); i++ {
		least := min(80*time.Millisecond, 20*time.Millisecond<<(i-1)) / 2
		if gap := at[i].Sub(at[i-1]); gap < least {
			t.Errorf("attempt %d after %v, want at least %v", i, gap, least)
		}
	}
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	var ce *CloseError
	if len(c.rec.errs) == 0 || !errors.As(c.rec.errs[0], &ce) || ce.Code != CloseInternal || !ce.Retry() {
		t.Errorf("disconnect reasons %v", c.rec.errs)
	}
}

func TestTokenExpiredCloseRefreshes(t *testing.T) {
	s := newFakeServer(t)
	var n atomic.Int32
	s.onHello = func(fc *fakeConn) {
		if fc.n == 1 {
			go fc.close(CloseTokenExpired)
		}
	}
	c := start(t, s, func(cfg *Config) {
		cfg.Token = func(context.Context) (string, error) { return "t" + string(rune('0'+n.Add(1))), nil }
	})
	checkFor(t, wait, "a second connection", func() bool { return s.connectCount() == 2 })
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) >= 1 })
	// A connection is counted before its token is: the first one may be
	// the one that synced, with the second one's token not yet read.
	checkFor(t, wait, "the second token", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.tokens) >= 2
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Equal(s.tokens, []string{"t1", "t2"}) {
		t.Errorf("tokens %v", s.tokens)
	}
}

func TestCloseCodesThatStop(t *testing.T) {
	for _, code := range []int{CloseSessionRevoked, CloseProtocolViolation, CloseFrameTooLarge} {
		t.Run(websocket.StatusCode(code).String(), func(t *testing.T) {
			s := newFakeServer(t)
			s.onHello = func(fc *fakeConn) { go fc.close(code) }
			c := start(t, s, nil)
			err := c.wait(t)
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != code || ce.Retry() {
				t.Fatalf("Run returned %v", err)
			}
			if n := s.connectCount(); n != 1 {
				t.Errorf("%d connections", n)
			}
			if _, err := c.Send(context.Background(), Send{Conv: 1, Text: "x"}); !errors.Is(err, ErrClosed) {
				t.Errorf("Send after Run returned: %v", err)
			}
		})
	}
}

func TestReconnectEventHonoured(t *testing.T) {
	s := newFakeServer(t)
	const delay = 300 * time.Millisecond
	var closedAt atomic.Int64
	s.onHello = func(fc *fakeConn) {
		if fc.n == 1 {
			go func() {
				fc.send(event(EventReconnect, ReconnectEvent{DelayMS: delay.Milliseconds()}))
				closedAt.Store(time.Now().UnixNano())
				fc.close(CloseDraining)
			}()
		}
	}
	c := start(t, s, nil)
	checkFor(t, wait, "a second connection", func() bool { return s.connectCount() == 2 })
	s.mu.Lock()
	gap := s.connects[1].Sub(time.Unix(0, closedAt.Load()))
	s.mu.Unlock()
	if gap < delay {
		t.Errorf("reconnected after %v, before the delay of %v", gap, delay)
	}
	if len(c.rec.eventsOf(EventReconnect)) != 1 {
		t.Error("no reconnect event")
	}
}

func TestUnavailableWhileDrainingIsResent(t *testing.T) {
	s := newFakeServer(t)
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type != "send" || fc.n != 1 {
			return false
		}
		fc.send(event(EventReconnect, ReconnectEvent{DelayMS: 10}), errReply(f.ID, CodeUnavailable))
		go fc.close(CloseDraining)
		return true
	}
	c := start(t, s, nil)
	sent, err := c.Send(context.Background(), Send{Conv: 1, Text: "x"})
	if err != nil || sent.Seq != 1 {
		t.Fatalf("%+v %v", sent, err)
	}
	if n := s.connectCount(); n != 2 {
		t.Errorf("%d connections", n)
	}
}

func TestRateLimitedWithoutIDIsResent(t *testing.T) {
	s := newFakeServer(t)
	var refused atomic.Bool
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type != "direct" || refused.Swap(true) {
			return false
		}
		fc.send(map[string]any{"type": "reply", "id": "", "error": map[string]any{"code": CodeRateLimited, "message": "slow down", "retry_after_ms": 5}})
		return true
	}
	c := start(t, s, nil)
	conv, err := c.Direct(context.Background(), 9)
	if err != nil || conv.Peer != 9 {
		t.Fatalf("%+v %v", conv, err)
	}
	if n := len(s.framesOf("direct")); n != 2 {
		t.Errorf("%d direct frames", n)
	}
}

func TestUpgradeRefused(t *testing.T) {
	s := newFakeServer(t)
	s.checkToken = func(string) string { return CodeUnauthenticated }
	c := start(t, s, func(cfg *Config) { cfg.HeaderAuth = true })
	var e *Error
	if err := c.wait(t); !errors.As(err, &e) || e.Code != CodeUnauthenticated || e.HTTPStatus != 401 {
		t.Fatalf("Run returned %v", err)
	}
}

func TestAuthFrameRefused(t *testing.T) {
	s := newFakeServer(t)
	s.checkToken = func(tok string) string {
		switch tok {
		case "old":
			return CodeTokenExpired
		case "revoked":
			return CodeUnauthenticated
		}
		return ""
	}
	tokens := []string{"old", "revoked"}
	var n atomic.Int32
	c := start(t, s, func(cfg *Config) {
		cfg.Token = func(context.Context) (string, error) { return tokens[n.Add(1)-1], nil }
	})
	var e *Error
	if err := c.wait(t); !errors.As(err, &e) || e.Code != CodeUnauthenticated {
		t.Fatalf("Run returned %v", err)
	}
	if n.Load() != 2 {
		t.Errorf("%d tokens fetched", n.Load())
	}
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	if len(c.rec.errs) != 2 || !isCode(c.rec.errs[0], CodeTokenExpired) {
		t.Errorf("reasons %v", c.rec.errs)
	}
}

func TestRefreshEventReauthenticates(t *testing.T) {
	s := newFakeServer(t)
	var n atomic.Int32
	c := start(t, s, func(cfg *Config) {
		cfg.Token = func(context.Context) (string, error) { return "t" + string(rune('0'+n.Add(1))), nil }
	})
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	s.last().send(event(EventRefresh, RefreshEvent{ExpiresAt: time.Now().Add(time.Minute)}))
	checkFor(t, wait, "a second auth frame", func() bool { return len(s.framesOf("auth")) == 2 })
	if a := s.framesOf("auth")[1]; a.ID == "" || !strings.Contains(string(a.Data), `"t2"`) {
		t.Errorf("auth frame %+v", a)
	}
	if s.connectCount() != 1 {
		t.Error("reconnected")
	}
}

func TestSilentConnectionDropped(t *testing.T) {
	s := newFakeServer(t)
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	s.hook = func(fc *fakeConn, f clientFrame) bool {
		if f.Type == "sync" && fc.n == 1 {
			<-stall // stop reading: pings go unanswered
		}
		return false
	}
	c := start(t, s, func(cfg *Config) { cfg.Heartbeat = 30 * time.Millisecond })
	checkFor(t, wait, "a second connection", func() bool { return s.connectCount() == 2 })
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	// The disconnection says the client dropped it, and why.
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	var ce *CloseError
	if len(c.rec.errs) == 0 || !errors.As(c.rec.errs[0], &ce) || ce.Code != 1006 || !strings.HasPrefix(ce.Reason, DroppedByClient+"no pong within") {
		t.Errorf("disconnected with %v, want a 1006 that names the unanswered ping", c.rec.errs)
	}
}

func TestPresenceWatchRestored(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, nil)
	ps, err := c.Presence(context.Background(), []int64{9, 10}, true)
	if err != nil || len(ps) != 2 || !ps[0].Online {
		t.Fatalf("%v %v", ps, err)
	}
	s.last().close(CloseSlowConsumer)
	checkFor(t, wait, "the watch set again", func() bool { return len(s.framesOf("presence")) == 2 })
	checkFor(t, wait, "presence events", func() bool { return len(c.rec.eventsOf(EventPresence)) == 2 })
	if p, err := c.rec.eventsOf(EventPresence)[0].Presence(); err != nil || p.Account != 9 {
		t.Errorf("%+v %v", p, err)
	}
}

func TestRequestsOnClosedClient(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, nil)
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	rs, err := c.MarkRead(context.Background(), 1, 0)
	if err != nil || rs.Conv != 1 {
		t.Fatalf("%+v %v", rs, err)
	}
	c.Close()
	if err := c.wait(t); !errors.Is(err, ErrClosed) {
		t.Errorf("Run returned %v", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if _, err := New(Config{}).Send(ctx, Send{Conv: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send without Run: %v", err)
	}
}

func BenchmarkDecodeServerMessage_Coalesced4(b *testing.B) {
	msg := []byte(`{"type":"message","data":{"conv":12,"seq":41,"sender":7,"client_id":"k2x","kind":"text","text":"下午三点开会","mentions":[5],"payload":null,"at":"2026-05-01T08:00:00Z"}}` + "\n" +
		`{"type":"read","data":{"conv":12,"account":7,"seq":41}}` + "\n" +
		`{"type":"reply","id":"17","data":{"conv":12,"seq":42,"at":"2026-05-01T08:00:00Z","duplicate":false}}` + "\n" +
		`{"type":"presence","data":{"account":9,"online":false,"last_seen":"2026-05-01T08:00:00Z"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		decodeServerMessage(msg, func(f serverFrame) {
			if f.Type == EventMessage && f.msg == nil {
				decodeMessage(f.Data)
			}
		})
	}
}

// BenchmarkDecodeMessageEvents: four message events in one WebSocket
// message, as a member of a busy group reads them; "general" decodes each
// frame with its data raw and then the data, as the client did before
// decodeFrame's one pass.
func BenchmarkDecodeMessageEvents(b *testing.B) {
	var lines [][]byte
	for i := range 4 {
		lines = append(lines, serverMessageFrame(b, Message{Conv: 12, Seq: int64(41 + i), Sender: 7, ClientID: "lg-3f9a2c-" + strconv.Itoa(i),
			Kind: "text", Text: "run 3f9a2c sent 1764000000123456789 下午三点在三楼会议室开会，请准时参加", At: time.Date(2026, 5, 1, 8, 0, 0, 123456000, time.UTC)}))
	}
	msg := bytes.Join(lines, []byte("\n"))
	b.Run("one-pass", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			decodeServerMessage(msg, func(f serverFrame) {
				if f.msg == nil {
					b.Fatal("not decoded in one pass")
				}
			})
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			for _, l := range lines {
				f, _ := decodeAnyFrame(l)
				if _, err := decodeMessage(f.Data); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkDecodeMessageFrame: message events as the load generator reads
// them, by decodeFrame ("fast": decodeMessageFast) and by json.Unmarshal
// into a messageFrame ("json": decodeFrame's one pass before
// decodeMessageFast); ns/op and allocs/op are per frame. The frames differ
// in client_id and text, as in a load test: with one frame over and over,
// the jsonv2 build would take its strings from its string cache.
func BenchmarkDecodeMessageFrame(b *testing.B) {
	for _, bc := range []struct {
		name     string
		mentions []int64
	}{{"text", nil}, {"mentions", []int64{5, 9, 12}}} {
		var lines [][]byte
		size := 0
		for i := range 1024 {
			tag := "3f9a2c-" + strconv.Itoa(i)
			lines = append(lines, serverMessageFrame(b, Message{Conv: 12, Seq: int64(41 + i), Sender: 7, ClientID: "lg-" + tag, Kind: "text",
				Text: "run " + tag + " sent 1764000000123456789 下午三点在三楼会议室开会，请准时参加", Mentions: bc.mentions,
				At: time.Date(2026, 11, 24, 16, 23, 47, 123456000+i, time.UTC)}))
			size += len(lines[i])
		}
		b.Run(bc.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size / len(lines)))
			i := 0
			for b.Loop() {
				if f, err := decodeFrame(lines[i%len(lines)]); err != nil || f.msg == nil {
					b.Fatal("not decoded in one pass")
				}
				i++
			}
		})
		b.Run(bc.name+"/json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size / len(lines)))
			i := 0
			for b.Loop() {
				var mf messageFrame
				if err := json.Unmarshal(lines[i%len(lines)], &mf); err != nil || mf.Data == nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// serverMessageFrame encodes m as the server writes a message event: the
// envelope's type first, then the message as data.
func serverMessageFrame(tb testing.TB, m Message) []byte {
	tb.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := json.Marshal(struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}{EventMessage, data})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestHistoryQueryEncoding(t *testing.T) {
	tests := []struct {
		q    HistoryQuery
		want string
	}{
		{HistoryQuery{Conv: 1}, `{"conv":1,"after":0}`},
		{HistoryQuery{Conv: 1, After: 40, Limit: 50}, `{"conv":1,"after":40,"limit":50}`},
		{HistoryQuery{Conv: 1, Before: 41}, `{"conv":1,"before":41}`},
		{HistoryQuery{Conv: 1, Latest: true, Limit: 20}, `{"conv":1,"limit":20}`},
	}
	for _, tt := range tests {
		if b, err := json.Marshal(tt.q); err != nil || string(b) != tt.want {
			t.Errorf("%+v encodes as %s (%v), want %s", tt.q, b, err, tt.want)
		}
	}
}

func TestFailoverToTheNextURL(t *testing.T) {
	// The first address refuses connections: the client moves on to the
	// next one and syncs there.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := "ws" + strings.TrimPrefix(dead.URL, "http") + "/v1/ws"
	dead.Close()
	s := newFakeServer(t)
	c := start(t, s, func(cfg *Config) {
		cfg.URL, cfg.URLs = deadURL, []string{s.url()}
	})
	checkFor(t, 5*time.Second, "synced on the second address", func() bool { return c.rec.count(StateSynced) >= 1 })
}

// TestEncodeSync checks the hand-written sync request against what
// encoding/json makes of it.
func TestEncodeSync(t *testing.T) {
	for _, r := range []syncData{
		{},
		{Convs: map[int64]int64{}},
		{Convs: map[int64]int64{1: 0, 42: 7, 9007199254740993: 1 << 40}, Cursor: "YzE6OTU1OjA6MA", Limit: 500},
		{Cursor: "odd \"cursor\" <&> \\ 网格 \x01"},
		{Convs: map[int64]int64{3: 3}, Limit: -1},
		{Cursor: `a"b`}, {Cursor: `a\b`}, {Cursor: "a\tb"},
	} {
		b := encodeSync(r)
		var got syncData
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%+v encoded as %s: %v", r, b, err)
		}
		if len(r.Convs) == 0 {
			r.Convs = nil
		}
		if len(got.Convs) == 0 {
			got.Convs = nil
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("encoded %+v as %s, which decodes to %+v", r, b, got)
		}
	}
}

// TestSetupStages checks that a connection that does not come up says
// where it failed: no listener (dial), a server that hangs up on the
// upgrade request (upgrade), and one that drops the WebSocket before the
// hello (hello).
func TestSetupStages(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	hangUp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hangUp.Close() })
	go func() {
		for {
			c, err := hangUp.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	drop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err == nil {
			ws.CloseNow()
		}
	}))
	t.Cleanup(drop.Close)

	s := newFakeServer(t)
	for _, c := range []struct{ url, stage string }{
		{"ws://" + refused + "/v1/ws", "dial"},
		{"ws://" + hangUp.Addr().String() + "/v1/ws", "upgrade"},
		{"ws" + strings.TrimPrefix(drop.URL, "http") + "/v1/ws", "hello"},
	} {
		r := start(t, s, func(cfg *Config) { cfg.URL = c.url })
		checkFor(t, wait, c.stage+" failure", func() bool { return r.rec.count(StateDisconnected) > 0 })
		r.rec.mu.Lock()
		var se *SetupError
		if !errors.As(r.rec.errs[0], &se) || se.Stage != c.stage {
			t.Errorf("%s: disconnected with %v, want a set-up error at %s", c.url, r.rec.errs[0], c.stage)
		}
		r.rec.mu.Unlock()
	}
}

// eachDelivery runs f with live messages handed to the dispatcher and with
// Config.DeliverOnReader, which lets the read loop deliver them itself.
func eachDelivery(t *testing.T, f func(t *testing.T, onReader bool)) {
	for _, onReader := range []bool{false, true} {
		t.Run("DeliverOnReader="+strconv.FormatBool(onReader), func(t *testing.T) { f(t, onReader) })
	}
}

// TestDeliverOnReader: with Config.DeliverOnReader, the next message of a
// conversation reaches OnMessage on the read loop's goroutine while the
// dispatcher is idle; while another callback runs, it waits in the queue
// behind it, and a gap is still fetched by the dispatcher, so callbacks
// stay one at a time and in order.
func TestDeliverOnReader(t *testing.T) {
	s := newFakeServer(t)
	release := make(chan struct{})
	var running atomic.Int32 // callbacks running
	var mu sync.Mutex
	var got []int64
	var onReader []bool
	c := start(t, s, func(cfg *Config) {
		cfg.DeliverOnReader = true
		record := cfg.OnEvent
		cfg.OnEvent = func(e Event) {
			if running.Add(1) > 1 {
				t.Error("callbacks overlap")
			}
			if e.Type == "test.block" {
				<-release
			}
			running.Add(-1)
			record(e)
		}
		cfg.OnMessage = func(m Message) {
			if running.Add(1) > 1 {
				t.Error("callbacks overlap")
			}
			mu.Lock()
			got = append(got, m.Seq)
			onReader = append(onReader, inReadLoop())
			mu.Unlock()
			running.Add(-1)
		}
	})
	delivered := func(n int) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == n }
	}
	idle := func() bool { // nothing else is queued for the dispatcher in this test
		if !c.dmu.TryLock() {
			return false
		}
		c.dmu.Unlock()
		return true
	}
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })

	// A conversation the client has not heard of is the dispatcher's.
	s.broadcast(s.add(1, "1"))
	checkFor(t, wait, "message 1", delivered(1))

	// The dispatcher is idle: the read loop delivers.
	checkFor(t, wait, "the dispatcher idle", idle)
	s.broadcast(s.add(1, "2"))
	checkFor(t, wait, "message 2", delivered(2))

	// The dispatcher is in a callback: the message waits for it.
	s.last().send(event("test.block", map[string]any{}))
	checkFor(t, wait, "the blocking callback", func() bool { return running.Load() == 1 })
	s.broadcast(s.add(1, "3"))
	c.Ping(context.Background()) // the read loop has read message 3
	if delivered(3)() {
		t.Error("a message was delivered while another callback ran")
	}
	close(release)
	checkFor(t, wait, "message 3", delivered(3))

	// A gap is the dispatcher's to fetch.
	checkFor(t, wait, "the dispatcher idle", idle)
	s.add(1, "4")
	s.broadcast(s.add(1, "5"))
	checkFor(t, wait, "messages 4 and 5", delivered(5))

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, seqRange(1, 5)) {
		t.Errorf("delivered %v", got)
	}
	if want := []bool{false, true, false, false, false}; !slices.Equal(onReader, want) {
		t.Errorf("delivered on the read loop: %v, want %v", onReader, want)
	}
}

// inReadLoop reports whether the calling goroutine is a client's read loop.
func inReadLoop() bool {
	buf := make([]byte, 64<<10)
	return bytes.Contains(buf[:runtime.Stack(buf, false)], []byte("client.(*Client).readLoop"))
}

// TestDeliverOnReaderWaitsItsTurn: the read loop does not deliver ahead of
// what is queued for the dispatcher, nor while a sync is due.
func TestDeliverOnReaderWaitsItsTurn(t *testing.T) {
	var got []int64
	c := New(Config{
		Token:           func(context.Context) (string, error) { return "good", nil },
		Seqs:            map[int64]int64{1: 1},
		DeliverOnReader: true,
		OnMessage:       func(m Message) { got = append(got, m.Seq) },
	})
	c.runCtx = context.Background()
	c.q.push(item{kind: itemEvent, ev: &Event{Type: EventRead}})
	if c.deliverOnReader(&Message{Conv: 1, Seq: 2}) {
		t.Error("delivered ahead of a queued event")
	}
	c.q.take(nil)
	c.needSync = true
	if c.deliverOnReader(&Message{Conv: 1, Seq: 2}) {
		t.Error("delivered while a sync is due")
	}
	c.needSync = false
	if !c.deliverOnReader(&Message{Conv: 1, Seq: 2}) || !c.deliverOnReader(&Message{Conv: 1, Seq: 2}) {
		t.Error("the next message, and then its duplicate, were not handled on the read loop")
	}
	if !slices.Equal(got, []int64{2}) || c.Seqs()[1] != 2 {
		t.Errorf("delivered %v, seqs %v", got, c.Seqs())
	}
}

// TestShutdownReportsDisconnected: OnState hears StateDisconnected, with
// ErrClosed, when the client is shut down, after every other callback.
func TestShutdownReportsDisconnected(t *testing.T) {
	s := newFakeServer(t)
	c := start(t, s, nil)
	checkFor(t, wait, "synced", func() bool { return c.rec.count(StateSynced) == 1 })
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	if n := len(c.rec.states); n == 0 || c.rec.states[n-1] != StateDisconnected {
		t.Fatalf("states %v, want StateDisconnected last", c.rec.states)
	}
	if len(c.rec.errs) != 1 || !errors.Is(c.rec.errs[0], ErrClosed) {
		t.Errorf("disconnected with %v, want one, with ErrClosed", c.rec.errs)
	}
}

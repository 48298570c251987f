package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zhangban/zhangban/gateway/client"
)

func TestTagRoundTrip(t *testing.T) {
	at := time.Unix(0, 1_700_000_000_123_456_789)
	sent, n, ok := parseTag(tagText("ab12", at, 42), "ab12")
	if !ok || !sent.Equal(at) || n != 42 {
		t.Fatalf("parseTag = %v %d %v", sent, n, ok)
	}
	for _, text := range []string{"hello", "lg other 1 2", "lg ab12 x 2", "lg ab12 1", "lg ab123 1 2", "lg ab12 1 2 3", "lg ab12  1 2", "lg", "lg ab12", ""} {
		if _, _, ok := parseTag(text, "ab12"); ok {
			t.Errorf("parseTag(%q) accepted", text)
		}
	}
	text := tagText("ab12", at, 42)
	if a := testing.AllocsPerRun(100, func() { parseTag(text, "ab12") }); a != 0 {
		t.Errorf("parseTag allocated %.0f times a call", a)
	}
}

func TestDeliveryCheckIsExact(t *testing.T) {
	a := &wsClient{acct: 1, got: []delivery{{conv: 7, seq: 1}, {conv: 7, seq: 2}, {conv: 8, seq: 3}, {conv: 7, seq: 2}, {conv: 7, seq: 9}}}
	b := &wsClient{acct: 2, got: []delivery{{conv: 7, seq: 1}, {conv: 7, seq: 2}, {conv: 7, seq: 3}}}
	fl := &fleet{clients: []*wsClient{a, b}}
	d := fl.check(expectation{members: map[int64][]*wsClient{7: {a, b}}, seqs: map[int64][]int64{7: {1, 2, 3}}})
	if d.Expected != 6 || d.Delivered != 5 || d.Lost != 1 || d.Duplicated != 1 || d.Unexpected != 1 {
		t.Fatalf("check = %+v", d)
	}
	if len(d.LostList) != 1 || d.LostList[0] != "account 1 conv 7 seq 3" {
		t.Errorf("lost list %v", d.LostList)
	}
	d = fl.check(expectation{members: map[int64][]*wsClient{7: {a, b}}, perConv: 4})
	if d.Expected != 8 || d.Lost != 2 || d.Delivered != 6 {
		t.Fatalf("count check = %+v", d)
	}
}

func TestLoadSeeded(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.jsonl", `{"login":"wslg-2","id":12,"unit":5,"token":"t2","refresh_token":"r2"}
{"login":"wslg-1","id":11,"unit":5,"token":"t1","refresh_token":"r1"}
`)
	st := &wsState{Accounts: []wsAccount{{ID: 11, Member: true, Token: "old"}}}
	n, err := st.loadSeeded(good)
	if err != nil || n != 2 || st.Unit != 5 {
		t.Fatalf("loadSeeded = %d %v, unit %d", n, err, st.Unit)
	}
	if want := []wsAccount{{ID: 11, Member: true, Token: "t1"}, {ID: 12, Member: true, Token: "t2"}}; !slices.Equal(st.Accounts, want) {
		t.Fatalf("accounts %+v, want %+v", st.Accounts, want)
	}
	for name, c := range map[string]struct {
		st   *wsState
		text string
		want string
	}{
		"other unit":   {&wsState{Unit: 4}, `{"login":"wslg-1","id":11,"unit":5,"token":"t"}`, "seed with --unit 4"},
		"other db":     {&wsState{Accounts: []wsAccount{{ID: 99}}}, `{"login":"wslg-1","id":11,"unit":5,"token":"t"}`, "another database"},
		"other prefix": {&wsState{}, `{"login":"lg-1","id":11,"unit":5,"token":"t"}`, "want wslg-1"},
		"gap":          {&wsState{}, `{"login":"wslg-2","id":11,"unit":5,"token":"t"}`, "want wslg-1 … wslg-1"},
		"twice":        {&wsState{}, `{"login":"wslg-1","id":11,"unit":5,"token":"t"}{"login":"wslg-1","id":11,"unit":5,"token":"t"}`, "each once"},
		"no token":     {&wsState{}, `{"login":"wslg-1","id":11,"unit":5}`, "lacks"},
		"empty":        {&wsState{}, ``, "no accounts"},
		"not json":     {&wsState{}, `login,id`, "invalid character"},
	} {
		before := slices.Clone(c.st.Accounts)
		if _, err := c.st.loadSeeded(write(name, c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if !slices.Equal(c.st.Accounts, before) {
			t.Errorf("%s: the state changed", name)
		}
	}
}

// TestDebugAddrIsLoopbackOnly: the profiler of --debug-addr may only listen
// on loopback, like every target.
func TestDebugAddrIsLoopbackOnly(t *testing.T) {
	var ue usageError
	if _, err := parseWSFlags("ws-idle", []string{"--debug-addr", "0.0.0.0:0"}, io.Discard, nil, ""); !errors.As(err, &ue) {
		t.Errorf("--debug-addr 0.0.0.0:0: %v, want a usage error", err)
	}
	if _, err := parseWSFlags("ws-idle", []string{"--debug-addr", "127.0.0.1:0"}, io.Discard, nil, ""); err != nil {
		t.Errorf("--debug-addr 127.0.0.1:0: %v", err)
	}
}

func TestDisconnectReasons(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&client.CloseError{Code: 1006, Reason: client.DroppedByClient + "no pong within 25s"}, "dropped by the client (no pong within 25s)"},
		{&client.CloseError{Code: 1006, Reason: client.DroppedByClient + "a sync failed: context deadline exceeded"}, "dropped by the client (a sync failed)"},
		{&client.CloseError{Code: 1006, Reason: "failed to get reader: use of closed network connection"}, "close 1006 (closed locally)"},
		{&client.CloseError{Code: 4001, Reason: "slow_consumer"}, "close 4001 slow_consumer"},
		{&client.SetupError{Stage: "dial", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, "set-up dial: connection refused"},
		{&client.SetupError{Stage: "upgrade", Err: fmt.Errorf("failed to WebSocket dial: %w", context.DeadlineExceeded)}, "set-up upgrade: timeout"},
		{&client.SetupError{Stage: "hello", Err: &client.CloseError{Code: 1006, Reason: "failed to get reader: EOF"}}, "set-up hello: close 1006 (EOF)"},
	} {
		if got := disconnectReason(c.err); got != c.want {
			t.Errorf("%v: %q, want %q", c.err, got, c.want)
		}
	}
}

// TestCPUPerDelivery: the servers' CPU since the sending began, over the
// deliveries; left out for a shard or an unread target.
func TestCPUPerDelivery(t *testing.T) {
	r := &wsRun{shardN: 1, atSend: []serverSample{{CPU: 10}, {CPU: 4}}, selfAtSend: selfCPU()}
	s := &wsSummary{Servers: []serverSample{{CPU: 12.5}, {CPU: 5.5}}}
	s.Delivered = 1_000_000
	r.cpuPerDelivery(s)
	if s.ServerCPUPerDelivery != 4 {
		t.Errorf("servers: %v us per delivery, want 4", s.ServerCPUPerDelivery)
	}
	if s.LoadgenCPUPerDelivery < 0 {
		t.Errorf("load generator: %v us per delivery", s.LoadgenCPUPerDelivery)
	}
	// A shard's CPU ends when its deliveries were in, not at the report.
	end := &wsRun{shardN: 2, selfAtSend: time.Second, selfAtEnd: 3 * time.Second}
	s = &wsSummary{}
	s.Delivered = 1_000_000
	end.cpuPerDelivery(s)
	if s.LoadgenCPUPerDelivery != 2 {
		t.Errorf("load generator, marked at the end: %v us per delivery, want 2", s.LoadgenCPUPerDelivery)
	}
	for _, tc := range []struct {
		name string
		r    wsRun
	}{
		{"shard", wsRun{shardN: 2, atSend: r.atSend}},
		{"unread target", wsRun{shardN: 1, atSend: []serverSample{{CPU: 10}, {Err: "refused"}}}},
	} {
		s := &wsSummary{Servers: []serverSample{{CPU: 12.5}, {CPU: 5.5}}}
		s.Delivered = 1
		tc.r.cpuPerDelivery(s)
		if s.ServerCPUPerDelivery != 0 {
			t.Errorf("%s: servers %v us per delivery, want none", tc.name, s.ServerCPUPerDelivery)
		}
	}
	if selfCPU() <= 0 {
		t.Error("selfCPU gives no CPU time")
	}
}

// TestSendProcessLines: what the sending process prints is read into the
// sender's counts, the stored sequences and the window; without the
// summary line it is an error.
func TestSendProcessLines(t *testing.T) {
	var sd sender
	var log seqLog
	window, err := readSendLines(strings.NewReader("stored 5 1\nstored 6 1\nstored 5 2\nreply 3000000\nreply 4000000\ndone 1 2 20000000000\n"), &sd, &log)
	if err != nil {
		t.Fatal(err)
	}
	if window != 20*time.Second || sd.sent.Load() != 3 || sd.failed.Load() != 1 || sd.behind.Load() != 2 || len(sd.replyLats) != 2 {
		t.Errorf("window %v, sent %d, failed %d, behind %d, %d reply times", window, sd.sent.Load(), sd.failed.Load(), sd.behind.Load(), len(sd.replyLats))
	}
	if !slices.Equal(log.seqs[5], []int64{1, 2}) || !slices.Equal(log.seqs[6], []int64{1}) {
		t.Errorf("stored %v", log.seqs)
	}
	if _, err := readSendLines(strings.NewReader("stored 5 1\n"), &sd, &log); err == nil {
		t.Error("no error for output without its summary")
	}
}

// holdOpen says it is done, then holds until the end file appears, or
// until its limit when it never does.
func TestHoldOpen(t *testing.T) {
	dir := t.TempDir()
	done, end := filepath.Join(dir, "done"), filepath.Join(dir, "end")
	returned := make(chan time.Time, 1)
	go func() {
		holdOpen(context.Background(), done, end, time.Minute)
		returned <- time.Now()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no done file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-returned:
		t.Fatal("returned before the end file existed")
	case <-time.After(100 * time.Millisecond):
	}
	if err := os.WriteFile(end, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("still holding after the end file was made")
	}
	start := time.Now()
	holdOpen(context.Background(), "", filepath.Join(dir, "never"), 50*time.Millisecond)
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Errorf("without an end file it held %v; want its limit, 50ms", d)
	}
}

package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/zhangban/zhangban/internal/testenv"
)

// chunkConn is a client socket whose bytes arrive in chunks: a Read that
// finds nothing left "blocks", which here means the next chunk arrives; when
// there is none, the reader would wait forever, and the Read fails.
type chunkConn struct {
	net.Conn // nil: anything else gorilla calls would panic
	chunks   [][]byte
	next     int    // first chunk not arrived yet
	data     []byte // arrived, unread
	blocked  bool   // a Read found nothing with nothing to come
}

var errNothingToCome = errors.New("read with nothing more to come")

func (c *chunkConn) arrive() bool {
	if c.next == len(c.chunks) {
		return false
	}
	c.data = append(c.data, c.chunks[c.next]...)
	c.next++
	return true
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 && !c.arrive() {
		c.blocked = true
		return 0, errNothingToCome
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

// readNow is a read that does not wait: it takes what has arrived, and no
// new chunk.
func (c *chunkConn) readNow(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, syscall.EAGAIN
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *chunkConn) Close() error                     { return nil }
func (c *chunkConn) SetDeadline(time.Time) error      { return nil }
func (c *chunkConn) SetReadDeadline(time.Time) error  { return nil }
func (c *chunkConn) SetWriteDeadline(time.Time) error { return nil }

// hijackable is a ResponseWriter whose Hijack returns conn.
type hijackable struct {
	http.ResponseWriter
	conn net.Conn
}

func (h hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// upgradeOver upgrades over conn as the gateway does, through a frameConn.
func upgradeOver(t testing.TB, conn net.Conn) (*gorilla.Conn, *frameConn) {
	r := httptest.NewRequest("GET", "/v1/ws", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	h := &hijacker{ResponseWriter: hijackable{httptest.NewRecorder(), conn}}
	u := gorilla.Upgrader{ReadBufferSize: 512}
	ws, err := u.Upgrade(h, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ws, h.fc
}

// clientFrame encodes a masked frame as a client sends it.
func clientFrame(fin bool, op int, payload []byte, key [4]byte) []byte {
	var b []byte
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, b0, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, b0, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, b0, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

// streamFrom turns fuzz bytes into a client's byte stream (text messages,
// some fragmented with pings between the fragments, pings and pongs) cut
// into arbitrary chunks, and what the server must see from it.
func streamFrom(prog []byte) (chunks [][]byte, messages, pings []string) {
	var stream []byte
	next := func() int {
		if len(prog) == 0 {
			return 0
		}
		b := prog[0]
		prog = prog[1:]
		return int(b)
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for k := 0; len(prog) > 0 && k < 64; k++ {
		op := next()
		size := next() * (1 + next()%300) // up to 76 KiB: 7-, 16- and 64-bit lengths
		size = min(size, maxFrameBytes)
		body := []byte(strings.Repeat(fmt.Sprintf("m%d-", k), size/3+1)[:size])
		key[k%4] ^= byte(op)
		switch op % 5 {
		case 0, 1: // one text frame
			stream = append(stream, clientFrame(true, 1, body, key)...)
			messages = append(messages, string(body))
		case 2: // fragmented, a ping between the fragments
			cut := size / 2
			stream = append(stream, clientFrame(false, 1, body[:cut], key)...)
			p := fmt.Sprintf("inner-%d", k)
			stream = append(stream, clientFrame(true, opPing, []byte(p), key)...)
			pings = append(pings, p)
			stream = append(stream, clientFrame(true, 0, body[cut:], key)...)
			messages = append(messages, string(body))
		case 3:
			p := string(body[:min(len(body), 125)])
			stream = append(stream, clientFrame(true, opPing, []byte(p), key)...)
			pings = append(pings, p)
		case 4:
			stream = append(stream, clientFrame(true, opPong, body[:min(len(body), 125)], key)...)
		}
	}
	for len(stream) > 0 {
		n := min(len(stream), 1+next()*next()%4096)
		chunks = append(chunks, stream[:n])
		stream = stream[n:]
	}
	return chunks, messages, pings
}

// readChunks reads as the gateway does: each time bytes arrive for a
// parked connection, frameConn.each reads every message that came, then the
// connection parks again once its last read drained the socket.
func readChunks(t testing.TB, chunks [][]byte) (messages, pings []string) {
	conn := &chunkConn{}
	ws, fc := upgradeOver(t, conn)
	conn.chunks = chunks
	fc.ctl = func(op int, payload []byte) {
		if op == opPing {
			pings = append(pings, string(payload))
		}
	}
	read := func() error {
		typ, r, err := ws.NextReader()
		if err != nil {
			return err
		}
		if typ != gorilla.TextMessage {
			return fmt.Errorf("message type %d", typ)
		}
		b, err := io.ReadAll(r)
		messages = append(messages, string(b))
		return err
	}
	for conn.arrive() { // bytes arrived: the poller wakes the connection
		for {
			if err := fc.each(true, read); err != nil {
				t.Fatalf("after %d of %d chunks: %v", conn.next, len(chunks), err)
			}
			if fc.pending() {
				t.Fatal("parked with bytes buffered")
			}
			if fc.drained {
				break // parked: only bytes that come later wake it (edge-triggered)
			}
			// The last read filled its room: Conn.park refuses, and the
			// connection reads again.
		}
	}
	if conn.blocked || len(conn.data) > 0 {
		t.Fatalf("parked with %d bytes unread (blocked %v)", len(conn.data), conn.blocked)
	}
	return messages, pings
}

// TestFrameConnReadsOnAfterAFullRead: a read that fills all the room it
// had ends exactly between two frames (they are 128 bytes each), with more
// waiting in the socket; the connection reads again before it parks.
func TestFrameConnReadsOnAfterAFullRead(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	var stream []byte
	for i := range 20 {
		stream = append(stream, clientFrame(true, 1, bytes.Repeat([]byte{'a' + byte(i)}, 122), key)...)
	}
	if len(stream) != 20*128 {
		t.Fatalf("frames of %d bytes", len(stream)/20)
	}
	msgs, _ := readChunks(t, [][]byte{stream})
	if len(msgs) != 20 {
		t.Fatalf("got %d messages, want 20", len(msgs))
	}
}

func FuzzFrameConn(f *testing.F) {
	f.Add([]byte{0, 5, 1, 3, 2, 10, 0, 4, 1, 9, 3, 7, 7, 2, 200, 4})
	f.Add([]byte{2, 255, 255, 1, 1, 3, 20, 0, 4, 4, 1, 0, 1, 1})
	f.Add(bytes.Repeat([]byte{1, 1, 0}, 40))
	f.Fuzz(func(t *testing.T, prog []byte) {
		chunks, wantMsgs, wantPings := streamFrom(prog)
		msgs, pings := readChunks(t, chunks)
		if fmt.Sprint(len(msgs), len(pings)) != fmt.Sprint(len(wantMsgs), len(wantPings)) {
			t.Fatalf("got %d messages and %d pings, want %d and %d", len(msgs), len(pings), len(wantMsgs), len(wantPings))
		}
		for i := range msgs {
			if msgs[i] != wantMsgs[i] {
				t.Fatalf("message %d: %d bytes, want %d", i, len(msgs[i]), len(wantMsgs[i]))
			}
		}
		for i := range pings {
			if pings[i] != wantPings[i] {
				t.Fatalf("ping %d: %q, want %q", i, pings[i], wantPings[i])
			}
		}
	})
}

// TestFrameConnOneByteAtATime is the slowest network: every byte alone.
func TestFrameConnOneByteAtATime(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	var stream []byte
	stream = append(stream, clientFrame(true, 1, []byte(`{"type":"ping"}`), key)...)
	stream = append(stream, clientFrame(true, opPong, nil, key)...)
	stream = append(stream, clientFrame(true, 1, bytes.Repeat([]byte("x"), 300), key)...)
	var chunks [][]byte
	for i := range stream {
		chunks = append(chunks, stream[i:i+1])
	}
	msgs, _ := readChunks(t, chunks)
	if len(msgs) != 2 || msgs[0] != `{"type":"ping"}` || len(msgs[1]) != 300 {
		t.Fatalf("got %q", msgs)
	}
}

// TestIdleConnectionsHoldNoGoroutine: once set up, and while the server's
// pings are answered, no goroutine of the gateway waits on an idle socket,
// and the connections still work.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	e := newEnv(t, 12)
	var rs []*raw
	for i := range 12 {
		rs = append(rs, e.online(i))
	}
	time.Sleep(2500 * time.Millisecond) // heartbeat 1 s: pings went out and pongs came back
	if n := readingGoroutines(); n > 1 {
		t.Fatalf("%d goroutines are reading 12 idle connections", n)
	}
	d, err := e.msg.Direct(context.Background(), e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	reply := rs[0].request("s1", "send", map[string]any{"conv": d.ID, "client_id": "c1", "text": "after parking"})
	if reply["error"] != nil {
		t.Fatalf("send: %v", reply)
	}
	if got := rs[1].expect("message")["data"].(map[string]any)["text"]; got != "after parking" {
		t.Fatalf("a parked connection got %v", got)
	}
}

// corkConn holds what is written to it while corked and writes it all at
// once when uncorked: many frames reach the server in one segment burst.
type corkConn struct {
	net.Conn
	mu   sync.Mutex
	cork bool
	held []byte
}

func (c *corkConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cork {
		c.held = append(c.held, b...)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cork = false
	_, err := c.Conn.Write(c.held)
	c.held = nil
	return err
}

// TestBurstToAParkedConnection: frames that arrive at a parked connection
// all at once, many times what one read takes, are all answered, twice
// over, and the connection parks again with no goroutine left reading. The
// poller's registration is edge-triggered: no wake comes for bytes that
// were already there when a read stopped. Every frame is 128 bytes, so a
// read of 1 KiB ends exactly between two frames, with more waiting, and
// the heartbeat is an hour, so no pong comes to wake a connection parked
// too early.
func TestBurstToAParkedConnection(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	e := newEnvWith(t, 1, time.Hour, time.Hour)
	var cc *corkConn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc = &corkConn{Conn: nc}
		return cc, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}},
		HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dial}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	r := &raw{t: t, c: c, frames: make(chan map[string]any, 10000), done: make(chan struct{})}
	go r.read()
	r.expect("hello")
	// 60 frames in a burst: 7.5 KiB. The rate limit allows bursts of 100
	// and 50 a second.
	const burst, frameBytes = 60, 128
	id := func(round, i int) string { return fmt.Sprintf("burst-%d-frame-%02d", round, i) }
	for round := range 2 {
		time.Sleep(1500 * time.Millisecond) // parked, and the rate limit's tokens back
		cc.mu.Lock()
		cc.cork = true
		cc.mu.Unlock()
		for i := range burst {
			// A client frame of up to 125 bytes has a 6-byte header; JSON
			// allows the padding.
			msg := fmt.Sprintf(`{"type":"ping","id":%q}`, id(round, i))
			r.sendRaw(websocket.MessageText, []byte(msg+strings.Repeat(" ", frameBytes-6-len(msg))))
		}
		cc.mu.Lock()
		if len(cc.held) != burst*frameBytes {
			t.Fatalf("the burst is %d bytes, want %d", len(cc.held), burst*frameBytes)
		}
		cc.mu.Unlock()
		if err := cc.uncork(); err != nil {
			t.Fatal(err)
		}
		for i := range burst {
			if f := r.expectReply(id(round, i)); f["error"] != nil {
				t.Fatalf("ping %d of round %d: %v", i, round, f)
			}
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := readingGoroutines(); n > 0 {
			return fmt.Errorf("%d goroutines still read the connection", n)
		}
		return nil
	})
}

// readingGoroutines counts goroutines inside the gateway's read path.
func readingGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("gateway.(*Conn).readAvailable")) || bytes.Contains(g, []byte("gateway.(*Conn).readLoop")) {
			n++
		}
	}
	return n
}

// deadlineConn records the write deadlines set on it; it has no file
// descriptor, so every write may wait.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.set = append(d.set, t)
	return nil
}

func (d *deadlineConn) Write(b []byte) (int, error) { return len(b), nil }

// TestWriteDeadlineIsSetOnlyWhenItsGrainChanges: gorilla sets the write
// deadline before every write; the socket is told at the write, only when
// the deadline, rounded up to deadlineGrain, moved, and never earlier than
// asked.
func TestWriteDeadlineIsSetOnlyWhenItsGrainChanges(t *testing.T) {
	d := &deadlineConn{}
	f := newFrameConn(d)
	g := deadlineGrain
	base := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) // a multiple of the grain
	steps := []struct {
		at   time.Time
		want time.Time // set on the socket; zero: nothing set
	}{
		{base.Add(g / 10), base.Add(g)},
		{base.Add(g * 9 / 10), time.Time{}},
		{base.Add(g * 3 / 2), base.Add(2 * g)},
		{base.Add(2*g - time.Millisecond), time.Time{}},
		{time.Time{}, time.Time{}}, // cleared: passed on as zero
		{base.Add(g * 8 / 5), base.Add(2 * g)},
	}
	for i, s := range steps {
		n := len(d.set)
		f.SetWriteDeadline(s.at)
		if len(d.set) != n {
			t.Fatalf("step %d: deadline %v set %v before the write", i, s.at, d.set[n:])
		}
		f.Write([]byte("x"))
		switch {
		case s.at.IsZero():
			if len(d.set) != n+1 || !d.set[n].IsZero() {
				t.Fatalf("step %d: clearing the deadline set %v", i, d.set[n:])
			}
		case s.want.IsZero():
			if len(d.set) != n {
				t.Fatalf("step %d: deadline %v set %v again", i, s.at, d.set[n:])
			}
		default:
			if len(d.set) != n+1 || !d.set[n].Equal(s.want) {
				t.Fatalf("step %d: deadline %v set %v, want %v", i, s.at, d.set[n:], s.want)
			}
			if d.set[n].Before(s.at) {
				t.Fatalf("step %d: deadline %v set earlier, at %v", i, s.at, d.set[n])
			}
		}
	}
}

// tcpPair is a loopback TCP connection with small socket buffers, so that
// a client that does not read stalls the server's writes soon.
func tcpPair(t *testing.T) (server *frameConn, client *net.TCPConn) {
	t.Helper()
	sc, cc := tcpConns(t)
	return newFrameConn(sc), cc
}

// tcpConns are tcpPair's sockets.
func tcpConns(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc.(*net.TCPConn).SetReadBuffer(4 << 10)
	sc.(*net.TCPConn).SetWriteBuffer(4 << 10)
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

// TestRoundWritesDoNotWait: a round writer's writes and control frames
// return at once on a socket the client does not read; what the socket
// does not take is written later, in order, and other writes wait for it.
func TestRoundWritesDoNotWait(t *testing.T) {
	f, cl := tcpPair(t)
	var want bytes.Buffer
	chunk := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 16<<10) }

	f.setTry(true)
	start := time.Now()
	// Should a write wait for the client after all, this ends the wait
	// (and the test) by closing the client.
	guard := time.AfterFunc(5*time.Second, func() { cl.SetLinger(0); cl.Close() })
	i := 0
	for ; !f.stalled.Load(); i++ {
		if i > 1000 {
			t.Fatal("16 MB written to a client that does not read, and no stall")
		}
		b := chunk(i)
		if n, err := f.Write(b); err != nil || n != len(b) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
		want.Write(b)
	}
	ping := []byte{0x89, 1, 'p'}
	if _, err := f.Write(ping); err != nil {
		t.Fatal(err)
	}
	want.Write(ping)
	b := chunk(i)
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	want.Write(b)
	if took := time.Since(start); took > time.Second {
		t.Errorf("%d writes to a stalled client took %v", i+2, took)
	}
	guard.Stop()
	f.setTry(false)

	// A writer of the connection's own waits for what the stall holds.
	last := []byte("last")
	wrote := make(chan error, 1)
	go func() { _, err := f.Write(last); wrote <- err }()
	select {
	case err := <-wrote:
		t.Fatalf("a waiting write returned before the stall was written: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	want.Write(last)

	got := make([]byte, want.Len())
	if _, err := io.ReadFull(cl, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the client read the bytes out of order")
	}
	if f.stalled.Load() {
		t.Error("still stalled after the client read everything")
	}
}

// TestStallLimits: a stall holds at most maxStall bytes (beyond, a write
// fails as a slow consumer's); when writing what it holds fails, onFlush
// hears it and later writes fail.
func TestStallLimits(t *testing.T) {
	f, cl := tcpPair(t)
	flushErr := make(chan error, 1)
	f.onFlush = func(err error) { flushErr <- err }
	f.setTry(true)
	big := make([]byte, 64<<10)
	var err error
	for n := 0; err == nil; n += len(big) {
		if n > 64<<20 {
			t.Fatal("64 MB kept for a client that does not read")
		}
		_, err = f.Write(big)
	}
	var ne net.Error
	if !errors.Is(err, errStallFull) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("past the limit: %v, want errStallFull, a timeout", err)
	}

	cl.SetLinger(0)
	cl.Close() // the flusher's write fails
	select {
	case err := <-flushErr:
		if err == nil {
			t.Fatal("onFlush without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("onFlush not called after the client went away")
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, errStalled) {
		t.Fatalf("a write after the flush failed: %v, want errStalled", err)
	}
}

// countedDeadlines is a server socket that counts the write deadlines set
// on it. It keeps its file descriptor (SyscallConn), so frameConn writes
// it as it writes a client's.
type countedDeadlines struct {
	*net.TCPConn
	sets atomic.Int32
}

func (c *countedDeadlines) SetWriteDeadline(t time.Time) error {
	c.sets.Add(1)
	return c.TCPConn.SetWriteDeadline(t)
}

// TestRoundWritesLeaveTheSocketDeadline: a round writer's writes and
// control frames never wait, so they leave the socket's write deadline
// alone, however the deadline gorilla sets before each write moves; a
// write that may wait sets it, once per grain.
func TestRoundWritesLeaveTheSocketDeadline(t *testing.T) {
	sc, cl := tcpConns(t)
	sc.SetWriteBuffer(1 << 20) // room for every write: nothing stalls
	sock := &countedDeadlines{TCPConn: sc}
	f := newFrameConn(sock)
	if f.raw == nil {
		t.Fatal("the socket has no file descriptor")
	}
	go io.Copy(io.Discard, cl)
	write := func(at time.Time, b []byte) {
		t.Helper()
		f.SetWriteDeadline(at) // as gorilla does before every write
		if n, err := f.Write(b); err != nil || n != len(b) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	sets := func(want int32, after string) {
		t.Helper()
		if f.stalled.Load() {
			t.Fatal("stalled: the flusher sets deadlines of its own")
		}
		if n := sock.sets.Load(); n != want {
			t.Fatalf("after %s: %d write deadlines set on the socket, want %d", after, n, want)
		}
	}
	now := time.Now()
	msg := bytes.Repeat([]byte("m"), 100)
	ping := []byte{0x89, 1, 'p'}
	write(now.Add(writeTimeout), msg)
	sets(1, "a write that may wait")

	f.setTry(true)
	for i := range 20 {
		write(now.Add(writeTimeout+time.Duration(i)*deadlineGrain), msg)
		write(now.Add(time.Duration(i)*deadlineGrain), ping)
	}
	f.setTry(false)
	write(now.Add(time.Hour), ping) // a pong, or the sweep's ping
	sets(1, "round writes and control frames")

	write(now.Add(2*writeTimeout), msg)
	write(now.Add(2*writeTimeout), msg)
	sets(2, "two writes that may wait, in a new grain")
}

// TestRoundWritesAfterTheDeadlinePassed: the socket keeps the deadline of
// the last write that could wait; once it has passed (a connection idle
// since), a round writer's writes still go through.
func TestRoundWritesAfterTheDeadlinePassed(t *testing.T) {
	f, cl := tcpPair(t)
	f.SetWriteDeadline(time.Now().Add(-time.Hour))
	var ne net.Error
	if _, err := f.Write([]byte("late")); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a write that may wait, past its deadline: %v, want a timeout", err)
	}
	f.setTry(true)
	f.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := f.Write([]byte("round")); err != nil {
		t.Fatalf("a round write after the socket's deadline passed: %v", err)
	}
	f.setTry(false)
	got := make([]byte, 5)
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cl, got); err != nil || string(got) != "round" {
		t.Fatalf("the client read %q, %v", got, err)
	}
}

// TestWaitingWriteTimesOut: a write that may wait, to a client that does
// not read, fails by its deadline rounded up to the grain, also after
// round writes (which set no deadline) and after a stall whose flusher set
// deadlines of its own.
func TestWaitingWriteTimesOut(t *testing.T) {
	f, cl := tcpPair(t)
	at := time.Now().Add(500 * time.Millisecond)
	due := at.Truncate(deadlineGrain).Add(deadlineGrain) // on the socket
	write := func(b []byte) error {
		f.SetWriteDeadline(at) // as gorilla does before every write
		_, err := f.Write(b)
		return err
	}
	if err := write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	sent := len("first")

	// Round writes the client does not read, until they stall; then it
	// reads them all, and the flusher ends.
	f.setTry(true)
	chunk := make([]byte, 16<<10)
	for i := 0; !f.stalled.Load(); i++ {
		if i > 1000 {
			t.Fatal("16 MB written to a client that does not read, and no stall")
		}
		if err := write(chunk); err != nil {
			t.Fatal(err)
		}
		sent += len(chunk)
	}
	f.setTry(false)
	if _, err := io.ReadFull(cl, make([]byte, sent)); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); f.stalled.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("still stalled after the client read everything")
		}
	}

	// The client reads no more. The flusher's deadline (10 s after it
	// started) is later than the write's: should the write wait for it,
	// the client goes away first, and the write fails otherwise.
	guard := time.AfterFunc(time.Until(due)+3*time.Second, func() { cl.SetLinger(0); cl.Close() })
	defer guard.Stop()
	var err error
	for err == nil {
		err = write(chunk)
	}
	ended := time.Now()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a write to a client that does not read: %v, want a timeout", err)
	}
	if ended.Before(at) {
		t.Errorf("timed out %v before its deadline", at.Sub(ended))
	}
	if late := ended.Sub(due); late > time.Second {
		t.Errorf("timed out %v after the deadline on the socket", late)
	}
}

// TestRoundWriteDoesNotAllocate: the write a round writer makes to the
// socket (writeNow) allocates nothing, since a fan-out makes one for every
// connection.
func TestRoundWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts do not hold under the race detector")
	}
	f, cl := tcpPair(t)
	go io.Copy(io.Discard, cl)
	b := []byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'}
	wrote := 0
	allocs := testing.AllocsPerRun(100, func() {
		n, err := f.writeNow(b)
		if err != nil {
			t.Fatal(err)
		}
		wrote += n
	})
	if allocs != 0 {
		t.Errorf("writeNow allocated %.0f times a call", allocs)
	}
	if wrote == 0 {
		t.Error("nothing was written")
	}
}

package gateway

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// frameConn is the socket under gorilla's reader. It hands gorilla at most
// the rest of the current WebSocket frame, so once a message has been read
// nothing of the next frame sits in gorilla's buffer: whatever arrived
// beyond it stays here, where pending can see it. That is what lets an
// idle connection give its reading to the poller (poll_linux.go) instead of
// keeping a goroutine blocked in a read.
//
// It also takes the client's ping and pong frames itself (ctl), so that a
// pong answering the server's ping does not leave a reader waiting inside
// gorilla for the next data frame. Malformed control frames are passed on
// for gorilla to refuse.
//
// Only one goroutine reads at a time (gorilla's rule), so no lock.
type frameConn struct {
	net.Conn
	raw syscall.RawConn // for the poller; nil when the socket has no file descriptor

	buf    *[frameBufSize]byte // bytes read beyond what was handed out; nil when none
	r, w   int                 // buf[r:w] is unread
	remain uint64              // bytes of the current frame not yet handed to gorilla
	// drained: the last read from the socket got less than it had room
	// for, so the socket held nothing more then. Bytes that came later
	// wake the poller's edge-triggered registration; bytes that were
	// already there when a read filled its room would not.
	drained bool

	ctl func(op int, payload []byte) // ping (9) and pong (10) frames, unmasked; payload is only valid during the call

	// Write deadlines (SetWriteDeadline): the one gorilla set, and the one
	// the socket has, which only a write that may wait needs.
	wdl atomic.Int64 // wanted, rounded up to deadlineGrain, unix nanoseconds; 0: none
	sdl atomic.Int64 // on the socket, as wdl; -1: unknown (the flusher set its own)

	// Writes that must not wait (see Write).
	wmu     sync.Mutex
	try     bool        // (wmu) the writer must not wait: a round writer (writeRound)
	st      *stall      // (wmu) bytes accepted but not yet written; nil when none
	failed  bool        // (wmu) writing what a stall held failed: later writes fail
	stalled atomic.Bool // st != nil: the flusher owns the socket's write deadline
	onFlush func(error) // called when writing what a stall held fails
}

// stall is what a socket that could not take a whole write still has to
// be written, by a goroutine of its own (flush).
type stall struct {
	rest []byte
	done chan struct{} // closed when the flusher ends
}

// maxStall bounds the bytes a stalled socket holds. Past it the write
// fails as a slow consumer's would.
const maxStall = 1 << 20

var (
	errStallFull = &stallError{"the client reads too slowly: over 1 MiB waits for its socket"}
	errStalled   = &stallError{"an earlier write to this socket failed"}
)

type stallError struct{ s string }

func (e *stallError) Error() string   { return e.s }
func (e *stallError) Timeout() bool   { return e == errStallFull }
func (e *stallError) Temporary() bool { return false }

// Write writes b. A round writer (try set) and a control frame never wait
// for the client: what the socket does not take at once is kept and
// written by a goroutine of its own (flush), and later writes of that kind
// are added to it, in order. Any other write first waits for such bytes to
// be written, and only such a write gives the socket its write deadline
// (applyDeadline). A socket without a file descriptor is written as it is.
func (f *frameConn) Write(b []byte) (int, error) {
	if f.raw == nil {
		if err := f.applyDeadline(); err != nil {
			return 0, err
		}
		return f.Conn.Write(b)
	}
	f.wmu.Lock()
	nowait := f.try || isControlFrame(b)
	for f.st != nil && !nowait {
		done := f.st.done
		f.wmu.Unlock()
		<-done
		f.wmu.Lock()
	}
	if f.failed {
		f.wmu.Unlock()
		return 0, errStalled
	}
	if st := f.st; st != nil {
		if len(st.rest)+len(b) > maxStall {
			f.wmu.Unlock()
			return 0, errStallFull
		}
		st.rest = append(st.rest, b...)
		f.wmu.Unlock()
		return len(b), nil
	}
	if !nowait {
		// Only a nowait write starts a stall, and gorilla writes one
		// frame at a time: none starts while this one waits, so the
		// socket's deadline is this write's to set.
		f.wmu.Unlock()
		if err := f.applyDeadline(); err != nil {
			return 0, err
		}
		return f.Conn.Write(b)
	}
	n, err := f.writeNow(b)
	if err == nil && n < len(b) {
		st := &stall{rest: append([]byte(nil), b[n:]...), done: make(chan struct{})}
		f.st = st
		f.stalled.Store(true)
		go f.flush(st)
		n = len(b)
	}
	f.wmu.Unlock()
	return n, err
}

// isControlFrame reports whether b is a whole control frame as gorilla
// writes one (WriteControl: close, ping or pong, in one write). Taking
// something else for one only lets it be kept rather than waited for.
func isControlFrame(b []byte) bool {
	return len(b) >= 2 && b[0] >= 0x88 && b[0] <= 0x8a && int(b[1]) == len(b)-2
}

// writeNow writes what the socket takes without waiting. It writes inside
// RawConn.Control, not RawConn.Write: that one fails once the socket's
// write deadline has passed, and the socket keeps the deadline of the last
// write that could wait (applyDeadline), long past on a connection idle
// since, while a write that cannot wait needs none. Control keeps the file
// descriptor open meanwhile, as Write would; no other write runs at the
// same time (gorilla writes one frame at a time, and the flusher only
// while no write of this kind is made).
func (f *frameConn) writeNow(b []byte) (n int, err error) {
	w := rawWrites.Get().(*rawWrite)
	w.b = b
	cerr := f.raw.Control(w.fn)
	n, err = w.n, w.err
	*w = rawWrite{fn: w.fn}
	rawWrites.Put(w)
	if cerr != nil {
		return n, cerr
	}
	return n, err
}

// rawWrite is one writeNow's call into RawConn.Control. They are pooled,
// closure included: a closure made for each call escapes into Control, and
// with the results it set it was three allocations a write, about half of
// the allocating the gateways did in a fan-out's burst (docs/benchmarks.md,
// session 24).
type rawWrite struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) // w.write
}

var rawWrites = sync.Pool{New: func() any {
	w := new(rawWrite)
	w.fn = w.write
	return w
}}

func (w *rawWrite) write(fd uintptr) {
	for w.n < len(w.b) {
		m, err := syscall.Write(int(fd), w.b[w.n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				w.err = &net.OpError{Op: "write", Net: "tcp", Err: err}
			}
			break
		}
		w.n += m
	}
}

// flush writes what a stall holds, waiting for the client up to
// writeTimeout for each write. It owns the socket's write deadline until
// it ends.
func (f *frameConn) flush(st *stall) {
	for {
		f.wmu.Lock()
		b := st.rest
		st.rest = nil
		if len(b) == 0 {
			f.st = nil
			f.stalled.Store(false)
			f.sdl.Store(-1) // moved here: the next write that may wait sets its own
			f.wmu.Unlock()
			close(st.done)
			return
		}
		f.wmu.Unlock()
		f.Conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := f.Conn.Write(b); err != nil {
			f.wmu.Lock()
			f.failed, f.st = true, nil
			f.stalled.Store(false)
			f.wmu.Unlock()
			close(st.done)
			if f.onFlush != nil {
				f.onFlush(err)
			}
			return
		}
	}
}

// setTry marks the writes that follow as a round writer's (see Write).
func (f *frameConn) setTry(try bool) {
	f.wmu.Lock()
	f.try = try
	f.wmu.Unlock()
}

// deadlineGrain is the precision of write deadlines on the socket: a
// write given 10 s (writeTimeout) gets 10-15 s.
const deadlineGrain = writeTimeout / 2

// SetWriteDeadline records the write deadline, rounded up to
// deadlineGrain; the socket gets it just before a write that may wait
// (applyDeadline), and only when it changed. Gorilla sets it before every
// write, and on the socket each change moves a runtime timer: with the
// deadline set at every write, a fan-out after idleness spent a
// fifteenth of the node's CPU moving each connection's once, for the
// round writers' writes, which never wait and need none (nor do control
// frames). The write timeouts (seconds) need no finer grain.
func (f *frameConn) SetWriteDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.Truncate(deadlineGrain).Add(deadlineGrain).UnixNano()
	}
	f.wdl.Store(d)
	return nil
}

// applyDeadline gives the socket the recorded write deadline unless it has
// it already. It runs before a write that may wait, with no flusher
// running (which owns the deadline until it ends) and none to start
// before that write ends.
func (f *frameConn) applyDeadline() error {
	d := f.wdl.Load()
	if f.sdl.Load() == d {
		return nil
	}
	var t time.Time
	if d != 0 {
		t = time.Unix(0, d)
	}
	if err := f.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	f.sdl.Store(d)
	return nil
}

// frameBufSize holds any frame header (≤ 14 bytes) and any control frame
// (≤ 131 bytes) with room to spare; it is borrowed only while bytes wait.
const frameBufSize = 1024

var frameBufs = sync.Pool{New: func() any { return new([frameBufSize]byte) }}

const (
	opClose = 8
	opPing  = 9
	opPong  = 10
)

func newFrameConn(nc net.Conn) *frameConn {
	f := &frameConn{Conn: nc}
	f.sdl.Store(-1) // unknown: the first write that may wait sets it
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			f.raw = raw
		}
	}
	return f
}

// Read gives gorilla bytes of the current frame only.
func (f *frameConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if f.remain == 0 {
		if _, err := f.advance(true); err != nil {
			return 0, err
		}
	}
	n := len(p)
	if uint64(n) > f.remain {
		n = int(f.remain)
	}
	var got int
	var err error
	if f.r < f.w {
		got = copy(p[:n], f.buf[f.r:f.w])
		f.r += got
		f.release()
	} else {
		got, err = f.Conn.Read(p[:n])
		f.drained = got < n
	}
	f.remain -= uint64(got)
	return got, err
}

// each calls read for every message that has arrived, first reading once
// from the socket, without waiting, if fill is set and nothing is
// buffered; it returns when no byte of another frame is left, so the
// socket can be parked (if drained).
func (f *frameConn) each(fill bool, read func() error) error {
	if fill && !f.pending() {
		if got, err := f.tryFill(); err != nil || !got {
			return err
		}
	}
	for {
		ready, err := f.advance(false)
		if err != nil || !ready {
			return err
		}
		if err := read(); err != nil {
			return err
		}
	}
}

// pending reports whether bytes beyond the last frame handed out have
// arrived.
func (f *frameConn) pending() bool { return f.r < f.w }

// advance takes the ping and pong frames at the head of what has arrived
// and makes the frame after them current. It returns false, without
// reading, when nothing at all is buffered and wait is false; otherwise it
// reads until a whole header (and a whole control frame) is there.
func (f *frameConn) advance(wait bool) (bool, error) {
	for {
		if f.r == f.w && !wait {
			return false, nil
		}
		op, hlen, plen, control, ok := f.header()
		if !ok || (control && uint64(f.w-f.r) < uint64(hlen)+plen) {
			if err := f.fill(); err != nil {
				return false, err
			}
			continue
		}
		if !control {
			f.remain = uint64(hlen) + plen
			if f.remain < plen { // a length no one sends; gorilla refuses it
				f.remain = ^uint64(0)
			}
			return true, nil
		}
		payload := f.buf[f.r+hlen : f.r+hlen+int(plen)]
		mask := f.buf[f.r+hlen-4 : f.r+hlen]
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
		if f.ctl != nil {
			f.ctl(op, payload)
		}
		f.r += hlen + int(plen)
		f.release()
	}
}

// header parses the frame header at the head of the buffer: its opcode,
// header and payload lengths, whether it is a well-formed ping or pong
// (final, no reserved bits, masked, ≤ 125 bytes) that advance takes, and
// whether the whole header has arrived.
func (f *frameConn) header() (op, hlen int, plen uint64, control, ok bool) {
	b := f.buf
	n := f.w - f.r
	if n < 2 {
		return 0, 0, 0, false, false
	}
	b0, b1 := b[f.r], b[f.r+1]
	op = int(b0 & 0x0f)
	hlen = 2
	plen = uint64(b1 & 0x7f)
	switch plen {
	case 126:
		hlen += 2
	case 127:
		hlen += 8
	}
	masked := b1&0x80 != 0
	if masked {
		hlen += 4
	}
	if n < hlen {
		return op, hlen, 0, false, false
	}
	switch plen {
	case 126:
		plen = uint64(binary.BigEndian.Uint16(b[f.r+2:]))
	case 127:
		plen = binary.BigEndian.Uint64(b[f.r+2:])
	}
	control = (op == opPing || op == opPong) && b0&0xf0 == 0x80 && masked && b1&0x7f <= 125
	return op, hlen, plen, control, true
}

// fill reads once into the buffer, waiting for bytes if there are none.
func (f *frameConn) fill() error {
	room := f.room()
	n, err := f.Conn.Read(room)
	return f.filled(n, len(room), err)
}

// tryFill reads once into the buffer what the socket has, without
// waiting; false when it had nothing.
func (f *frameConn) tryFill() (bool, error) {
	room := f.room()
	n, err := f.readNow(room)
	if err == syscall.EAGAIN {
		f.drained = true
		f.release()
		return false, nil
	}
	if err == nil && n == 0 {
		err = io.EOF // the peer closed
	}
	return err == nil, f.filled(n, len(room), err)
}

// room is the buffer's free end, made as large as it can be.
func (f *frameConn) room() []byte {
	if f.buf == nil {
		f.buf = frameBufs.Get().(*[frameBufSize]byte)
		f.r, f.w = 0, 0
	}
	if f.w == len(f.buf) {
		f.w = copy(f.buf[:], f.buf[f.r:f.w])
		f.r = 0
	}
	return f.buf[f.w:]
}

// filled accounts for a read of n bytes into room bytes.
func (f *frameConn) filled(n, room int, err error) error {
	f.w += n
	f.drained = n < room
	if n > 0 {
		return nil
	}
	f.release()
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// nowReader is a socket without a file descriptor that can still read
// without waiting (the tests' simulated sockets).
type nowReader interface {
	readNow(p []byte) (int, error)
}

// readNow reads once what the socket has; syscall.EAGAIN when it has
// nothing.
func (f *frameConn) readNow(p []byte) (int, error) {
	if f.raw == nil {
		if nr, ok := f.Conn.(nowReader); ok {
			return nr.readNow(p)
		}
		return f.Conn.Read(p) // no way not to wait
	}
	var n int
	var rerr error
	err := f.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = syscall.Read(int(fd), p)
			if rerr != syscall.EINTR {
				return true // never wait
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	return n, nil
}

// release returns an emptied buffer to the pool.
func (f *frameConn) release() {
	if f.buf != nil && f.r == f.w {
		frameBufs.Put(f.buf)
		f.buf, f.r, f.w = nil, 0, 0
	}
}

// hijacker gives gorilla's Upgrade the socket wrapped in a frameConn.
type hijacker struct {
	http.ResponseWriter
	fc *frameConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.fc = newFrameConn(nc)
	return h.fc, brw, nil
}

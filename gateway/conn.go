package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
)

// Conn is one device's WebSocket.
type Conn struct {
	g    *Gateway
	ws   *websocket.Conn
	fc   *frameConn // the socket under ws
	addr string     // client address, for the audit log

	// Set by authentication in the read goroutine, before the connection is
	// attached to the hub; read-only afterwards except expires (mu).
	account   int64
	session   int64 // c.mu once attached: a re-auth may change it
	superuser bool
	authID    string // id of the auth frame, answered after attaching
	attached  bool   // registered in the hub

	// Requests in flight (reqContext), canceled when the connection ends;
	// nil when there are none, so an idle connection keeps no context (a
	// context for the whole connection would keep a Done channel and a
	// children's map once its first request had run).
	qmu   sync.Mutex
	reqs  []context.CancelFunc // (qmu) nil entries are free
	nreqs int                  // (qmu) non-nil entries
	ended bool                 // (qmu) the connection ended: new requests start canceled

	lastRead  atomic.Int64 // unix nanoseconds of the last frame or pong received
	lastPing  atomic.Int64 // unix nanoseconds of the last ping written
	lastWrite atomic.Int64 // unix nanoseconds of the last frames written

	mu       sync.Mutex  // guards the fields below; a leaf lock
	queue    []*outFrame // frames waiting for the writer: at most maxQueue, queueSize while the socket holds back
	writing  bool        // a writer goroutine is running, or will when the event batch closes
	closing  bool        // close requested: nothing more is queued
	holding  bool        // before the first sync reply: live events wait in held
	held     []*outFrame // at most maxHeld
	heldLost bool        // held overflowed: the sync reply says more
	// From the first sync reply until seamUntil (seamWindow; the sweep
	// drops it within a tick after): the last sequence the reply gave per
	// conversation.
	// Held messages at or below it are dropped when the reply goes out,
	// and so are those still on their way through the bus (deliver).
	seam        map[int64]int64
	seamUntil   int64     // unix nanoseconds
	expires     time.Time // access token expiry
	refreshSent bool      // a refresh event went out for the current token
	watching    []int64   // presence watches (the hub's index mirrors it)

	// Read goroutine only (and the worker it hands a frame to, while it
	// waits on handled).
	frame   []byte
	handled chan struct{}
	tokens  float64
	tokenAt time.Time
	refused int
	invalid int

	inflight sync.WaitGroup // sends waiting for their commit
	pipeline atomic.Int32   // how many

	// Who reads: a goroutine (readActive), the poller (readParked: no
	// goroutine until bytes arrive), or no one any more (readEnded).
	rmu        sync.Mutex
	rstate     uint8
	lingerOver bool   // the close's linger ran out while a goroutine was reading
	again      bool   // the poller woke the connection while a goroutine was reading
	armed      bool   // registered with the poller (rmu)
	pollID     uint64 // the poller's id for it
}

const (
	readActive = iota
	readParked
	readEnded
)

// actor is who the connection acts for.
func (c *Conn) actor() authz.Actor {
	return authz.Actor{AccountID: c.account, Superuser: c.superuser, ClientAddr: c.addr}
}

// deliver queues an event frame, or holds it until the first sync reply.
// It reports whether the caller must start the connection's writer (go
// c.writeLoop()); the router starts it when the batch of events closes
// (flushBatch).
func (c *Conn) deliver(f *outFrame) (start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if c.synced(f) {
		return false // in the first sync reply already
	}
	if c.holding {
		if len(c.held) < maxHeld {
			c.held = append(c.held, f)
		} else {
			c.heldLost = true
		}
		return false
	}
	return c.queueLocked(f)
}

// synced reports whether f is a message the first sync reply gave (seam).
func (c *Conn) synced(f *outFrame) bool {
	return f.seq > 0 && f.seq <= c.seam[f.conv]
}

// send queues a frame for this connection only.
func (c *Conn) send(v any) {
	data, err := json.Marshal(v)
	if err != nil {
		c.g.log.Error("encoding a frame", "err", err)
		return
	}
	c.queue1(data)
}

// queue1 queues an encoded frame for this connection only.
func (c *Conn) queue1(data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.enqueueLocked(&outFrame{data: data})
}

// enqueueLocked queues a frame and makes sure a writer runs.
func (c *Conn) enqueueLocked(f *outFrame) {
	if c.queueLocked(f) {
		c.g.startWriter(c)
	}
}

// queueLocked queues a frame. If no writer runs, it claims the writer
// (writing = true) and reports that the caller must start it: frames
// queued meanwhile wait for that writer and go out with it, in one write.
func (c *Conn) queueLocked(f *outFrame) (start bool) {
	if c.closing {
		return false
	}
	// A client that does not read is cut once queueSize frames wait for
	// it; one whose socket still takes what is written (its writer is
	// merely behind a burst: the frames of a broadcast batch are queued
	// before the batch's writers start) may have up to maxQueue.
	if n := len(c.queue); n >= maxQueue || (n >= queueSize && c.fc.stalled.Load()) {
		c.g.metrics.slow.Inc()
		c.closeLocked(CloseSlowConsumer, "the outbound queue overflowed; reconnect and sync")
		return false
	}
	c.queue = append(c.queue, f)
	if c.writing {
		return false
	}
	c.writing = true
	return true
}

// writeLoop writes what is queued, coalescing frames into one message,
// and exits when the queue is empty.
func (c *Conn) writeLoop() { c.writeQueued(false) }

// tryWrite writes what is queued without waiting for the client (the
// round and unicast writers). It reports whether it is done; if not, the
// socket held back a write and the caller must hand the writing, and the
// writer role it keeps, to a goroutine that may wait.
func (c *Conn) tryWrite() (done bool) {
	c.fc.setTry(true)
	done = c.writeQueued(true)
	c.fc.setTry(false)
	return done
}

// writeQueued writes until the queue is empty (and gives up the writer
// role) or a write failed. With untilStall it also stops, keeping the
// writer role, when the socket holds back a write; it reports whether it
// gave up the role.
func (c *Conn) writeQueued(untilStall bool) bool {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		if len(batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		if err := c.write(batch); err != nil {
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.abort(err)
			return true
		}
		if untilStall && c.fc.stalled.Load() {
			return false
		}
	}
}

func (c *Conn) write(batch []*outFrame) error {
	now := time.Now()
	c.lastWrite.Store(now.UnixNano())
	c.ws.SetWriteDeadline(now.Add(writeTimeout))
	var buf *bytes.Buffer
	flush := func() error {
		if buf == nil || buf.Len() == 0 {
			return nil
		}
		err := c.ws.WriteMessage(websocket.TextMessage, buf.Bytes())
		c.g.metrics.writes.Inc()
		buf.Reset()
		return err
	}
	for i, f := range batch {
		switch {
		case f.closeMsg != nil:
			if err := flush(); err != nil {
				return err
			}
			c.ws.WriteMessage(websocket.CloseMessage, f.closeMsg)
			c.linger()
			return nil
		case len(batch) == 1 && f.shared:
			if p := f.prepared(); p != nil {
				c.g.metrics.frames.Add(1)
				c.g.metrics.writes.Inc()
				return c.ws.WritePreparedMessage(p)
			}
			fallthrough
		default:
			if buf == nil {
				buf = bufPool.Get().(*bytes.Buffer)
				defer bufPool.Put(buf)
			}
			if buf.Len() > 0 {
				buf.WriteByte('\n')
			}
			buf.Write(f.data)
			c.g.metrics.frames.Add(1)
			if buf.Len() > maxFrameBytes*4 && i < len(batch)-1 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// close sends a close frame after what is already queued and then ends
// the connection. The reason is the code's name (docs/protocol.md).
func (c *Conn) close(code int, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, detail)
}

func (c *Conn) closeLocked(code int, detail string) {
	if c.closing {
		return
	}
	c.closing = true
	c.g.log.Debug("closing a connection", "account", c.account, "code", code, "reason", closeReasons[code], "detail", detail)
	msg := websocket.FormatCloseMessage(code, closeReasons[code])
	if code == CloseSlowConsumer {
		// The queue is full or the writer is stuck: drop what is queued and
		// try to say why without waiting behind it.
		c.queue = nil
		go func() {
			c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			c.linger()
		}()
		return
	}
	c.queue = append(c.queue, &outFrame{closeMsg: msg})
	if !c.writing {
		c.writing = true
		c.g.startWriter(c)
	}
}

// linger gives the peer a moment to answer the close frame, then makes the
// reading end, which releases everything: a reading goroutine by its
// deadline, a parked connection by the timer.
func (c *Conn) linger() {
	c.ws.SetReadDeadline(time.Now().Add(time.Second))
	time.AfterFunc(time.Second+100*time.Millisecond, c.expire)
}

// expire ends a connection that is done with even if it is parked, where
// no read would notice; a reading goroutine ends it itself.
func (c *Conn) expire() {
	c.rmu.Lock()
	parked := c.rstate == readParked
	if parked {
		c.rstate = readEnded
	} else {
		c.lingerOver = true
	}
	c.rmu.Unlock()
	if parked {
		c.finish(errors.New("closed while parked"))
	}
}

// abort ends the connection at once (a failed write).
func (c *Conn) abort(err error) {
	c.mu.Lock()
	c.closing = true
	c.queue = nil
	c.mu.Unlock()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.g.metrics.slow.Inc()
	}
	c.ws.NetConn().Close()
	c.expire()
}

// control takes the client's pings and pongs (frameConn passes them here).
func (c *Conn) control(op int, payload []byte) {
	c.lastRead.Store(time.Now().UnixNano())
	if op == opPing {
		// A pong kept behind a stalled write is not written in time either.
		if err := c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(time.Second)); err != nil || c.fc.stalled.Load() {
			c.g.metrics.pongsFailed.Inc()
		}
	}
}

// readLoop reads frames until the connection ends (where there is no
// poller).
func (c *Conn) readLoop() error {
	for {
		if err := c.readMessage(); err != nil {
			return err
		}
	}
}

// readAvailable runs when bytes have arrived for a parked connection (or
// were already buffered at set-up): it handles every message that came,
// then parks the connection again, so that no goroutine waits on an idle
// socket. With fill it first reads what the socket has, without waiting.
// A read error ends the connection.
func (c *Conn) readAvailable(fill bool) {
	for {
		if err := c.fc.each(fill, c.readMessage); err != nil {
			c.end(err)
			return
		}
		switch c.park() {
		case parked:
			return
		case parkEnded:
			c.end(errors.New("closed"))
			return
		}
		fill = true // parkAgain
	}
}

const (
	parked    = iota
	parkAgain // bytes may be waiting that no wake will announce: read again
	parkEnded // the connection is to end instead
)

// park hands the reading to the poller. The poller's registration is
// edge-triggered, so it wakes the connection for bytes that arrive after
// parking, never for bytes already waiting; park refuses (parkAgain) while
// any may be: when the poller woke the connection during the reading
// (again), or when the last read from the socket filled all the room it
// had (the socket may hold more). The first park registers the socket,
// which reports what waits.
func (c *Conn) park() int {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.lingerOver || c.rstate != readActive {
		return parkEnded
	}
	if c.again || (c.armed && !c.fc.drained) {
		c.again = false
		return parkAgain
	}
	c.rstate = readParked
	if err := c.g.poll.arm(c); err != nil {
		c.rstate = readActive
		return parkEnded
	}
	return parked
}

// wake is the poller's: bytes arrived. A parked connection gets a reading
// goroutine; one that is being read is told to read again before parking.
func (c *Conn) wake() {
	c.rmu.Lock()
	switch c.rstate {
	case readParked:
		c.rstate = readActive
		c.rmu.Unlock()
		go c.readAvailable(true)
		return
	case readActive:
		c.again = true
	}
	c.rmu.Unlock()
}

// end is the reading goroutine's: the connection is over.
func (c *Conn) end(err error) {
	c.rmu.Lock()
	c.rstate = readEnded
	c.rmu.Unlock()
	c.finish(err)
}

// finish releases an ended connection; called once, by whoever set
// readEnded.
func (c *Conn) finish(err error) {
	c.g.log.Debug("connection ended", "account", c.account, "err", err)
	if c.g.poll != nil {
		c.g.poll.forget(c)
	}
	c.release()
	c.g.closed()
}

// readMessage reads one message and has it handled by a worker.
func (c *Conn) readMessage() error {
	typ, r, err := c.ws.NextReader()
	if err != nil {
		return err
	}
	c.lastRead.Store(time.Now().UnixNano())
	if typ != websocket.TextMessage {
		c.close(CloseProtocolViolation, "binary frames are not part of the protocol")
		c.drainAfterClose()
		return errors.New("binary frame")
	}
	// The frame is read into a pooled buffer: nothing keeps its bytes once
	// it has been handled (decoding copies what it keeps).
	buf := messageBufs.Get().(*bytes.Buffer)
	defer messageBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r, maxFrameBytes+1)); err != nil {
		return err
	}
	if buf.Len() > maxFrameBytes {
		c.close(CloseFrameTooLarge, "a frame over 64 KiB")
		c.drainAfterClose()
		return errors.New("frame too large")
	}
	// The channel is borrowed for the hand-over only: an idle connection
	// keeps none.
	c.handled = handledChans.Get().(chan struct{})
	c.frame = buf.Bytes()
	c.g.jobs <- c
	<-c.handled
	handledChans.Put(c.handled)
	c.handled = nil
	return nil
}

// messageBufs are the buffers client frames are read into.
var messageBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// reqContext is the context of one request on c: it ends after d, or
// when the connection does. done must be called once, when the request
// has ended. Sends already queued still commit after the connection ends
// (see messaging.Enqueue); what ends is their waiting.
func (c *Conn) reqContext(d time.Duration) (ctx context.Context, done func()) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.ended {
		cancel()
		return ctx, cancel
	}
	i := 0
	for i < len(c.reqs) && c.reqs[i] != nil {
		i++
	}
	if i == len(c.reqs) {
		c.reqs = append(c.reqs, cancel)
	} else {
		c.reqs[i] = cancel
	}
	c.nreqs++
	return ctx, func() {
		cancel()
		c.qmu.Lock()
		defer c.qmu.Unlock()
		if c.ended {
			return // endRequests took them all
		}
		c.reqs[i] = nil
		if c.nreqs--; c.nreqs == 0 {
			c.reqs = nil
		}
	}
}

// endRequests cancels the requests in flight and every later one.
func (c *Conn) endRequests() {
	c.qmu.Lock()
	reqs := c.reqs
	c.reqs, c.nreqs, c.ended = nil, 0, true
	c.qmu.Unlock()
	for _, cancel := range reqs {
		if cancel != nil {
			cancel()
		}
	}
}

// handledChans are the channels on which workers say a frame was handled.
var handledChans = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// drainAfterClose waits for the peer's close (or the linger deadline).
func (c *Conn) drainAfterClose() {
	c.ws.SetReadDeadline(time.Now().Add(time.Second))
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			return
		}
	}
}

// allow applies the per-connection rate limit (token bucket); a refused
// frame is answered with rate_limited under its id.
func (c *Conn) allow(id string) bool {
	now := time.Now()
	if c.tokenAt.IsZero() {
		c.tokens, c.tokenAt = rateBurst, now
	}
	c.tokens = min(rateBurst, c.tokens+now.Sub(c.tokenAt).Seconds()*ratePerSecond)
	c.tokenAt = now
	if c.tokens >= 1 {
		c.tokens--
		c.refused = 0
		return true
	}
	c.refused++
	c.g.metrics.refused.Inc()
	if c.refused >= maxRefusedInRow {
		c.close(CloseRateLimited, "sustained flooding")
		return false
	}
	if id == "" && c.refused > 1 {
		return false // one error per run is enough for frames nobody waits for
	}
	wait := time.Duration((1 - c.tokens) / ratePerSecond * float64(time.Second))
	c.send(reply{Type: "reply", ID: id, Error: &ReplyError{Code: ErrRateLimited, Message: "more than 50 frames a second", RetryAfterMS: wait.Milliseconds() + 1}})
	return false
}

// authenticate checks a token and, for a live connection, that it belongs
// to the same account.
func (c *Conn) authenticate(token string) (auth.Principal, *ReplyError) {
	ctx, done := c.reqContext(5 * time.Second)
	defer done()
	p, err := c.g.auth.Authenticate(ctx, token)
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		return p, replyErr(ErrTokenExpired, "the access token expired: refresh it over HTTP and send auth again")
	case errors.Is(err, auth.ErrSessionRevoked), errors.Is(err, auth.ErrAccountDisabled):
		return p, replyErr(ErrUnauthenticated, "the session has ended: sign in again")
	case err != nil && errors.Is(err, auth.ErrTokenInvalid):
		return p, replyErr(ErrUnauthenticated, "the access token is not valid")
	case err != nil:
		return p, replyErr(ErrUnavailable, "cannot check the token now; retry")
	}
	return p, nil
}

// setWatching replaces the presence watch list, returning the old one.
func (c *Conn) setWatching(accounts []int64) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.watching
	c.watching = accounts
	return old
}

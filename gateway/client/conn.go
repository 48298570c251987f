package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// conn is one WebSocket connection. Its read loop runs on Run's goroutine.
type conn struct {
	ws    *websocket.Conn
	gen   uint64        // connection number, from 1
	down  chan struct{} // closed when the read loop has ended
	hello Hello         // set before the connection is published

	wmu sync.Mutex // serialises writes, so resent requests keep their order

	reads    atomic.Uint64          // messages and pings received, for the heartbeat
	draining atomic.Bool            // a reconnect event came: unavailable replies wait for the next connection
	synced   atomic.Bool            // a sync finished on this connection
	resend   atomic.Bool            // a resend after an id-less rate_limited error is scheduled
	refresh  atomic.Bool            // a token refresh is running
	dropped  atomic.Pointer[string] // why the client closed the connection itself, if it did

	// tmu guards the timers and seen; never held while waiting on the network.
	tmu     sync.Mutex
	stopped bool        // the connection ended: callbacks do nothing, nothing is re-armed
	beat    *time.Timer // heartbeat
	seen    uint64      // reads at the last heartbeat
	drain   *time.Timer // closes the connection after a reconnect event's delay

	buf bytes.Buffer // the read buffer (read loop only)
}

// connect dials, upgrades and authenticates.
func (c *Client) connect(ctx context.Context) (*conn, error) {
	token, err := c.cfg.Token(ctx)
	if err != nil {
		return nil, errors.Join(errors.New("client: getting a token"), err)
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	c.gen++
	cn := &conn{gen: c.gen, down: make(chan struct{})}
	opts := &websocket.DialOptions{
		HTTPClient:   c.cfg.HTTPClient,
		Subprotocols: []string{Subprotocol},
		OnPingReceived: func(context.Context, []byte) bool {
			cn.reads.Add(1)
			return true
		},
	}
	if c.cfg.HeaderAuth {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	}
	ws, resp, err := websocket.Dial(hctx, c.nextURL(), opts)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, upgradeError(resp)
		}
		stage := "upgrade"
		if ne := (*net.OpError)(nil); errors.As(err, &ne) && ne.Op == "dial" {
			stage = "dial"
		}
		return nil, &SetupError{Stage: stage, Err: err}
	}
	cn.ws = ws
	if p := ws.Subprotocol(); p != Subprotocol {
		ws.CloseNow()
		return nil, stopError{&Error{Code: CodeUnsupportedProtocol, Message: "the server chose subprotocol " + strconv.Quote(p)}}
	}
	ws.SetReadLimit(c.cfg.ReadLimit)
	if !c.cfg.HeaderAuth {
		frame := buildFrame("auth", "auth", mustJSON(map[string]string{"token": token}))
		if err := cn.write(frame); err != nil {
			ws.CloseNow()
			return nil, &SetupError{Stage: "hello", Err: err}
		}
	}
	if err := c.handshake(hctx, cn); err != nil {
		ws.CloseNow()
		var ce *CloseError
		if errors.As(err, &ce) && ce.Code == int(websocket.StatusAbnormalClosure) {
			err = &SetupError{Stage: "hello", Err: err} // not a close code from the server
		}
		return nil, err
	}
	return cn, nil
}

// upgradeError reads the API error of a refused upgrade. 401
// token_expired, 408, 429 and 5xx are transient; other refusals stop Run.
func upgradeError(resp *http.Response) error {
	var body struct {
		Error Error `json:"error"`
	}
	if resp.Body != nil {
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &body)
	}
	e := &body.Error
	e.HTTPStatus = resp.StatusCode
	if e.Code == "" {
		e.Code = http.StatusText(resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized && e.Code == CodeTokenExpired,
		resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode >= 500:
		return e
	}
	return stopError{e}
}

// handshake reads until the hello event (or the auth reply) says the
// connection is authenticated. Frames after it in the same message are
// handled as usual.
func (c *Client) handshake(ctx context.Context, cn *conn) error {
	authed := false
	var ferr error
	for !authed {
		msg, err := cn.read(ctx)
		if err != nil {
			return closeReason(err)
		}
		decodeServerMessage(msg, func(f serverFrame) {
			switch {
			case ferr != nil:
			case authed:
				c.handleFrame(cn, f)
			case f.Type == EventHello:
				authed = true
				json.Unmarshal(f.Data, &cn.hello)
				c.event(f.Type, f.Data)
			case f.Type == "reply" && f.ID == "auth":
				if f.Error != nil {
					ferr = authError(f.Error.err())
					return
				}
				authed = true
				json.Unmarshal(f.Data, &cn.hello)
			default:
				c.log.Debug("frame before authentication", "type", f.Type)
			}
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// authError classifies a refused auth frame: a token the server may
// accept later is retried, anything else stops Run.
func authError(e *Error) error {
	switch e.Code {
	case CodeTokenExpired, CodeUnavailable, CodeRateLimited, CodeInternal:
		return e
	}
	return stopError{e}
}

// closeReason turns a read error into the reason the connection ended.
func closeReason(err error) error {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return &CloseError{Code: int(ce.Code), Reason: ce.Reason}
	}
	return &CloseError{Code: int(websocket.StatusAbnormalClosure), Reason: err.Error()}
}

// serve publishes an authenticated connection and reads it until it ends.
func (c *Client) serve(ctx context.Context, cn *conn) error {
	c.wg.Add(1)
	stopClose := context.AfterFunc(ctx, func() {
		defer c.wg.Done()
		cn.ws.Close(websocket.StatusNormalClosure, "")
	})
	c.startHeartbeat(cn)
	c.publish(cn)
	c.state(StateConnected, nil)
	c.q.push(item{kind: itemConnected, cn: cn})

	err := c.readLoop(cn)
	// A close code the server sent wins: it tells the client what to do.
	var ce *CloseError
	if why := cn.dropped.Load(); why != nil && errors.As(err, &ce) && ce.Code == int(websocket.StatusAbnormalClosure) {
		err = &CloseError{Code: ce.Code, Reason: DroppedByClient + *why}
	}

	c.mu.Lock()
	if c.conn == cn {
		c.conn = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
	close(cn.down)
	cn.ws.CloseNow()
	cn.tmu.Lock()
	cn.stopped = true
	if cn.beat != nil && cn.beat.Stop() {
		c.wg.Done()
	}
	if cn.drain != nil && cn.drain.Stop() {
		c.wg.Done()
	}
	cn.tmu.Unlock()
	if stopClose() {
		c.wg.Done()
	}
	return err
}

// publish makes cn the connection for requests, first writing again, in
// their original order, those that were waiting for a reply.
func (c *Client) publish(cn *conn) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	c.mu.Lock()
	var again []*request
	for _, r := range c.pending {
		if r.bound == nil {
			r.gen = cn.gen
			again = append(again, r)
		}
	}
	c.conn = cn
	close(c.ready)
	c.mu.Unlock()
	sortRequests(again)
	for _, r := range again {
		if cn.write(r.frame) != nil {
			return
		}
	}
}

// readLoop reads messages until the connection ends.
func (c *Client) readLoop(cn *conn) error {
	for {
		msg, err := cn.read(context.Background()) // the connection is closed to stop it
		if err != nil {
			return closeReason(err)
		}
		if bad, err := decodeServerMessage(msg, func(f serverFrame) { c.handleFrame(cn, f) }); bad > 0 {
			c.log.Warn("undecodable frames from the server", "count", bad, "err", err)
		}
		if cn.buf.Cap() > 64<<10 {
			cn.buf = bytes.Buffer{} // do not keep a large sync page's buffer for a long-lived connection
		}
	}
}

// read reads one text message into cn.buf.
func (cn *conn) read(ctx context.Context) ([]byte, error) {
	typ, r, err := cn.ws.Reader(ctx)
	if err != nil {
		return nil, err
	}
	cn.reads.Add(1)
	cn.buf.Reset()
	if _, err := cn.buf.ReadFrom(r); err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		cn.ws.Close(websocket.StatusUnsupportedData, "binary messages are not part of zhangban.v1")
		return nil, errors.New("client: the server sent a binary message")
	}
	return cn.buf.Bytes(), nil
}

// write writes one frame; a failed write ends the connection.
func (cn *conn) write(frame []byte) error {
	// A timer, not Write's context, for the reason heartbeat gives.
	t := time.AfterFunc(writeTimeout, func() { cn.drop("a write took longer than " + writeTimeout.String()) })
	err := cn.ws.Write(context.Background(), websocket.MessageText, frame)
	t.Stop()
	if err != nil {
		cn.drop("a write failed: " + err.Error())
	}
	return err
}

// DroppedByClient begins the Reason of the CloseError with which a client
// reports a connection it closed itself (code 1006): a heartbeat ping
// unanswered, a write or a sync that failed.
const DroppedByClient = "dropped by the client: "

// drop closes the connection from this side, keeping the first reason for
// the disconnection it causes.
func (cn *conn) drop(why string) {
	cn.dropped.CompareAndSwap(nil, &why)
	cn.ws.CloseNow()
}

// handleFrame routes one frame from the read loop. It never blocks on the
// callbacks: events go to the dispatcher's bounded queue.
func (c *Client) handleFrame(cn *conn, f serverFrame) {
	switch f.Type {
	case "reply":
		c.reply(cn, f)
	case EventMessage:
		m := f.msg
		if m == nil {
			dm, err := decodeMessage(f.Data)
			if err != nil {
				c.log.Warn("undecodable message event", "err", err)
				return
			}
			m = &dm
		}
		if !c.deliverOnReader(m) {
			c.q.push(item{kind: itemMessage, msg: m})
		}
	case EventReconnect:
		var r ReconnectEvent
		json.Unmarshal(f.Data, &r)
		c.draining(cn, jitterUp(time.Duration(r.DelayMS)*time.Millisecond))
		c.event(f.Type, f.Data)
	case EventResync:
		c.q.push(item{kind: itemResync})
		c.event(f.Type, f.Data)
	case EventRefresh:
		if cn.refresh.CompareAndSwap(false, true) {
			c.wg.Add(1)
			go c.reauth(cn)
		}
		c.event(f.Type, f.Data)
	default:
		c.event(f.Type, f.Data)
	}
}

// reply completes the request a reply answers.
func (c *Client) reply(cn *conn, f serverFrame) {
	if f.ID == "" {
		if f.Error == nil {
			return
		}
		e := f.Error.err()
		c.log.Warn("error for a frame without id", "err", e)
		if e.Code == CodeRateLimited {
			// A refused frame is answered without its id: write again
			// everything still unanswered on this connection.
			c.resendLater(cn, max(e.RetryAfter, resendDelay))
		}
		return
	}
	c.mu.Lock()
	r := c.pending[f.ID]
	if r == nil {
		c.mu.Unlock()
		return // answered already (a resend), or given up by its caller
	}
	if f.Error != nil && f.Error.Code == CodeUnavailable && r.bound == nil && cn.draining.Load() {
		c.mu.Unlock()
		return // the node is draining: the request goes again on the next connection
	}
	delete(c.pending, f.ID)
	c.mu.Unlock()
	if f.Error != nil {
		r.done <- result{err: f.Error.err()}
	} else {
		r.done <- result{data: f.Data}
	}
}

// draining honours a reconnect event: the connection is closed after the
// delay unless the server closes it first, and the next one is not opened
// before.
func (c *Client) draining(cn *conn, d time.Duration) {
	cn.draining.Store(true)
	c.reconnectAt = time.Now().Add(d)
	cn.tmu.Lock()
	defer cn.tmu.Unlock()
	if cn.stopped || cn.drain != nil {
		return
	}
	c.wg.Add(1)
	cn.drain = time.AfterFunc(d, func() {
		defer c.wg.Done()
		cn.ws.Close(websocket.StatusGoingAway, "reconnecting")
	})
}

// startHeartbeat pings a connection that has been silent for the
// heartbeat interval and drops it when the pong does not come within as
// long again.
func (c *Client) startHeartbeat(cn *conn) {
	iv := c.cfg.Heartbeat
	if iv < 0 {
		return
	}
	if iv == 0 {
		iv = time.Duration(cn.hello.HeartbeatMS) * time.Millisecond
	}
	if iv <= 0 {
		iv = defaultHeartbeat
	}
	cn.tmu.Lock()
	defer cn.tmu.Unlock()
	cn.seen = cn.reads.Load()
	c.wg.Add(1)
	cn.beat = time.AfterFunc(iv, func() { c.heartbeat(cn, iv) })
}

func (c *Client) heartbeat(cn *conn, iv time.Duration) {
	defer c.wg.Done()
	cn.tmu.Lock()
	silent := !cn.stopped && cn.reads.Load() == cn.seen
	cn.tmu.Unlock()
	if silent {
		// Not under tmu: the read loop, which reads the pong, may need it.
		// The time limit is a timer of ours, not Ping's context: a Ping
		// whose context ends closes the connection itself, and the read
		// loop would report that close before drop gave the reason.
		why := "no pong within " + iv.String()
		t := time.AfterFunc(iv, func() { cn.drop(why) })
		err := cn.ws.Ping(context.Background())
		t.Stop()
		if err != nil {
			c.log.Info("the connection is silent; dropping it", "err", err)
			cn.drop(why)
			return
		}
	}
	cn.tmu.Lock()
	defer cn.tmu.Unlock()
	if cn.stopped {
		return
	}
	cn.seen = cn.reads.Load()
	c.wg.Add(1)
	cn.beat.Reset(iv)
}

// reauth answers a refresh event: a new token, sent in an auth frame on
// the same connection.
func (c *Client) reauth(cn *conn) {
	defer c.wg.Done()
	defer cn.refresh.Store(false)
	ctx := c.runCtx
	token, err := c.cfg.Token(ctx)
	if err != nil {
		c.log.Warn("refreshing the token", "err", err)
		return
	}
	if _, err := c.roundTrip(ctx, "auth", map[string]string{"token": token}, cn); err != nil && !errors.Is(err, errConnLost) {
		c.log.Warn("re-authenticating", "err", err)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

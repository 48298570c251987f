package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/zhangban/zhangban/messaging"
)

// handle runs one client frame.
func (c *Conn) handle(buf []byte) {
	f, rerr := DecodeFrame(buf)
	if !c.allow(f.ID) {
		return
	}
	if rerr != nil {
		c.invalid++
		c.g.metrics.invalid.Inc()
		c.send(reply{Type: "reply", ID: f.ID, Error: rerr})
		if c.invalid >= 20 {
			c.close(CloseProtocolViolation, "repeated invalid frames")
		}
		return
	}
	c.invalid = 0
	var data any
	switch f.Type {
	case "ping":
		data, rerr = map[string]time.Time{"at": time.Now().UTC()}, decodeData(f, &struct{}{})
	case "auth":
		data, rerr = c.reauth(f)
	case "sync":
		c.sync(f) // replies itself, atomically with releasing held events
		return
	case "send":
		c.pipelineSend(f)
		return
	case "history":
		data, rerr = c.history(f)
	case "read":
		data, rerr = c.markRead(f)
	case "ack":
		var a convSeq
		if rerr = decodeData(f, &a); rerr == nil {
			c.g.metrics.acks.Inc()
			if f.ID == "" {
				return
			}
			data = struct{}{}
		}
	case "direct":
		var d directData
		if rerr = decodeData(f, &d); rerr == nil {
			data, rerr = c.call(func(ctx context.Context) (any, error) { return c.g.msg.Direct(ctx, c.actor(), d.Account) })
		}
	case "presence":
		data, rerr = c.presenceQuery(f)
	default:
		rerr = replyErr(ErrUnknownType, "no operation "+quote(f.Type)+" in protocol "+Subprotocol)
	}
	if rerr == nil && f.ID == "" {
		return
	}
	c.send(reply{Type: "reply", ID: f.ID, Data: data, Error: rerr})
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// call runs a domain call with a request deadline and maps its error.
func (c *Conn) call(fn func(ctx context.Context) (any, error)) (any, *ReplyError) {
	ctx, done := c.reqContext(15 * time.Second)
	defer done()
	v, err := fn(ctx)
	if err != nil {
		return nil, c.g.replyError(err)
	}
	return v, nil
}

// replyError maps domain errors to protocol error codes (the one place).
func (g *Gateway) replyError(err error) *ReplyError {
	var inv *messaging.InvalidError
	switch {
	case errors.As(err, &inv):
		return replyErr(ErrInvalidArgument, inv.Error())
	case errors.Is(err, messaging.ErrNotFound):
		return replyErr(ErrNotFound, err.Error())
	case errors.Is(err, messaging.ErrForbidden):
		return replyErr(ErrForbidden, err.Error())
	case errors.Is(err, messaging.ErrConflict):
		return replyErr(ErrConflict, err.Error())
	case errors.Is(err, messaging.ErrTooLarge):
		return replyErr(ErrTooLarge, err.Error())
	case errors.Is(err, messaging.ErrInvalidCursor):
		return replyErr(ErrInvalidCursor, err.Error())
	case errors.Is(err, messaging.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return replyErr(ErrUnavailable, "try again shortly: "+err.Error())
	}
	g.log.Error("request failed", "err", err)
	return replyErr(ErrInternal, "internal error; retry later")
}

func (c *Conn) reauth(f Frame) (any, *ReplyError) {
	var a authData
	if rerr := decodeData(f, &a); rerr != nil {
		return nil, rerr
	}
	p, rerr := c.authenticate(a.Token)
	if rerr != nil {
		return nil, rerr
	}
	if p.AccountID != c.account {
		return nil, replyErr(ErrInvalidArgument, "a connection stays with the account it signed in as; open another one")
	}
	c.mu.Lock()
	c.expires, c.refreshSent, c.session = p.ExpiresAt, false, p.SessionID
	c.mu.Unlock()
	return c.hello(), nil
}

// sync answers a sync and, on the first one, releases the live events held
// since the connection opened, minus those the reply already contains.
func (c *Conn) sync(f Frame) {
	var r messaging.SyncRequest
	var wire syncData
	rerr := decodeData(f, &wire)
	if rerr == nil {
		r.Cursor, r.Limit = wire.Cursor, wire.Limit
		r.Convs = make(map[int64]int64, len(wire.Convs))
		for k, v := range wire.Convs {
			var id int64
			if err := json.Unmarshal([]byte(k), &id); err != nil || id <= 0 {
				rerr = replyErr(ErrInvalidArgument, "convs: keys are conversation ids")
				break
			}
			r.Convs[id] = v
		}
	}
	var res messaging.SyncResult
	if rerr == nil {
		var v any
		v, rerr = c.call(func(ctx context.Context) (any, error) { return c.g.msg.Sync(ctx, c.actor(), r) })
		if rerr == nil {
			res = v.(messaging.SyncResult)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rerr != nil {
		c.enqueueLocked(encodeReply(reply{Type: "reply", ID: f.ID, Error: rerr}))
		return
	}
	if c.heldLost {
		res.More = true // events were dropped while holding: the client syncs again
		c.heldLost = false
	}
	c.enqueueLocked(encodeReply(reply{Type: "reply", ID: f.ID, Data: res}))
	if c.holding {
		c.holding = false
		if len(res.Upto) > 0 {
			c.seam, c.seamUntil = res.Upto, time.Now().Add(seamWindow).UnixNano()
		}
		for _, h := range c.held {
			if !c.synced(h) {
				c.enqueueLocked(h)
			}
		}
		c.held = nil
	}
}

// seamWindow is how long after the first sync reply a live message it
// already contained may still arrive: a message committed before the sync
// read the database whose event was still on its way through the bus.
// Seen under load in TestDeliveryWithoutGapOrDuplicateAtTheSeam: "seq 7
// delivered 2 times".
const seamWindow = 30 * time.Second

func encodeReply(r reply) *outFrame {
	data, err := json.Marshal(r)
	if err != nil {
		data, _ = json.Marshal(reply{Type: "reply", ID: r.ID, Error: replyErr(ErrInternal, "cannot encode the reply")})
	}
	return &outFrame{data: data}
}

// pipelineSend queues a send in order and answers when it commits, so a
// client may have several sends in flight. The answer is written from the
// committer's call-back: no goroutine waits for each send.
func (c *Conn) pipelineSend(f Frame) {
	var r messaging.SendRequest
	if rerr := decodeData(f, &r); rerr != nil {
		c.send(reply{Type: "reply", ID: f.ID, Error: rerr})
		return
	}
	if c.g.draining.Load() {
		c.send(reply{Type: "reply", ID: f.ID, Error: replyErr(ErrUnavailable, "this node is shutting down; send again after reconnecting (same client_id)")})
		return
	}
	start := time.Now()
	ctx, done := c.reqContext(15 * time.Second)
	// Past maxInflight, the worker waits for this send's answer before
	// reading on (back-pressure).
	var answered chan struct{}
	if c.pipeline.Add(1) > maxInflight {
		answered = make(chan struct{})
	}
	c.inflight.Add(1)
	c.g.sends.Add(1)
	answer := func(sent messaging.Sent, err error) {
		done()
		switch {
		case err != nil:
			c.send(reply{Type: "reply", ID: f.ID, Error: c.g.replyError(err)})
		case f.ID != "":
			c.queue1(sentReply(f.ID, sent))
		}
		if err == nil {
			c.g.metrics.sends.Inc()
			c.g.metrics.sendSeconds.Observe(time.Since(start).Seconds())
		}
		c.pipeline.Add(-1)
		c.inflight.Done()
		c.g.sends.Done()
		if answered != nil {
			close(answered)
		}
	}
	if err := c.g.msg.Enqueue(ctx, c.actor(), r, answer); err != nil {
		answer(messaging.Sent{}, err)
	}
	if answered != nil {
		<-answered
	}
}

func (c *Conn) history(f Frame) (any, *ReplyError) {
	var h historyData
	if rerr := decodeData(f, &h); rerr != nil {
		return nil, rerr
	}
	return c.call(func(ctx context.Context) (any, error) {
		var after, before int64
		switch {
		case h.After != nil && h.Before != nil:
			return nil, &messaging.InvalidError{Field: "after", Problem: "give after or before, not both"}
		case h.After != nil:
			after = *h.After
		case h.Before != nil:
			before = *h.Before
		default:
			before = messaging.Latest
		}
		ms, more, err := c.g.msg.History(ctx, c.actor(), h.Conv, after, before, h.Limit)
		if ms == nil {
			ms = []messaging.Message{}
		}
		return map[string]any{"messages": ms, "more": more}, err
	})
}

func (c *Conn) markRead(f Frame) (any, *ReplyError) {
	var r convSeq
	if rerr := decodeData(f, &r); rerr != nil {
		return nil, rerr
	}
	return c.call(func(ctx context.Context) (any, error) { return c.g.msg.MarkRead(ctx, c.actor(), r.Conv, r.Seq) })
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

type itemKind uint8

const (
	itemMessage   itemKind = iota // a message event
	itemEvent                     // another event, for OnEvent
	itemState                     // a state change, for OnState
	itemConnected                 // a new connection: sync it
	itemFlushAcks                 // the ack timer fired
	itemResync                    // the server says events may have been lost: sync
)

// item is one entry of the dispatcher's queue. It is small (56 bytes): a
// client that falls behind queues many, and the queue's slice grows with
// them.
type item struct {
	kind  itemKind
	msg   *Message // itemMessage
	ev    *Event   // itemEvent
	state State
	err   error
	cn    *conn
}

// queue is the dispatcher's inbox. The read loop never waits on it:
// message and event items beyond max are dropped and the dispatcher syncs
// once it has caught up. Control items (states, connections) are never
// dropped; there are a few per connection attempt.
type queue struct {
	mu       sync.Mutex
	items    []item // (mu)
	live     int    // message and event items in items (mu)
	overflow bool   // live items were dropped since the last take (mu)
	max      int
	wake     chan struct{} // one token: items are waiting
}

func (q *queue) init(max int) {
	q.max = max
	q.wake = make(chan struct{}, 1)
}

func (q *queue) push(it item) {
	q.mu.Lock()
	if it.kind <= itemEvent {
		if q.live >= q.max {
			q.overflow = true
			q.mu.Unlock()
			return
		}
		q.live++
	}
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// empty reports whether nothing is queued.
func (q *queue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) == 0 && !q.overflow
}

// take returns everything queued, leaving spare (emptied) in its place.
func (q *queue) take(spare []item) ([]item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items, overflow := q.items, q.overflow
	q.items, q.live, q.overflow = spare[:0], 0, false
	return items, overflow
}

// dispatch is the dispatcher goroutine: it runs the sync of every new
// connection, applies the delivery rule to live messages and calls the
// callbacks, one at a time, in the order the items came.
func (c *Client) dispatch(ctx context.Context) {
	defer c.wg.Done()
	defer func() {
		if c.ackArmed && c.ackTimer.Stop() {
			c.wg.Done()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return // Run reports the states still queued (finalStates)
		case <-c.q.wake:
		}
		if !c.handleQueued(ctx) {
			return
		}
	}
}

// handleQueued handles what is queued, under dmu. It returns false when
// ctx has ended.
func (c *Client) handleQueued(ctx context.Context) bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	items, overflow := c.q.take(c.itemSpare)
	for i := range items {
		if ctx.Err() != nil {
			c.finalStates(items[i:])
			return false
		}
		c.handleItem(ctx, &items[i])
	}
	clear(items)
	c.itemSpare = nil
	if cap(items) <= 64 {
		c.itemSpare = items[:0]
	}
	if overflow {
		c.log.Warn("the event queue overflowed; syncing", "size", c.q.max)
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(Event{Type: EventOverflow, Data: json.RawMessage(`{}`)})
		}
		c.needSync = true
	}
	if c.needSync {
		if cn := c.current(); cn != nil {
			c.needSync = false
			c.sync(ctx, cn, false)
			if c.needWatch {
				c.needWatch = false
				c.rewatch(ctx, cn)
			}
		}
	}
	c.flushAcks()
	return true
}

// deliverOnReader delivers m on the read loop's goroutine when it is the
// next message of its conversation and the dispatcher has nothing queued
// and nothing running (Config.DeliverOnReader). It reports whether m was
// handled; if not, m goes to the dispatcher's queue. Everything else (a
// gap to fetch, a conversation not heard of, a sync to run) is left to
// the dispatcher, which may wait for replies the read loop reads.
func (c *Client) deliverOnReader(m *Message) bool {
	if !c.cfg.DeliverOnReader || !c.dmu.TryLock() {
		return false
	}
	defer c.dmu.Unlock()
	if c.runCtx.Err() != nil || c.needSync || !c.q.empty() {
		return false
	}
	last, known := c.seqs[m.Conv]
	switch {
	case !known || m.Seq > last+1:
		return false
	case m.Seq == last+1:
		c.deliver(*m)
		c.flushAcks()
	}
	return true // or a duplicate, dropped
}

// finalStates reports the state changes still queued when Run stops, so
// that OnState sees the last StateDisconnected with Run's reason. Messages
// and events still queued are dropped: the next run's sync has them.
func (c *Client) finalStates(rest []item) {
	items, _ := c.q.take(nil)
	items = append(rest, items...)
	for i := range items {
		if items[i].kind == itemState && c.cfg.OnState != nil {
			c.cfg.OnState(items[i].state, items[i].err)
		}
	}
}

func (c *Client) handleItem(ctx context.Context, it *item) {
	switch it.kind {
	case itemMessage:
		c.live(ctx, *it.msg)
	case itemEvent:
		c.cfg.OnEvent(*it.ev)
	case itemState:
		c.cfg.OnState(it.state, it.err)
	case itemConnected:
		c.needSync, c.needWatch = false, false // the first sync sets the watch
		c.sync(ctx, it.cn, true)
	case itemFlushAcks:
		c.ackArmed = false
	case itemResync:
		// Once this batch of items is handled. Presence events may have
		// been lost with the messages: the watch's state is read again.
		c.needSync, c.needWatch = true, true
	}
}

// last is the last processed sequence of conv. Only the holder of dmu
// writes seqs, so it reads without stateMu.
func (c *Client) last(conv int64) int64 { return c.seqs[conv] }

// deliver hands m to OnMessage and then records it as processed.
func (c *Client) deliver(m Message) {
	if c.cfg.OnMessage != nil {
		c.cfg.OnMessage(m)
	}
	c.stateMu.Lock()
	c.seqs[m.Conv] = m.Seq
	c.stateMu.Unlock()
	if c.acks != nil {
		c.acks[m.Conv] = m.Seq
	}
}

// live applies the delivery rule of docs/protocol.md ("Sync", 4) to a
// live message: a duplicate is dropped, the next one delivered, and one
// after a gap waits until the gap is fetched with history.
func (c *Client) live(ctx context.Context, m Message) {
	last, known := c.seqs[m.Conv]
	switch {
	case m.Seq <= last:
		return
	case m.Seq == last+1:
		c.deliver(m)
		return
	}
	if !known {
		c.stateMu.Lock()
		c.seqs[m.Conv] = 0 // the next sync asks for it from the beginning
		c.stateMu.Unlock()
	}
	cn := c.current()
	if cn == nil {
		return // the next connection's sync delivers it
	}
	if !c.fill(ctx, cn, m) {
		return
	}
	if m.Seq > c.last(m.Conv) {
		c.deliver(m)
	}
}

// fill fetches and delivers the messages of m.Conv between the last
// processed one and m. A page that brings nothing new ends it: the rest of
// the gap is not visible to the user (before they joined), and m is
// delivered after it. It returns false when m must wait for a sync.
func (c *Client) fill(ctx context.Context, cn *conn, m Message) bool {
	for {
		last := c.last(m.Conv)
		if last >= m.Seq-1 {
			return true
		}
		q := HistoryQuery{Conv: m.Conv, After: last, Limit: int(min(maxHistory, m.Seq-1-last))}
		if last == 0 {
			// A server that takes "after":0 for no after at all reads
			// backwards from the newest message; before:m means the same to
			// every server. Longer gaps from the beginning are left to a
			// sync.
			q = HistoryQuery{Conv: m.Conv, Before: m.Seq, Limit: maxHistory}
		}
		data, err := c.roundTrip(ctx, "history", q, cn)
		var h historyReply
		if err == nil {
			err = json.Unmarshal(data, &h)
		}
		switch {
		case err == nil:
		case errors.Is(err, errConnLost) || ctx.Err() != nil:
			return false
		case isCode(err, CodeNotFound) || isCode(err, CodeForbidden):
			c.log.Warn("a message for a conversation the user cannot read", "conv", m.Conv, "err", err)
			return false
		default:
			c.log.Warn("fetching a gap failed; syncing", "conv", m.Conv, "err", err)
			c.needSync = true
			return false
		}
		if q.Before != 0 {
			if h.More {
				c.needSync = true
				return false
			}
			for i, j := 0, len(h.Messages)-1; i < j; i, j = i+1, j-1 {
				h.Messages[i], h.Messages[j] = h.Messages[j], h.Messages[i]
			}
		}
		progressed := false
		for _, hm := range h.Messages {
			if hm.Conv == m.Conv && hm.Seq > c.last(m.Conv) {
				c.deliver(hm)
				progressed = true
			}
		}
		if !h.More || !progressed {
			return true
		}
	}
}

// sync runs sync pages on cn until the server has no more, delivering
// their messages in order and dropping what was delivered already. The
// reply is authoritative: a conversation's first message may be past the
// last processed one plus one (messages from before the user joined are
// not theirs to see). first says whether this is the connection's first
// sync, after which StateSynced is reported.
func (c *Client) sync(ctx context.Context, cn *conn, first bool) {
	droppedCursor, reset := false, false
	for {
		c.stateMu.Lock()
		req := syncData{Convs: c.seqs, Cursor: c.cursor, Limit: c.cfg.SyncLimit}
		frame := encodeSync(req) // under the lock: it reads seqs
		c.stateMu.Unlock()
		data, err := c.roundTrip(ctx, "sync", frame, cn)
		var r syncReply
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		switch {
		case err == nil:
		case errors.Is(err, errConnLost) || ctx.Err() != nil:
			return
		case (isCode(err, CodeInvalidCursor) || isCode(err, CodeNotFound)) && req.Cursor != "" && !droppedCursor:
			c.log.Warn("the server refused the sync cursor; syncing without it", "err", err)
			droppedCursor = true
			c.stateMu.Lock()
			c.cursor = ""
			c.stateMu.Unlock()
			continue
		case (isCode(err, CodeInvalidCursor) || isCode(err, CodeNotFound)) && !reset:
			c.log.Warn("the server refused the resume state; syncing from the beginning", "err", err)
			reset = true
			c.stateMu.Lock()
			c.seqs, c.cursor = map[int64]int64{}, ""
			c.stateMu.Unlock()
			if c.cfg.OnEvent != nil {
				c.cfg.OnEvent(Event{Type: EventReset, Data: json.RawMessage(`{}`)})
			}
			continue
		default:
			// Without a sync nothing is guaranteed: start over on a new
			// connection, after back-off.
			c.log.Warn("sync failed; reconnecting", "err", err)
			cn.drop("a sync failed: " + err.Error())
			return
		}
		if c.cfg.OnEvent != nil {
			c.cfg.OnEvent(Event{Type: EventSync, Data: data})
		}
		for _, m := range r.Messages {
			if m.Conv > 0 && m.Seq > c.last(m.Conv) {
				c.deliver(m)
			}
		}
		c.stateMu.Lock()
		c.cursor = r.Cursor
		for _, conv := range r.Conversations {
			if _, ok := c.seqs[conv.ID]; !ok && conv.ID > 0 {
				c.seqs[conv.ID] = 0
			}
		}
		c.stateMu.Unlock()
		if !r.More {
			break
		}
	}
	if !first {
		return
	}
	cn.synced.Store(true)
	c.rewatch(ctx, cn)
	if c.cfg.OnState != nil {
		c.cfg.OnState(StateSynced, nil)
	}
}

// rewatch sets the presence watch list on a new connection and reports
// the state of each account as a presence event.
func (c *Client) rewatch(ctx context.Context, cn *conn) {
	c.mu.Lock()
	accounts := c.watch
	c.mu.Unlock()
	if len(accounts) == 0 {
		return
	}
	data, err := c.roundTrip(ctx, "presence", presenceData{Accounts: accounts, Watch: true}, cn)
	var r presenceReply
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	if err != nil {
		c.log.Warn("restoring the presence watch", "err", err)
		return
	}
	if c.cfg.OnEvent == nil {
		return
	}
	for _, p := range r.Presence {
		c.cfg.OnEvent(Event{Type: EventPresence, Data: mustJSON(p)})
	}
}

// flushAcks sends the pending acks once they are due: AckInterval (less
// up to a half, at random) after the first of them. Acks trail what they
// confirm, and later ones are coalesced with them, so a message that
// reaches every member of a large group at once is not answered by every
// member at once, and a steady stream costs one ack frame an interval.
func (c *Client) flushAcks() {
	if len(c.acks) == 0 || c.ackArmed {
		return
	}
	cn := c.current()
	if cn == nil {
		return // sent on the next connection
	}
	if c.ackDue.IsZero() {
		c.ackDue = time.Now().Add(c.cfg.AckInterval - rand.N(c.cfg.AckInterval/2+1))
	}
	if wait := time.Until(c.ackDue); wait > 0 {
		c.ackArmed = true
		c.wg.Add(1)
		f := func() {
			defer c.wg.Done()
			c.q.push(item{kind: itemFlushAcks})
		}
		if c.ackTimer == nil {
			c.ackTimer = time.AfterFunc(wait, f)
		} else {
			c.ackTimer.Reset(wait)
		}
		return
	}
	c.ackDue = time.Time{}
	for conv, seq := range c.acks {
		b := append(c.ackBuf[:0], `{"type":"ack","data":{"conv":`...)
		b = strconv.AppendInt(b, conv, 10)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, seq, 10)
		b = append(b, "}}"...)
		c.ackBuf = b
		if c.writeFrame(cn, b) != nil {
			return // the rest go on the next connection
		}
		delete(c.acks, conv)
	}
}

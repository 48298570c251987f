package client

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"
)

// request is a frame waiting for its reply.
type request struct {
	id    string
	n     uint64 // creation order, kept by resends
	frame []byte
	bound *conn       // nil: written again on every new connection; else it fails when that one ends
	gen   uint64      // the connection it was last written on (Client.mu)
	done  chan result // receives the reply once; buffered
}

type result struct {
	data json.RawMessage
	err  error
}

// encoded is request data this package encoded itself (valid JSON).
type encoded []byte

// encodeSync encodes a sync request by hand. Every reconnect sends one,
// and encoding/json's reflection over the map needs a deep stack, which
// the client's goroutine, shrunk by the GC while the connection was
// quiet, grew again each time: 10 % of a load generator's CPU during a
// reconnect storm (docs/benchmarks.md).
func encodeSync(r syncData) encoded {
	b := append(make([]byte, 0, 48+24*len(r.Convs)+len(r.Cursor)), `{"convs":{`...)
	first := true
	for id, seq := range r.Convs {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = strconv.AppendInt(b, id, 10)
		b = append(b, '"', ':')
		b = strconv.AppendInt(b, seq, 10)
	}
	b = append(b, '}')
	if r.Cursor != "" {
		b = append(b, `,"cursor":`...)
		b = appendJSONString(b, r.Cursor)
	}
	if r.Limit != 0 {
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, int64(r.Limit), 10)
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string. Cursors are base64 from
// the server; anything else takes encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// buildFrame encodes a client frame. id and typ need no escaping.
func buildFrame(id, typ string, data []byte) []byte {
	b := make([]byte, 0, len(id)+len(typ)+len(data)+32)
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","type":"`...)
	b = append(b, typ...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	return append(b, '}')
}

func sortRequests(rs []*request) {
	slices.SortFunc(rs, func(a, b *request) int { return cmp.Compare(a.n, b.n) })
}

// roundTrip sends a request and waits for its reply. Without a bound
// connection it waits for one and, if the connection ends before the
// reply, the request is written again on the next one (every operation of
// the protocol is idempotent: send through its client_id). With one, it
// returns errConnLost when that connection ends.
func (c *Client) roundTrip(ctx context.Context, typ string, v any, bound *conn) (json.RawMessage, error) {
	data, ok := v.(encoded)
	var err error
	if !ok {
		if data, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	r := &request{id: id, n: c.nextID, frame: buildFrame(id, typ, data), bound: bound, done: make(chan result, 1)}
	c.pending[id] = r
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	for {
		cn := bound
		if cn == nil {
			if cn, err = c.await(ctx); err != nil {
				return nil, err
			}
		}
		c.writeRequest(cn, r)
		select {
		case res := <-r.done:
			return res.data, res.err
		case <-cn.down:
			select {
			case res := <-r.done:
				return res.data, res.err
			default:
			}
			if bound != nil {
				return nil, errConnLost
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.stop:
			return nil, ErrClosed
		case <-c.done:
			return nil, c.closedErr()
		}
	}
}

// await returns the authenticated connection, waiting for one.
func (c *Client) await(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, ready := c.conn, c.ready
		c.mu.Unlock()
		if cn != nil {
			return cn, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.stop:
			return nil, ErrClosed
		case <-c.done:
			return nil, c.closedErr()
		}
	}
}

// writeRequest writes r on cn unless it was written there already (by
// publish, which writes waiting requests in order before anyone else may).
// A failed write ends the connection, which the caller notices.
func (c *Client) writeRequest(cn *conn, r *request) {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	c.mu.Lock()
	written := r.gen == cn.gen
	r.gen = cn.gen
	c.mu.Unlock()
	if !written {
		cn.write(r.frame)
	}
}

// writeFrame writes a frame without id (ack).
func (c *Client) writeFrame(cn *conn, frame []byte) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.write(frame)
}

// resendLater writes again, after d, every request still unanswered on cn:
// the server answers a frame refused by its rate limit without the frame's
// id, so the client cannot tell which one it was.
func (c *Client) resendLater(cn *conn, d time.Duration) {
	if !cn.resend.CompareAndSwap(false, true) {
		return
	}
	cn.tmu.Lock()
	defer cn.tmu.Unlock()
	if cn.stopped {
		return
	}
	c.wg.Add(1)
	time.AfterFunc(d, func() {
		defer c.wg.Done()
		cn.resend.Store(false)
		cn.wmu.Lock()
		defer cn.wmu.Unlock()
		c.mu.Lock()
		var again []*request
		for _, r := range c.pending {
			if r.gen == cn.gen {
				again = append(again, r)
			}
		}
		c.mu.Unlock()
		sortRequests(again)
		for _, r := range again {
			if cn.write(r.frame) != nil {
				return
			}
		}
	})
}

// call is roundTrip for the public operations: it decodes the reply data
// into out.
func (c *Client) call(ctx context.Context, typ string, v, out any) error {
	data, err := c.roundTrip(ctx, typ, v, nil)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return errors.Join(errors.New("client: undecodable "+typ+" reply"), err)
	}
	return nil
}

// Send sends a message and returns its sequence. It waits for a
// connection; if the connection ends before the reply, the same frame
// (same client_id) goes again on the next one, so the message is stored
// once. An empty ClientID is replaced by a random one (Sent.ClientID).
// When ctx ends first the message may or may not have been stored:
// sending again with Sent.ClientID finds out.
func (c *Client) Send(ctx context.Context, m Send) (Sent, error) {
	if m.ClientID == "" {
		m.ClientID = rand.Text()
	}
	var s Sent
	err := c.call(ctx, "send", m, &s)
	s.ClientID = m.ClientID
	return s, err
}

// History pages a conversation's messages (see HistoryQuery); more says
// whether the page was cut by the limit. Messages from History do not go
// through OnMessage and do not change Seqs.
func (c *Client) History(ctx context.Context, q HistoryQuery) (ms []Message, more bool, err error) {
	var r historyReply
	err = c.call(ctx, "history", q, &r)
	return r.Messages, r.More, err
}

// MarkRead moves the user's read mark in conv up to seq.
func (c *Client) MarkRead(ctx context.Context, conv, seq int64) (ReadState, error) {
	var r ReadState
	err := c.call(ctx, "read", convSeq{Conv: conv, Seq: seq}, &r)
	return r, err
}

// Direct returns the direct conversation with an account, created on
// first use.
func (c *Client) Direct(ctx context.Context, account int64) (Conversation, error) {
	var r Conversation
	err := c.call(ctx, "direct", map[string]int64{"account": account}, &r)
	return r, err
}

// Presence returns the presence of up to 200 accounts (those the user may
// not see are left out). With watch, the accounts replace the watch list:
// their changes arrive as presence events, and the client sets the list
// again, and reports the state of each account as a presence event, on
// every new connection. Presence(ctx, nil, true) clears it.
func (c *Client) Presence(ctx context.Context, accounts []int64, watch bool) ([]Presence, error) {
	if accounts == nil {
		accounts = []int64{}
	}
	var r presenceReply
	err := c.call(ctx, "presence", presenceData{Accounts: accounts, Watch: watch}, &r)
	if err == nil && watch {
		c.mu.Lock()
		c.watch = slices.Clone(accounts)
		c.mu.Unlock()
	}
	return r.Presence, err
}

// Ping sends an application-level ping and waits for the reply.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "ping", struct{}{}, nil)
}

package messaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/event"
)

// SendRequest is a message to send. ClientID makes the send idempotent for
// its sender.
type SendRequest struct {
	Conv     int64           `json:"conv"`
	ClientID string          `json:"client_id"`
	Kind     string          `json:"kind,omitempty"` // default "text"
	Text     string          `json:"text,omitempty"`
	Mentions []int64         `json:"mentions,omitempty"`
	Payload  json.RawMessage `json:"payload,omitempty"`
}

// Sent is the result of a send. A retried send returns the original
// sequence and time, with Duplicate set.
type Sent struct {
	Conv      int64     `json:"conv"`
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	Duplicate bool      `json:"duplicate"`
}

// validClientID: 1-MaxClientID printable ASCII characters without spaces
// (0x21-0x7e). A loop, not a regexp: every send is checked, and the
// regexp was a sixtieth of a busy gateway's CPU (docs/benchmarks.md,
// session 20).
func validClientID(s string) bool {
	if len(s) == 0 || len(s) > MaxClientID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validKind: a lower-case letter, then at most 31 lower-case letters,
// digits, '_' or '.'.
func validKind(s string) bool {
	if len(s) == 0 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// reservedKinds are written by the server only.
var reservedKinds = map[string]bool{"system": true}

// validate checks and normalises a request before it is queued.
func (r *SendRequest) validate() error {
	if r.Conv <= 0 {
		return invalid("conv", "must be a conversation id")
	}
	if !validClientID(r.ClientID) {
		return invalid("client_id", "must be 1-%d printable ASCII characters without spaces", MaxClientID)
	}
	if r.Kind == "" {
		r.Kind = "text"
	}
	if !validKind(r.Kind) {
		return invalid("kind", "must be lower-case letters, digits, '_' or '.', starting with a letter, at most 32")
	}
	if reservedKinds[r.Kind] {
		return invalid("kind", "%q is reserved for the server", r.Kind)
	}
	if !utf8.ValidString(r.Text) || strings.ContainsRune(r.Text, 0) {
		return invalid("text", "is not valid UTF-8 text (NUL characters are not allowed)")
	}
	if n := utf8.RuneCountInString(r.Text); n > MaxTextRunes {
		return tooLarge("text has %d characters; at most %d", n, MaxTextRunes)
	}
	if len(r.Payload) > 0 && string(r.Payload) != "null" {
		if len(r.Payload) > MaxPayloadBytes {
			return tooLarge("payload has %d bytes; at most %d", len(r.Payload), MaxPayloadBytes)
		}
		var obj map[string]any
		if err := json.Unmarshal(r.Payload, &obj); err != nil {
			return invalid("payload", "must be a JSON object")
		}
		if hasNUL(obj) {
			return invalid("payload", "strings must not contain NUL characters")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, r.Payload); err != nil {
			return invalid("payload", "must be a JSON object")
		}
		r.Payload = buf.Bytes()
	} else {
		r.Payload = nil
	}
	if r.Kind == "text" && len(bytes.TrimSpace([]byte(r.Text))) == 0 {
		return invalid("text", "a text message needs text")
	}
	if r.Kind != "text" && r.Payload == nil {
		return invalid("payload", "a %q message needs a payload object", r.Kind)
	}
	if len(r.Mentions) > MaxMentions {
		return tooLarge("%d mentions; at most %d", len(r.Mentions), MaxMentions)
	}
	seen := make(map[int64]bool, len(r.Mentions))
	for _, m := range r.Mentions {
		if m <= 0 {
			return invalid("mentions", "must be account ids")
		}
		if seen[m] {
			return invalid("mentions", "account %d is mentioned twice", m)
		}
		seen[m] = true
	}
	if r.Mentions == nil {
		r.Mentions = []int64{}
	}
	return nil
}

// digest identifies the content, so a retry can be told from a reuse of
// the client id for something else.
func (r *SendRequest) digest() []byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(r.Conv))
	h.Write(n[:])
	h.Write([]byte(r.Kind))
	h.Write([]byte{0})
	h.Write([]byte(r.Text))
	h.Write([]byte{0})
	for _, m := range r.Mentions {
		binary.BigEndian.PutUint64(n[:], uint64(m))
		h.Write(n[:])
	}
	h.Write([]byte{0})
	h.Write(r.Payload)
	return h.Sum(nil)
}

// hasNUL reports whether any string in a decoded JSON value holds a NUL,
// which PostgreSQL cannot store.
func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case map[string]any:
		for k, x := range v {
			if strings.ContainsRune(k, 0) || hasNUL(x) {
				return true
			}
		}
	case []any:
		for _, x := range v {
			if hasNUL(x) {
				return true
			}
		}
	}
	return false
}

// pending is a send waiting for its committer.
type pending struct {
	ctx    context.Context
	sender int64
	req    SendRequest
	digest []byte
	then   func(Sent, error) // called once with the outcome (Enqueue)
	res    Sent
	msg    *Message // the new message, nil for duplicates
	err    error
}

// Send persists a message and publishes it to the conversation's members.
// The sender must be a member. Retries with the same ClientID return the
// first result.
func (s *Service) Send(ctx context.Context, a authz.Actor, r SendRequest) (Sent, error) {
	type outcome struct {
		sent Sent
		err  error
	}
	done := make(chan outcome, 1)
	if err := s.Enqueue(ctx, a, r, func(sent Sent, err error) { done <- outcome{sent, err} }); err != nil {
		return Sent{}, err
	}
	o := <-done
	return o.sent, o.err
}

// Enqueue validates a send and queues it, returning once its place in its
// conversation's queue is fixed, so a connection can pipeline sends and
// keep their order. It blocks while the queue is full (back-pressure).
// Once queued, the send is committed unless ctx ends before its committer
// takes it (then nothing is written and the outcome is ctx's error).
//
// Once Enqueue has returned nil, then is called exactly once with the
// outcome: a connection with thousands of sends in flight keeps no
// goroutine waiting for each. It runs on a committer's goroutine, after
// the message's event was published, so it must be quick and must not
// block.
func (s *Service) Enqueue(ctx context.Context, a authz.Actor, r SendRequest, then func(Sent, error)) error {
	if err := r.validate(); err != nil {
		return err
	}
	p := &pending{ctx: ctx, sender: a.AccountID, req: r, digest: r.digest(), then: then}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrUnavailable
	}
	q := s.shards[uint64(r.Conv)%uint64(len(s.shards))]
	select {
	case q <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop takes whatever is queued, up to max, and commits it in one
// transaction, until the queue is closed and empty. A transaction begins
// gap or more after the one before it began (Options.CommitGap): what
// arrives in between waits in the queue and joins it.
func (s *Service) commitLoop(q chan *pending, max int, gap time.Duration) {
	batch := make([]*pending, 0, max)
	var began time.Time // the last transaction's
	for p := range q {
		if wait := gap - time.Since(began); gap > 0 && wait > 0 {
			time.Sleep(wait)
		}
		batch = append(batch[:0], p)
	more:
		for len(batch) < max {
			select {
			case p, ok := <-q:
				if !ok {
					break more
				}
				batch = append(batch, p)
			default:
				break more
			}
		}
		began = time.Now()
		s.commitBatch(batch)
	}
}

// commitBatch commits a batch; if the batch as a whole fails (a concurrent
// send with the same client id on another node, a lost connection), each
// send is tried on its own so one cannot fail the others.
func (s *Service) commitBatch(batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var live []*pending
	for _, p := range batch {
		if p.ctx.Err() == nil {
			live = append(live, p)
			continue
		}
		p.err = p.ctx.Err() // gave up before anything was written
		p.then(p.res, p.err)
	}
	if len(live) == 0 {
		return
	}
	for _, p := range live {
		p.res, p.msg, p.err = Sent{}, nil, nil
	}
	err := s.commit(ctx, live)
	if err != nil && len(live) > 1 {
		for _, p := range live {
			s.commitBatch([]*pending{p})
		}
		return
	}
	// Every event goes out before any sender hears back, so that a
	// sender's other devices, and the sending one's echo, are on their way
	// when its reply is.
	for _, p := range live {
		if err != nil {
			p.err, p.msg = s.storeError(err), nil
		}
		if p.err == nil && p.msg != nil {
			m := p.msg
			s.publish(p.ctx, event.Event{Type: event.TypeMessage, Conv: m.Conv, Seq: m.Seq, Data: m.appendJSON(nil)})
		}
	}
	for _, p := range live {
		p.then(p.res, p.err)
	}
}

func (s *Service) storeError(err error) error {
	if db.SQLState(err) == db.UniqueViolation { // a concurrent send with this client id won
		return fmt.Errorf("%w: a concurrent send with the same client_id won; retry to get its result", ErrUnavailable)
	}
	return err
}

type sendKey struct {
	sender int64
	client string
}

// commit stores a batch with one call of msg_send (messaging/migrations),
// which checks for earlier sends with the same client ids, locks the
// conversations, checks membership under the lock, assigns sequences and
// stores the messages in one round trip. Results are set on the pendings
// and count only if it returns no error. A client id repeated within the
// batch is answered from its first send, as a retry arriving just after it
// would be.
func (s *Service) commit(ctx context.Context, batch []*pending) error {
	first := make(map[sendKey]*pending, len(batch))
	var unique, repeats []*pending
	for _, p := range batch {
		k := sendKey{p.sender, p.req.ClientID}
		if _, ok := first[k]; ok {
			repeats = append(repeats, p)
			continue
		}
		first[k] = p
		unique = append(unique, p)
	}
	n := len(unique)
	senders, convs := make([]int64, n), make([]int64, n)
	clients, kinds, bodies, mentions := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	payloads, digests := make([]*string, n), make([][]byte, n)
	for i, p := range unique {
		r := &p.req
		senders[i], clients[i], convs[i], kinds[i], bodies[i], digests[i] = p.sender, r.ClientID, r.Conv, r.Kind, r.Text, p.digest
		mentions[i] = int64sLiteral(r.Mentions)
		if r.Payload != nil {
			payload := string(r.Payload)
			payloads[i] = &payload
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT r_i, r_status, r_conv, r_seq, r_at, r_digest, r_bad
		FROM msg_send($1, $2, $3, $4, $5, $6, $7, $8)`, senders, clients, convs, kinds, bodies, mentions, payloads, digests)
	if err != nil {
		return err
	}
	type earlierSend struct {
		sent   Sent
		digest []byte
	}
	earlier := map[sendKey]earlierSend{} // sends before this batch with its client ids
	answered := 0
	for rows.Next() {
		var (
			i              int
			status         string
			conv, seq, bad *int64
			at             *time.Time
			digest         []byte
		)
		if err := rows.Scan(&i, &status, &conv, &seq, &at, &digest, &bad); err != nil {
			rows.Close()
			return err
		}
		if i < 1 || i > n {
			rows.Close()
			return fmt.Errorf("msg_send answered for send %d of %d", i, n)
		}
		p := unique[i-1]
		answered++
		switch status {
		case "sent":
			r := &p.req
			p.res = Sent{Conv: *conv, Seq: *seq, At: *at}
			p.msg = &Message{Conv: r.Conv, Seq: *seq, Sender: p.sender, ClientID: r.ClientID, Kind: r.Kind, Text: r.Text,
				Mentions: r.Mentions, Payload: r.Payload, At: *at}
		case "duplicate", "conflict":
			e := earlierSend{Sent{Conv: *conv, Seq: *seq, At: *at, Duplicate: true}, digest}
			earlier[sendKey{p.sender, p.req.ClientID}] = e
			if status == "conflict" {
				p.err = ErrConflict
			} else {
				p.res = e.sent
			}
		case "not_found":
			p.err = ErrNotFound // not a member: the conversation does not exist for them
		case "bad_mention":
			p.err = invalid("mentions", "account %d is not a member of the conversation", *bad)
		default:
			rows.Close()
			return fmt.Errorf("msg_send answered %q for a send", status)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if answered != n { // never succeed silently: the caller fails the batch
		return fmt.Errorf("msg_send answered %d of %d sends", answered, n)
	}
	for _, p := range repeats {
		k := sendKey{p.sender, p.req.ClientID}
		f := first[k]
		e, before := earlier[k]
		switch {
		case before && bytes.Equal(e.digest, p.digest): // a retry of a send before the batch
			p.res = e.sent
		case before:
			p.err = ErrConflict
		case f.err != nil:
			p.err = f.err
		case !bytes.Equal(f.digest, p.digest):
			p.err = ErrConflict
		default:
			p.res = f.res
			p.res.Duplicate = true
		}
	}
	return nil
}

// appendJSON appends m as json.Marshal encodes it. Every stored message
// is encoded once for its event, and json.Marshal's reflection was a
// fiftieth of a busy node's CPU and a twentieth of what it allocated
// (docs/benchmarks.md, session 16). A message with a payload, or a time
// json.Marshal would refuse, goes through json.Marshal
// (TestMessageAppendJSON, FuzzMessageAppendJSON).
func (m *Message) appendJSON(b []byte) []byte {
	if m.Payload != nil || m.At.Year() < 0 || m.At.Year() > 9999 {
		return append(b, mustJSON(m)...)
	}
	b = slices.Grow(b, 160+len(m.ClientID)+len(m.Kind)+len(m.Text)+21*len(m.Mentions))
	b = append(b, `{"conv":`...)
	b = strconv.AppendInt(b, m.Conv, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, m.Seq, 10)
	b = append(b, `,"sender":`...)
	b = strconv.AppendInt(b, m.Sender, 10)
	b = append(b, `,"client_id":`...)
	b = event.AppendJSONString(b, m.ClientID)
	b = append(b, `,"kind":`...)
	b = event.AppendJSONString(b, m.Kind)
	b = append(b, `,"text":`...)
	b = event.AppendJSONString(b, m.Text)
	b = append(b, `,"mentions":`...)
	if m.Mentions == nil {
		b = append(b, `null`...)
	} else {
		b = append(b, '[')
		for i, id := range m.Mentions {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, id, 10)
		}
		b = append(b, ']')
	}
	b = append(b, `,"payload":null,"at":"`...)
	b = m.At.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// int64sLiteral writes ids as a PostgreSQL array literal: {1,2,3}.
func int64sLiteral(ids []int64) string {
	b := make([]byte, 0, 2+len(ids)*8)
	b = append(b, '{')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, '}'))
}

package messaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

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

var (
	kindPattern     = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,31}$`)
	clientIDPattern = regexp.MustCompile(`^[\x21-\x7e]{1,64}$`)
)

// reservedKinds are written by the server only.
var reservedKinds = map[string]bool{"system": true}

// validate checks and normalises a request before it is queued.
func (r *SendRequest) validate() error {
	if r.Conv <= 0 {
		return invalid("conv", "must be a conversation id")
	}
	if !clientIDPattern.MatchString(r.ClientID) {
		return invalid("client_id", "must be 1-%d printable ASCII characters without spaces", MaxClientID)
	}
	if r.Kind == "" {
		r.Kind = "text"
	}
	if !kindPattern.MatchString(r.Kind) {
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
	done   chan struct{} // closed when res/err are set
	res    Sent
	msg    *Message // the new message, nil for duplicates
	err    error
}

// Send persists a message and publishes it to the conversation's members.
// The sender must be a member. Retries with the same ClientID return the
// first result.
func (s *Service) Send(ctx context.Context, a authz.Actor, r SendRequest) (Sent, error) {
	p, err := s.Enqueue(ctx, a, r)
	if err != nil {
		return Sent{}, err
	}
	return p.Wait()
}

// Pending is a send queued for commit.
type Pending struct{ p *pending }

// Enqueue validates a send and queues it, returning once its place in its
// conversation's queue is fixed, so a connection can pipeline sends and
// keep their order. It blocks while the queue is full (back-pressure).
// Once queued, the send is committed unless ctx ends before its committer
// takes it (then nothing is written and Wait returns ctx's error).
func (s *Service) Enqueue(ctx context.Context, a authz.Actor, r SendRequest) (Pending, error) {
	if err := r.validate(); err != nil {
		return Pending{}, err
	}
	p := &pending{ctx: ctx, sender: a.AccountID, req: r, digest: r.digest(), done: make(chan struct{})}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Pending{}, ErrUnavailable
	}
	q := s.shards[uint64(r.Conv)%uint64(len(s.shards))]
	select {
	case q <- p:
		return Pending{p}, nil
	case <-ctx.Done():
		return Pending{}, ctx.Err()
	}
}

// Wait returns the send's outcome once committed (or failed).
func (p Pending) Wait() (Sent, error) {
	<-p.p.done
	return p.p.res, p.p.err
}

// commitLoop takes whatever is queued, up to max, and commits it in one
// transaction, until the queue is closed and empty.
func (s *Service) commitLoop(q chan *pending, max int) {
	batch := make([]*pending, 0, max)
	for p := range q {
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
		close(p.done)
	}
	if len(live) == 0 {
		return
	}
	for _, p := range live {
		p.res, p.msg, p.err = Sent{}, nil, nil
	}
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error { return s.commitTx(ctx, tx, live) })
	if err != nil && len(live) > 1 {
		for _, p := range live {
			s.commitBatch([]*pending{p})
		}
		return
	}
	for _, p := range live {
		if err != nil {
			p.err = s.storeError(err)
		}
		if p.err == nil && p.msg != nil {
			m := p.msg
			s.publish(p.ctx, event.Event{Type: event.TypeMessage, Conv: m.Conv, Seq: m.Seq, Data: mustJSON(m)})
		}
		close(p.done)
	}
}

func (s *Service) storeError(err error) error {
	if db.SQLState(err) == "23505" { // a concurrent send with this client id won
		return fmt.Errorf("%w: a concurrent send with the same client_id won; retry to get its result", ErrUnavailable)
	}
	return err
}

type sendKey struct {
	sender int64
	client string
}

// commitTx assigns sequences and writes one batch; results are set on the
// pendings and only count if the transaction commits.
func (s *Service) commitTx(ctx context.Context, tx pgx.Tx, batch []*pending) error {
	// 1. Retries of earlier sends, and repeats within the batch.
	senders := make([]int64, len(batch))
	clients := make([]string, len(batch))
	for i, p := range batch {
		senders[i], clients[i] = p.sender, p.req.ClientID
	}
	rows, err := tx.Query(ctx, `SELECT sender_id, client_id, conversation_id, seq, created_at, digest FROM msg_messages
		WHERE (sender_id, client_id) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))`, senders, clients)
	if err != nil {
		return err
	}
	type earlier struct {
		sent   Sent
		digest []byte
	}
	known := map[sendKey]earlier{}
	for rows.Next() {
		var k sendKey
		var e earlier
		if err := rows.Scan(&k.sender, &k.client, &e.sent.Conv, &e.sent.Seq, &e.sent.At, &e.digest); err != nil {
			rows.Close()
			return err
		}
		e.sent.Duplicate = true
		known[k] = e
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	first := map[sendKey]*pending{}
	var fresh, repeats []*pending
	for _, p := range batch {
		k := sendKey{p.sender, p.req.ClientID}
		if e, ok := known[k]; ok {
			if bytes.Equal(e.digest, p.digest) {
				p.res = e.sent
			} else {
				p.err = ErrConflict
			}
			continue
		}
		if _, ok := first[k]; ok {
			repeats = append(repeats, p)
			continue
		}
		first[k] = p
		fresh = append(fresh, p)
	}
	if len(fresh) == 0 {
		return nil
	}

	// 2. Lock the conversations in id order (no deadlock between batches),
	// then check membership under the lock, so a concurrent removal either
	// committed before (and is seen) or waits for us.
	var convs []int64
	for _, p := range fresh {
		convs = append(convs, p.req.Conv)
	}
	slices.Sort(convs)
	convs = slices.Compact(convs)
	if _, err := tx.Exec(ctx, `SELECT id FROM msg_conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE`, convs); err != nil {
		return err
	}
	var pc, pa []int64
	for _, p := range fresh {
		pc, pa = append(pc, p.req.Conv), append(pa, p.sender)
		for _, m := range p.req.Mentions {
			pc, pa = append(pc, p.req.Conv), append(pa, m)
		}
	}
	rows, err = tx.Query(ctx, `SELECT conversation_id, account_id FROM msg_members
		WHERE left_seq IS NULL AND (conversation_id, account_id) IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))`, pc, pa)
	if err != nil {
		return err
	}
	type pair struct{ conv, account int64 }
	member := map[pair]bool{}
	for rows.Next() {
		var k pair
		if err := rows.Scan(&k.conv, &k.account); err != nil {
			rows.Close()
			return err
		}
		member[k] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	ok := fresh[:0:0]
	count := map[int64]int64{}
	for _, p := range fresh {
		if !member[pair{p.req.Conv, p.sender}] {
			p.err = ErrNotFound // not a member: the conversation does not exist for them
			continue
		}
		bad := int64(0)
		for _, m := range p.req.Mentions {
			if !member[pair{p.req.Conv, m}] {
				bad = m
				break
			}
		}
		if bad != 0 {
			p.err = invalid("mentions", "account %d is not a member of the conversation", bad)
			continue
		}
		ok = append(ok, p)
		count[p.req.Conv]++
	}
	if len(ok) > 0 {
		if err := s.insertMessages(ctx, tx, ok, count); err != nil {
			return err
		}
	}
	for _, p := range repeats {
		f := first[sendKey{p.sender, p.req.ClientID}]
		switch {
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

// insertMessages takes count[conv] sequences from each conversation and
// writes the messages in queue order.
func (s *Service) insertMessages(ctx context.Context, tx pgx.Tx, ps []*pending, count map[int64]int64) error {
	ids := make([]int64, 0, len(count))
	ns := make([]int64, 0, len(count))
	for id, n := range count {
		ids, ns = append(ids, id), append(ns, n)
	}
	rows, err := tx.Query(ctx, `UPDATE msg_conversations c SET last_seq = c.last_seq + v.n, last_at = now(), changed_xid = pg_current_xact_id()
		FROM unnest($1::bigint[], $2::bigint[]) AS v(id, n) WHERE c.id = v.id RETURNING c.id, c.last_seq, now()`, ids, ns)
	if err != nil {
		return err
	}
	next := map[int64]int64{}
	var at time.Time
	for rows.Next() {
		var id, last int64
		if err := rows.Scan(&id, &last, &at); err != nil {
			rows.Close()
			return err
		}
		next[id] = last - count[id] + 1
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	type readKey struct{ conv, account int64 }
	reads := map[readKey]int64{}
	copyRows := make([][]any, 0, len(ps))
	for _, p := range ps {
		seq := next[p.req.Conv]
		next[p.req.Conv] = seq + 1
		r := &p.req
		var payload any
		if r.Payload != nil {
			payload = string(r.Payload)
		}
		copyRows = append(copyRows, []any{r.Conv, seq, p.sender, r.ClientID, r.Kind, r.Text, r.Mentions, payload, p.digest, at})
		p.res = Sent{Conv: r.Conv, Seq: seq, At: at}
		p.msg = &Message{Conv: r.Conv, Seq: seq, Sender: p.sender, ClientID: r.ClientID, Kind: r.Kind, Text: r.Text,
			Mentions: r.Mentions, Payload: r.Payload, At: at}
		reads[readKey{r.Conv, p.sender}] = seq // sending reads everything before
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"msg_messages"},
		[]string{"conversation_id", "seq", "sender_id", "client_id", "kind", "body", "mentions", "payload", "digest", "created_at"},
		pgx.CopyFromRows(copyRows)); err != nil {
		return err
	}
	var rc, ra, rs []int64
	for k, seq := range reads {
		rc, ra, rs = append(rc, k.conv), append(ra, k.account), append(rs, seq)
	}
	_, err = tx.Exec(ctx, `UPDATE msg_members m SET read_seq = GREATEST(m.read_seq, v.seq)
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(conv, account, seq)
		WHERE m.conversation_id = v.conv AND m.account_id = v.account`, rc, ra, rs)
	return err
}

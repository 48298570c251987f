package messaging

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
)

// SyncRequest is what a reconnecting client has: the last sequence it
// processed per conversation and the cursor of its previous sync.
type SyncRequest struct {
	Convs  map[int64]int64 `json:"convs,omitempty"`
	Cursor string          `json:"cursor,omitempty"`
	Limit  int             `json:"limit,omitempty"` // messages per conversation (default 100, at most 500)
}

// SyncResult is what the client missed: changed conversations with the
// viewer's state, and the messages after the client's sequences, oldest
// first per conversation. More means another sync (with the new sequences
// and Cursor) has more to give.
type SyncResult struct {
	Conversations []Conversation `json:"conversations"`
	Messages      []Message      `json:"messages"`
	Cursor        string         `json:"cursor"`
	More          bool           `json:"more"`
	// Upto is, per conversation in the reply, the last sequence the reply
	// covers; the gateway drops live events at or below it.
	Upto map[int64]int64 `json:"-"`
}

// Sync answers a reconnecting client. Sequences beyond a conversation's end
// are ErrInvalidCursor; conversations the actor was never in are
// ErrNotFound.
//
// Syncs that arrive together are answered together: the clients of a
// gateway that died reconnect at once, and one set of queries for many of
// them (syncBatch) costs PostgreSQL far less than four statements each.
func (s *Service) Sync(ctx context.Context, a authz.Actor, r SyncRequest) (SyncResult, error) {
	j, err := newSyncJob(a, r)
	if err != nil {
		return SyncResult{}, err
	}
	// The batch that answered it has filled in res and err.
	if _, _, err := s.syncs.Get(ctx, j); err != nil {
		return SyncResult{}, err
	}
	return j.res, j.err
}

// newSyncJob checks what needs no database.
func newSyncJob(a authz.Actor, r SyncRequest) (*syncJob, error) {
	limit := r.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > MaxSyncPerConv:
		return nil, invalid("limit", "messages per conversation: 1-%d", MaxSyncPerConv)
	}
	if len(r.Convs) > 10000 {
		return nil, tooLarge("at most 10000 conversations in one sync")
	}
	for id, seq := range r.Convs {
		if id <= 0 || seq < 0 {
			return nil, invalid("convs", "conversation ids and sequences must be positive")
		}
	}
	cur, err := parseCursor(r.Cursor)
	if err != nil {
		return nil, err
	}
	return &syncJob{account: a.AccountID, cur: cur, have: r.Convs, limit: limit}, nil
}

// syncJob is one validated sync waiting to be answered with others.
type syncJob struct {
	account int64
	cur     cursor
	have    map[int64]int64 // the client's sequences
	limit   int             // messages per conversation

	// Filled by the first round trip.
	changed   []Conversation
	bounds    map[int64]bounds
	notMember int64
	err       error
	res       SyncResult
	want      []msgRange // conversations with messages to send, by id
}

// bounds are what the viewer may read of a conversation: up to upper
// (their leaving, or the last message), after joined.
type bounds struct{ last, joined, upper int64 }

// msgRange is a conversation's messages a sync asks for: after < seq <=
// upper, at most limit+1 of them (one more shows there are more).
type msgRange struct {
	conv, after, upper int64
	limit              int
}

// syncsPerBatch bounds the syncs answered by one set of queries: each may
// bring up to maxSyncMessages messages.
const syncsPerBatch = 64

// syncBatch answers syncs together in two round trips: first the snapshot
// (which starts every client's next round), the conversations changed for
// each account and where each client's conversations stand; then the
// messages of every conversation someone is behind in, each distinct range
// read once.
//
// Each job's res and err are its answer; the map only says which jobs it
// answered (all of them, unless the database failed).
func (s *Service) syncBatch(ctx context.Context, jobs []*syncJob) (map[*syncJob]struct{}, error) {
	var (
		accounts, afters      []int64
		sinces                []string
		bIdx, bAccounts, bIDs []int64
		xmin, xmax            uint64
	)
	for i, j := range jobs {
		accounts, afters = append(accounts, j.account), append(afters, j.cur.after)
		sinces = append(sinces, strconv.FormatUint(j.cur.since, 10))
		j.bounds = map[int64]bounds{}
		for id := range j.have {
			bIdx, bAccounts, bIDs = append(bIdx, int64(i)), append(bAccounts, j.account), append(bIDs, id)
		}
	}
	var batch pgx.Batch
	batch.Queue(snapshotQuery).QueryRow(func(r pgx.Row) error { return r.Scan(&xmin, &xmax) })
	batch.Queue(`SELECT k.i, x.* FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS k(account, after, since, i)
		CROSS JOIN LATERAL (`+changesQuery(`k.account`, `k.after`, `k.since::xid8`, `$4`)+`) x`,
		accounts, afters, sinces, changesPage+1).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var i int64
				var c Conversation
				var a, b *int64
				if err := rows.Scan(append([]any{&i}, c.fields(&a, &b)...)...); err != nil {
					return err
				}
				j := jobs[i-1]
				c.fill(a, b, j.account)
				j.changed = append(j.changed, c)
			}
			return rows.Err()
		})
	if len(bIDs) > 0 {
		batch.Queue(`SELECT k.i, k.conv, m.account_id IS NOT NULL, c.last_seq, m.joined_seq, coalesce(m.left_seq, c.last_seq)
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS k(i, account, conv)
			LEFT JOIN msg_conversations c ON c.id = k.conv
			LEFT JOIN msg_members m ON m.conversation_id = k.conv AND m.account_id = k.account`, bIdx, bAccounts, bIDs).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var i, id int64
					var member bool
					var last, joined, upper *int64
					if err := rows.Scan(&i, &id, &member, &last, &joined, &upper); err != nil {
						return err
					}
					j := jobs[i]
					if !member || last == nil {
						j.notMember = id
						continue
					}
					j.bounds[id] = bounds{*last, *joined, *upper}
				}
				return rows.Err()
			})
	}
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, err
	}

	// What each client is behind in; a range several clients are behind in
	// is read once.
	ranges := map[msgRange]int{}
	var rIDs, rAfters, rUppers, rLimits []int64
	for _, j := range jobs {
		if j.plan(xmin, xmax); j.err != nil {
			continue
		}
		for _, r := range j.want {
			if _, ok := ranges[r]; !ok {
				ranges[r] = len(rIDs)
				rIDs, rAfters, rUppers, rLimits = append(rIDs, r.conv), append(rAfters, r.after), append(rUppers, r.upper), append(rLimits, int64(r.limit+1))
			}
		}
	}
	msgs := make([][]Message, len(rIDs))
	if len(rIDs) > 0 {
		rows, err := s.pool.Query(ctx, `SELECT k.i, m.* FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
				WITH ORDINALITY AS k(conv, after, upper, lim, i)
			CROSS JOIN LATERAL (SELECT `+messageColumns+` FROM msg_messages
				WHERE conversation_id = k.conv AND seq > k.after AND seq <= k.upper ORDER BY seq LIMIT k.lim) m
			ORDER BY k.i, m.seq`, rIDs, rAfters, rUppers, rLimits)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var i int64
			var m Message
			var payload []byte
			if err := rows.Scan(append([]any{&i}, m.fields(&payload)...)...); err != nil {
				rows.Close()
				return nil, err
			}
			m.Payload = payload
			msgs[i-1] = append(msgs[i-1], m)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	answered := make(map[*syncJob]struct{}, len(jobs))
	for _, j := range jobs {
		if j.err == nil {
			for _, r := range j.want {
				j.take(msgs[ranges[r]])
			}
		}
		answered[j] = struct{}{}
	}
	return answered, nil
}

// plan works out, once the first round trip has run, the reply's
// conversations and which messages it needs (want), or the error that
// ends the sync (err).
func (j *syncJob) plan(xmin, xmax uint64) {
	if j.changed == nil {
		j.changed = []Conversation{} // "conversations": [], not null
	}
	ch := changes{c: j.cur, limit: changesPage, xmin: xmin, xmax: xmax, convs: j.changed}
	convs, cur, more, err := ch.result()
	if err == nil && j.notMember != 0 {
		err = fmt.Errorf("%w: conversation %d", ErrNotFound, j.notMember)
	}
	if err != nil {
		j.err = err
		return
	}
	j.res = SyncResult{Conversations: convs, Cursor: cur, More: more, Messages: []Message{}, Upto: map[int64]int64{}}

	// Where each conversation's messages start: what the client has, or
	// nothing for conversations new to it, whose bounds are in their
	// changed rows.
	from := maps.Clone(j.have)
	if from == nil {
		from = map[int64]int64{}
	}
	for _, c := range convs {
		if _, ok := from[c.ID]; !ok {
			from[c.ID] = 0
			upper := c.LastSeq
			if c.LeftSeq != nil {
				upper = *c.LeftSeq
			}
			j.bounds[c.ID] = bounds{c.LastSeq, c.JoinedSeq, upper}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(from)) {
		bd, after := j.bounds[id], from[id]
		if after > bd.last {
			j.err = badCursor("conversation %d has %d messages; the client claims %d (sync it from 0)", id, bd.last, after)
			return
		}
		start := max(after, bd.joined)
		j.res.Upto[id] = start
		if start < bd.upper {
			j.want = append(j.want, msgRange{conv: id, after: start, upper: bd.upper, limit: j.limit})
		}
	}
	j.fitPage()
}

// fitPage keeps the conversations whose messages fit in one reply, as take
// will fill it, so that only those are read: sequences are gapless and
// messages are never deleted, so a range holds upper-after messages, and a
// client with thousands of conversations far behind does not read them
// all for a page of maxSyncMessages.
func (j *syncJob) fitPage() {
	total, kept := int64(0), j.want[:0]
	for _, r := range j.want {
		n := min(r.upper-r.after, int64(r.limit))
		if total > 0 && total+n > maxSyncMessages {
			j.res.More = true
			continue
		}
		total += n
		kept = append(kept, r)
	}
	j.want = kept
}

// take adds a conversation's messages (oldest first, up to limit+1 of
// them) to the reply: at most limit per conversation, and whole
// conversations up to the page's total.
func (j *syncJob) take(ms []Message) {
	n := len(ms)
	if n == 0 {
		return
	}
	if n > j.limit {
		n, j.res.More = j.limit, true
	}
	if len(j.res.Messages) > 0 && len(j.res.Messages)+n > maxSyncMessages {
		j.res.More = true
		return
	}
	j.res.Messages = append(j.res.Messages, ms[:n]...)
	j.res.Upto[ms[0].Conv] = ms[n-1].Seq
}

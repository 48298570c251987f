package messaging

import (
	"context"
	"fmt"
	"slices"

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
func (s *Service) Sync(ctx context.Context, a authz.Actor, r SyncRequest) (SyncResult, error) {
	limit := r.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > MaxSyncPerConv:
		return SyncResult{}, invalid("limit", "messages per conversation: 1-%d", MaxSyncPerConv)
	}
	if len(r.Convs) > 10000 {
		return SyncResult{}, tooLarge("at most 10000 conversations in one sync")
	}
	for id, seq := range r.Convs {
		if id <= 0 || seq < 0 {
			return SyncResult{}, invalid("convs", "conversation ids and sequences must be positive")
		}
	}
	// One round trip for the changed conversations and for where the
	// client's own conversations stand (what the viewer may read of them).
	var batch pgx.Batch
	ch, err := queueChanges(&batch, a, r.Cursor, 500)
	if err != nil {
		return SyncResult{}, err
	}
	type bounds struct{ last, joined, upper int64 }
	b := map[int64]bounds{}
	var notMember int64
	if len(r.Convs) > 0 {
		mine := make([]int64, 0, len(r.Convs))
		for id := range r.Convs {
			mine = append(mine, id)
		}
		batch.Queue(`SELECT k.conv, m.account_id IS NOT NULL, c.last_seq, m.joined_seq, coalesce(m.left_seq, c.last_seq)
			FROM unnest($1::bigint[]) AS k(conv)
			LEFT JOIN msg_conversations c ON c.id = k.conv
			LEFT JOIN msg_members m ON m.conversation_id = k.conv AND m.account_id = $2`, mine, a.AccountID).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var id int64
					var member bool
					var last, joined, upper *int64
					if err := rows.Scan(&id, &member, &last, &joined, &upper); err != nil {
						return err
					}
					if !member || last == nil {
						notMember = id
						continue
					}
					b[id] = bounds{*last, *joined, *upper}
				}
				return rows.Err()
			})
	}
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return SyncResult{}, err
	}
	convs, cur, more, err := ch.result()
	if err != nil {
		return SyncResult{}, err
	}
	if notMember != 0 {
		return SyncResult{}, fmt.Errorf("%w: conversation %d", ErrNotFound, notMember)
	}
	res := SyncResult{Conversations: convs, Cursor: cur, More: more, Messages: []Message{}, Upto: map[int64]int64{}}

	// Where each conversation's messages start: what the client has, or
	// nothing for conversations new to it, whose bounds are in their
	// changed rows.
	from := map[int64]int64{}
	for id, seq := range r.Convs {
		from[id] = seq
	}
	for _, c := range convs {
		if _, ok := from[c.ID]; !ok {
			from[c.ID] = 0
			upper := c.LastSeq
			if c.LeftSeq != nil {
				upper = *c.LeftSeq
			}
			b[c.ID] = bounds{c.LastSeq, c.JoinedSeq, upper}
		}
	}
	if len(from) == 0 {
		return res, nil
	}
	ids := make([]int64, 0, len(from))
	for id := range from {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	afters := make([]int64, len(ids))
	for i, id := range ids {
		afters[i] = from[id]
	}
	var qIDs, qAfter, qUpper []int64
	for i, id := range ids {
		bd := b[id]
		if afters[i] > bd.last {
			return SyncResult{}, badCursor("conversation %d has %d messages; the client claims %d (sync it from 0)", id, bd.last, afters[i])
		}
		start := max(afters[i], bd.joined)
		res.Upto[id] = start
		if start < bd.upper {
			qIDs, qAfter, qUpper = append(qIDs, id), append(qAfter, start), append(qUpper, bd.upper)
		}
	}
	if len(qIDs) == 0 {
		return res, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT m.* FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS k(conv, after, upper)
		CROSS JOIN LATERAL (SELECT `+messageColumns+` FROM msg_messages
			WHERE conversation_id = k.conv AND seq > k.after AND seq <= k.upper ORDER BY seq LIMIT $4) m
		ORDER BY m.conversation_id, m.seq`, qIDs, qAfter, qUpper, limit+1)
	if err != nil {
		return SyncResult{}, err
	}
	ms, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return SyncResult{}, err
	}
	// Keep at most limit per conversation, and whole conversations up to
	// the page's total.
	for i := 0; i < len(ms); {
		j := i
		for j < len(ms) && ms[j].Conv == ms[i].Conv {
			j++
		}
		conv, n := ms[i].Conv, j-i
		if n > limit {
			n, res.More = limit, true
		}
		if len(res.Messages) > 0 && len(res.Messages)+n > maxSyncMessages {
			res.More = true
			i = j
			continue
		}
		res.Messages = append(res.Messages, ms[i:i+n]...)
		res.Upto[conv] = ms[i+n-1].Seq
		i = j
	}
	return res, nil
}

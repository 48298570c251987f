package messaging

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/event"
)

const messageColumns = `conversation_id, seq, sender_id, client_id, kind, body, mentions, payload, created_at`

func scanMessage(r pgx.CollectableRow) (Message, error) {
	var m Message
	var payload []byte
	err := r.Scan(m.fields(&payload)...)
	m.Payload = payload
	return m, err
}

// fields are the scan destinations of messageColumns; payload takes the
// payload column as bytes (into a json.RawMessage pgx would go through
// json.Unmarshal).
func (m *Message) fields(payload *[]byte) []any {
	return []any{&m.Conv, &m.Seq, &m.Sender, &m.ClientID, &m.Kind, &m.Text, &m.Mentions, payload, &m.At}
}

// window is the part of a conversation's history one member may read:
// after joined, up to upper (their leaving, or the last message).
type window struct {
	joined, upper, last int64
	active              bool
}

func (s *Service) window(ctx context.Context, conv, account int64) (window, error) {
	var w window
	var left *int64
	err := s.pool.QueryRow(ctx, `SELECT m.joined_seq, m.left_seq, c.last_seq FROM msg_members m
		JOIN msg_conversations c ON c.id = m.conversation_id WHERE m.conversation_id = $1 AND m.account_id = $2`,
		conv, account).Scan(&w.joined, &left, &w.last)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, ErrNotFound
	}
	w.upper, w.active = w.last, left == nil
	if left != nil {
		w.upper = *left
	}
	return w, err
}

// Latest, as History's before, reads backwards from the newest message.
const Latest = math.MaxInt64

// History pages a conversation's messages: after a sequence (forwards,
// oldest first; 0 is the beginning) or, when before is set, backwards from
// it (newest first; Latest for the newest). Former members read up to
// their leaving.
func (s *Service) History(ctx context.Context, a authz.Actor, conv, after, before int64, limit int) ([]Message, bool, error) {
	if limit <= 0 {
		limit = 50
	}
	if limit > MaxHistory {
		return nil, false, invalid("limit", "at most %d", MaxHistory)
	}
	if after < 0 || before < 0 || (after > 0 && before > 0) {
		return nil, false, invalid("after", "give after or before (not both), as non-negative sequences")
	}
	w, err := s.window(ctx, conv, a.AccountID)
	if err != nil {
		return nil, false, err
	}
	if after > w.last || (before > w.last+1 && before != Latest) {
		return nil, false, badCursor("conversation %d has %d messages; sequence %d is beyond its end", conv, w.last, max(after, before))
	}
	var rows pgx.Rows
	if before > 0 {
		rows, err = s.pool.Query(ctx, `SELECT `+messageColumns+` FROM msg_messages
			WHERE conversation_id = $1 AND seq < $2 AND seq > $3 AND seq <= $4 ORDER BY seq DESC LIMIT $5`,
			conv, before, w.joined, w.upper, limit+1)
	} else {
		rows, err = s.pool.Query(ctx, `SELECT `+messageColumns+` FROM msg_messages
			WHERE conversation_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4`,
			conv, max(after, w.joined), w.upper, limit+1)
	}
	if err != nil {
		return nil, false, err
	}
	ms, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, false, err
	}
	ms, more := page(ms, limit)
	return ms, more, nil
}

// ReadState is a member's read mark after MarkRead.
type ReadState struct {
	Conv    int64 `json:"conv"`
	ReadSeq int64 `json:"read_seq"`
	Unread  int64 `json:"unread"`
}

// ReadEvent is the data of a read event.
type ReadEvent struct {
	Conv    int64 `json:"conv"`
	Account int64 `json:"account"`
	Seq     int64 `json:"seq"`
}

// MarkRead moves the actor's read mark up to seq (never back). The user's
// other devices hear of it, and in a direct conversation so does the
// other member (a read receipt).
func (s *Service) MarkRead(ctx context.Context, a authz.Actor, conv, seq int64) (ReadState, error) {
	if seq < 0 {
		return ReadState{}, invalid("seq", "must not be negative")
	}
	var st ReadState
	var last, joined int64
	var peers []int64
	var moved bool
	err := s.pool.QueryRow(ctx, `WITH c AS (SELECT id, last_seq, kind, direct_a, direct_b FROM msg_conversations WHERE id = $1),
		old AS (SELECT read_seq FROM msg_members WHERE conversation_id = $1 AND account_id = $2 AND left_seq IS NULL),
		upd AS (UPDATE msg_members m SET read_seq = GREATEST(m.read_seq, $3),
			changed_xid = CASE WHEN $3 > m.read_seq THEN pg_current_xact_id() ELSE m.changed_xid END
			FROM c WHERE m.conversation_id = c.id AND m.account_id = $2 AND m.left_seq IS NULL AND $3 <= c.last_seq
			RETURNING m.read_seq, m.joined_seq)
		SELECT c.last_seq, coalesce(upd.read_seq, old.read_seq), coalesce(upd.joined_seq, 0),
			CASE WHEN c.kind = 'direct' THEN ARRAY[c.direct_a, c.direct_b] ELSE '{}' END,
			upd.read_seq IS NOT NULL AND upd.read_seq > old.read_seq
		FROM c JOIN old ON true LEFT JOIN upd ON true`, conv, a.AccountID, seq).Scan(&last, &st.ReadSeq, &joined, &peers, &moved)
	if errors.Is(err, pgx.ErrNoRows) {
		return ReadState{}, ErrNotFound
	}
	if err != nil {
		return ReadState{}, err
	}
	if seq > last {
		return ReadState{}, badCursor("conversation %d has %d messages; cannot mark %d read", conv, last, seq)
	}
	st.Conv, st.Unread = conv, max(0, last-max(st.ReadSeq, joined))
	if moved {
		to := []int64{a.AccountID}
		for _, p := range peers {
			if p != a.AccountID {
				to = append(to, p)
			}
		}
		s.publish(ctx, event.Event{Type: event.TypeRead, To: to, Data: mustJSON(ReadEvent{Conv: conv, Account: a.AccountID, Seq: st.ReadSeq})})
	}
	return st, nil
}

// Readers is who has read a message, from the members' read cursors.
type Readers struct {
	Conv        int64   `json:"conv"`
	Seq         int64   `json:"seq"`
	ReadCount   int     `json:"read_count"`
	UnreadCount int     `json:"unread_count"`
	Read        []int64 `json:"read"`
	Unread      []int64 `json:"unread"`
}

// Readers lists which present members (other than the sender, and only
// those who were members when it was sent) have read message seq. The
// sender and the group's owner and admins may ask.
func (s *Service) Readers(ctx context.Context, a authz.Actor, conv, seq int64) (Readers, error) {
	role, err := s.activeMember(ctx, conv, a.AccountID)
	if err != nil {
		return Readers{}, err
	}
	var sender int64
	err = s.pool.QueryRow(ctx, `SELECT sender_id FROM msg_messages m JOIN msg_members mm ON mm.conversation_id = m.conversation_id AND mm.account_id = $3
		WHERE m.conversation_id = $1 AND m.seq = $2 AND m.seq > mm.joined_seq`, conv, seq, a.AccountID).Scan(&sender)
	if errors.Is(err, pgx.ErrNoRows) {
		return Readers{}, fmt.Errorf("%w: message %d", ErrNotFound, seq)
	}
	if err != nil {
		return Readers{}, err
	}
	if sender != a.AccountID && role != RoleOwner && role != RoleAdmin {
		return Readers{}, fmt.Errorf("%w: only the sender and the group's admins see who read a message", ErrForbidden)
	}
	rows, err := s.pool.Query(ctx, `SELECT account_id, read_seq >= $2 FROM msg_members
		WHERE conversation_id = $1 AND left_seq IS NULL AND joined_seq < $2 AND account_id <> $3 ORDER BY account_id`, conv, seq, sender)
	if err != nil {
		return Readers{}, err
	}
	defer rows.Close()
	r := Readers{Conv: conv, Seq: seq, Read: []int64{}, Unread: []int64{}}
	for rows.Next() {
		var id int64
		var read bool
		if err := rows.Scan(&id, &read); err != nil {
			return Readers{}, err
		}
		if read {
			r.Read = append(r.Read, id)
		} else {
			r.Unread = append(r.Unread, id)
		}
	}
	r.ReadCount, r.UnreadCount = len(r.Read), len(r.Unread)
	return r, rows.Err()
}

// cursor is a position in a user's stream of conversation changes: the
// changes from transactions at or after since, after conversation id after
// (while paging), continuing from next once this round is done.
type cursor struct {
	since, next uint64
	after       int64
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("c1:%d:%d:%d", c.since, c.next, c.after)))
}

func parseCursor(s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	parts := strings.Split(string(b), ":")
	if err != nil || len(parts) != 4 || parts[0] != "c1" {
		return cursor{}, badCursor("not a cursor this server gave out")
	}
	var c cursor
	var e1, e2, e3 error
	c.since, e1 = strconv.ParseUint(parts[1], 10, 64)
	c.next, e2 = strconv.ParseUint(parts[2], 10, 64)
	c.after, e3 = strconv.ParseInt(parts[3], 10, 64)
	if e1 != nil || e2 != nil || e3 != nil || c.after < 0 || c.since > math.MaxInt64 || c.next > math.MaxInt64 {
		return cursor{}, badCursor("not a cursor this server gave out")
	}
	return c, nil
}

// Changes lists the actor's conversations that changed since cursor (all of
// them for ""), with the actor's state, a page at a time. The returned
// cursor continues the page, or, with more false, starts the next round.
// A conversation may come again in the next round (a change in flight when
// the cursor was made); clients key by id.
func (s *Service) Changes(ctx context.Context, a authz.Actor, cur string, limit int) ([]Conversation, string, bool, error) {
	var b pgx.Batch
	ch, err := queueChanges(&b, a, cur, limit)
	if err != nil {
		return nil, "", false, err
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, "", false, err
	}
	return ch.result()
}

// changes is a Changes read queued on a batch, so that a sync sends it
// with its other queries in one round trip.
type changes struct {
	c          cursor
	limit      int
	xmin, xmax uint64
	convs      []Conversation
}

// queueChanges queues the snapshot (the next round's start) and then the
// page of conversations changed since the cursor.
func queueChanges(b *pgx.Batch, a authz.Actor, cur string, limit int) (*changes, error) {
	c, err := parseCursor(cur)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 500 {
		limit = 200
	}
	ch := &changes{c: c, limit: limit}
	b.Queue(snapshotQuery).QueryRow(func(r pgx.Row) error { return r.Scan(&ch.xmin, &ch.xmax) })
	b.Queue(changesQuery(`$1`, `$2`, `$3::text::xid8`, `$4`), a.AccountID, c.after, strconv.FormatUint(c.since, 10), limit+1).
		Query(func(rows pgx.Rows) (err error) {
			ch.convs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Conversation, error) { return scanConv(r, a.AccountID) })
			return err
		})
	return ch, nil
}

// snapshotQuery reads the snapshot whose xmin starts the next round of
// changes.
const snapshotQuery = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, pg_snapshot_xmax(pg_current_snapshot())::text::bigint`

// changesPage is how many changed conversations a sync returns at most.
const changesPage = 500

// changesQuery selects, in conversation order, up to limit of an account's
// conversations after a conversation id that changed since an xid8, with
// the account's member columns (scanConv). Its arguments are SQL
// expressions, so that a sync can run it for many accounts.
func changesQuery(account, after, since, limit string) string {
	return `SELECT ` + convColumns + `, m.role, m.joined_seq, m.left_seq, m.read_seq
		FROM msg_members m JOIN msg_conversations c ON c.id = m.conversation_id
		WHERE m.account_id = ` + account + ` AND m.conversation_id > ` + after + `
		  AND (m.changed_xid >= ` + since + ` OR (m.left_seq IS NULL AND c.changed_xid >= ` + since + `))
		ORDER BY m.conversation_id LIMIT ` + limit
}

// result is the page and the cursor after it, once the batch has run.
func (ch *changes) result() ([]Conversation, string, bool, error) {
	c := ch.c
	if c.since > ch.xmax || c.next > ch.xmax {
		return nil, "", false, badCursor("the cursor is from the future; sync from the start")
	}
	if c.next == 0 { // a new round: its end is now
		c.next = ch.xmin
	}
	convs, more := page(ch.convs, ch.limit)
	if more {
		c.after = convs[len(convs)-1].ID
		return convs, c.String(), true, nil
	}
	return convs, cursor{since: c.next}.String(), false, nil
}

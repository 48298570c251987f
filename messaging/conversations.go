package messaging

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/event"
)

// Roles in a group.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Changes announced in conversation events.
const (
	ChangeCreated       = "created"
	ChangeRenamed       = "renamed"
	ChangeMemberAdded   = "member_added"
	ChangeMemberRemoved = "member_removed"
	ChangeLeft          = "left"
	ChangeRole          = "role"
)

// ConversationEvent is the data of a conversation event.
type ConversationEvent struct {
	Conv     Conversation `json:"conv"`
	Change   string       `json:"change"`
	By       int64        `json:"by"`
	Accounts []int64      `json:"accounts,omitempty"` // who was added, removed or changed role
	Role     string       `json:"role,omitempty"`     // the new role, for ChangeRole
}

const convColumns = `c.id, c.kind, c.title, c.direct_a, c.direct_b, c.created_by, c.created_at, c.last_seq, c.last_at, c.member_count`

// scanConv reads convColumns followed by the viewer's member columns (role,
// joined_seq, left_seq, read_seq).
func scanConv(r pgx.Row, viewer int64) (Conversation, error) {
	var c Conversation
	var a, b *int64
	if err := r.Scan(c.fields(&a, &b)...); err != nil {
		return c, err
	}
	c.fill(a, b, viewer)
	return c, nil
}

// fields are the scan destinations of convColumns and the member columns;
// a and b take the direct pair, for fill.
func (c *Conversation) fields(a, b **int64) []any {
	return []any{&c.ID, &c.Kind, &c.Title, a, b, &c.CreatedBy, &c.CreatedAt, &c.LastSeq, &c.LastAt, &c.MemberCount,
		&c.Role, &c.JoinedSeq, &c.LeftSeq, &c.ReadSeq}
}

func (c *Conversation) fill(a, b *int64, viewer int64) {
	if a != nil && b != nil {
		c.Members = []int64{*a, *b}
		if *a == viewer {
			c.Peer = *b
		} else {
			c.Peer = *a
		}
	}
	upper := c.LastSeq
	if c.LeftSeq != nil {
		upper = *c.LeftSeq
		c.Role = ""
	}
	c.Unread = max(0, upper-max(c.ReadSeq, c.JoinedSeq))
}

// shared strips the viewer's own state, for events all members receive.
func (c Conversation) shared() Conversation {
	c.Peer, c.Role, c.JoinedSeq, c.LeftSeq, c.ReadSeq, c.Unread = 0, "", 0, nil, 0, 0
	return c
}

// Get returns a conversation the actor is or was a member of.
func (s *Service) Get(ctx context.Context, a authz.Actor, conv int64) (Conversation, error) {
	return s.get(ctx, s.pool, a.AccountID, conv)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Service) get(ctx context.Context, q querier, viewer, conv int64) (Conversation, error) {
	c, err := scanConv(q.QueryRow(ctx, `SELECT `+convColumns+`, m.role, m.joined_seq, m.left_seq, m.read_seq
		FROM msg_conversations c JOIN msg_members m ON m.conversation_id = c.id AND m.account_id = $2
		WHERE c.id = $1`, conv, viewer), viewer)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, err
}

// visible checks that the actor may see every account, naming the first one
// that is hidden or unknown.
func (s *Service) visible(ctx context.Context, a authz.Actor, accounts []int64) error {
	if len(accounts) == 0 {
		return nil
	}
	ok, err := s.vis.VisiblePeople(ctx, a, accounts)
	if err != nil {
		return err
	}
	for _, id := range accounts {
		if !ok[id] {
			return fmt.Errorf("%w: account %d", ErrNotFound, id)
		}
	}
	return nil
}

// Direct returns the direct conversation between the actor and other,
// creating it on first use. Anyone the actor can see in the address book
// can be messaged.
func (s *Service) Direct(ctx context.Context, a authz.Actor, other int64) (Conversation, error) {
	if other <= 0 || other == a.AccountID {
		return Conversation{}, invalid("account", "must be another person's account id")
	}
	if err := s.visible(ctx, a, []int64{other}); err != nil {
		return Conversation{}, err
	}
	lo, hi := min(a.AccountID, other), max(a.AccountID, other)
	var created bool
	var id int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO msg_conversations (kind, direct_a, direct_b, created_by, member_count)
			VALUES ('direct', $1, $2, $3, 2) ON CONFLICT (direct_a, direct_b) WHERE kind = 'direct' DO NOTHING RETURNING id`,
			lo, hi, a.AccountID).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return tx.QueryRow(ctx, `SELECT id FROM msg_conversations WHERE kind = 'direct' AND direct_a = $1 AND direct_b = $2`, lo, hi).Scan(&id)
		}
		if err != nil {
			return err
		}
		created = true
		_, err = tx.Exec(ctx, `INSERT INTO msg_members (conversation_id, account_id) VALUES ($1, $2), ($1, $3)`, id, lo, hi)
		return err
	})
	if err != nil {
		return Conversation{}, err
	}
	c, err := s.get(ctx, s.pool, a.AccountID, id)
	if err == nil && created {
		s.publish(ctx, event.Event{Type: event.TypeConversation, Conv: id, Join: []int64{lo, hi},
			Data: mustJSON(ConversationEvent{Conv: c.shared(), Change: ChangeCreated, By: a.AccountID})})
	}
	return c, err
}

func cleanTitle(t string) (string, error) {
	t = strings.TrimSpace(t)
	switch {
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return "", invalid("title", "is not valid UTF-8 text (NUL characters are not allowed)")
	case t == "":
		return "", invalid("title", "must not be empty")
	case utf8.RuneCountInString(t) > MaxTitleRunes:
		return "", invalid("title", "at most %d characters", MaxTitleRunes)
	}
	return t, nil
}

// accountSet validates a list of account ids and removes repeats and the
// actor.
func accountSet(field string, ids []int64, actor int64) ([]int64, error) {
	out := make([]int64, 0, len(ids))
	for _, id := range ids {
		if id <= 0 {
			return nil, invalid(field, "must be account ids")
		}
		if id != actor {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// CreateGroup creates a group owned by the actor with the given members,
// all of whom the actor must be able to see.
func (s *Service) CreateGroup(ctx context.Context, a authz.Actor, title string, members []int64) (Conversation, error) {
	title, err := cleanTitle(title)
	if err != nil {
		return Conversation{}, err
	}
	if len(members) > MaxGroupMembers {
		return Conversation{}, tooLarge("a group has at most %d members", MaxGroupMembers)
	}
	members, err = accountSet("members", members, a.AccountID)
	if err != nil {
		return Conversation{}, err
	}
	if len(members)+1 > MaxGroupMembers {
		return Conversation{}, tooLarge("a group has at most %d members including its owner", MaxGroupMembers)
	}
	if err := s.visible(ctx, a, members); err != nil {
		return Conversation{}, err
	}
	var c Conversation
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO msg_conversations (kind, title, created_by, member_count) VALUES ('group', $1, $2, $3) RETURNING id`,
			title, a.AccountID, len(members)+1).Scan(&id); err != nil {
			return err
		}
		rows := [][]any{{id, a.AccountID, RoleOwner}}
		for _, m := range members {
			rows = append(rows, []any{id, m, RoleMember})
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"msg_members"}, []string{"conversation_id", "account_id", "role"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		c, err = s.get(ctx, tx, a.AccountID, id)
		return err
	})
	if err != nil {
		return Conversation{}, err
	}
	s.publish(ctx, event.Event{Type: event.TypeConversation, Conv: c.ID, Join: append([]int64{a.AccountID}, members...),
		Data: mustJSON(ConversationEvent{Conv: c.shared(), Change: ChangeCreated, By: a.AccountID})})
	return c, nil
}

// locked is a conversation locked for a change, with the actor's standing.
type locked struct {
	kind    string
	lastSeq int64
	role    string // "" when not an active member
}

// lock locks a conversation row and reads the actor's role in it. A
// conversation the actor is not in is not found.
func lock(ctx context.Context, tx pgx.Tx, conv, actor int64) (locked, error) {
	var l locked
	var role *string
	var left *int64
	err := tx.QueryRow(ctx, `SELECT c.kind, c.last_seq, m.role, m.left_seq FROM msg_conversations c
		LEFT JOIN msg_members m ON m.conversation_id = c.id AND m.account_id = $2
		WHERE c.id = $1 FOR UPDATE OF c`, conv, actor).Scan(&l.kind, &l.lastSeq, &role, &left)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (role == nil || left != nil)) {
		return l, ErrNotFound
	}
	if err != nil {
		return l, err
	}
	l.role = *role
	return l, nil
}

func (l locked) manage() error {
	if l.kind != "group" {
		return fmt.Errorf("%w: a direct conversation has no title, roles or members to manage", ErrForbidden)
	}
	if l.role != RoleOwner && l.role != RoleAdmin {
		return fmt.Errorf("%w: only the group's owner and admins may do this", ErrForbidden)
	}
	return nil
}

// change runs fn on a locked conversation, marks the conversation changed
// and publishes the resulting event.
func (s *Service) change(ctx context.Context, a authz.Actor, conv int64, fn func(tx pgx.Tx, l locked) (event.Event, *ConversationEvent, error)) (Conversation, error) {
	var c Conversation
	var ev event.Event
	var ce *ConversationEvent
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		l, err := lock(ctx, tx, conv, a.AccountID)
		if err != nil {
			return err
		}
		if ev, ce, err = fn(tx, l); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE msg_conversations SET changed_xid = pg_current_xact_id(),
			member_count = (SELECT count(*) FROM msg_members WHERE conversation_id = $1 AND left_seq IS NULL) WHERE id = $1`, conv); err != nil {
			return err
		}
		c, err = s.get(ctx, tx, a.AccountID, conv)
		return err
	})
	if err != nil {
		return Conversation{}, err
	}
	if ce != nil {
		ce.Conv, ce.By = c.shared(), a.AccountID
		ev.Type, ev.Conv, ev.Data = event.TypeConversation, conv, mustJSON(ce)
		s.publish(ctx, ev)
	}
	return c, nil
}

// Rename sets a group's title (owner and admins).
func (s *Service) Rename(ctx context.Context, a authz.Actor, conv int64, title string) (Conversation, error) {
	title, err := cleanTitle(title)
	if err != nil {
		return Conversation{}, err
	}
	return s.change(ctx, a, conv, func(tx pgx.Tx, l locked) (event.Event, *ConversationEvent, error) {
		if err := l.manage(); err != nil {
			return event.Event{}, nil, err
		}
		_, err := tx.Exec(ctx, `UPDATE msg_conversations SET title = $2 WHERE id = $1`, conv, title)
		return event.Event{}, &ConversationEvent{Change: ChangeRenamed}, err
	})
}

// AddMembers invites people the actor can see into a group (owner and
// admins). Present members are skipped; former members rejoin and see
// messages from now on.
func (s *Service) AddMembers(ctx context.Context, a authz.Actor, conv int64, accounts []int64) (Conversation, error) {
	if len(accounts) > MaxGroupMembers {
		return Conversation{}, tooLarge("a group has at most %d members", MaxGroupMembers)
	}
	accounts, err := accountSet("accounts", accounts, a.AccountID)
	if err != nil {
		return Conversation{}, err
	}
	if len(accounts) == 0 {
		return Conversation{}, invalid("accounts", "name at least one other account")
	}
	if err := s.visible(ctx, a, accounts); err != nil {
		return Conversation{}, err
	}
	return s.change(ctx, a, conv, func(tx pgx.Tx, l locked) (event.Event, *ConversationEvent, error) {
		if err := l.manage(); err != nil {
			return event.Event{}, nil, err
		}
		rows, err := tx.Query(ctx, `INSERT INTO msg_members (conversation_id, account_id, joined_seq, read_seq)
			SELECT $1, unnest($2::bigint[]), $3, $3
			ON CONFLICT (conversation_id, account_id) DO UPDATE
				SET left_seq = NULL, role = 'member', joined_seq = EXCLUDED.joined_seq, read_seq = EXCLUDED.read_seq,
				    joined_at = now(), changed_xid = pg_current_xact_id()
				WHERE msg_members.left_seq IS NOT NULL
			RETURNING account_id`, conv, accounts, l.lastSeq)
		if err != nil {
			return event.Event{}, nil, err
		}
		added, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return event.Event{}, nil, err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM msg_members WHERE conversation_id = $1 AND left_seq IS NULL`, conv).Scan(&n); err != nil {
			return event.Event{}, nil, err
		}
		if n > MaxGroupMembers {
			return event.Event{}, nil, tooLarge("the group would have %d members; at most %d", n, MaxGroupMembers)
		}
		if len(added) == 0 {
			return event.Event{}, nil, nil // everyone was already in: nothing changed
		}
		slices.Sort(added)
		return event.Event{Join: added}, &ConversationEvent{Change: ChangeMemberAdded, Accounts: added}, nil
	})
}

// RemoveMember removes account from a group. Removing oneself is leaving,
// which anyone may do; removing others needs the owner, or an admin for
// plain members. An owner who leaves hands the group to its longest-serving
// admin, or member.
func (s *Service) RemoveMember(ctx context.Context, a authz.Actor, conv, account int64) (Conversation, error) {
	self := account == a.AccountID
	c, err := s.change(ctx, a, conv, func(tx pgx.Tx, l locked) (event.Event, *ConversationEvent, error) {
		if l.kind != "group" {
			return event.Event{}, nil, fmt.Errorf("%w: one cannot leave a direct conversation", ErrForbidden)
		}
		target := l.role
		if !self {
			if err := l.manage(); err != nil {
				return event.Event{}, nil, err
			}
			err := tx.QueryRow(ctx, `SELECT role FROM msg_members WHERE conversation_id = $1 AND account_id = $2 AND left_seq IS NULL`, conv, account).Scan(&target)
			if errors.Is(err, pgx.ErrNoRows) {
				return event.Event{}, nil, fmt.Errorf("%w: account %d is not a member", ErrNotFound, account)
			}
			if err != nil {
				return event.Event{}, nil, err
			}
			if l.role == RoleAdmin && target != RoleMember {
				return event.Event{}, nil, fmt.Errorf("%w: admins may remove members only", ErrForbidden)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE msg_members SET left_seq = $3, role = 'member', changed_xid = pg_current_xact_id()
			WHERE conversation_id = $1 AND account_id = $2`, conv, account, l.lastSeq); err != nil {
			return event.Event{}, nil, err
		}
		if target == RoleOwner {
			if _, err := tx.Exec(ctx, `UPDATE msg_members SET role = 'owner', changed_xid = pg_current_xact_id()
				WHERE (conversation_id, account_id) = (SELECT conversation_id, account_id FROM msg_members
					WHERE conversation_id = $1 AND left_seq IS NULL ORDER BY role = 'admin' DESC, joined_at, account_id LIMIT 1)`, conv); err != nil {
				return event.Event{}, nil, err
			}
		}
		change := ChangeMemberRemoved
		if self {
			change = ChangeLeft
		}
		return event.Event{Leave: []int64{account}, To: []int64{account}}, &ConversationEvent{Change: change, Accounts: []int64{account}}, nil
	})
	if errors.Is(err, ErrNotFound) && self {
		return Conversation{}, ErrNotFound
	}
	return c, err
}

// SetRole makes a member an admin or a plain member, or hands the group
// over (role owner: the actor becomes an admin). Only the owner may.
func (s *Service) SetRole(ctx context.Context, a authz.Actor, conv, account int64, role string) (Conversation, error) {
	if role != RoleOwner && role != RoleAdmin && role != RoleMember {
		return Conversation{}, invalid("role", "must be owner, admin or member")
	}
	if account == a.AccountID {
		return Conversation{}, invalid("account", "one cannot change one's own role; hand the group over instead")
	}
	return s.change(ctx, a, conv, func(tx pgx.Tx, l locked) (event.Event, *ConversationEvent, error) {
		if err := l.manage(); err != nil {
			return event.Event{}, nil, err
		}
		if l.role != RoleOwner {
			return event.Event{}, nil, fmt.Errorf("%w: only the owner changes roles", ErrForbidden)
		}
		tag, err := tx.Exec(ctx, `UPDATE msg_members SET role = $3, changed_xid = pg_current_xact_id()
			WHERE conversation_id = $1 AND account_id = $2 AND left_seq IS NULL`, conv, account, role)
		if err != nil {
			return event.Event{}, nil, err
		}
		if tag.RowsAffected() == 0 {
			return event.Event{}, nil, fmt.Errorf("%w: account %d is not a member", ErrNotFound, account)
		}
		changed := []int64{account}
		if role == RoleOwner {
			if _, err := tx.Exec(ctx, `UPDATE msg_members SET role = 'admin', changed_xid = pg_current_xact_id()
				WHERE conversation_id = $1 AND account_id = $2`, conv, a.AccountID); err != nil {
				return event.Event{}, nil, err
			}
			changed = append(changed, a.AccountID)
		}
		return event.Event{}, &ConversationEvent{Change: ChangeRole, Accounts: changed, Role: role}, nil
	})
}

// Members lists a conversation's present members by account id, a page at
// a time, for its members.
func (s *Service) Members(ctx context.Context, a authz.Actor, conv, after int64, limit int) ([]Member, bool, error) {
	if limit <= 0 || limit > MaxGroupMembers {
		limit = MaxGroupMembers
	}
	if _, err := s.activeMember(ctx, conv, a.AccountID); err != nil {
		return nil, false, err
	}
	rows, err := s.pool.Query(ctx, `SELECT account_id, role, read_seq, joined_at FROM msg_members
		WHERE conversation_id = $1 AND left_seq IS NULL AND account_id > $2 ORDER BY account_id LIMIT $3`, conv, after, limit+1)
	if err != nil {
		return nil, false, err
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
		var m Member
		return m, r.Scan(&m.Account, &m.Role, &m.ReadSeq, &m.JoinedAt)
	})
	if err != nil {
		return nil, false, err
	}
	ms, more := page(ms, limit)
	return ms, more, nil
}

// activeMember returns the actor's role, or ErrNotFound.
func (s *Service) activeMember(ctx context.Context, conv, account int64) (string, error) {
	var role string
	err := s.pool.QueryRow(ctx, `SELECT role FROM msg_members WHERE conversation_id = $1 AND account_id = $2 AND left_seq IS NULL`, conv, account).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return role, err
}

// ConversationIDs lists the conversations an account is a member of now;
// the gateway routes conversation events to its devices by them.
func (s *Service) ConversationIDs(ctx context.Context, account int64) ([]int64, error) {
	ids, _, err := s.memberships.Get(ctx, account)
	return ids, err
}

func (s *Service) loadMemberships(ctx context.Context, accounts []int64) (map[int64][]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT account_id, conversation_id FROM msg_members WHERE account_id = ANY($1) AND left_seq IS NULL`, accounts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64][]int64, len(accounts))
	for rows.Next() {
		var account, conv int64
		if err := rows.Scan(&account, &conv); err != nil {
			return nil, err
		}
		out[account] = append(out[account], conv)
	}
	return out, rows.Err()
}

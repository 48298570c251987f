package org

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
)

// memberSelect reads a Member (before masking) from people p, positions
// pos and units u.
const memberSelect = `p.account_id, p.name, p.pinyin, coalesce(p.mobile, ''), ` + positionColumns

func (s *Service) collectMembers(a authz.Actor, rows pgx.Rows) ([]Member, error) {
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
		var m Member
		p := &m.Position
		err := r.Scan(&m.AccountID, &m.Name, &m.Pinyin, &m.Mobile, &p.ID, &p.AccountID, &p.UnitID, &p.UnitName, &p.Title, &p.Leader, &p.Primary, &p.SortOrder, &p.Version)
		return m, err
	})
	for i := range ms {
		if !s.revealMobile(a, ms[i].AccountID, ms[i].Position.UnitID) {
			ms[i].Mobile, ms[i].MobileMasked = MaskMobile(ms[i].Mobile), true
		}
	}
	return ms, err
}

// Members lists the people of a unit the actor may see, in display order,
// a page at a time. after is the cursor from the previous page ("" first).
func (s *Service) Members(ctx context.Context, a authz.Actor, unit int64, after string, limit int) ([]Member, string, error) {
	limit, err := pageSize(limit)
	if err != nil {
		return nil, "", err
	}
	sortAfter, idAfter, err := decodeCursor(after)
	if err != nil {
		return nil, "", err
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return nil, "", err
	}
	if !sc.unitVisible(s.tree, unit) {
		return nil, "", s.hiddenUnit(ctx, a, unit)
	}
	filter, args := sc.memberFilter(5)
	rows, err := s.pool.Query(ctx, `SELECT `+memberSelect+`
		FROM org_positions pos JOIN org_people p USING (account_id) JOIN org_units u ON u.id = pos.unit_id
		WHERE pos.unit_id = $1 AND NOT pos.deleted AND (pos.sort_order, pos.id) > ($2, $3) AND `+filter+`
		ORDER BY pos.sort_order, pos.id LIMIT $4`, append([]any{unit, sortAfter, idAfter, limit}, args...)...)
	if err != nil {
		return nil, "", err
	}
	ms, err := s.collectMembers(a, rows)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(ms) == limit {
		last := ms[len(ms)-1].Position
		next = encodeCursor(int64(last.SortOrder), last.ID)
	}
	return ms, next, nil
}

func encodeCursor(a, b int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(a, 10) + ":" + strconv.FormatInt(b, 10)))
}

func decodeCursor(c string) (int64, int64, error) {
	if c == "" {
		return -1 << 31, 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		x, y, ok := strings.Cut(string(raw), ":")
		a, err1 := strconv.ParseInt(x, 10, 64)
		b, err2 := strconv.ParseInt(y, 10, 64)
		if ok && err1 == nil && err2 == nil {
			return a, b, nil
		}
	}
	return 0, 0, invalid("cursor", "not a cursor this server gave out")
}

// Card returns a person's card with the positions the actor may see; a
// person none of whose positions is visible does not exist for the actor.
func (s *Service) Card(ctx context.Context, a authz.Actor, account int64) (Card, error) {
	sc, err := s.scope(ctx, a)
	if err != nil {
		return Card{}, err
	}
	filter, args := sc.memberFilter(3)
	rows, err := s.pool.Query(ctx, `SELECT `+memberSelect+`
		FROM org_positions pos JOIN org_people p USING (account_id) JOIN org_units u ON u.id = pos.unit_id
		WHERE pos.account_id = $1 AND NOT pos.deleted AND ($2 OR `+filter+`)
		ORDER BY pos.is_primary DESC, pos.id`, append([]any{account, account == a.AccountID}, args...)...)
	if err != nil {
		return Card{}, err
	}
	ms, err := s.collectMembers(a, rows)
	if err != nil {
		return Card{}, err
	}
	if len(ms) == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM org_positions WHERE account_id = $1 AND NOT deleted)`, account).Scan(&exists); err != nil {
			return Card{}, err
		}
		if exists {
			return Card{}, s.hidden(ctx, a, 0, account)
		}
		return Card{}, ErrNotFound
	}
	c := Card{AccountID: account, Name: ms[0].Name, Mobile: ms[0].Mobile, MobileMasked: true}
	for _, m := range ms {
		c.Positions = append(c.Positions, m.Position)
		if !m.MobileMasked { // any position that lets the viewer read it
			c.Mobile, c.MobileMasked = m.Mobile, false
		}
	}
	c.Pinyin = ms[0].Pinyin
	c.Watermark, err = s.watermark(ctx, a)
	return c, err
}

// watermark is the viewer's name and the last four digits of their mobile.
func (s *Service) watermark(ctx context.Context, a authz.Actor) (Watermark, error) {
	var w Watermark
	var mobile *string
	err := s.pool.QueryRow(ctx, `SELECT display_name, mobile FROM accounts WHERE id = $1`, a.AccountID).Scan(&w.Name, &mobile)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, nil
	}
	if mobile != nil && len(*mobile) >= 4 {
		w.MobileTail = (*mobile)[len(*mobile)-4:]
	}
	return w, err
}

// Change is one entry of an address-book sync: an entity to upsert (with its
// current state) or to delete from the phone's cache.
type Change struct {
	Version  int64   `json:"version"`
	Entity   string  `json:"entity"` // unit or position
	ID       int64   `json:"id"`
	Op       string  `json:"op"` // upsert or delete
	Unit     *Unit   `json:"unit,omitempty"`
	Position *Member `json:"position,omitempty"`
}

// ChangeSet answers a sync request.
type ChangeSet struct {
	Changes []Change `json:"changes"`
	// Cursor is the version to send next time.
	Cursor int64 `json:"cursor"`
	// More says another page is waiting.
	More bool `json:"more"`
	// Reset says the phone's cache is too old (a bulk import happened
	// since): drop it and load the address book afresh, then sync from
	// Cursor.
	Reset bool `json:"reset"`
}

// Changes lists what changed in the actor's view of the address book since
// version since: units and positions to upsert, and to delete (removed, or
// moved out of the actor's sight).
func (s *Service) Changes(ctx context.Context, a authz.Actor, since int64, limit int) (ChangeSet, error) {
	limit, err := pageSize(limit)
	if err != nil {
		return ChangeSet{}, err
	}
	if since < 0 {
		return ChangeSet{}, invalid("since", "must not be negative")
	}
	var epoch, head int64
	// Read the head first: everything committed up to it is visible below,
	// because org writers commit in version order (lockOrg).
	if err := s.pool.QueryRow(ctx, `SELECT epoch, (SELECT coalesce(max(version), 0) FROM org_changes) FROM org_sync`).Scan(&epoch, &head); err != nil {
		return ChangeSet{}, err
	}
	if head < epoch {
		head = epoch
	}
	if since > head {
		return ChangeSet{}, invalid("since", "is ahead of the server (%d > %d); resync from 0", since, head)
	}
	if since < epoch {
		return ChangeSet{Reset: true, Cursor: head, Changes: []Change{}}, nil
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return ChangeSet{}, err
	}
	newVis, args := pathFilter(sc, "c.new_path", 4)
	oldVis, _ := pathFilter(sc, "c.old_path", 4)
	rows, err := s.pool.Query(ctx, `SELECT c.version, c.entity, c.entity_id, coalesce(`+newVis+`, false) AS visible_now
		FROM org_changes c WHERE c.version > $1 AND c.version <= $2 AND (`+newVis+` OR `+oldVis+`)
		ORDER BY c.version LIMIT $3`, append([]any{since, head, limit + 1}, args...)...)
	if err != nil {
		return ChangeSet{}, err
	}
	type raw struct {
		version int64
		entity  string
		id      int64
		visible bool
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (raw, error) {
		var x raw
		return x, r.Scan(&x.version, &x.entity, &x.id, &x.visible)
	})
	if err != nil {
		return ChangeSet{}, err
	}
	cs := ChangeSet{Cursor: head, Changes: []Change{}}
	if len(list) > limit {
		list = list[:limit]
		cs.More = true
		cs.Cursor = list[len(list)-1].version
	}
	// Later entries for the same entity supersede earlier ones.
	last := map[string]int{}
	for i, x := range list {
		last[x.entity+strconv.FormatInt(x.id, 10)] = i
	}
	for i, x := range list {
		if last[x.entity+strconv.FormatInt(x.id, 10)] != i {
			continue
		}
		c := Change{Version: x.version, Entity: x.entity, ID: x.id, Op: "delete"}
		if x.visible {
			switch x.entity {
			case "unit":
				u, err := s.unit(ctx, x.id)
				if err == nil {
					c.Op, c.Unit = "upsert", &u
				}
			case "position":
				m, err := s.memberByPosition(ctx, a, x.id)
				if err == nil {
					c.Op, c.Position = "upsert", &m
				} else if !errors.Is(err, ErrNotFound) {
					return ChangeSet{}, err
				}
			}
		}
		cs.Changes = append(cs.Changes, c)
	}
	return cs, nil
}

// pathFilter is the visibility test of a path column in the change log:
// units and positions inside a reached subtree, and one's own units.
// (Leaders of the units above are not streamed; a phone loads them with the
// card or the unit's member list.)
func pathFilter(sc *scope, col string, first int) (string, []any) {
	if sc.all {
		return "(" + col + " IS NOT NULL)", nil
	}
	n := strconv.Itoa
	return fmt.Sprintf("(%s <@ $%s::ltree[] OR ltree2text(subpath(%s, -1)) = ANY($%s::text[]))", col, n(first), col, n(first+1)),
		[]any{sc.reach, int64sToStrings(sc.own)}
}

func int64sToStrings(xs []int64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strconv.FormatInt(x, 10)
	}
	return out
}

// memberByPosition reads a live position as a member row, masked for a.
func (s *Service) memberByPosition(ctx context.Context, a authz.Actor, id int64) (Member, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+memberSelect+`
		FROM org_positions pos JOIN org_people p USING (account_id) JOIN org_units u ON u.id = pos.unit_id
		WHERE pos.id = $1 AND NOT pos.deleted`, id)
	if err != nil {
		return Member{}, err
	}
	ms, err := s.collectMembers(a, rows)
	if err != nil {
		return Member{}, err
	}
	if len(ms) == 0 {
		return Member{}, ErrNotFound
	}
	return ms[0], nil
}

package org

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
)

// Position is a person's post in a unit.
type Position struct {
	ID        int64  `json:"id"`
	AccountID int64  `json:"account_id"`
	UnitID    int64  `json:"unit_id"`
	UnitName  string `json:"unit_name"`
	Title     string `json:"title"`
	Leader    bool   `json:"leader"`
	Primary   bool   `json:"primary"`
	SortOrder int    `json:"sort_order"`
	Version   int64  `json:"version"`
}

// Member is one row of a unit's member list or of a search: a person and
// the position that placed them there.
type Member struct {
	AccountID    int64    `json:"account_id"`
	Name         string   `json:"name"`
	Pinyin       string   `json:"pinyin"`
	Mobile       string   `json:"mobile"` // masked unless the viewer may read it
	MobileMasked bool     `json:"mobile_masked"`
	Position     Position `json:"position"`
}

// Card is a person's address-book card.
type Card struct {
	AccountID    int64      `json:"account_id"`
	Name         string     `json:"name"`
	Pinyin       string     `json:"pinyin"`
	Mobile       string     `json:"mobile"`
	MobileMasked bool       `json:"mobile_masked"`
	Positions    []Position `json:"positions"` // the ones the viewer may see
	// Watermark is what a client draws over screens showing this card to
	// deter photographing: the viewer's name and mobile tail.
	Watermark Watermark `json:"watermark"`
}

// Watermark identifies the viewer on screen.
type Watermark struct {
	Name       string `json:"name"`
	MobileTail string `json:"mobile_tail"`
}

var mobileRe = regexp.MustCompile(`^1[0-9]{10}$`)

// MaskMobile hides the middle of a mobile number: 13812341234 → 138****1234.
func MaskMobile(m string) string {
	if len(m) != 11 {
		return strings.Repeat("*", len(m))
	}
	return m[:3] + "****" + m[7:]
}

// revealMobile decides whether viewer a sees the full number of a person
// holding a position at unit.
func (s *Service) revealMobile(a authz.Actor, person, unit int64) bool {
	return a.Superuser || a.AccountID == person || s.authz.Allowed(a, authz.MemberReadMobile, unit)
}

// NewMember adds a person to a unit: an existing account by id or by mobile
// number, or a new person (an account without a password) by name and
// mobile.
type NewMember struct {
	AccountID int64  `json:"account_id"`
	Name      string `json:"name"`
	Mobile    string `json:"mobile"`
	Title     string `json:"title"`
	Leader    bool   `json:"leader"`
	Primary   bool   `json:"primary"`
	SortOrder int    `json:"sort_order"`
}

// AddMember places a person in a unit (member.manage at the unit).
func (s *Service) AddMember(ctx context.Context, a authz.Actor, unit int64, n NewMember) (Position, error) {
	if err := s.check(ctx, a, authz.MemberManage, unit); err != nil {
		return Position{}, err
	}
	title := strings.TrimSpace(n.Title)
	if len([]rune(title)) > 100 {
		return Position{}, invalid("title", "at most 100 characters")
	}
	if n.AccountID == 0 {
		if !mobileRe.MatchString(n.Mobile) {
			return Position{}, invalid("mobile", "11 digits starting with 1 (or give account_id)")
		}
	}
	var posID int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrg(ctx, tx); err != nil {
			return err
		}
		var path, status string
		if err := tx.QueryRow(ctx, `SELECT path::text, status FROM org_units WHERE id = $1`, unit).Scan(&path, &status); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if status != "active" {
			return ErrDissolved
		}
		account := n.AccountID
		if account == 0 {
			err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE mobile = $1`, n.Mobile).Scan(&account)
			if errors.Is(err, pgx.ErrNoRows) {
				name, err := validName("name", n.Name)
				if err != nil {
					return err
				}
				if err := tx.QueryRow(ctx, `INSERT INTO accounts (mobile, display_name) VALUES ($1, $2) RETURNING id`, n.Mobile, name).Scan(&account); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
		} else {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)`, account).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return invalid("account_id", "no such account")
			}
		}
		// The address book's projection of the person.
		if _, err := tx.Exec(ctx, `INSERT INTO org_people (account_id, name, pinyin, initials, mobile)
			SELECT id, display_name, '', '', mobile FROM accounts WHERE id = $1
			ON CONFLICT (account_id) DO NOTHING`, account); err != nil {
			return err
		}
		if err := s.refreshPinyin(ctx, tx, account); err != nil {
			return err
		}
		var hasPrimary bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM org_positions WHERE account_id = $1 AND is_primary AND NOT deleted)`, account).Scan(&hasPrimary); err != nil {
			return err
		}
		primary := n.Primary || !hasPrimary
		if primary && hasPrimary {
			if _, err := tx.Exec(ctx, `UPDATE org_positions SET is_primary = false, version = nextval('org_version') WHERE account_id = $1 AND is_primary AND NOT deleted`, account); err != nil {
				return err
			}
		}
		err := tx.QueryRow(ctx, `INSERT INTO org_positions (account_id, unit_id, unit_path, title, leader, is_primary, sort_order)
			VALUES ($1, $2, $3::ltree, $4, $5, $6, $7) RETURNING id`, account, unit, path, title, n.Leader, primary, n.SortOrder).Scan(&posID)
		if db.SQLState(err) == db.UniqueViolation {
			return fmt.Errorf("%w: the person already holds a position in this unit", ErrConflict)
		}
		if err != nil {
			return err
		}
		// The new position's search keys, and the person's other positions'
		// if refreshPinyin just changed them.
		if err := syncSearchKeys(ctx, tx, account); err != nil {
			return err
		}
		return logPosition(ctx, tx, posID, "")
	})
	if err != nil {
		return Position{}, err
	}
	return s.position(ctx, posID)
}

func (s *Service) refreshPinyin(ctx context.Context, tx pgx.Tx, account int64) error {
	var name string
	if err := tx.QueryRow(ctx, `SELECT name FROM org_people WHERE account_id = $1`, account).Scan(&name); err != nil {
		return err
	}
	full, initials := Pinyin(name)
	_, err := tx.Exec(ctx, `UPDATE org_people SET pinyin = $2, initials = $3 WHERE account_id = $1 AND (pinyin, initials) IS DISTINCT FROM ($2, $3)`, account, full, initials)
	return err
}

// syncSearchKeys copies a person's search keys (org_people) onto their live
// positions, where people search reads them (migration 0002_search). Every
// writer of org_people or of new positions calls it, or does the same in
// bulk (the member importer).
func syncSearchKeys(ctx context.Context, tx pgx.Tx, account int64) error {
	_, err := tx.Exec(ctx, `UPDATE org_positions pos SET search_name = p.name, search_pinyin = p.pinyin,
			search_initials = p.initials, search_mobile_rev = coalesce(reverse(p.mobile), '')
		FROM org_people p WHERE p.account_id = $1 AND pos.account_id = $1 AND NOT pos.deleted
			AND (pos.search_name, pos.search_pinyin, pos.search_initials, pos.search_mobile_rev)
				IS DISTINCT FROM (p.name, p.pinyin, p.initials, coalesce(reverse(p.mobile), ''))`, account)
	return err
}

// logPosition records a position change; oldPath is where it was before
// (empty for a new one).
func logPosition(ctx context.Context, tx pgx.Tx, id int64, oldPath string) error {
	_, err := tx.Exec(ctx, `INSERT INTO org_changes (entity, entity_id, old_path, new_path)
		SELECT 'position', id, nullif($2, '')::ltree, CASE WHEN deleted THEN NULL ELSE unit_path END FROM org_positions WHERE id = $1`, id, oldPath)
	return err
}

const positionColumns = `pos.id, pos.account_id, pos.unit_id, u.name, pos.title, pos.leader, pos.is_primary, pos.sort_order, pos.version`

func scanPosition(r pgx.Row) (Position, error) {
	var p Position
	err := r.Scan(&p.ID, &p.AccountID, &p.UnitID, &p.UnitName, &p.Title, &p.Leader, &p.Primary, &p.SortOrder, &p.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, err
}

func (s *Service) position(ctx context.Context, id int64) (Position, error) {
	return scanPosition(s.pool.QueryRow(ctx, `SELECT `+positionColumns+` FROM org_positions pos JOIN org_units u ON u.id = pos.unit_id
		WHERE pos.id = $1 AND NOT pos.deleted`, id))
}

// PositionPatch changes a position; nil fields stay.
type PositionPatch struct {
	Title     *string `json:"title"`
	Leader    *bool   `json:"leader"`
	Primary   *bool   `json:"primary"`
	SortOrder *int    `json:"sort_order"`
}

// positionUnit finds the unit of a live position the actor may manage.
func (s *Service) positionUnit(ctx context.Context, a authz.Actor, id int64) (int64, error) {
	var unit int64
	err := s.pool.QueryRow(ctx, `SELECT unit_id FROM org_positions WHERE id = $1 AND NOT deleted`, id).Scan(&unit)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return unit, s.check(ctx, a, authz.MemberManage, unit)
}

// UpdatePosition changes title, leadership, primacy or order (member.manage).
func (s *Service) UpdatePosition(ctx context.Context, a authz.Actor, id int64, p PositionPatch) (Position, error) {
	if _, err := s.positionUnit(ctx, a, id); err != nil {
		return Position{}, err
	}
	if p.Title != nil {
		t := strings.TrimSpace(*p.Title)
		if len([]rune(t)) > 100 {
			return Position{}, invalid("title", "at most 100 characters")
		}
		p.Title = &t
	}
	if p.Primary != nil && !*p.Primary {
		return Position{}, invalid("primary", "make another position primary instead")
	}
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrg(ctx, tx); err != nil {
			return err
		}
		if p.Primary != nil {
			if _, err := tx.Exec(ctx, `UPDATE org_positions SET is_primary = false, version = nextval('org_version')
				WHERE account_id = (SELECT account_id FROM org_positions WHERE id = $1) AND id <> $1 AND is_primary AND NOT deleted`, id); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `UPDATE org_positions SET title = coalesce($2, title), leader = coalesce($3, leader),
			is_primary = coalesce($4, is_primary), sort_order = coalesce($5, sort_order), version = nextval('org_version')
			WHERE id = $1 AND NOT deleted`, id, p.Title, p.Leader, p.Primary, p.SortOrder)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return logPosition(ctx, tx, id, "")
	})
	if err != nil {
		return Position{}, err
	}
	return s.position(ctx, id)
}

// MovePosition moves a person's post to another unit (member.manage at
// both). The old position becomes a tombstone and a new one is created, so
// phones that could see only the old unit learn that it left.
func (s *Service) MovePosition(ctx context.Context, a authz.Actor, id, toUnit int64) (Position, error) {
	if _, err := s.positionUnit(ctx, a, id); err != nil {
		return Position{}, err
	}
	if err := s.check(ctx, a, authz.MemberManage, toUnit); err != nil {
		return Position{}, err
	}
	var newID int64
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrg(ctx, tx); err != nil {
			return err
		}
		var path, status string
		if err := tx.QueryRow(ctx, `SELECT path::text, status FROM org_units WHERE id = $1`, toUnit).Scan(&path, &status); err != nil {
			return err
		}
		if status != "active" {
			return ErrDissolved
		}
		var oldPath string
		err := tx.QueryRow(ctx, `UPDATE org_positions SET deleted = true, is_primary = false, version = nextval('org_version')
			WHERE id = $1 AND NOT deleted RETURNING unit_path::text`, id).Scan(&oldPath)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := logPosition(ctx, tx, id, oldPath); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO org_positions (account_id, unit_id, unit_path, title, leader, is_primary, sort_order,
				search_name, search_pinyin, search_initials, search_mobile_rev)
			SELECT account_id, $2, $3::ltree, title, leader,
				(SELECT p.is_primary FROM org_positions p WHERE p.id = $1) OR NOT EXISTS (SELECT 1 FROM org_positions x WHERE x.account_id = o.account_id AND x.is_primary AND NOT x.deleted),
				sort_order, search_name, search_pinyin, search_initials, search_mobile_rev
			FROM org_positions o WHERE id = $1 RETURNING id`, id, toUnit, path).Scan(&newID)
		if db.SQLState(err) == db.UniqueViolation {
			return fmt.Errorf("%w: the person already holds a position in that unit", ErrConflict)
		}
		if err != nil {
			return err
		}
		return logPosition(ctx, tx, newID, "")
	})
	if err != nil {
		return Position{}, err
	}
	return s.position(ctx, newID)
}

// RemovePosition ends a person's post in a unit (member.manage). If it was
// their primary post, their oldest other post becomes primary.
func (s *Service) RemovePosition(ctx context.Context, a authz.Actor, id int64) error {
	if _, err := s.positionUnit(ctx, a, id); err != nil {
		return err
	}
	return db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrg(ctx, tx); err != nil {
			return err
		}
		var oldPath string
		var account int64
		var wasPrimary bool
		err := tx.QueryRow(ctx, `UPDATE org_positions SET version = nextval('org_version'), deleted = true, is_primary = false
			WHERE id = $1 AND NOT deleted RETURNING unit_path::text, account_id, (SELECT is_primary FROM org_positions WHERE id = $1)`, id).
			Scan(&oldPath, &account, &wasPrimary)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if wasPrimary {
			if _, err := tx.Exec(ctx, `UPDATE org_positions SET is_primary = true, version = nextval('org_version')
				WHERE id = (SELECT id FROM org_positions WHERE account_id = $1 AND NOT deleted ORDER BY id LIMIT 1)`, account); err != nil {
				return err
			}
		}
		return logPosition(ctx, tx, id, oldPath)
	})
}

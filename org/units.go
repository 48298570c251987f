package org

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
)

// orgLockID serialises transactions that change units or positions, so
// org_version values commit in order: Tree.refresh and address-book sync
// can then take "the highest committed version" as a safe cursor and never
// skip a change that commits later with a lower version. Org changes are
// administrative and rare; bulk imports take the same lock.
const orgLockID = 0x6f726774 // "orgt"

func lockOrg(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, orgLockID)
	return err
}

const unitColumns = `id, parent_id, level, name, code, sort_order, status, generated, version, updated_at`

func scanUnit(row pgx.Row) (Unit, error) {
	var u Unit
	err := row.Scan(&u.ID, &u.ParentID, &u.Level, &u.Name, &u.Code, &u.SortOrder, &u.Status, &u.Generated, &u.Version, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, ErrNotFound
	}
	return u, err
}

// NewUnit describes a unit to create.
type NewUnit struct {
	ParentID  int64  `json:"parent_id"`
	Name      string `json:"name"`
	Code      string `json:"code"`
	SortOrder int    `json:"sort_order"`
	// Level may be given to state intent; it must then be the parent's + 1.
	Level Level `json:"level"`
}

// CreateUnit adds a unit under a parent (unit.manage at the parent). The
// root (a province) can only be created by a superuser, with ParentID 0.
func (s *Service) CreateUnit(ctx context.Context, a authz.Actor, n NewUnit) (Unit, error) {
	name, err := validName("name", n.Name)
	if err != nil {
		return Unit{}, err
	}
	var code *string
	if n.Code != "" {
		c, err := NormalizeCode(n.Code)
		if err != nil {
			return Unit{}, err
		}
		code = &c
	}
	if n.ParentID == 0 {
		if !a.Superuser {
			return Unit{}, invalid("parent_id", "required")
		}
		if n.Level != 0 && n.Level != Province {
			return Unit{}, ErrLevelMismatch
		}
	} else if err := s.check(ctx, a, authz.UnitManage, n.ParentID); err != nil {
		return Unit{}, err
	}
	var id int64
	return s.changeUnit(ctx, &id, func(tx pgx.Tx) error {
		level, path := Province, ""
		if n.ParentID != 0 {
			var plevel Level
			var status string
			err := tx.QueryRow(ctx, `SELECT level, status, path::text FROM org_units WHERE id = $1`, n.ParentID).Scan(&plevel, &status, &path)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			if status != "active" {
				return fmt.Errorf("parent: %w", ErrDissolved)
			}
			if plevel == Grid {
				return fmt.Errorf("%w: a grid has no children", ErrLevelMismatch)
			}
			level = plevel + 1
			if n.Level != 0 && n.Level != level {
				return fmt.Errorf("%w: under a %s comes a %s, not a %s", ErrLevelMismatch, plevel, level, n.Level)
			}
		}
		var parent *int64
		if n.ParentID != 0 {
			parent = &n.ParentID
		}
		if err := tx.QueryRow(ctx, `SELECT nextval('org_units_id_seq')`).Scan(&id); err != nil {
			return err
		}
		if path != "" {
			path += "."
		}
		path += strconv.FormatInt(id, 10)
		_, err := tx.Exec(ctx, `INSERT INTO org_units (id, parent_id, level, name, code, sort_order, path)
			VALUES ($1, $2, $3, $4, $5, $6, $7::ltree)`, id, parent, level, name, code, n.SortOrder, path)
		if db.SQLState(err) == db.UniqueViolation {
			return ErrDuplicateCode
		}
		if err != nil {
			return err
		}
		return logChange(ctx, tx, "unit", id, "", "")
	})
}

// changeUnit runs fn in a transaction that holds the org lock, then makes
// every node's tree follow and returns the unit as it now is. fn may set
// *id (a new unit's).
func (s *Service) changeUnit(ctx context.Context, id *int64, fn func(tx pgx.Tx) error) (Unit, error) {
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockOrg(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
	if err != nil {
		return Unit{}, err
	}
	s.treeChanged(ctx)
	return s.unit(ctx, *id)
}

// logChange records a change for address-book sync; empty paths are taken
// from the entity's current row.
func logChange(ctx context.Context, tx pgx.Tx, entity string, id int64, oldPath, newPath string) error {
	_, err := tx.Exec(ctx, `INSERT INTO org_changes (entity, entity_id, old_path, new_path)
		SELECT $1, $2, nullif($3, '')::ltree, coalesce(nullif($4, '')::ltree, (SELECT path FROM org_units WHERE id = $2 AND $1 = 'unit'))`,
		entity, id, oldPath, newPath)
	return err
}

func (s *Service) treeChanged(ctx context.Context) {
	if err := s.tree.Changed(ctx); err != nil {
		s.log.WarnContext(ctx, "announcing a tree change", "err", err)
	}
}

// unit reads a unit without a permission check; callers have checked.
func (s *Service) unit(ctx context.Context, id int64) (Unit, error) {
	return scanUnit(s.pool.QueryRow(ctx, `SELECT `+unitColumns+` FROM org_units WHERE id = $1`, id))
}

// Unit returns a unit the actor may see.
func (s *Service) Unit(ctx context.Context, a authz.Actor, id int64) (Unit, error) {
	if _, err := s.tree.Ancestors(id); err != nil {
		return Unit{}, ErrNotFound
	}
	if !s.canSeeUnit(ctx, a, id) {
		return Unit{}, s.hidden(ctx, a, id, 0)
	}
	return s.unit(ctx, id)
}

// UnitByCode returns a unit by its official code (any accepted length).
func (s *Service) UnitByCode(ctx context.Context, a authz.Actor, code string) (Unit, error) {
	c, err := NormalizeCode(code)
	if err != nil {
		return Unit{}, err
	}
	var id int64
	err = s.pool.QueryRow(ctx, `SELECT id FROM org_units WHERE code = $1`, c).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Unit{}, ErrNotFound
	}
	if err != nil {
		return Unit{}, err
	}
	return s.Unit(ctx, a, id)
}

// UnitPatch changes a unit's name or sort order; nil fields stay.
type UnitPatch struct {
	Name      *string `json:"name"`
	SortOrder *int    `json:"sort_order"`
}

// UpdateUnit renames or reorders a unit (unit.manage at the unit).
func (s *Service) UpdateUnit(ctx context.Context, a authz.Actor, id int64, p UnitPatch) (Unit, error) {
	if err := s.check(ctx, a, authz.UnitManage, id); err != nil {
		return Unit{}, err
	}
	if p.Name != nil {
		n, err := validName("name", *p.Name)
		if err != nil {
			return Unit{}, err
		}
		p.Name = &n
	}
	return s.changeUnit(ctx, &id, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE org_units SET name = coalesce($2, name), sort_order = coalesce($3, sort_order),
			version = nextval('org_version'), updated_at = now() WHERE id = $1`, id, p.Name, p.SortOrder)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return logChange(ctx, tx, "unit", id, "", "")
	})
}

// MoveUnit moves a unit and its whole subtree under a new parent of the
// level above it. The actor needs unit.manage at the unit and at the new
// parent.
func (s *Service) MoveUnit(ctx context.Context, a authz.Actor, id, newParent int64) (Unit, error) {
	if err := s.check(ctx, a, authz.UnitManage, id); err != nil {
		return Unit{}, err
	}
	if err := s.check(ctx, a, authz.UnitManage, newParent); err != nil {
		return Unit{}, err
	}
	return s.changeUnit(ctx, &id, func(tx pgx.Tx) error {
		var level, plevel Level
		var path, ppath, pstatus string
		if err := tx.QueryRow(ctx, `SELECT level, path::text FROM org_units WHERE id = $1`, id).Scan(&level, &path); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		err := tx.QueryRow(ctx, `SELECT level, path::text, status FROM org_units WHERE id = $1`, newParent).Scan(&plevel, &ppath, &pstatus)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("new parent: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		switch {
		case ppath == path || strings.HasPrefix(ppath, path+"."):
			return ErrCycle
		case pstatus != "active":
			return fmt.Errorf("new parent: %w", ErrDissolved)
		case plevel+1 != level:
			return fmt.Errorf("%w: a %s belongs under a %s, not a %s", ErrLevelMismatch, level, level-1, plevel)
		}
		newPath := ppath + "." + strconv.FormatInt(id, 10)
		// Log first, while the old paths are still there.
		if _, err := tx.Exec(ctx, `INSERT INTO org_changes (entity, entity_id, old_path, new_path)
			SELECT 'unit', id, path, `+rebase("path")+` FROM org_units WHERE path <@ $1::ltree`, path, newPath); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO org_changes (entity, entity_id, old_path, new_path)
			SELECT 'position', id, unit_path, `+rebase("unit_path")+` FROM org_positions WHERE unit_path <@ $1::ltree AND NOT deleted`, path, newPath); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE org_units SET path = `+rebase("path")+`,
			parent_id = CASE WHEN id = $3 THEN $4 ELSE parent_id END, version = nextval('org_version'), updated_at = now()
			WHERE path <@ $1::ltree`, path, newPath, id, newParent); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE org_positions SET unit_path = `+rebase("unit_path")+`, version = nextval('org_version')
			WHERE unit_path <@ $1::ltree AND NOT deleted`, path, newPath)
		return err
	})
}

// DissolveUnit marks a unit dissolved (unit.manage at the unit). It is
// refused, with the list of what blocks it, while the unit has active
// children or members, or open work reported by the registered checks.
func (s *Service) DissolveUnit(ctx context.Context, a authz.Actor, id int64) (Unit, error) {
	if err := s.check(ctx, a, authz.UnitManage, id); err != nil {
		return Unit{}, err
	}
	return s.changeUnit(ctx, &id, func(tx pgx.Tx) error {
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM org_units WHERE id = $1 FOR UPDATE`, id).Scan(&status); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if status != "active" {
			return ErrDissolved
		}
		var blockers []Blocker
		for _, q := range []struct{ kind, count, sample string }{
			{"active_children", `SELECT count(*) FROM org_units WHERE parent_id = $1 AND status = 'active'`,
				`SELECT name FROM org_units WHERE parent_id = $1 AND status = 'active' ORDER BY sort_order, id LIMIT 5`},
			{"members", `SELECT count(*) FROM org_positions WHERE unit_id = $1 AND NOT deleted`,
				`SELECT p.name FROM org_positions pos JOIN org_people p USING (account_id) WHERE pos.unit_id = $1 AND NOT pos.deleted ORDER BY pos.sort_order, pos.id LIMIT 5`},
		} {
			var n int64
			if err := tx.QueryRow(ctx, q.count, id).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				continue
			}
			rows, err := tx.Query(ctx, q.sample, id)
			if err != nil {
				return err
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			blockers = append(blockers, Blocker{Kind: q.kind, Count: n, Sample: names})
		}
		for _, w := range s.openWork {
			n, sample, err := w(ctx, tx, id)
			if err != nil {
				return err
			}
			if n > 0 {
				blockers = append(blockers, Blocker{Kind: "open_work", Count: n, Sample: sample})
			}
		}
		if len(blockers) > 0 {
			return &BlockedError{Blockers: blockers}
		}
		if _, err := tx.Exec(ctx, `UPDATE org_units SET status = 'dissolved', version = nextval('org_version'), updated_at = now() WHERE id = $1`, id); err != nil {
			return err
		}
		return logChange(ctx, tx, "unit", id, "", "")
	})
}

// OpenWork counts open work items at a unit inside the dissolving
// transaction, with a few names for the message. The tasks package
// registers one so units with open work cannot be dissolved.
type OpenWork func(ctx context.Context, tx pgx.Tx, unitID int64) (count int64, sample []string, err error)

// RegisterOpenWork adds a check that can block dissolution. Call before serving.
func (s *Service) RegisterOpenWork(w OpenWork) { s.openWork = append(s.openWork, w) }

// rebase is the SQL that moves a path column from under $1 (the moved
// unit's old path) to under $2 (its new path).
func rebase(col string) string {
	return "CASE WHEN " + col + " = $1::ltree THEN $2::ltree ELSE $2::ltree || subpath(" + col + ", nlevel($1::ltree)) END"
}

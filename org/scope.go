package org

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
)

// scope is what one viewer may see in the address book: the subtrees where
// they hold a role that allows unit.read, their own units, and the leaders
// of the units above their own.
type scope struct {
	all   bool     // superuser
	reach []string // ltree paths of the subtree roots
	roots []int64  // the same roots as ids
	own   []int64  // units the viewer holds a position in
	above []int64  // strict ancestors of own units
}

func (s *Service) scope(ctx context.Context, a authz.Actor) (*scope, error) {
	sc := &scope{all: a.Superuser}
	if sc.all {
		return sc, nil
	}
	for _, u := range s.authz.Reach(a.AccountID, authz.UnitRead) {
		if p, ok := s.pathOf(u); ok {
			sc.reach = append(sc.reach, p)
			sc.roots = append(sc.roots, u)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT unit_id FROM org_positions WHERE account_id = $1 AND NOT deleted`, a.AccountID)
	if err != nil {
		return nil, err
	}
	sc.own, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	seen := map[int64]bool{}
	for _, u := range sc.own {
		anc, err := s.tree.Ancestors(u)
		if err != nil {
			continue
		}
		for _, x := range anc[1:] {
			if !seen[x] {
				seen[x] = true
				sc.above = append(sc.above, x)
			}
		}
	}
	return sc, nil
}

// reaches reports whether the actor holds a role that shows the unit's
// subtree (unit.read at the unit or above). It needs no query: a request
// about a unit inside the actor's reach skips the scope's database lookup
// of the actor's own positions, and everything below the unit is visible.
func (s *Service) reaches(a authz.Actor, unit int64) bool {
	return a.Superuser || s.authz.Allowed(a, authz.UnitRead, unit)
}

// unitsBelowFilter is the visibility condition for a listing of units below
// unit (on org_units aliased u, arguments numbered from first), or the
// not-found error when the actor may not see unit itself. Below a unit in
// the actor's reach every unit is visible: the condition is "true".
func (s *Service) unitsBelowFilter(ctx context.Context, a authz.Actor, unit int64, first int) (string, []any, error) {
	if s.reaches(a, unit) {
		return "true", nil, nil
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return "", nil, err
	}
	if !sc.unitVisible(s.tree, unit) {
		return "", nil, s.hiddenUnit(ctx, a, unit)
	}
	filter, args := sc.unitFilter(first)
	return filter, args, nil
}

// pathOf builds a unit's ltree path from the in-memory tree.
func (s *Service) pathOf(unit int64) (string, bool) {
	anc, err := s.tree.Ancestors(unit)
	if err != nil {
		return "", false
	}
	var b strings.Builder
	for i := len(anc) - 1; i >= 0; i-- {
		b.WriteString(strconv.FormatInt(anc[i], 10))
		if i > 0 {
			b.WriteByte('.')
		}
	}
	return b.String(), true
}

// unitVisible: inside a reached subtree, one's own unit, or above it.
func (sc *scope) unitVisible(t *Tree, unit int64) bool {
	if sc.all {
		return true
	}
	for _, r := range sc.roots {
		if t.Contains(r, unit) {
			return true
		}
	}
	return contains(sc.own, unit) || contains(sc.above, unit)
}

// canSeeUnit reports whether the actor may know the unit exists.
func (s *Service) canSeeUnit(ctx context.Context, a authz.Actor, unit int64) bool {
	if _, err := s.tree.Ancestors(unit); err != nil {
		return false
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return false
	}
	return sc.unitVisible(s.tree, unit)
}

func contains(s []int64, v int64) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// memberFilter is the SQL condition (on org_positions aliased pos) that
// keeps only positions the viewer may see, with its arguments numbered from
// first.
func (sc *scope) memberFilter(first int) (string, []any) {
	if sc.all {
		return "true", nil
	}
	n := strconv.Itoa
	cond := "(pos.unit_path <@ $" + n(first) + "::ltree[] OR pos.unit_id = ANY($" + n(first+1) + ") OR (pos.leader AND pos.unit_id = ANY($" + n(first+2) + ")))"
	return cond, []any{sc.reach, sc.own, sc.above}
}

// unitFilter is the SQL condition (on org_units aliased u) for visible units.
func (sc *scope) unitFilter(first int) (string, []any) {
	if sc.all {
		return "true", nil
	}
	n := strconv.Itoa
	cond := "(u.path <@ $" + n(first) + "::ltree[] OR u.id = ANY($" + n(first+1) + ") OR u.id = ANY($" + n(first+2) + "))"
	return cond, []any{sc.reach, sc.own, sc.above}
}

// hidden records that the actor asked for a unit (or a person) it may not
// see and returns the not-found answer it gets.
func (s *Service) hidden(ctx context.Context, a authz.Actor, unit, person int64) error {
	if s.authz != nil {
		s.authz.Denied(ctx, a, authz.UnitRead, unit, person, "not visible to the actor")
	}
	return ErrNotFound
}

// hiddenUnit is hidden for a unit that exists; an unknown id is simply not
// found, with nothing to record.
func (s *Service) hiddenUnit(ctx context.Context, a authz.Actor, unit int64) error {
	if _, err := s.tree.Ancestors(unit); err != nil {
		return ErrNotFound
	}
	return s.hidden(ctx, a, unit, 0)
}

package org

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/zhangban/zhangban/internal/authz"
)

// Page limits for listings.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

func pageSize(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 0 || n > MaxPageSize:
		return 0, invalid("limit", "1-%d", MaxPageSize)
	}
	return n, nil
}

func collectUnits(rows pgx.Rows, withCount bool, hint int) ([]Unit, error) {
	defer rows.Close()
	// A subtree page is 500 units: one scratch row and a few slabs for what
	// the units point to, rather than allocations per row, keep this hot
	// read from feeding the garbage collector.
	var (
		u      Unit
		parent pgtype.Int8
		code   pgtype.Text
		n      int64
	)
	dest := []any{&u.ID, &parent, &u.Level, &u.Name, &code, &u.SortOrder, &u.Status, &u.Generated, &u.Version, &u.UpdatedAt}
	if withCount {
		dest = append(dest, &n)
	}
	units := make([]Unit, 0, hint)
	var ints []int64 // parents and member counts
	var codes []string
	slab := func(vs []int64, v int64) ([]int64, *int64) {
		if len(vs) == cap(vs) {
			vs = make([]int64, 0, max(32, 2*hint))
		}
		vs = append(vs, v)
		return vs, &vs[len(vs)-1]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		v := u
		v.ParentID, v.Code, v.Members = nil, nil, nil
		if parent.Valid {
			ints, v.ParentID = slab(ints, parent.Int64)
		}
		if code.Valid {
			if len(codes) == cap(codes) {
				codes = make([]string, 0, max(32, hint))
			}
			codes = append(codes, code.String)
			v.Code = &codes[len(codes)-1]
		}
		if withCount {
			ints, v.Members = slab(ints, n)
		}
		units = append(units, v)
	}
	return units, rows.Err()
}

const unitColumnsU = `u.id, u.parent_id, u.level, u.name, u.code, u.sort_order, u.status, u.generated, u.version, u.updated_at`

// Children lists the visible children of a unit with the number of members
// placed directly in each, in display order. Dissolved children are left
// out unless withDissolved.
func (s *Service) Children(ctx context.Context, a authz.Actor, id int64, withDissolved bool) ([]Unit, error) {
	filter, args, err := s.unitsBelowFilter(ctx, a, id, 3)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+unitColumnsU+`,
			(SELECT count(*) FROM org_positions pos WHERE pos.unit_id = u.id AND NOT pos.deleted)
		FROM org_units u WHERE u.parent_id = $1 AND ($2 OR u.status = 'active') AND `+filter+`
		ORDER BY u.sort_order, u.id`, append([]any{id, withDissolved}, args...)...)
	if err != nil {
		return nil, err
	}
	return collectUnits(rows, true, 32)
}

// Ancestors lists the unit's ancestors from the root down, the unit last.
func (s *Service) Ancestors(ctx context.Context, a authz.Actor, id int64) ([]Unit, error) {
	if !s.reaches(a, id) && !s.canSeeUnit(ctx, a, id) {
		return nil, s.hiddenUnit(ctx, a, id)
	}
	anc, err := s.tree.Ancestors(id)
	if err != nil {
		return nil, ErrNotFound
	}
	rows, err := s.pool.Query(ctx, `SELECT `+unitColumnsU+` FROM org_units u WHERE u.id = ANY($1) ORDER BY u.level`, anc)
	if err != nil {
		return nil, err
	}
	return collectUnits(rows, false, len(anc))
}

// SubtreeQuery pages through a subtree.
type SubtreeQuery struct {
	Level  Level // 0: every level
	After  int64 // cursor: the last id of the previous page
	Limit  int
	Status string // "active" (default), "dissolved" or "all"
}

// Subtree lists the units below id (and id itself), by id, a page at a time.
// It returns the cursor for the next page, 0 at the end.
func (s *Service) Subtree(ctx context.Context, a authz.Actor, id int64, q SubtreeQuery) ([]Unit, int64, error) {
	limit, err := pageSize(q.Limit)
	if err != nil {
		return nil, 0, err
	}
	switch q.Status {
	case "":
		q.Status = "active"
	case "active", "dissolved", "all":
	default:
		return nil, 0, invalid("status", "active, dissolved or all")
	}
	filter, args, err := s.unitsBelowFilter(ctx, a, id, 6)
	if err != nil {
		return nil, 0, err
	}
	// The subtree of a province, city or county is its area (migration
	// 0002_search): a btree range in id order. Below a county the subtree
	// is small and the GiST index on path finds it.
	var within string
	var key any
	if anc, err := s.tree.Ancestors(id); err == nil && len(anc) <= int(County) {
		within, key = "u."+[...]string{"", "province_id", "city_id", "county_id"}[len(anc)]+" = $1", id
	} else {
		path, _ := s.pathOf(id)
		within, key = "u.path <@ $1::ltree", path
	}
	rows, err := s.pool.Query(ctx, `SELECT `+unitColumnsU+` FROM org_units u
		WHERE `+within+` AND ($2 = 0 OR u.level = $2) AND u.id > $3 AND ($4 = 'all' OR u.status = $4) AND `+filter+`
		ORDER BY u.id LIMIT $5`, append([]any{key, q.Level, q.After, q.Status, limit}, args...)...)
	if err != nil {
		return nil, 0, err
	}
	units, err := collectUnits(rows, false, limit)
	if err != nil {
		return nil, 0, err
	}
	var next int64
	if len(units) == limit {
		next = units[len(units)-1].ID
	}
	return units, next, nil
}

// SearchUnits finds visible active units whose name contains q, names that
// start with q first.
func (s *Service) SearchUnits(ctx context.Context, a authz.Actor, q string, limit int) ([]Unit, error) {
	if q == "" || len([]rune(q)) > 50 {
		return nil, invalid("q", "1-50 characters")
	}
	limit, err := pageSize(limit)
	if err != nil {
		return nil, err
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return nil, err
	}
	filter, args := sc.unitFilter(3)
	rows, err := s.pool.Query(ctx, `SELECT `+unitColumnsU+` FROM org_units u
		WHERE strpos(u.name, $1) > 0 AND u.status = 'active' AND `+filter+`
		ORDER BY (left(u.name, length($1)) = $1) DESC, u.level, u.id LIMIT $2`, append([]any{q, limit}, args...)...)
	if err != nil {
		return nil, err
	}
	return collectUnits(rows, false, limit)
}

// SubtreeStats counts the active units per level and the people placed in
// a subtree (stats.read at the unit).
type SubtreeStats struct {
	UnitID  int64            `json:"unit_id"`
	Units   map[string]int64 `json:"units"` // by level name
	Members int64            `json:"members"`
}

// Stats returns the statistics of the subtree of id.
func (s *Service) Stats(ctx context.Context, a authz.Actor, id int64) (SubtreeStats, error) {
	if err := s.check(ctx, a, authz.StatsRead, id); err != nil {
		return SubtreeStats{}, err
	}
	path, _ := s.pathOf(id)
	st := SubtreeStats{UnitID: id, Units: map[string]int64{}}
	rows, err := s.pool.Query(ctx, `SELECT level, count(*) FROM org_units WHERE path <@ $1::ltree AND status = 'active' GROUP BY level`, path)
	if err != nil {
		return st, err
	}
	for rows.Next() {
		var l Level
		var n int64
		if err := rows.Scan(&l, &n); err != nil {
			return st, err
		}
		st.Units[l.String()] = n
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	err = s.pool.QueryRow(ctx, `SELECT count(DISTINCT account_id) FROM org_positions WHERE unit_path <@ $1::ltree AND NOT deleted`, path).Scan(&st.Members)
	return st, err
}

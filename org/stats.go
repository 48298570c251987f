package org

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// StatKeys are the keys of Stats, in the order to show them: the levels,
// then members.
func StatKeys() []string {
	return []string{"province", "city", "county", "township", "village", "grid", "members"}
}

// Stats counts the active units of each level and the members: distinct
// people with a live position. Every key of StatKeys is present.
func Stats(ctx context.Context, pool *pgxpool.Pool) (map[string]int64, error) {
	out := make(map[string]int64, 7)
	for _, k := range StatKeys() {
		out[k] = 0
	}
	rows, err := pool.Query(ctx, `SELECT level, count(*) FROM org_units WHERE status = 'active' GROUP BY level`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var l Level
		var n int64
		if err := rows.Scan(&l, &n); err != nil {
			return nil, err
		}
		out[l.String()] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var members int64
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT account_id) FROM org_positions WHERE NOT deleted`).Scan(&members); err != nil {
		return nil, err
	}
	out["members"] = members
	return out, nil
}

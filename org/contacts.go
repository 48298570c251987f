package org

import (
	"context"

	"github.com/zhangban/zhangban/internal/authz"
)

// VisiblePeople returns which of the accounts the actor may see in the
// address book (and so may message): those with at least one position the
// actor's scope covers, and the actor themself. Accounts that do not exist,
// hold no position, or are hidden are simply left out; the caller answers
// "not found" for them without telling the two apart.
func (s *Service) VisiblePeople(ctx context.Context, a authz.Actor, accounts []int64) (map[int64]bool, error) {
	seen := make(map[int64]bool, len(accounts))
	var ask []int64
	for _, id := range accounts {
		if id == a.AccountID && id > 0 {
			seen[id] = true
			continue
		}
		ask = append(ask, id)
	}
	if len(ask) == 0 {
		return seen, nil
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return nil, err
	}
	filter, args := sc.memberFilter(2)
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT pos.account_id FROM org_positions pos
		WHERE pos.account_id = ANY($1) AND NOT pos.deleted AND `+filter, append([]any{ask}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		seen[id] = true
	}
	return seen, rows.Err()
}

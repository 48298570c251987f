package org

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/authz"
)

// TestPlaceAccounts places accounts made elsewhere (as zhangban accounts
// seed does) twice, and checks they are members to the address book.
func TestPlaceAccounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	rows, err := f.pool.Query(ctx, `INSERT INTO accounts (login, display_name, password_hash)
		SELECT 'p-' || g, 'P ' || g, 'x' FROM generate_series(1, 30) g ORDER BY g RETURNING id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	// A person already in the address book, with a primary post elsewhere.
	zhang := f.person(f.T2, "张三", "13800001111", true)
	ids = append(ids, zhang)

	rep, err := PlaceAccounts(ctx, f.pool, f.V1, ids, "测试", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PositionsCreated != 31 || rep.PeopleCreated != 30 || rep.PeopleUpdated != 0 {
		t.Fatalf("first: %+v", rep)
	}
	if n := queryInt(t, f.pool, `SELECT count(*) FROM org_people WHERE account_id = ANY($1) AND mobile IS NULL AND name LIKE 'P %' AND pinyin LIKE 'p%'`, ids[:30]); n != 30 {
		t.Errorf("%d new address-book entries as the accounts have them, want 30", n)
	}
	if n := queryInt(t, f.pool, `SELECT count(*) FROM org_positions WHERE unit_id = $1 AND is_primary AND title = '测试' AND search_name LIKE 'P %'`, f.V1); n != 30 {
		t.Errorf("%d primary positions in the unit, want 30 (张三's stays in T2)", n)
	}
	if n := queryInt(t, f.pool, `SELECT count(*) FROM org_people WHERE account_id = $1 AND name = '张三' AND mobile = '13800001111'`, zhang); n != 1 {
		t.Error("张三's entry changed")
	}
	// They see each other, as members of one unit do.
	seen, err := f.s.VisiblePeople(ctx, authz.Actor{AccountID: ids[0]}, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(ids) {
		t.Errorf("account %d sees %d of the %d", ids[0], len(seen), len(ids))
	}
	members, _, err := f.s.Members(ctx, root, f.V1, "", 100)
	if err != nil || len(members) != 31 {
		t.Fatalf("members of the unit: %d %v", len(members), err)
	}

	again, err := PlaceAccounts(ctx, f.pool, f.V1, ids, "测试", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.PositionsCreated+again.PositionsUpdated+again.PeopleCreated+again.PeopleUpdated != 0 || again.PositionsUnchanged != 31 {
		t.Fatalf("second: %+v, want nothing changed", again)
	}

	// Refused: nothing written.
	before := queryInt(t, f.pool, `SELECT count(*) FROM org_positions`)
	if _, err := f.s.DissolveUnit(ctx, root, f.G1); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		unit int64
		ids  []int64
		want error
	}{
		"dissolved unit":  {f.G1, ids, ErrDissolved},
		"no such unit":    {999999, ids, ErrNotFound},
		"no such account": {f.T1, []int64{ids[0], 999999}, ErrNotFound},
		"twice":           {f.T1, []int64{ids[0], ids[0]}, ErrInvalid},
	} {
		if _, err := PlaceAccounts(ctx, f.pool, c.unit, c.ids, "", ImportOptions{}); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if err := CheckActiveUnit(ctx, f.pool, f.G1); !errors.Is(err, ErrDissolved) {
		t.Errorf("CheckActiveUnit of a dissolved unit: %v", err)
	}
	if err := CheckActiveUnit(ctx, f.pool, f.V1); err != nil {
		t.Errorf("CheckActiveUnit of an active unit: %v", err)
	}
	if after := queryInt(t, f.pool, `SELECT count(*) FROM org_positions`); after != before {
		t.Errorf("positions %d → %d after refusals", before, after)
	}
}

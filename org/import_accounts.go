package org

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/db"
)

// CheckActiveUnit returns an error naming the unit when it does not exist
// (ErrNotFound) or is dissolved (ErrDissolved), for tools that check their
// input before they write anything. b may be the caller's transaction.
func CheckActiveUnit(ctx context.Context, b db.Beginner, unit int64) error {
	return db.InTx(ctx, b, func(tx pgx.Tx) error {
		units, err := loadUnits(ctx, tx, `id = $1`, unit)
		if err != nil {
			return err
		}
		return unitProblem(units, unit)
	})
}

// unitProblem says what is wrong with unit, given what loadUnits found.
func unitProblem(units []existingUnit, unit int64) error {
	switch {
	case len(units) == 0:
		return fmt.Errorf("unit %d: %w", unit, ErrNotFound)
	case !units[0].active:
		return fmt.Errorf("unit %d (%s): %w", unit, units[0].name, ErrDissolved)
	}
	return nil
}

// PlaceAccounts gives every account in ids a position in unit with title,
// and an address-book entry when it has none, in bulk: the member
// importer's writer (import_members.go) for accounts that exist already,
// such as the ones `zhangban accounts seed` makes. Like the importer it
// checks no permissions, works under the org lock in one transaction (b
// may be the caller's), writes with COPY under one version and raises the
// sync epoch instead of logging each position. A position the account
// holds in the unit already is kept, with its title set and its leader
// flag cleared; an account without a primary position gets this one as
// primary. Existing address-book entries keep their name and mobile
// number; new ones take the account's.
func PlaceAccounts(ctx context.Context, b db.Beginner, unit int64, ids []int64, title string, opts ImportOptions) (MembersReport, error) {
	start := time.Now()
	title = strings.TrimSpace(title)
	if utf8.RuneCountInString(title) > 100 || strings.ContainsAny(title, "\x00\r\n\t") {
		return MembersReport{}, invalid("title", "at most 100 characters on one line")
	}
	index := make(map[int64]int32, len(ids))
	for i, id := range ids {
		if _, dup := index[id]; dup || id <= 0 {
			return MembersReport{}, invalid("accounts", "account %d is invalid or given twice", id)
		}
		index[id] = int32(i)
	}
	in := newMemberInput("accounts")
	in.people = make([]memberPerson, len(ids))
	in.rows = make([]memberRow, len(ids))
	for i := range ids {
		in.rows[i] = memberRow{line: i + 1, person: int32(i), title: title}
	}
	rep := MembersReport{Rows: int64(len(ids)), People: int64(len(ids))}
	err := db.InTx(ctx, b, func(tx pgx.Tx) error {
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		units, err := loadUnits(ctx, tx, `id = $1`, unit)
		if err != nil {
			return err
		}
		if err := unitProblem(units, unit); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT a.id,
				CASE WHEN p.account_id IS NULL THEN a.display_name ELSE p.name END,
				coalesce(CASE WHEN p.account_id IS NULL THEN a.mobile ELSE p.mobile END, '')
			FROM accounts a LEFT JOIN org_people p ON p.account_id = a.id WHERE a.id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		found := 0
		for rows.Next() {
			var id int64
			var p memberPerson
			if err := rows.Scan(&id, &p.name, &p.mobile); err != nil {
				return err
			}
			i := index[id]
			p.line = int(i) + 1
			in.people[i] = p
			found++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if found < len(ids) {
			for i, p := range in.people {
				if p.line == 0 {
					return fmt.Errorf("account %d (and %d more): %w", ids[i], len(ids)-found-1, ErrNotFound)
				}
			}
		}
		fillPinyin(in.people)
		version, err := importVersion(ctx, tx)
		if err != nil {
			return err
		}
		w := memberWriter{tx: tx, in: in, resolved: []*existingUnit{&units[0]}, rep: &rep, opts: opts,
			account: ids, known: ids, version: version}
		if err := w.people(ctx); err != nil {
			return fmt.Errorf("people: %w", err)
		}
		if err := w.positions(ctx); err != nil {
			return fmt.Errorf("positions: %w", err)
		}
		if rep.PeopleCreated+rep.PeopleUpdated+rep.PositionsCreated+rep.PositionsUpdated > 0 {
			return raiseEpoch(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return MembersReport{}, err
	}
	rep.Elapsed = time.Since(start)
	opts.logger().InfoContext(ctx, "placed accounts", "unit", unit, "accounts", len(ids),
		"positions_created", rep.PositionsCreated, "ms", rep.Elapsed.Milliseconds())
	return rep, nil
}

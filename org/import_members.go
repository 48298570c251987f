package org

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
)

var memberFileColumns = []string{"name", "mobile", "unitCode", "title", "leader", "roles"}

// memberRoles are the roles a member file may grant, by bit.
var memberRoles = [...]authz.Role{authz.RoleAdmin, authz.RoleLeader, authz.RoleStaff, authz.RoleGridWorker, authz.RoleAuditor}

// memberInput is a validated member register: people (one per mobile), the
// units they are placed in, and one row per position.
type memberInput struct {
	file     string
	people   []memberPerson
	units    []string // distinct padded codes
	unitRaw  []string // each as first written, for messages
	rows     []memberRow
	byMobile map[string]int32
	byUnit   map[string]int32
	titles   map[string]string // interned: registers repeat a few titles
	probs    problems
}

type memberPerson struct {
	name, mobile     string
	line             int
	pinyin, initials string
}

type memberRow struct {
	line   int
	person int32
	unit   int32
	title  string
	leader bool
	roles  uint8 // bit i: memberRoles[i]
}

func newMemberInput(file string) *memberInput {
	return &memberInput{file: file, byMobile: map[string]int32{}, byUnit: map[string]int32{},
		titles: map[string]string{}}
}

// grow makes room for about n positions, sparing a million-row register
// the copies of repeated growth.
func (in *memberInput) grow(n int) {
	in.rows = slices.Grow(in.rows, n)
	in.people = slices.Grow(in.people, n)
	in.byMobile = make(map[string]int32, n)
}

// add checks one position and records it.
func (in *memberInput) add(line int, name, mobile, unitCode, title, leader, roles string) {
	file := in.file
	ok := true
	name, err := validName("name", name)
	if err != nil {
		in.probs.add(file, line, "%v", err)
		ok = false
	}
	mobile = strings.TrimSpace(mobile)
	if len(mobile) != 11 || mobile[0] != '1' || !csvDigits(mobile) {
		in.probs.add(file, line, "mobile %q: want 11 digits starting with 1", mobile)
		ok = false
	}
	code, err := NormalizeCode(unitCode)
	if err != nil {
		in.probs.add(file, line, "unitCode %q: want a unit's code of 2, 4, 6, 9 or 12 digits, or 15 for a grid", strings.TrimSpace(unitCode))
		ok = false
	}
	title = strings.TrimSpace(title)
	if utf8.RuneCountInString(title) > 100 || strings.ContainsAny(title, "\x00\r\n\t") {
		in.probs.add(file, line, "title: at most 100 characters on one line")
		ok = false
	}
	isLeader, valid := parseLeader(leader)
	if !valid {
		in.probs.add(file, line, "leader %q: want yes or no (是/否, true/false, 1/0)", strings.TrimSpace(leader))
		ok = false
	}
	var mask uint8
	for _, r := range strings.FieldsFunc(roles, func(c rune) bool { return c == ';' || c == '；' }) {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		found := false
		for i, known := range memberRoles {
			if strings.EqualFold(r, string(known)) {
				mask |= 1 << i
				found = true
			}
		}
		if !found {
			in.probs.add(file, line, "role %q: want admin, leader, staff, grid_worker or auditor", r)
			ok = false
		}
	}
	if !ok {
		return
	}
	p, known := in.byMobile[mobile]
	if !known {
		p = int32(len(in.people))
		in.byMobile[mobile] = p
		in.people = append(in.people, memberPerson{name: name, mobile: mobile, line: line})
	} else if first := in.people[p]; first.name != name {
		in.probs.add(file, line, "mobile %s is %s at line %d, not %s", mobile, first.name, first.line, name)
		return
	}
	u, known := in.byUnit[code]
	if !known {
		u = int32(len(in.units))
		in.byUnit[code] = u
		in.units = append(in.units, code)
		in.unitRaw = append(in.unitRaw, strings.TrimSpace(unitCode))
	}
	if t, ok := in.titles[title]; ok {
		title = t
	} else if len(in.titles) < 10000 {
		in.titles[title] = title
	}
	in.rows = append(in.rows, memberRow{line: line, person: p, unit: u, title: title, leader: isLeader, roles: mask})
}

// finish drops (and reports) every row that places a person in a unit a
// second time. Sorting finds them with less memory and time than a map of
// a million pairs would.
func (in *memberInput) finish() {
	order := make([]int32, len(in.rows))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		x, y := &in.rows[a], &in.rows[b]
		if x.person != y.person {
			return int(x.person - y.person)
		}
		if x.unit != y.unit {
			return int(x.unit - y.unit)
		}
		return int(a - b)
	})
	drop := map[int32]bool{}
	var first int32 // the first row of the current (person, unit)
	if len(order) > 0 {
		first = order[0]
	}
	for k := 1; k < len(order); k++ {
		x, y := &in.rows[first], &in.rows[order[k]]
		if x.person != y.person || x.unit != y.unit {
			first = order[k]
			continue
		}
		in.probs.add(in.file, y.line, "%s is already placed in unit %s at line %d", in.people[y.person].name, in.unitRaw[y.unit], x.line)
		drop[order[k]] = true
	}
	if len(drop) > 0 {
		kept := in.rows[:0]
		for i, r := range in.rows {
			if !drop[int32(i)] {
				kept = append(kept, r)
			}
		}
		in.rows = kept
	}
}

// parseLeader reads the leader column; empty means no.
func parseLeader(s string) (leader, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "y", "是", "true", "t", "1":
		return true, true
	case "no", "n", "否", "false", "f", "0", "":
		return false, true
	}
	return false, false
}

// readMembers reads a member register: name, mobile, unit code, title,
// leader, roles; a header line is optional.
func readMembers(file string, in *memberInput, r io.Reader) int {
	spec := csvSpec{columns: memberFileColumns, isHeader: func(rec []string) bool {
		return len(rec) > 1 && !csvDigits(strings.TrimSpace(rec[1]))
	}}
	return readCSV(file, r, spec, &in.probs, func(line int, rec []string) {
		in.add(line, rec[0], rec[1], rec[2], rec[3], rec[4], rec[5])
	})
}

// MembersReport is what ImportMembers did.
type MembersReport struct {
	Rows               int64         `json:"rows"`
	People             int64         `json:"people"`
	AccountsCreated    int64         `json:"accounts_created"`
	PeopleCreated      int64         `json:"people_created"`
	PeopleUpdated      int64         `json:"people_updated"`
	PositionsCreated   int64         `json:"positions_created"`
	PositionsUpdated   int64         `json:"positions_updated"`
	PositionsUnchanged int64         `json:"positions_unchanged"`
	GrantsCreated      int64         `json:"grants_created"`
	Elapsed            time.Duration `json:"elapsed_ns"`
}

// WriteTable prints the report for a terminal.
func (r MembersReport) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "members: %s rows, %s people\n", grouped(r.Rows), grouped(r.People))
	fmt.Fprintf(w, "  accounts created   %10s\n", grouped(r.AccountsCreated))
	fmt.Fprintf(w, "  people created     %10s   updated %s\n", grouped(r.PeopleCreated), grouped(r.PeopleUpdated))
	fmt.Fprintf(w, "  positions created  %10s   updated %s   unchanged %s\n", grouped(r.PositionsCreated), grouped(r.PositionsUpdated), grouped(r.PositionsUnchanged))
	fmt.Fprintf(w, "  grants created     %10s\n", grouped(r.GrantsCreated))
}

// ImportMembers imports a member register: a CSV file of name, mobile, unit
// code, title, leader (yes/no, 是/否, true/false, 1/0) and roles (admin,
// leader, staff, grid_worker, auditor separated by ';', may be empty), with
// or without a header line. A person is known by mobile: one without an
// account gets one (no login, no password: they cannot sign in until one is
// set), and their address-book entry with pinyin. Each row is a position
// (a person listed at several units holds several: 兼职; the first listed
// is primary unless they have one) and grants its roles at the unit.
// Everything is checked first; nothing is written if anything is wrong.
// Re-importing updates titles and leader flags and adds what is missing;
// it removes nothing.
//
// The grants reach a running server's authorizer through the authz change
// version that writing them bumps.
func ImportMembers(ctx context.Context, pool *pgxpool.Pool, file string, opts ImportOptions) (MembersReport, error) {
	start := time.Now()
	f, err := os.Open(file)
	if err != nil {
		return MembersReport{}, err
	}
	in := newMemberInput(file)
	if st, err := f.Stat(); err == nil { // lines run 50-70 bytes
		in.grow(int(min(st.Size()/50, 8<<20)))
	}
	n := readMembers(file, in, f)
	f.Close()
	in.finish()
	opts.progressf("reading %s: %s rows, %s people", file, grouped(int64(n)), grouped(int64(len(in.people))))
	// Problems so far are reported with those the database finds (unknown
	// units), before anything is written.
	rep, err := importMembers(ctx, pool, in, opts)
	if err != nil {
		return MembersReport{}, err
	}
	rep.Elapsed = time.Since(start)
	opts.logger().InfoContext(ctx, "imported members", "file", file, "rows", rep.Rows, "people", rep.People,
		"positions_created", rep.PositionsCreated, "grants_created", rep.GrantsCreated, "ms", rep.Elapsed.Milliseconds())
	return rep, nil
}

// fillPinyin computes every person's pinyin on all CPUs. Names of Han
// characters only (nearly all) are put together from a per-character memo
// of Pinyin, which treats each Han character on its own; others go to
// Pinyin whole.
func fillPinyin(people []memberPerson) {
	workers := runtime.GOMAXPROCS(0)
	chunk := (len(people) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(people); lo += chunk {
		part := people[lo:min(lo+chunk, len(people))]
		wg.Go(func() {
			memo := map[rune][2]string{}
			var full, initials []byte
			for i := range part {
				p := &part[i]
				full, initials = full[:0], initials[:0]
				han := true
				for _, r := range p.name {
					if !unicode.Is(unicode.Han, r) {
						han = false
						break
					}
					c, ok := memo[r]
					if !ok {
						c[0], c[1] = Pinyin(string(r))
						memo[r] = c
					}
					full = append(full, c[0]...)
					initials = append(initials, c[1]...)
				}
				if han {
					p.pinyin, p.initials = string(full), string(initials)
				} else {
					p.pinyin, p.initials = Pinyin(p.name)
				}
			}
		})
	}
	wg.Wait()
}

// importMembers writes a validated register. It reads what the database
// already has of these people (accounts by mobile, their address-book
// entries, live positions and grants), works out the difference here, and
// COPYs the new rows straight into their tables: no staging, no ON
// CONFLICT, so a first import of a province pays only for the rows and
// their indexes. The few changed rows go through a temporary table.
func importMembers(ctx context.Context, b db.Beginner, in *memberInput, opts ImportOptions) (MembersReport, error) {
	timer := newPhaseTimer(opts.logger())
	rep := MembersReport{Rows: int64(len(in.rows)), People: int64(len(in.people))}
	// Pinyin is computed while the database checks the units.
	pinyinDone := make(chan struct{})
	if in.probs.total == 0 {
		go func() {
			defer close(pinyinDone)
			fillPinyin(in.people)
		}()
	} else {
		close(pinyinDone)
	}
	defer func() { <-pinyinDone }()
	err := db.InTx(ctx, b, func(tx pgx.Tx) error {
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		units, err := loadUnits(ctx, tx, `code = ANY($1)`, in.units)
		if err != nil {
			return err
		}
		byCode := make(map[string]*existingUnit, len(units))
		for i := range units {
			byCode[units[i].code] = &units[i]
		}
		resolved := make([]*existingUnit, len(in.units))
		for i, c := range in.units {
			resolved[i] = byCode[c]
		}
		for _, r := range in.rows {
			switch u := resolved[r.unit]; {
			case u == nil:
				in.probs.add(in.file, r.line, "unitCode %s: no such unit", in.unitRaw[r.unit])
			case !u.active:
				in.probs.add(in.file, r.line, "unit %s (%s) is dissolved", u.code, u.name)
			}
		}
		if err := in.probs.err(); err != nil {
			return err
		}
		timer.done(ctx, "units", "units", len(units))

		version, err := importVersion(ctx, tx)
		if err != nil {
			return err
		}
		w := memberWriter{tx: tx, in: in, resolved: resolved, rep: &rep, opts: opts, version: version}
		if err := w.accounts(ctx); err != nil {
			return fmt.Errorf("accounts: %w", err)
		}
		timer.done(ctx, "accounts", "created", rep.AccountsCreated)
		<-pinyinDone
		timer.done(ctx, "pinyin", "people", len(in.people))
		if err := w.people(ctx); err != nil {
			return fmt.Errorf("people: %w", err)
		}
		timer.done(ctx, "people", "created", rep.PeopleCreated, "updated", rep.PeopleUpdated)
		if err := w.positions(ctx); err != nil {
			return fmt.Errorf("positions: %w", err)
		}
		timer.done(ctx, "positions", "created", rep.PositionsCreated, "updated", rep.PositionsUpdated)
		if err := w.grants(ctx); err != nil {
			return fmt.Errorf("grants: %w", err)
		}
		timer.done(ctx, "grants", "created", rep.GrantsCreated)
		if rep.PeopleCreated+rep.PeopleUpdated+rep.PositionsCreated+rep.PositionsUpdated > 0 {
			return raiseEpoch(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return MembersReport{}, err
	}
	return rep, nil
}

// memberWriter holds one member import's transaction and what it learns.
type memberWriter struct {
	tx       pgx.Tx
	in       *memberInput
	resolved []*existingUnit // by in.units index
	rep      *MembersReport
	opts     ImportOptions
	account  []int64 // by person
	known    []int64 // accounts that existed before: their rows may exist too
	version  int64   // of every org row written (importVersion)
}

// accounts finds the people's accounts by mobile and creates the missing
// ones: no login, no password.
func (w *memberWriter) accounts(ctx context.Context) error {
	in := w.in
	mobiles := make([]string, len(in.people))
	for i := range in.people {
		mobiles[i] = in.people[i].mobile
	}
	rows, err := w.tx.Query(ctx, `SELECT id, mobile FROM accounts WHERE mobile = ANY($1)`, mobiles)
	if err != nil {
		return err
	}
	w.account = make([]int64, len(in.people))
	for rows.Next() {
		var id int64
		var m string
		if err := rows.Scan(&id, &m); err != nil {
			return err
		}
		w.account[in.byMobile[m]] = id
		w.known = append(w.known, id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var fresh []int
	for i, id := range w.account {
		if id == 0 {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	w.opts.progressf("writing: %s accounts", grouped(int64(len(fresh))))
	// The ids come from the column's default; the new rows are read back by
	// id from above where the sequence stood (other sessions' new accounts
	// there have other mobiles).
	var last int64
	if err := w.tx.QueryRow(ctx, `SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('accounts', 'id')::regclass), 0)`).Scan(&last); err != nil {
		return err
	}
	n, err := copyRows(ctx, w.tx, `COPY accounts (mobile, display_name) FROM STDIN`, len(fresh), func(b []byte, k int) []byte {
		p := &in.people[fresh[k]]
		b = append(b, p.mobile...)
		b = append(b, '\t')
		b = copyText(b, p.name)
		return append(b, '\n')
	})
	if err != nil {
		return err
	}
	w.rep.AccountsCreated = n
	rows, err = w.tx.Query(ctx, `SELECT id, mobile FROM accounts WHERE id > $1 AND mobile IS NOT NULL`, last)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var m string
		if err := rows.Scan(&id, &m); err != nil {
			return err
		}
		if p, ok := in.byMobile[m]; ok && w.account[p] == 0 {
			w.account[p] = id
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, i := range fresh {
		if w.account[i] == 0 {
			return fmt.Errorf("the new account of %s was not found", in.people[i].mobile)
		}
	}
	return nil
}

// people writes the address-book entries: new ones, and changed names.
func (w *memberWriter) people(ctx context.Context) error {
	in := w.in
	type entry struct{ name, pinyin, initials, mobile string }
	have := map[int64]entry{}
	if len(w.known) > 0 {
		rows, err := w.tx.Query(ctx, `SELECT account_id, name, pinyin, initials, coalesce(mobile, '') FROM org_people WHERE account_id = ANY($1)`, w.known)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var e entry
			if err := rows.Scan(&id, &e.name, &e.pinyin, &e.initials, &e.mobile); err != nil {
				return err
			}
			have[id] = e
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	var fresh, changed []int
	for i := range in.people {
		p := &in.people[i]
		e, ok := have[w.account[i]]
		switch {
		case !ok:
			fresh = append(fresh, i)
		case e != entry{p.name, p.pinyin, p.initials, p.mobile}:
			changed = append(changed, i)
		}
	}
	row := func(list []int) func(b []byte, k int) []byte {
		return func(b []byte, k int) []byte {
			i := list[k]
			p := &in.people[i]
			b = copyInt(b, w.account[i])
			b = append(b, '\t')
			b = copyText(b, p.name)
			b = append(b, '\t')
			b = copyText(b, p.pinyin)
			b = append(b, '\t')
			b = copyText(b, p.initials)
			b = append(b, '\t')
			b = copyNullText(b, p.mobile) // PlaceAccounts places accounts without one
			b = append(b, '\t')
			b = copyInt(b, w.version)
			return append(b, '\n')
		}
	}
	if len(fresh) > 0 {
		w.opts.progressf("writing: %s address-book entries", grouped(int64(len(fresh))))
		restore, err := bulkLoad(ctx, w.tx, "org_people", len(fresh))
		if err != nil {
			return err
		}
		n, err := copyRows(ctx, w.tx, `COPY org_people (account_id, name, pinyin, initials, mobile, version) FROM STDIN`, len(fresh), row(fresh))
		if err != nil {
			return err
		}
		w.rep.PeopleCreated = n
		if err := restore(); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		if _, err := w.tx.Exec(ctx, `DROP TABLE IF EXISTS pg_temp.org_import_people;
			CREATE TEMP TABLE org_import_people (account_id bigint PRIMARY KEY, name text, pinyin text, initials text, mobile text, version bigint) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := copyRows(ctx, w.tx, `COPY org_import_people FROM STDIN`, len(changed), row(changed)); err != nil {
			return err
		}
		tag, err := w.tx.Exec(ctx, `UPDATE org_people o SET name = t.name, pinyin = t.pinyin, initials = t.initials, mobile = t.mobile,
			version = t.version FROM org_import_people t WHERE o.account_id = t.account_id`)
		if err != nil {
			return err
		}
		w.rep.PeopleUpdated = tag.RowsAffected()
		// The search keys on their positions (syncSearchKeys, in bulk).
		if _, err := w.tx.Exec(ctx, `UPDATE org_positions pos SET search_name = t.name, search_pinyin = t.pinyin,
				search_initials = t.initials, search_mobile_rev = coalesce(reverse(t.mobile), '')
			FROM org_import_people t WHERE pos.account_id = t.account_id AND NOT pos.deleted`); err != nil {
			return err
		}
	}
	return nil
}

// positions adds the positions people do not hold yet and updates the
// titles and leader flags of those they do. A person's first new position
// is primary if they have none.
func (w *memberWriter) positions(ctx context.Context) error {
	in := w.in
	type pos struct {
		id     int64
		title  string
		leader bool
	}
	have := map[[2]int64]pos{}
	primary := map[int64]bool{}
	if len(w.known) > 0 {
		rows, err := w.tx.Query(ctx, `SELECT id, account_id, unit_id, title, leader, is_primary FROM org_positions
			WHERE NOT deleted AND account_id = ANY($1)`, w.known)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p pos
			var account, unit int64
			var isPrimary bool
			if err := rows.Scan(&p.id, &account, &unit, &p.title, &p.leader, &isPrimary); err != nil {
				return err
			}
			have[[2]int64{account, unit}] = p
			if isPrimary {
				primary[account] = true
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	var fresh, changed []int
	var changedIDs []int64
	isPrimary := make([]bool, len(in.rows))
	for i, r := range in.rows {
		account := w.account[r.person]
		p, ok := have[[2]int64{account, w.resolved[r.unit].id}]
		switch {
		case !ok:
			fresh = append(fresh, i)
			if !primary[account] {
				primary[account] = true
				isPrimary[i] = true
			}
		case p.title != r.title || p.leader != r.leader:
			changed = append(changed, i)
			changedIDs = append(changedIDs, p.id)
		}
	}
	if len(fresh) > 0 {
		w.opts.progressf("writing: %s positions", grouped(int64(len(fresh))))
		restore, err := bulkLoad(ctx, w.tx, "org_positions", len(fresh))
		if err != nil {
			return err
		}
		n, err := copyRows(ctx, w.tx, `COPY org_positions (account_id, unit_id, unit_path, title, leader, is_primary, version,
				search_name, search_pinyin, search_initials, search_mobile_rev) FROM STDIN`, len(fresh),
			func(b []byte, k int) []byte {
				i := fresh[k]
				r := &in.rows[i]
				u := w.resolved[r.unit]
				p := &in.people[r.person]
				b = copyInt(b, w.account[r.person])
				b = append(b, '\t')
				b = copyInt(b, u.id)
				b = append(b, '\t')
				b = append(b, u.path...)
				b = append(b, '\t')
				b = copyText(b, r.title)
				b = append(b, '\t')
				b = copyBool(b, r.leader)
				b = append(b, '\t')
				b = copyBool(b, isPrimary[i])
				b = append(b, '\t')
				b = copyInt(b, w.version)
				b = append(b, '\t')
				b = copyText(b, p.name)
				b = append(b, '\t')
				b = copyText(b, p.pinyin)
				b = append(b, '\t')
				b = copyText(b, p.initials)
				b = append(b, '\t')
				for j := len(p.mobile) - 1; j >= 0; j-- { // digits: reversing bytes is reversing characters
					b = append(b, p.mobile[j])
				}
				return append(b, '\n')
			})
		if err != nil {
			return err
		}
		w.rep.PositionsCreated = n
		if err := restore(); err != nil {
			return err
		}
	}
	if len(changed) > 0 {
		if _, err := w.tx.Exec(ctx, `DROP TABLE IF EXISTS pg_temp.org_import_positions;
			CREATE TEMP TABLE org_import_positions (id bigint PRIMARY KEY, title text, leader boolean) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := copyRows(ctx, w.tx, `COPY org_import_positions FROM STDIN`, len(changed), func(b []byte, k int) []byte {
			r := &in.rows[changed[k]]
			b = copyInt(b, changedIDs[k])
			b = append(b, '\t')
			b = copyText(b, r.title)
			b = append(b, '\t')
			b = copyBool(b, r.leader)
			return append(b, '\n')
		}); err != nil {
			return err
		}
		tag, err := w.tx.Exec(ctx, `UPDATE org_positions p SET title = t.title, leader = t.leader, version = $1
			FROM org_import_positions t WHERE p.id = t.id`, w.version)
		if err != nil {
			return err
		}
		w.rep.PositionsUpdated = tag.RowsAffected()
	}
	w.rep.PositionsUnchanged = w.rep.Rows - int64(len(fresh)) - int64(len(changed))
	return nil
}

// grants adds the roles people do not hold yet. Writing authz_grants bumps
// the authz version (its trigger), which running servers poll.
func (w *memberWriter) grants(ctx context.Context) error {
	in := w.in
	type grant struct {
		account int64
		role    string
		unit    int64
	}
	have := map[grant]bool{}
	if len(w.known) > 0 {
		rows, err := w.tx.Query(ctx, `SELECT account_id, role, unit_id FROM authz_grants WHERE account_id = ANY($1)`, w.known)
		if err != nil {
			return err
		}
		for rows.Next() {
			var g grant
			if err := rows.Scan(&g.account, &g.role, &g.unit); err != nil {
				return err
			}
			have[g] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	var fresh []grant
	for _, r := range in.rows {
		for k, role := range memberRoles {
			if r.roles&(1<<k) == 0 {
				continue
			}
			g := grant{w.account[r.person], string(role), w.resolved[r.unit].id}
			if !have[g] {
				fresh = append(fresh, g)
			}
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	w.opts.progressf("writing: %s grants", grouped(int64(len(fresh))))
	n, err := copyRows(ctx, w.tx, `COPY authz_grants (account_id, role, unit_id) FROM STDIN`, len(fresh), func(b []byte, k int) []byte {
		g := &fresh[k]
		b = copyInt(b, g.account)
		b = append(b, '\t')
		b = append(b, g.role...)
		b = append(b, '\t')
		b = copyInt(b, g.unit)
		return append(b, '\n')
	})
	if err != nil {
		return err
	}
	w.rep.GrantsCreated = n
	// One audit entry for the lot: one per grant would double the import.
	_, err = w.tx.Exec(ctx, `INSERT INTO authz_audit (kind, action, detail) VALUES ('grant', 'role.grant', $1)`,
		fmt.Sprintf("member import from %s: %d grants", in.file, n))
	return err
}

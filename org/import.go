package org

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Bulk imports are operator tools: they check no permissions, run in one
// transaction under the org lock, validate the whole input before writing
// anything, and write with COPY and set-based statements. Instead of one
// org_changes row per unit or position they raise org_sync.epoch, so phones
// reload the address book in full.

// importLockID is the org lock of units.go (lockOrg): every transaction
// that changes units or positions takes it, so versions commit in order.
const importLockID = 0x6f726774 // "orgt"

func importLock(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, importLockID)
	return err
}

// ImportOptions are what every import takes besides its input.
type ImportOptions struct {
	// Log receives a record per phase; nil discards.
	Log *slog.Logger
	// Progress receives phase names and counts for a terminal; nil is silent.
	Progress io.Writer
}

func (o ImportOptions) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

func (o ImportOptions) progressf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Problem is one thing wrong with an input file.
type Problem struct {
	File    string `json:"file"`
	Line    int    `json:"line"` // 0: the file as a whole
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.File + ": " + p.Message
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Message
}

// maxProblems is how many problems an ImportError keeps; the total counts all.
const maxProblems = 20

// ImportError lists what is wrong with an input; nothing was written.
type ImportError struct {
	Problems []Problem // the first maxProblems found
	Total    int       // every problem found
}

func (e *ImportError) Error() string {
	var b strings.Builder
	if e.Total == 1 {
		b.WriteString("1 problem in the input; nothing was written:")
	} else {
		fmt.Fprintf(&b, "%s problems in the input; nothing was written:", grouped(int64(e.Total)))
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	if more := e.Total - len(e.Problems); more > 0 {
		fmt.Fprintf(&b, "\n  … and %s more", grouped(int64(more)))
	}
	return b.String()
}

// Unwrap makes an ImportError an ErrInvalid.
func (e *ImportError) Unwrap() error { return ErrInvalid }

// problems collects an input's problems, keeping the first maxProblems.
type problems struct {
	list  []Problem
	total int
}

func (p *problems) add(file string, line int, format string, args ...any) {
	p.total++
	if len(p.list) < maxProblems {
		p.list = append(p.list, Problem{File: file, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

func (p *problems) err() error {
	if p.total == 0 {
		return nil
	}
	return &ImportError{Problems: p.list, Total: p.total}
}

// csvSpec describes the columns of an input file.
type csvSpec struct {
	columns []string
	// header: the first line must name the columns. Otherwise a first line
	// is taken as a header when isHeader says so, and read as data if not.
	header   bool
	isHeader func(rec []string) bool
}

// readCSV reads a UTF-8 CSV file (a BOM is skipped) and calls fn with each
// data record of the right shape and the line it starts on. Records with the
// wrong number of columns, invalid UTF-8 or broken quoting are reported to
// probs, not passed on. It returns how many data records it read.
func readCSV(name string, r io.Reader, spec csvSpec, probs *problems, fn func(line int, rec []string)) int {
	br := bufio.NewReaderSize(r, 256<<10)
	if bom, err := br.Peek(3); err == nil && string(bom) == "\uFEFF" {
		br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1 // checked here, with a better message
	cr.ReuseRecord = true
	first, n := true, 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			switch {
			case errors.Is(pe.Err, csv.ErrBareQuote):
				probs.add(name, pe.StartLine, `a quote (") inside an unquoted field; quote the whole field and double the quote`)
			case errors.Is(pe.Err, csv.ErrQuote):
				probs.add(name, pe.StartLine, "a quoted field is not closed or has text after its closing quote (is the file truncated?)")
			default:
				probs.add(name, pe.StartLine, "%v", pe.Err)
			}
			first = false
			continue
		}
		if err != nil {
			probs.add(name, 0, "reading: %v", err)
			return n
		}
		line, _ := cr.FieldPos(0)
		bad := false
		for _, f := range rec {
			if !utf8.ValidString(f) {
				probs.add(name, line, "not valid UTF-8 (save the file as UTF-8; GBK is not accepted)")
				bad = true
				break
			}
		}
		if bad {
			first = false
			continue
		}
		if first {
			first = false
			if spec.header {
				if !sameColumns(rec, spec.columns) {
					if len(rec) > 0 && csvDigits(strings.TrimSpace(rec[0])) {
						probs.add(name, line, "missing header line: want %s", strings.Join(spec.columns, ","))
					} else {
						probs.add(name, line, "header: want %s, got %s", strings.Join(spec.columns, ","), strings.Join(rec, ","))
					}
					return n
				}
				continue
			}
			if spec.isHeader != nil && spec.isHeader(rec) {
				continue
			}
		}
		if len(rec) != len(spec.columns) {
			probs.add(name, line, "want %d columns (%s), got %d", len(spec.columns), strings.Join(spec.columns, ","), len(rec))
			continue
		}
		n++
		fn(line, rec)
	}
	return n
}

func sameColumns(rec, want []string) bool {
	if len(rec) != len(want) {
		return false
	}
	for i := range rec {
		if !strings.EqualFold(strings.TrimSpace(rec[i]), want[i]) {
			return false
		}
	}
	return true
}

// csvDigits reports whether s is non-empty and all ASCII digits.
func csvDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// grouped writes n with thousands separators: 27,036.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// copyRows streams n rows in COPY text format into the statement sql (a
// COPY … FROM STDIN). row appends row i, fields separated by tabs and ended
// by a newline, using the copy* helpers.
func copyRows(ctx context.Context, tx pgx.Tx, sql string, n int, row func(b []byte, i int) []byte) (int64, error) {
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 0, 128<<10)
		for i := 0; i < n; i++ {
			buf = row(buf, i)
			if len(buf) >= 120<<10 {
				if _, err := pw.Write(buf); err != nil {
					return // the COPY failed and closed the reader
				}
				buf = buf[:0]
			}
		}
		if _, err := pw.Write(buf); err == nil {
			pw.Close()
		}
	})
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, pr, sql)
	pr.Close() // unblocks the writer if the COPY stopped reading
	wg.Wait()
	return tag.RowsAffected(), err
}

// copyText appends s escaped for the COPY text format.
func copyText(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, c)
		}
	}
	return b
}

// copyNullText appends s, or NULL when s is empty.
func copyNullText(b []byte, s string) []byte {
	if s == "" {
		return append(b, '\\', 'N')
	}
	return copyText(b, s)
}

func copyInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }

// copyNullInt appends n, or NULL when n is 0.
func copyNullInt(b []byte, n int64) []byte {
	if n == 0 {
		return append(b, '\\', 'N')
	}
	return strconv.AppendInt(b, n, 10)
}

func copyBool(b []byte, v bool) []byte {
	if v {
		return append(b, 't')
	}
	return append(b, 'f')
}

// raiseEpoch makes phones reload the address book in full instead of
// syncing the changes one by one: a bulk import logs none.
func raiseEpoch(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `UPDATE org_sync SET epoch = greatest(epoch, (SELECT last_value FROM org_version))`)
	return err
}

// phaseTimer reports how long each phase took to the log.
type phaseTimer struct {
	log   *slog.Logger
	start time.Time
	last  time.Time
}

func newPhaseTimer(log *slog.Logger) *phaseTimer {
	now := time.Now()
	return &phaseTimer{log: log, start: now, last: now}
}

func (t *phaseTimer) done(ctx context.Context, phase string, args ...any) {
	now := time.Now()
	t.log.DebugContext(ctx, "import phase", append([]any{"phase", phase, "ms", now.Sub(t.last).Milliseconds()}, args...)...)
	t.last = now
}

// LevelCounts are what an import did at one level. A unit both renamed and
// moved counts in both columns; unchanged ones in neither.
type LevelCounts struct {
	Level       Level `json:"level"`
	Inserted    int64 `json:"inserted"`
	Renamed     int64 `json:"renamed"`
	Moved       int64 `json:"moved"`
	Reactivated int64 `json:"reactivated"` // dissolved units the input lists again
	Unchanged   int64 `json:"unchanged"`
	// Absent counts units of the database (with a code, imported, active)
	// under the input's provinces that the input lacks. They are reported,
	// never deleted.
	Absent int64 `json:"absent"`
}

// ImportReport is what an import of units did.
type ImportReport struct {
	Levels []LevelCounts `json:"levels"` // province first; the levels the input touched
	// AbsentSample names a few absent units: "330102001051 清波门社区 (#123)".
	AbsentSample []string `json:"absent_sample,omitempty"`
	// Uncoded lists units stored without a code because their 12-digit
	// padded code is their parent's: NBS gives the county-less cities
	// (东莞, 中山, 儋州) a county coded like the city. Re-imports find them
	// by parent and name.
	Uncoded []string      `json:"uncoded,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Total adds up the levels.
func (r ImportReport) Total() LevelCounts {
	var t LevelCounts
	for _, c := range r.Levels {
		t.Inserted += c.Inserted
		t.Renamed += c.Renamed
		t.Moved += c.Moved
		t.Reactivated += c.Reactivated
		t.Unchanged += c.Unchanged
		t.Absent += c.Absent
	}
	return t
}

// Changed reports whether the import wrote anything.
func (r ImportReport) Changed() bool {
	t := r.Total()
	return t.Inserted+t.Renamed+t.Moved+t.Reactivated > 0
}

// WriteTable prints the counts per level for a terminal.
func (r ImportReport) WriteTable(w io.Writer) {
	line := func(name string, c LevelCounts) {
		fmt.Fprintf(w, "%-9s %10s %8s %8s %12s %10s %8s\n", name, grouped(c.Inserted), grouped(c.Renamed),
			grouped(c.Moved), grouped(c.Reactivated), grouped(c.Unchanged), grouped(c.Absent))
	}
	fmt.Fprintf(w, "%-9s %10s %8s %8s %12s %10s %8s\n", "level", "inserted", "renamed", "moved", "reactivated", "unchanged", "absent")
	for _, c := range r.Levels {
		line(c.Level.String(), c)
	}
	if len(r.Levels) > 1 {
		line("total", r.Total())
	}
	if len(r.AbsentSample) > 0 {
		fmt.Fprintf(w, "absent from the input (kept; dissolve them by hand if they are gone), e.g.:\n")
		for _, s := range r.AbsentSample {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	for _, s := range r.Uncoded {
		fmt.Fprintf(w, "stored without a code: %s\n", s)
	}
}

// unitRow is one unit of an input, validated.
type unitRow struct {
	file   string // for messages
	line   int
	raw    string // the code as written
	code   string // the code stored (padded); "" to store none
	name   string
	level  Level
	parent int // index of the parent row in the input, or -1
	// parentID is the existing parent when parent is -1; 0 for a root.
	parentID  int64
	generated bool
}

// existingUnit is a unit of the database an input may match.
type existingUnit struct {
	id, parentID      int64
	level             Level
	name, code, path  string
	active, generated bool
	used              bool // matched by an input row
}

type unitKey struct {
	parent int64
	level  Level
	name   string
}

// loadUnits reads the units an input may match.
func loadUnits(ctx context.Context, tx pgx.Tx, where string, args ...any) ([]existingUnit, error) {
	rows, err := tx.Query(ctx, `SELECT id, coalesce(parent_id, 0), level, name, coalesce(code, ''),
		status = 'active', generated, path::text FROM org_units WHERE `+where+` ORDER BY level, id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []existingUnit
	for rows.Next() {
		var e existingUnit
		if err := rows.Scan(&e.id, &e.parentID, &e.level, &e.name, &e.code, &e.active, &e.generated, &e.path); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// unitWrite is an input of units and the database state it applies to.
type unitWrite struct {
	rows        []unitRow      // parents before children
	existing    []existingUnit // every unit a row may match
	parentPaths map[int64]string
	// absent: count existing coded units under the input's provinces that
	// the input lacks.
	absent bool
}

// applyUnits upserts the rows by code (uncoded rows by parent, level and
// name): inserts new units with COPY, renames, reactivates and moves
// existing ones (with their subtrees and the positions in them). The caller
// holds the org lock. A row matching a unit of another level is a problem
// and nothing is written.
func applyUnits(ctx context.Context, tx pgx.Tx, w *unitWrite, opts ImportOptions, rep *ImportReport) error {
	rows := w.rows
	byCode := make(map[string]*existingUnit, len(w.existing))
	byKey := map[unitKey]*existingUnit{}
	for i := range w.existing {
		e := &w.existing[i]
		if e.code != "" {
			byCode[e.code] = e
		} else if !e.generated {
			byKey[unitKey{e.parentID, e.level, e.name}] = e
		}
	}
	match := make([]*existingUnit, len(rows))
	var probs problems
	fresh := 0
	for i := range rows {
		r := &rows[i]
		var e *existingUnit
		if r.code != "" {
			e = byCode[r.code]
		} else {
			parent, known := r.parentID, true
			if r.parent >= 0 {
				if m := match[r.parent]; m != nil {
					parent = m.id
				} else {
					known = false // a new parent has no old children
				}
			}
			if known {
				e = byKey[unitKey{parent, r.level, r.name}]
			}
		}
		if e != nil && e.used {
			e = nil
		}
		if e != nil && e.level != r.level {
			probs.add(r.file, r.line, "code %s is unit #%d in the database, a %s named %q; the input makes it a %s", r.raw, e.id, e.level, e.name, r.level)
			e = nil
		}
		if e != nil {
			e.used = true
		} else {
			fresh++
		}
		match[i] = e
	}
	if err := probs.err(); err != nil {
		return err
	}

	var newIDs []int64
	if fresh > 0 {
		if err := tx.QueryRow(ctx, `SELECT array_agg(nextval('org_units_id_seq')) FROM generate_series(1, $1)`, fresh).Scan(&newIDs); err != nil {
			return err
		}
	}
	var counts [Grid + 1]LevelCounts
	var touched [Grid + 1]bool
	ids := make([]int64, len(rows))
	pids := make([]int64, len(rows))
	paths := make([]string, len(rows))
	var inserts, moves, updates []int
	k := 0
	for i := range rows {
		r := &rows[i]
		e := match[i]
		pid, ppath := r.parentID, ""
		if r.parent >= 0 {
			pid, ppath = ids[r.parent], paths[r.parent]
		} else if pid != 0 {
			ppath = w.parentPaths[pid]
		}
		if e == nil {
			ids[i] = newIDs[k]
			k++
		} else {
			ids[i] = e.id
		}
		pids[i] = pid
		p := strconv.FormatInt(ids[i], 10)
		if ppath != "" {
			p = ppath + "." + p
		}
		paths[i] = p
		c := &counts[r.level]
		touched[r.level] = true
		if e == nil {
			c.Inserted++
			inserts = append(inserts, i)
			continue
		}
		changed := false
		if e.parentID != pid {
			c.Moved++
			moves = append(moves, i)
			changed = true
		}
		if e.name != r.name {
			c.Renamed++
			changed = true
		}
		if !e.active {
			c.Reactivated++
			changed = true
		}
		if e.name != r.name || !e.active || e.generated != r.generated {
			updates = append(updates, i)
		}
		if !changed {
			c.Unchanged++
		}
	}

	if w.absent {
		roots := map[int64]bool{}
		for i := range rows {
			if rows[i].level == Province {
				roots[ids[i]] = true
			}
		}
		for i := range w.existing {
			e := &w.existing[i]
			if e.used || e.code == "" || !e.active || e.generated || e.level > Village {
				continue
			}
			root, _, _ := strings.Cut(e.path, ".")
			if id, _ := strconv.ParseInt(root, 10, 64); !roots[id] {
				continue
			}
			counts[e.level].Absent++
			touched[e.level] = true
			if len(rep.AbsentSample) < 10 {
				rep.AbsentSample = append(rep.AbsentSample, fmt.Sprintf("%s %s (#%d)", e.code, e.name, e.id))
			}
		}
	}
	for l := Province; l <= Grid; l++ {
		if touched[l] {
			counts[l].Level = l
			rep.Levels = append(rep.Levels, counts[l])
		}
	}

	opts.progressf("writing: %s units (%s new, %s moved, %s renamed or reactivated)",
		grouped(int64(len(rows))), grouped(int64(len(inserts))), grouped(int64(len(moves))), grouped(int64(len(updates))))
	if len(inserts)+len(moves)+len(updates) == 0 {
		return nil
	}
	version, err := importVersion(ctx, tx)
	if err != nil {
		return err
	}
	if len(inserts) > 0 {
		restore, err := bulkLoad(ctx, tx, "org_units", len(inserts))
		if err != nil {
			return err
		}
		// Parents come first in rows, so in the COPY too.
		_, err = copyRows(ctx, tx, `COPY org_units (id, parent_id, level, name, code, generated, path, version) FROM STDIN`, len(inserts),
			func(b []byte, j int) []byte {
				i := inserts[j]
				r := &rows[i]
				b = copyInt(b, ids[i])
				b = append(b, '\t')
				b = copyNullInt(b, pids[i])
				b = append(b, '\t')
				b = copyInt(b, int64(r.level))
				b = append(b, '\t')
				b = copyText(b, r.name)
				b = append(b, '\t')
				b = copyNullText(b, r.code)
				b = append(b, '\t')
				b = copyBool(b, r.generated)
				b = append(b, '\t')
				b = append(b, paths[i]...)
				b = append(b, '\t')
				b = copyInt(b, version)
				return append(b, '\n')
			})
		if err != nil {
			return fmt.Errorf("inserting units: %w", err)
		}
		if err := restore(); err != nil {
			return err
		}
	}
	if len(moves) > 0 {
		// One at a time, parents first: a move rewrites the subtree under
		// the unit's path of the moment, which a move above may just have
		// changed. Positions first, while the unit still has its old path.
		b := &pgx.Batch{}
		for _, i := range moves {
			b.Queue(`UPDATE org_positions p SET unit_path = CASE WHEN p.unit_path = m.path THEN $2::ltree ELSE $2::ltree || subpath(p.unit_path, nlevel(m.path)) END, version = $3
				FROM org_units m WHERE m.id = $1 AND p.unit_path <@ m.path AND NOT p.deleted`, ids[i], paths[i], version)
			b.Queue(`UPDATE org_units u SET path = CASE WHEN u.id = $1 THEN $2::ltree ELSE $2::ltree || subpath(u.path, nlevel(m.path)) END,
				parent_id = CASE WHEN u.id = $1 THEN $3::bigint ELSE u.parent_id END, version = $4, updated_at = now()
				FROM org_units m WHERE m.id = $1 AND u.path <@ m.path`, ids[i], paths[i], pids[i], version)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("moving units: %w", err)
		}
	}
	if len(updates) > 0 {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS pg_temp.org_import_update;
			CREATE TEMP TABLE org_import_update (id bigint PRIMARY KEY, name text NOT NULL, generated boolean NOT NULL) ON COMMIT DROP`); err != nil {
			return err
		}
		_, err := copyRows(ctx, tx, `COPY org_import_update (id, name, generated) FROM STDIN`, len(updates), func(b []byte, j int) []byte {
			i := updates[j]
			b = copyInt(b, ids[i])
			b = append(b, '\t')
			b = copyText(b, rows[i].name)
			b = append(b, '\t')
			b = copyBool(b, rows[i].generated)
			return append(b, '\n')
		})
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE org_units u SET name = t.name, generated = t.generated, status = 'active',
			version = $1, updated_at = now() FROM org_import_update t WHERE u.id = t.id`, version); err != nil {
			return fmt.Errorf("updating units: %w", err)
		}
	}
	return raiseEpoch(ctx, tx)
}

// importVersion takes the one org_version value every row written by an
// import carries: the import is one change, like one commit, and a million
// nextval calls would cost seconds. Versions mark "changed since" for the
// tree's refresh; the change log, whose versions are unique, is not written
// by imports (they raise the epoch instead).
func importVersion(ctx context.Context, tx pgx.Tx) (int64, error) {
	var v int64
	err := tx.QueryRow(ctx, `SELECT nextval('org_version')`).Scan(&v)
	return v, err
}

// bulkMinRows is the size of load from which bulkLoad considers dropping
// indexes and foreign keys.
const bulkMinRows = 50000

// bulkLoad prepares table for a load of adding rows. When the load is
// large and at least as big as the table, it drops the table's secondary
// indexes (neither unique nor backing a constraint) and its foreign keys,
// and returns a func that puts them back exactly as they were
// (pg_get_indexdef, pg_get_constraintdef) in the same transaction: building
// an index from the sorted rows, and checking a foreign key with one join,
// are several times faster than a million index insertions and a million
// key checks. Until commit the table is then locked against readers (DROP
// INDEX takes an ACCESS EXCLUSIVE lock) and the referenced tables against
// writers, which a first load can afford. Otherwise it does nothing.
func bulkLoad(ctx context.Context, tx pgx.Tx, table string, adding int) (restore func() error, err error) {
	restore = func() error { return nil }
	if adding < bulkMinRows {
		return restore, nil
	}
	var have float64
	if err := tx.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = $1::regclass`, table).Scan(&have); err != nil {
		return nil, err
	}
	if have < 0 { // never analysed
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&have); err != nil {
			return nil, err
		}
	}
	if float64(adding) < have {
		return restore, nil
	}
	type object struct{ drop, create string }
	rows, err := tx.Query(ctx, `SELECT 'DROP INDEX ' || i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i
		WHERE i.indrelid = $1::regclass AND NOT i.indisunique AND NOT i.indisprimary
			AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
		UNION ALL
		SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
			format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
		FROM pg_constraint c WHERE c.conrelid = $1::regclass AND c.contype = 'f'`, table)
	if err != nil {
		return nil, err
	}
	objects, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (object, error) {
		var x object
		return x, r.Scan(&x.drop, &x.create)
	})
	if err != nil || len(objects) == 0 {
		return restore, err
	}
	for _, x := range objects {
		if _, err := tx.Exec(ctx, x.drop); err != nil {
			return nil, err
		}
	}
	return func() error {
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '256MB'`); err != nil {
			return err
		}
		for _, x := range objects {
			if _, err := tx.Exec(ctx, x.create); err != nil {
				return fmt.Errorf("%s: %w", x.create, err)
			}
		}
		// Statistics for the table that just grew at least twofold: the
		// plans of the first requests after a large import would otherwise
		// be made for the empty table (seen: 20 ms children listings).
		_, err := tx.Exec(ctx, `ANALYZE `+pgx.Identifier{table}.Sanitize())
		return err
	}, nil
}

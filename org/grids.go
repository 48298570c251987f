package org

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/db"
)

// Grids (网格) have no national code. A grid is coded by the usual local
// rule, its village's 12-digit code and a 3-digit number: 330102001051007.

var gridFileColumns = []string{"villageCode", "number", "name"}

// ImportGrids imports grids from a local register: a CSV file of village
// code (12 digits), grid number (1-999) and name, with or without a header
// line. Like ImportNBS it checks everything first and writes nothing if
// anything is wrong, then upserts by code in one transaction. Imported
// grids are not generated ones: a generated grid with the same code becomes
// a registered one.
func ImportGrids(ctx context.Context, pool *pgxpool.Pool, file string, opts ImportOptions) (ImportReport, error) {
	start := time.Now()
	f, err := os.Open(file)
	if err != nil {
		return ImportReport{}, err
	}
	defer f.Close()
	var probs problems
	var rows []unitRow
	villageOf := []string{} // village code of each row
	seen := map[string]int{}
	n := readCSV(file, f, csvSpec{columns: gridFileColumns, isHeader: func(rec []string) bool { return !csvDigits(strings.TrimSpace(rec[0])) }}, &probs,
		func(line int, rec []string) {
			village := strings.TrimSpace(rec[0])
			num := strings.TrimSpace(rec[1])
			ok := true
			if len(village) != 12 || !csvDigits(village) {
				probs.add(file, line, "villageCode %q: want the village's 12-digit code", village)
				ok = false
			}
			k, err := strconv.Atoi(num)
			if err != nil || k < 1 || k > 999 {
				probs.add(file, line, "number %q: want 1-999", num)
				ok = false
			}
			name, err := validName("name", rec[2])
			if err != nil {
				probs.add(file, line, "%v", err)
				ok = false
			}
			if !ok {
				return
			}
			code := fmt.Sprintf("%s%03d", village, k)
			if j, dup := seen[code]; dup {
				probs.add(file, line, "duplicate grid %s (first at line %d)", code, rows[j].line)
				return
			}
			seen[code] = len(rows)
			rows = append(rows, unitRow{file: file, line: line, raw: code, code: code, name: name, level: Grid, parent: -1})
			villageOf = append(villageOf, village)
		})
	opts.progressf("reading %s: %s rows", file, grouped(int64(n)))
	// Problems so far are reported with those the database finds (unknown
	// villages), before anything is written.
	var rep ImportReport
	err = db.InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		var codes []string
		for v := range uniq(villageOf) {
			codes = append(codes, v)
		}
		villages, err := loadUnits(ctx, tx, `code = ANY($1)`, codes)
		if err != nil {
			return err
		}
		byCode := make(map[string]*existingUnit, len(villages))
		for i := range villages {
			byCode[villages[i].code] = &villages[i]
		}
		paths := map[int64]string{}
		for i := range rows {
			r := &rows[i]
			v := byCode[villageOf[i]]
			switch {
			case v == nil:
				probs.add(r.file, r.line, "villageCode %s: no such unit (import the NBS tree first)", villageOf[i])
				continue
			case v.level != Village:
				probs.add(r.file, r.line, "villageCode %s is a %s (%s), not a village", villageOf[i], v.level, v.name)
				continue
			case !v.active:
				probs.add(r.file, r.line, "village %s (%s) is dissolved", villageOf[i], v.name)
				continue
			}
			r.parentID = v.id
			paths[v.id] = v.path
		}
		if err := probs.err(); err != nil {
			return err
		}
		gridCodes := make([]string, len(rows))
		for i := range rows {
			gridCodes[i] = rows[i].code
		}
		existing, err := loadUnits(ctx, tx, `code = ANY($1)`, gridCodes)
		if err != nil {
			return err
		}
		return applyUnits(ctx, tx, &unitWrite{rows: rows, existing: existing, parentPaths: paths}, opts, &rep)
	})
	if err != nil {
		return ImportReport{}, err
	}
	rep.Elapsed = time.Since(start)
	opts.logger().InfoContext(ctx, "imported grids", "file", file, "inserted", rep.Total().Inserted, "ms", rep.Elapsed.Milliseconds())
	return rep, nil
}

func uniq(xs []string) map[string]struct{} {
	m := make(map[string]struct{}, len(xs)/4)
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

// GenerateReport is what GenerateGrids did.
type GenerateReport struct {
	Villages int64 `json:"villages"` // active villages with a code
	// Skipped villages have registered (imported or hand-made) grids and get
	// no generated ones.
	Skipped int64         `json:"skipped"`
	Created int64         `json:"created"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// MaxGridsPerVillage bounds GenerateGrids: grid numbers have three digits.
const MaxGridsPerVillage = 999

// GenerateGrids gives every active coded village perVillage grids named
// 第1网格, 第2网格, … coded village code + 001, 002, …, marked generated.
// Grids whose code exists already (in any state) are not made again, so a
// rerun adds only what is missing. Villages with registered grids are
// skipped.
func GenerateGrids(ctx context.Context, pool *pgxpool.Pool, perVillage int, opts ImportOptions) (GenerateReport, error) {
	return generateGrids(ctx, pool, perVillage, opts)
}

func generateGrids(ctx context.Context, b db.Beginner, perVillage int, opts ImportOptions) (GenerateReport, error) {
	if perVillage < 1 || perVillage > MaxGridsPerVillage {
		return GenerateReport{}, invalid("per_village", "1-%d", MaxGridsPerVillage)
	}
	start := time.Now()
	var rep GenerateReport
	err := db.InTx(ctx, b, func(tx pgx.Tx) error {
		if err := importLock(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS pg_temp.org_import_villages;
			CREATE TEMP TABLE org_import_villages ON COMMIT DROP AS
			SELECT u.id, u.code, u.path, EXISTS (SELECT 1 FROM org_units g WHERE g.parent_id = u.id AND g.level = 6
				AND NOT g.generated AND g.status = 'active') AS registered
			FROM org_units u WHERE u.level = 5 AND u.status = 'active' AND u.code IS NOT NULL`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE registered) FROM org_import_villages`).Scan(&rep.Villages, &rep.Skipped); err != nil {
			return err
		}
		opts.progressf("generating: %d grids for each of %s villages (%s with registered grids skipped)",
			perVillage, grouped(rep.Villages-rep.Skipped), grouped(rep.Skipped))
		version, err := importVersion(ctx, tx)
		if err != nil {
			return err
		}
		restore, err := bulkLoad(ctx, tx, "org_units", int(rep.Villages-rep.Skipped)*perVillage)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO org_units (id, parent_id, level, name, code, generated, path, version)
			SELECT id, vid, 6, '第' || n || '网格', code, true, path || id::text, $2
			FROM (SELECT nextval('org_units_id_seq') AS id, w.* FROM (
				SELECT v.id AS vid, v.path, n, v.code || lpad(n::text, 3, '0') AS code
				FROM org_import_villages v CROSS JOIN generate_series(1, $1) n
				WHERE NOT v.registered AND NOT EXISTS (SELECT 1 FROM org_units x WHERE x.code = v.code || lpad(n::text, 3, '0'))
				ORDER BY v.id, n) w) g`, perVillage, version)
		if err != nil {
			return err
		}
		if err := restore(); err != nil {
			return err
		}
		rep.Created = tag.RowsAffected()
		if rep.Created > 0 {
			return raiseEpoch(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return GenerateReport{}, err
	}
	rep.Elapsed = time.Since(start)
	opts.progressf("generated %s grids", grouped(rep.Created))
	opts.logger().InfoContext(ctx, "generated grids", "per_village", perVillage, "created", rep.Created, "ms", rep.Elapsed.Milliseconds())
	return rep, nil
}

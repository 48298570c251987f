package org

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/testenv"
)

// copyDir copies the files of src (and then of each overlay) into a new
// temporary directory.
func copyDir(t *testing.T, src string, overlays ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range append([]string{src}, overlays...) {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(d, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// editFile replaces old with new in a file, which must contain it.
func editFile(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", file, old)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func queryInt(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func unitID(t *testing.T, pool *pgxpool.Pool, code string) int64 {
	t.Helper()
	c, err := NormalizeCode(code)
	if err != nil {
		t.Fatal(err)
	}
	return queryInt(t, pool, `SELECT id FROM org_units WHERE code = $1`, c)
}

// checkTree verifies every unit's path, level and parent agree.
func checkTree(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units c LEFT JOIN org_units p ON p.id = c.parent_id
		WHERE c.path <> coalesce(p.path, ''::ltree) || c.id::text OR c.level <> coalesce(p.level, 0) + 1`); n != 0 {
		t.Fatalf("%d units with a path or level that disagrees with their parent", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions p JOIN org_units u ON u.id = p.unit_id
		WHERE NOT p.deleted AND p.unit_path <> u.path`); n != 0 {
		t.Fatalf("%d positions with a stale unit_path", n)
	}
}

func levelCounts(rep ImportReport, l Level) LevelCounts {
	for _, c := range rep.Levels {
		if c.Level == l {
			return c
		}
	}
	return LevelCounts{Level: l}
}

func importError(t *testing.T, err error) *ImportError {
	t.Helper()
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("want an *ImportError, got %v", err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("an ImportError should be ErrInvalid")
	}
	return ie
}

// wantProblems checks that the problems are exactly the expected ones, each
// given as a prefix of "base name:line: message".
func wantProblems(t *testing.T, ie *ImportError, want ...string) {
	t.Helper()
	var got []string
	for _, p := range ie.Problems {
		got = append(got, filepath.Base(p.File)+":"+strconv.Itoa(p.Line)+": "+p.Message)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("no problem %q among:\n  %s", w, strings.Join(got, "\n  "))
		}
	}
	if ie.Total != len(want) {
		t.Errorf("%d problems, want %d:\n  %s", ie.Total, len(want), strings.Join(got, "\n  "))
	}
}

func TestImportNBSZhejiang(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	var progress strings.Builder
	rep, err := ImportNBS(ctx, pool, "demodata", ImportOptions{Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	want := map[Level]int64{Province: 1, City: 11, County: 90, Township: 1387, Village: 25547}
	for l, n := range want {
		if c := levelCounts(rep, l); c.Inserted != n || c.Unchanged+c.Moved+c.Renamed+c.Absent != 0 {
			t.Errorf("%s: %+v, want %d inserted", l, c, n)
		}
	}
	for _, s := range []string{"reading villages.csv: 25,547 rows", "writing: 27,036 units"} {
		if !strings.Contains(progress.String(), s) {
			t.Errorf("progress lacks %q:\n%s", s, progress.String())
		}
	}
	stats, err := Stats(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for l, n := range want {
		if stats[l.String()] != n {
			t.Errorf("stats %s = %d, want %d", l, stats[l.String()], n)
		}
	}
	if stats["grid"] != 0 || stats["members"] != 0 || len(stats) != 7 {
		t.Errorf("stats = %v", stats)
	}
	checkTree(t, pool)
	if epoch := queryInt(t, pool, `SELECT epoch FROM org_sync`); epoch != queryInt(t, pool, `SELECT max(version) FROM org_units`) {
		t.Errorf("epoch %d is not the import's last version", epoch)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_changes`); n != 0 {
		t.Errorf("a bulk import wrote %d org_changes rows", n)
	}
	if name := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE code = '330102001051' AND name = '清波门社区' AND level = 5`); name != 1 {
		t.Error("清波门社区 not imported as a village")
	}

	// A second import changes nothing, not even versions.
	version := queryInt(t, pool, `SELECT max(version) FROM org_units`)
	rep, err = ImportNBS(ctx, pool, "demodata", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for l, n := range want {
		if c := levelCounts(rep, l); c.Unchanged != n || c.Inserted+c.Moved+c.Renamed+c.Absent+c.Reactivated != 0 {
			t.Errorf("re-import %s: %+v, want all %d unchanged", l, c, n)
		}
	}
	if rep.Changed() {
		t.Error("re-import reports a change")
	}
	if v := queryInt(t, pool, `SELECT max(version) FROM org_units`); v != version {
		t.Errorf("re-import moved the version from %d to %d", version, v)
	}
}

func TestImportNBSChanges(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	if _, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateGrids(ctx, pool, 2, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportMembers(ctx, pool, "testdata/members-small.csv", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	// A member in a grid of the township that will move.
	members := filepath.Join(t.TempDir(), "m.csv")
	os.WriteFile(members, []byte("钱七,13900000007,330102003050002,网格员,否,grid_worker\n"), 0o644)
	if _, err := ImportMembers(ctx, pool, members, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	hubin, xihu := unitID(t, pool, "330102003"), unitID(t, pool, "330106")
	version := queryInt(t, pool, `SELECT max(version) FROM org_units`)

	// Next year: 劳动路社区 renamed, 湖滨街道 moved to 西湖区, 柳锦社区 gone.
	dir := copyDir(t, "testdata/nbs-small")
	editFile(t, filepath.Join(dir, "villages.csv"), `"劳动路社区"`, `"劳动路新社区"`)
	editFile(t, filepath.Join(dir, "streets.csv"), "330102003,\"湖滨街道\",330102,", "330102003,\"湖滨街道\",330106,")
	editFile(t, filepath.Join(dir, "villages.csv"), "330102003,33,3301,330102\n", "330102003,33,3301,330106\n")
	editFile(t, filepath.Join(dir, "villages.csv"), "330102003,33,3301,330102\n", "330102003,33,3301,330106\n")
	editFile(t, filepath.Join(dir, "villages.csv"), "330203001002,\"柳锦社区\",330203001,33,3302,330203\n", "")
	rep, err := ImportNBS(ctx, pool, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := levelCounts(rep, Township); c.Moved != 1 || c.Unchanged != 3 {
		t.Errorf("townships: %+v", c)
	}
	if c := levelCounts(rep, Village); c.Renamed != 1 || c.Absent != 1 || c.Unchanged != 6 || c.Moved != 0 {
		t.Errorf("villages: %+v", c)
	}
	if len(rep.AbsentSample) != 1 || !strings.HasPrefix(rep.AbsentSample[0], "330203001002 柳锦社区") {
		t.Errorf("absent sample %v", rep.AbsentSample)
	}
	if p := queryInt(t, pool, `SELECT parent_id FROM org_units WHERE id = $1`, hubin); p != xihu {
		t.Errorf("湖滨街道's parent is %d, want 西湖区 %d", p, xihu)
	}
	checkTree(t, pool)
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE path <@ (SELECT path FROM org_units WHERE id = $1)`, hubin); n != 1+2+4 {
		t.Errorf("the moved township's subtree has %d units, want 7 (itself, 2 villages, 4 grids)", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE path <@ (SELECT path FROM org_units WHERE id = $1) AND version <= $2`, hubin, version); n != 0 {
		t.Errorf("%d units of the moved subtree kept their old version", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE unit_path <@ (SELECT path FROM org_units WHERE id = $1)`, xihu); n != 1 {
		t.Errorf("%d positions under 西湖区 after the move, want 1", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE code = '330203001002' AND status = 'active'`); n != 1 {
		t.Error("an absent unit was not kept")
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE name = '劳动路新社区'`); n != 1 {
		t.Error("rename not applied")
	}

	// Once more: nothing to do but the absent unit.
	rep, err = ImportNBS(ctx, pool, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changed() || rep.Total().Absent != 1 {
		t.Errorf("third import: %+v", rep.Total())
	}

	// A dissolved unit listed again comes back.
	if _, err := pool.Exec(ctx, `UPDATE org_units SET status = 'dissolved' WHERE code = '330106004055'`); err != nil {
		t.Fatal(err)
	}
	rep, err = ImportNBS(ctx, pool, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := levelCounts(rep, Village); c.Reactivated != 1 {
		t.Errorf("villages: %+v", c)
	}
}

func TestImportNBSUncoded(t *testing.T) {
	// 东莞市 has no counties: NBS gives it one coded 441900, which pads to
	// the city's code. It is stored without a code and found again by name.
	dir := t.TempDir()
	files := map[string]string{
		"provinces.csv": "code,name\n44,\"广东省\"\n",
		"cities.csv":    "code,name,provinceCode\n4419,\"东莞市\",44\n",
		"areas.csv":     "code,name,cityCode,provinceCode\n441900,\"东莞市\",4419,44\n",
		"streets.csv":   "code,name,areaCode,provinceCode,cityCode\n441900003,\"东城街道\",441900,44,4419\n",
		"villages.csv":  "code,name,streetCode,provinceCode,cityCode,areaCode\n441900003001,\"主山社区\",441900003,44,4419,441900\n",
	}
	for name, body := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644)
	}
	pool := testenv.DB(t)
	rep, err := ImportNBS(context.Background(), pool, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total().Inserted != 5 || len(rep.Uncoded) != 1 || !strings.Contains(rep.Uncoded[0], "441900 东莞市") {
		t.Fatalf("%+v", rep)
	}
	rep, err = ImportNBS(context.Background(), pool, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total().Unchanged != 5 || rep.Changed() {
		t.Fatalf("re-import: %+v", rep.Total())
	}
	checkTree(t, pool)
}

func TestImportNBSBadInput(t *testing.T) {
	pool := testenv.DB(t)
	for _, tc := range []struct{ dir, want string }{
		{"wrong-columns", "villages.csv:3: want 6 columns"},
		{"bad-utf8", "streets.csv:3: not valid UTF-8"},
		{"truncated", "villages.csv:9: a quoted field is not closed"},
		{"unknown-parent", `villages.csv:3: streetCode "330102009": no such township`},
		{"code-length", `areas.csv:3: code "33010": want 6 digits for a county`},
		{"duplicate", "streets.csv:4: duplicate code 330102001 (first at"},
		{"level-mismatch", "villages.csv:2: streetCode 330102 is a county"},
		{"ancestor-mismatch", `villages.csv:7: cityCode "3302" disagrees with the chain of parents, which leads to city 3301`},
		{"missing-header", "cities.csv:1: missing header line"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := copyDir(t, "testdata/nbs-small", "testdata/nbs-bad/"+tc.dir)
			_, err := ImportNBS(context.Background(), pool, dir, ImportOptions{})
			ie := importError(t, err)
			wantProblems(t, ie, tc.want)
			if !strings.Contains(ie.Error(), dir) {
				t.Errorf("the message does not name the file's path:\n%v", ie)
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM org_units`); n != 0 {
				t.Errorf("%d units written from a bad input", n)
			}
		})
	}
	t.Run("missing-file", func(t *testing.T) {
		dir := copyDir(t, "testdata/nbs-small")
		os.Remove(filepath.Join(dir, "areas.csv"))
		_, err := ImportNBS(context.Background(), pool, dir, ImportOptions{})
		wantProblems(t, importError(t, err), "areas.csv:0: missing")
	})
	t.Run("level-in-database", func(t *testing.T) {
		// A hand-made unit holds a code the input gives to another level.
		pool := testenv.DB(t)
		ctx := context.Background()
		if _, err := pool.Exec(ctx, `INSERT INTO org_units (id, level, name, code, path) VALUES (1, 1, '浙江', '330100000000', '1')`); err != nil {
			t.Fatal(err)
		}
		_, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{})
		wantProblems(t, importError(t, err), "cities.csv:2: code 3301 is unit #1 in the database, a province")
		if n := queryInt(t, pool, `SELECT count(*) FROM org_units`); n != 1 {
			t.Errorf("%d units, want the 1 there was", n)
		}
	})
	t.Run("many", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range nbsFiles {
			body := strings.Join(f.columns, ",") + "\n"
			if f.level == Village {
				for i := 0; i < 50; i++ {
					body += "x,\"坏\",1,2,3,4\n"
				}
			}
			os.WriteFile(filepath.Join(dir, f.name), []byte(body), 0o644)
		}
		_, err := ImportNBS(context.Background(), pool, dir, ImportOptions{})
		ie := importError(t, err)
		if ie.Total != 50 || len(ie.Problems) != maxProblems || !strings.Contains(ie.Error(), "… and 30 more") {
			t.Errorf("%d problems, %d kept:\n%v", ie.Total, len(ie.Problems), ie)
		}
	})
}

func TestImportGrids(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	if _, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := ImportGrids(ctx, pool, "testdata/grids-small.csv", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := levelCounts(rep, Grid); c.Inserted != 3 {
		t.Fatalf("%+v", rep)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE code = '330102001051002' AND name = '清波门第二网格' AND level = 6 AND NOT generated
		AND parent_id = $1`, unitID(t, pool, "330102001051")); n != 1 {
		t.Error("grid 330102001051002 not imported under its village")
	}
	checkTree(t, pool)

	// Generated grids go only to villages without registered ones.
	gen, err := GenerateGrids(ctx, pool, 2, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gen.Villages != 8 || gen.Skipped != 2 || gen.Created != 12 {
		t.Errorf("generate: %+v", gen)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE code = '330106004053002' AND name = '第2网格' AND generated`); n != 1 {
		t.Error("generated grid 330106004053002 missing")
	}
	if gen, _ = GenerateGrids(ctx, pool, 2, ImportOptions{}); gen.Created != 0 {
		t.Errorf("a rerun generated %d grids", gen.Created)
	}
	if gen, _ = GenerateGrids(ctx, pool, 3, ImportOptions{}); gen.Created != 6 {
		t.Errorf("raising to 3 per village generated %d grids, want 6", gen.Created)
	}
	if _, err := GenerateGrids(ctx, pool, 1000, ImportOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("1000 per village: %v", err)
	}

	// Re-import: unchanged; a renamed grid is renamed; a generated one
	// listed in the register becomes registered.
	file := filepath.Join(t.TempDir(), "grids.csv")
	os.WriteFile(file, []byte("330102001051,1,清波门第一网格\n330102001051,2,清波门二号网格\n330203001001,1,澄浪网格\n330106004053,2,石灰桥二号网格\n"), 0o644)
	rep, err = ImportGrids(ctx, pool, file, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := levelCounts(rep, Grid); c.Unchanged != 2 || c.Renamed != 2 || c.Inserted != 0 {
		t.Errorf("re-import: %+v", c)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units WHERE code = '330106004053002' AND NOT generated`); n != 1 {
		t.Error("a registered grid is still marked generated")
	}

	before := queryInt(t, pool, `SELECT count(*) FROM org_units`)
	_, err = ImportGrids(ctx, pool, "testdata/grids-bad.csv", ImportOptions{})
	wantProblems(t, importError(t, err),
		`grids-bad.csv:2: number "1000": want 1-999`,
		`grids-bad.csv:3: villageCode "33010200105": want the village's 12-digit code`,
		"grids-bad.csv:5: duplicate grid 330102001051001 (first at line 1)",
		"grids-bad.csv:4: villageCode 330102001099: no such unit")
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units`); n != before {
		t.Errorf("a bad grid file changed the unit count from %d to %d", before, n)
	}
}

func TestImportMembers(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	if _, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	// Someone already has an account (with a password) for 13800000002.
	if _, err := pool.Exec(ctx, `INSERT INTO accounts (login, mobile, display_name, password_hash) VALUES ('lisi', '13800000002', '李四', 'x')`); err != nil {
		t.Fatal(err)
	}
	authzVersion := queryInt(t, pool, `SELECT version FROM authz_state`)
	rep, err := ImportMembers(ctx, pool, "testdata/members-small.csv", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := MembersReport{Rows: 6, People: 5, AccountsCreated: 4, PeopleCreated: 5, PositionsCreated: 6, GrantsCreated: 6}
	rep.Elapsed = 0
	if rep != want {
		t.Errorf("report %+v\nwant   %+v", rep, want)
	}
	for _, c := range []struct {
		mobile, name, pinyin, initials string
	}{
		{"13800000001", "张三", "zhangsan", "zs"},
		{"13800000003", "王小明", "wangxiaoming", "wxm"},
		{"13800000004", "Alice王", "alicewang", "aw"},
	} {
		if n := queryInt(t, pool, `SELECT count(*) FROM org_people p JOIN accounts a ON a.id = p.account_id
			WHERE p.mobile = $1 AND p.name = $2 AND p.pinyin = $3 AND p.initials = $4
			AND a.display_name = $2 AND a.login IS NULL AND a.password_hash IS NULL`, c.mobile, c.name, c.pinyin, c.initials); n != 1 {
			t.Errorf("person %s %s (%s, %s) not as expected", c.mobile, c.name, c.pinyin, c.initials)
		}
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM accounts WHERE mobile = '13800000002' AND login = 'lisi' AND password_hash = 'x'`); n != 1 {
		t.Error("an existing account was changed")
	}
	// 张三 holds two posts (兼职); the first listed is primary.
	zhang := queryInt(t, pool, `SELECT id FROM accounts WHERE mobile = '13800000001'`)
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE account_id = $1 AND NOT deleted`, zhang); n != 2 {
		t.Errorf("张三 has %d positions, want 2", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE account_id = $1 AND is_primary AND unit_id = $2 AND leader AND title = '区长'`,
		zhang, unitID(t, pool, "330102")); n != 1 {
		t.Error("张三's primary position is not 上城区")
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE is_primary AND NOT deleted`); n != 5 {
		t.Errorf("%d primary positions, want one per person (5)", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM authz_grants WHERE account_id = $1 AND unit_id = $2 AND role IN ('leader', 'admin') AND granted_by IS NULL`,
		zhang, unitID(t, pool, "330102")); n != 2 {
		t.Errorf("张三 has %d grants at 上城区, want leader and admin", n)
	}
	if v := queryInt(t, pool, `SELECT version FROM authz_state`); v <= authzVersion {
		t.Error("the grants did not bump the authz version")
	}
	checkTree(t, pool)
	stats, _ := Stats(ctx, pool)
	if stats["members"] != 5 {
		t.Errorf("members = %d", stats["members"])
	}

	// Again: nothing new. Then with a changed title and an added role.
	rep, err = ImportMembers(ctx, pool, "testdata/members-small.csv", ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep.Elapsed = 0
	if want := (MembersReport{Rows: 6, People: 5, PositionsUnchanged: 6}); rep != want {
		t.Errorf("re-import %+v", rep)
	}
	file := filepath.Join(t.TempDir(), "m.csv")
	b, _ := os.ReadFile("testdata/members-small.csv")
	os.WriteFile(file, []byte(strings.Replace(string(b), "李四,13800000002,330102001,主任,no,staff", "李四,13800000002,330102001,副主任,yes,staff;auditor", 1)), 0o644)
	rep, err = ImportMembers(ctx, pool, file, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PositionsUpdated != 1 || rep.GrantsCreated != 1 || rep.PositionsCreated != 0 || rep.AccountsCreated != 0 {
		t.Errorf("changed import %+v", rep)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE title = '副主任' AND leader`); n != 1 {
		t.Error("title and leader not updated")
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions WHERE NOT deleted`); n != 6 {
		t.Errorf("%d positions after three imports, want 6", n)
	}
}

func TestImportMembersBad(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	if _, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := ImportMembers(ctx, pool, "testdata/members-bad.csv", ImportOptions{})
	wantProblems(t, importError(t, err),
		`members-bad.csv:2: mobile "1380000001": want 11 digits`,
		`members-bad.csv:4: leader "maybe": want yes or no`,
		`members-bad.csv:5: role "boss": want admin, leader, staff, grid_worker or auditor`,
		"members-bad.csv:6: want 6 columns",
		"members-bad.csv:8: 孙八 is already placed in unit 330102 at line 7",
		"members-bad.csv:3: unitCode 330199: no such unit")
	for _, table := range []string{"accounts", "org_people", "org_positions", "authz_grants"} {
		if n := queryInt(t, pool, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("%d rows in %s after a bad import", n, table)
		}
	}
	file := filepath.Join(t.TempDir(), "m.csv")
	os.WriteFile(file, []byte("张三,13800000001,33,,,\n张四,13800000001,3301,,,\n"), 0o644)
	_, err = ImportMembers(ctx, pool, file, ImportOptions{})
	wantProblems(t, importError(t, err), "m.csv:2: mobile 13800000001 is 张三 at line 1, not 张四")
	os.WriteFile(file, []byte("张三,13800000001,33,,,\n李四,13800000002,33,,,\n张三,13800000001,33,书记,,\n张三,13800000001,330000000000,,,\n"), 0o644)
	_, err = ImportMembers(ctx, pool, file, ImportOptions{})
	wantProblems(t, importError(t, err), "m.csv:3: 张三 is already placed in unit 33 at line 1", "m.csv:4: 张三 is already placed in unit 33 at line 1")
}

func TestLoadDemo(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	authSvc := auth.New(pool, auth.NewKeyring(bytes.Repeat([]byte("k"), 32)), auth.Settings{
		AccessTTL: time.Minute, RefreshTTL: time.Hour, Hash: auth.HashParams{Time: 1, MemoryKiB: 1024},
	}, slog.New(slog.DiscardHandler))
	var out strings.Builder
	schema := `SELECT string_agg(def, E'\n' ORDER BY def) FROM (SELECT pg_get_indexdef(indexrelid) AS def FROM pg_index
		WHERE indrelid IN ('org_units'::regclass, 'org_people'::regclass, 'org_positions'::regclass)
		UNION ALL SELECT pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid IN ('org_units'::regclass, 'org_people'::regclass, 'org_positions'::regclass)) x`
	var before, after string
	if err := pool.QueryRow(ctx, schema).Scan(&before); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	logins, err := LoadDemo(ctx, pool, authSvc.HashPassword, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("demo loaded in %s:\n%s", time.Since(start), out.String())
	roles := map[string]bool{}
	for _, l := range logins {
		roles[l.Role] = true
		if l.Login == "" || len(l.Password) < 12 || l.Name == "" || !strings.HasPrefix(l.Unit, "浙江省") {
			t.Errorf("demo login %+v", l)
		}
		if _, err := authSvc.Login(ctx, auth.LoginRequest{Login: l.Login, Password: l.Password, Device: "test"}); err != nil {
			t.Errorf("%s cannot sign in: %v", l.Login, err)
		}
	}
	if len(logins) != 5 || len(roles) != 5 {
		t.Errorf("demo logins %+v", logins)
	}
	stats, err := Stats(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"province": 1, "city": 11, "county": 90, "township": 1387, "village": 25547, "grid": 3 * 25547, "members": 250}
	for k, n := range want {
		if stats[k] != n {
			t.Errorf("stats[%s] = %d, want %d", k, stats[k], n)
		}
	}
	for _, role := range memberRoles {
		if n := queryInt(t, pool, `SELECT count(*) FROM authz_grants WHERE role = $1`, string(role)); n == 0 {
			t.Errorf("no demo member is %s", role)
		}
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_positions GROUP BY account_id ORDER BY 1 DESC LIMIT 1`); n != 2 {
		t.Error("the demo has no 兼职")
	}
	checkTree(t, pool)
	// The grids are a bulk load: indexes and foreign keys were dropped and
	// must be back as they were.
	if err := pool.QueryRow(ctx, schema).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("indexes and constraints changed:\n%s\nwant\n%s", after, before)
	}

	logins, err = LoadDemo(ctx, pool, authSvc.HashPassword, &out)
	if err != nil || logins != nil {
		t.Errorf("on a database with units: %v, %v", logins, err)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM org_units`); n != 27036+3*25547 {
		t.Errorf("%d units after a second LoadDemo", n)
	}
}

func TestFillPinyinMatchesPinyin(t *testing.T) {
	names := []string{"张三", "王小明", "Alice王", "欧阳娜娜", "李 四", "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨", "〇号", "张三", "曾杰子", "单于", "x1"}
	people := make([]memberPerson, len(names))
	for i, n := range names {
		people[i].name = n
	}
	fillPinyin(people)
	for _, p := range people {
		if full, initials := Pinyin(p.name); p.pinyin != full || p.initials != initials {
			t.Errorf("%s: %s %s, Pinyin says %s %s", p.name, p.pinyin, p.initials, full, initials)
		}
	}
}

func TestBulkLoadRestores(t *testing.T) {
	pool := testenv.DB(t)
	ctx := context.Background()
	for _, table := range []string{"org_units", "org_people", "org_positions"} {
		// Sorted by the definitions: a restore recreates what it dropped,
		// and the catalogs give them back in another order.
		schema := `SELECT (SELECT string_agg(d, E'\n' ORDER BY d) FROM (SELECT pg_get_indexdef(indexrelid) AS d FROM pg_index WHERE indrelid = $1::regclass) i)
			|| (SELECT string_agg(d, E'\n' ORDER BY d) FROM (SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conrelid = $1::regclass) c)`
		var before, during, after string
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx.QueryRow(ctx, schema, table).Scan(&before)
		restore, err := bulkLoad(ctx, tx, table, bulkMinRows)
		if err != nil {
			t.Fatal(err)
		}
		tx.QueryRow(ctx, schema, table).Scan(&during)
		if err := restore(); err != nil {
			t.Fatal(err)
		}
		tx.QueryRow(ctx, schema, table).Scan(&after)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if during == before || strings.Contains(during, "FOREIGN KEY") || strings.Contains(during, "gist") {
			t.Errorf("%s: nothing dropped for a bulk load:\n%s", table, during)
		}
		if after != before {
			t.Errorf("%s after restore:\n%s\nwant\n%s", table, after, before)
		}
	}
	// A small load into a table that has rows drops nothing.
	if _, err := ImportNBS(ctx, pool, "testdata/nbs-small", ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	tx, _ := pool.Begin(ctx)
	defer tx.Rollback(ctx)
	tx.Exec(ctx, `ANALYZE org_units`)
	if _, err := bulkLoad(ctx, tx, "org_units", 10); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM pg_indexes WHERE tablename = 'org_units'`); n != 9 { // 6 of 0001, 3 of 0002
		t.Errorf("org_units has %d indexes", n)
	}
}

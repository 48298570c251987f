package db_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func comp(files map[string]string) db.Component {
	fs := fstest.MapFS{}
	for name, sql := range files {
		fs[name] = &fstest.MapFile{Data: []byte(sql)}
	}
	return db.Component{Name: "demo", FS: fs}
}

func TestMigrateInOrderOnceAndConcurrently(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := context.Background()
	c := comp(map[string]string{
		"0001_create.sql": `CREATE TABLE demo (id int)`,
		"0002_insert.sql": `INSERT INTO demo VALUES (1)`,
	})
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range applied {
		wg.Add(1)
		go func() { defer wg.Done(); applied[i], errs[i] = db.Migrate(ctx, pool, quiet, c) }()
	}
	wg.Wait()
	total := 0
	for i := range applied {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += applied[i]
	}
	var rows int
	pool.QueryRow(ctx, `SELECT count(*) FROM demo`).Scan(&rows)
	if total != 2 || rows != 1 {
		t.Fatalf("applied %d in all, %d rows; want 2 and 1", total, rows)
	}
}

func TestMigrateRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"gap", map[string]string{"0001_a.sql": "SELECT 1", "0003_c.sql": "SELECT 1"}, "without gaps"},
		{"bad name", map[string]string{"1_a.sql": "SELECT 1"}, "NNNN_description.sql"},
		{"bad sql", map[string]string{"0001_a.sql": "CREATE TABLE x (", "0002_b.sql": "SELECT 1"}, "0001_a"},
	}
	for _, c := range cases {
		pool := testenv.DB(t)
		_, err := db.Migrate(ctx, pool, quiet, comp(c.files))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
		var n int
		pool.QueryRow(ctx, `SELECT count(*) FROM zhangban_migrations WHERE component = 'demo'`).Scan(&n)
		if n != 0 {
			t.Errorf("%s: %d migrations recorded", c.name, n)
		}
	}
	// A database migrated further than this binary knows is refused.
	pool := testenv.DB(t)
	if _, err := db.Migrate(ctx, pool, quiet, comp(map[string]string{"0001_a.sql": "SELECT 1", "0002_b.sql": "SELECT 1"})); err != nil {
		t.Fatal(err)
	}
	_, err := db.Migrate(ctx, pool, quiet, comp(map[string]string{"0001_a.sql": "SELECT 1"}))
	if !errors.Is(err, db.ErrDatabaseTooNew) {
		t.Fatalf("newer database: %v", err)
	}
	_, err = db.Migrate(ctx, pool, quiet)
	if !errors.Is(err, db.ErrDatabaseTooNew) {
		t.Fatalf("unknown component: %v", err)
	}
}

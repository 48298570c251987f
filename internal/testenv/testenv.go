package testenv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/bus"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/pgmanaged"
)

// The test binary's one server, set up on first use. Package state is
// acceptable here: a test binary is one process with one TestMain.
var (
	mainCalled bool
	comps      []db.Component // migrated into the template
	setupOnce  sync.Once
	setupErr   error
	stopServer func()
	serverURL  string // admin connection to the test server
	template   string // name of the migrated template database
	counter    atomic.Int64
)

// Main runs the tests of a package against a PostgreSQL whose template
// database has the given components migrated. Use it as
//
//	func TestMain(m *testing.M) { testenv.Main(m, auth.Migrations()) }
func Main(m *testing.M, components ...db.Component) {
	os.Exit(main(m, components))
}

func main(m *testing.M, components []db.Component) int {
	comps, mainCalled = components, true
	code := m.Run()
	if stopServer != nil {
		stopServer()
	}
	return code
}

// setUp starts the test server and the template database on first use, so
// test binaries (and fuzz workers) that need no database start none.
func setUp() error {
	setupOnce.Do(func() { setupErr = start() })
	return setupErr
}

func start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stops []func()
	stopServer = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	serverURL = os.Getenv("TEST_DATABASE_URL")
	if serverURL == "" {
		dir, err := os.MkdirTemp("", "zhangban-testpg-")
		if err != nil {
			return err
		}
		stops = append(stops, func() { os.RemoveAll(dir) })
		os.Chmod(dir, 0o755) // the unprivileged server user must reach it when tests run as root
		inst, err := pgmanaged.Start(ctx, pgmanaged.Options{
			Dir:    dir + "/pg",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Settings: map[string]string{
				"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
				"max_connections": "300", "shared_buffers": "128MB", // tests hold little data
			},
		})
		if err != nil {
			return fmt.Errorf("starting PostgreSQL (or set TEST_DATABASE_URL): %w", err)
		}
		stops = append(stops, func() { inst.Stop(context.Background()) })
		serverURL = inst.ConnString("postgres")
	}
	template = fmt.Sprintf("zb_tpl_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if err := createTemplate(ctx, comps); err != nil {
		return fmt.Errorf("template database: %w", err)
	}
	stops = append(stops, func() { dropDatabase(context.Background(), template) })
	return nil
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func createTemplate(ctx context.Context, components []db.Component) error {
	if err := adminExec(ctx, "CREATE DATABASE "+template); err != nil {
		return err
	}
	pool, err := db.Open(ctx, urlFor(template), 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = db.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)), components...)
	return err
}

func dropDatabase(ctx context.Context, name string) error {
	return adminExec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

// urlFor is the server URL with another database name.
func urlFor(dbname string) string {
	cfg, err := pgconn.ParseConfig(serverURL)
	if err != nil {
		panic(err)
	}
	// Keyword/value strings are what pgmanaged hands out; URLs what people set.
	if strings.HasPrefix(serverURL, "postgres://") || strings.HasPrefix(serverURL, "postgresql://") {
		return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, dbname)
	}
	return fmt.Sprintf("host='%s' port=%d user='%s' password='%s' dbname='%s' sslmode=disable", cfg.Host, cfg.Port, cfg.User, cfg.Password, dbname)
}

// URL returns a connection string for a new, migrated, empty database that is
// dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	if !mainCalled {
		t.Fatal("testenv: call testenv.Main from TestMain")
	}
	if err := setUp(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	name := fmt.Sprintf("zb_t_%d_%d", os.Getpid(), counter.Add(1))
	ctx := context.Background()
	var err error
	for try := 0; try < 20; try++ {
		// FILE_COPY avoids WAL-logging every page of a small database.
		err = adminExec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+template+" STRATEGY FILE_COPY")
		if db.SQLState(err) != "55006" { // template busy: another clone is being made
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() { dropDatabase(context.Background(), name) })
	return urlFor(name)
}

// DB returns a pool on a new, migrated, empty database, closed and dropped
// when the test ends.
func DB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Open(context.Background(), URL(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Bus returns an in-process NATS bus closed when the test ends.
func Bus(t testing.TB) *bus.Bus {
	t.Helper()
	b, err := bus.Open(context.Background(), bus.Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package pgmanaged

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// fastSettings skip fsync in tests that do not check durability. Committed
// data still survives a killed server, since it is in the OS page cache;
// synchronous_commit=off would not, and the kill tests check exactly that.
var fastSettings = map[string]string{"fsync": "off"}

// The SIGKILL test re-executes the test binary as a helper that owns a
// server: it prints "ready <connstring>" and blocks until killed.
func TestMain(m *testing.M) {
	if os.Getenv("PGMANAGED_HELPER") == "1" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

func runHelper() int {
	ctx := context.Background()
	inst, err := Start(ctx, Options{Dir: os.Getenv("PGMANAGED_DIR"), Settings: fastSettings})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready " + inst.ConnString("postgres"))
	<-inst.Done()
	return 1
}

// testDir returns a fresh directory under /tmp that the unprivileged server
// user can reach when the tests run as root (t.TempDir makes 0700 dirs).
func testDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustStart(t *testing.T, ctx context.Context, opts Options) *Instance {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	inst, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return inst
}

func connect(t *testing.T, ctx context.Context, inst *Instance, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(inst.ConnString(db))
	if err != nil {
		t.Fatalf("ParseConfig(%q): %v", inst.ConnString(db), err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.WithoutCancel(ctx)) })
	return conn
}

func exec1(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryString(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func postmasterPid(t *testing.T, dir string) int {
	t.Helper()
	pm, ok, err := readPostmasterPID(dir)
	if err != nil || !ok {
		t.Fatalf("postmaster.pid: ok=%v err=%v", ok, err)
	}
	return pm.pid
}

// processesMentioning returns the pids whose command line contains s.
func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) && procAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkFor polls cond until it returns nil or timeout passes.
func checkFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestColdWarmStart runs with the default, durable settings: a cold start
// initialises a missing directory, data survives a clean restart, and the
// warm start is quick.
func TestColdWarmStart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "data", "pg") // missing: initdb + rename path

	t0 := time.Now()
	inst, err := Start(ctx, Options{Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cold start: %v", time.Since(t0))

	conn := connect(t, ctx, inst, "postgres")
	for setting, want := range map[string]string{
		"fsync":                   "on",
		"listen_addresses":        "",
		"max_connections":         "200",
		"max_wal_size":            "4GB",
		"checkpoint_timeout":      "15min",
		"server_encoding":         "UTF8",
		"lc_collate":              "C",
		"unix_socket_permissions": "0700",
		"data_checksums":          "on",
		"current_user":            superuser,
	} {
		q := "SHOW " + setting
		if setting == "current_user" {
			q = "SELECT current_user"
		}
		if got := queryString(t, ctx, conn, q); got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
	// shared_buffers in 8 kB blocks: SHOW would say "3GB" for 3072MB.
	want := strconv.FormatUint(sharedBuffersMB(memoryLimit())<<20/8192, 10)
	if got := queryString(t, ctx, conn, "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'"); got != want {
		t.Errorf("shared_buffers = %s blocks, want %s (an eighth of %d bytes of memory)", got, want, memoryLimit())
	}
	if err := inst.EnsureDatabase(ctx, "zhangban"); err != nil {
		t.Fatal(err)
	}
	if err := inst.EnsureDatabase(ctx, "zhangban"); err != nil {
		t.Fatalf("EnsureDatabase again: %v", err)
	}
	app := connect(t, ctx, inst, "zhangban")
	exec1(t, ctx, app, "CREATE EXTENSION ltree")
	exec1(t, ctx, app, "CREATE TABLE org (path ltree PRIMARY KEY, name text NOT NULL)")
	exec1(t, ctx, app, "INSERT INTO org VALUES ('root.rd', '研发部'), ('root', '张班公司')")

	if want := filepath.Join(dir, "run"); inst.socketDir != want {
		t.Errorf("socket dir %s, want %s", inst.socketDir, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", ".s.PGSQL.5432")); err != nil {
		t.Errorf("socket: %v", err)
	}
	if r, _ := pickUser(); r.cred != nil {
		fi, _ := os.Stat(dir)
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != r.cred.Uid {
			t.Errorf("data dir owned by uid %d, want %s (%d)", uid, r.name, r.cred.Uid)
		}
	}
	o, ok := readOwner(dir)
	if !ok || o.pid != os.Getpid() {
		t.Errorf("owner file: %+v %v, want our pid %d", o, ok, os.Getpid())
	}
	app.Close(ctx)
	conn.Close(ctx)

	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after Stop: %v", err)
	}

	t0 = time.Now()
	inst2 := mustStart(t, ctx, Options{Dir: dir})
	warm := time.Since(t0)
	t.Logf("warm start: %v", warm)
	if warm > 5*time.Second {
		t.Errorf("warm start took %v", warm)
	}
	app2 := connect(t, ctx, inst2, "zhangban")
	var name string
	if err := app2.QueryRow(ctx, "SELECT name FROM org WHERE path <@ 'root' ORDER BY path DESC LIMIT 1").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name != "研发部" {
		t.Errorf("name = %q after restart", name)
	}
}

// TestAttach starts twice on one directory: the second Start attaches to
// the first's server and its Stop leaves that server running. The directory
// path is too long for a socket inside it, which also exercises the
// temporary socket directory and reading it back from postmaster.pid.
func TestAttach(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), strings.Repeat("long-directory-name-", 5))
	if err := os.Mkdir(dir, 0o755); err != nil { // existing empty dir: initdb in place
		t.Fatal(err)
	}
	first := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	if first.Attached() {
		t.Fatal("first Start attached")
	}
	if !strings.HasPrefix(first.socketDir, os.TempDir()) {
		t.Errorf("socket dir %s, want one under %s for a long path", first.socketDir, os.TempDir())
	}
	exec1(t, ctx, connect(t, ctx, first, "postgres"), "CREATE TABLE t (v text)")

	second := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	if !second.Attached() {
		t.Fatal("second Start did not attach")
	}
	if second.Done() != nil {
		t.Error("attached Done() should be nil")
	}
	exec1(t, ctx, connect(t, ctx, second, "postgres"), "INSERT INTO t VALUES ('via attach')")
	if err := second.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, connect(t, ctx, first, "postgres"), "SELECT v FROM t"); got != "via attach" {
		t.Errorf("got %q", got)
	}

	sock := first.socketDir
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary socket dir left behind: %v", err)
	}
}

// TestOwnerSIGKILL kills the owning process with SIGKILL: the parent-death
// signal must take its server down, and the next Start must find committed
// data.
func TestOwnerSIGKILL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "pg")

	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), "PGMANAGED_HELPER=1", "PGMANAGED_DIR="+dir)
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-ctx.Done():
		t.Fatal("helper did not become ready")
	}
	cs, ok := strings.CutPrefix(line, "ready ")
	if !ok {
		t.Fatalf("helper said %q", line)
	}
	conn, err := pgx.Connect(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('before kill')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	pm := postmasterPid(t, dir)

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	checkFor(t, 10*time.Second, func() error {
		if pids := processesMentioning(dir); len(pids) > 0 || procAlive(pm) {
			return fmt.Errorf("postgres left running after owner SIGKILL: pids %v, postmaster %d alive=%v", pids, pm, procAlive(pm))
		}
		return nil
	})

	inst := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	if inst.Attached() {
		t.Fatal("attached to a server whose owner was killed")
	}
	if got := queryString(t, ctx, connect(t, ctx, inst, "postgres"), "SELECT v FROM t"); got != "before kill" {
		t.Errorf("got %q", got)
	}
}

// TestOrphanRecovery runs a postmaster for the directory whose recorded
// owner is dead; Start must stop it and start its own.
func TestOrphanRecovery(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	log := testLogger(t)
	dir := filepath.Join(testDir(t), "pg")

	// Initialise the cluster the ordinary way.
	first := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// Run postgres by hand, as something other than pgmanaged would, without
	// a parent-death signal.
	r, err := pickUser()
	if err != nil {
		t.Fatal(err)
	}
	bins, err := binFinder{pathEnv: os.Getenv("PATH")}.find(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	orphan := r.prepare(exec.Command(bins.postgres, serverArgs(dir, filepath.Join(dir, "run"), fastSettings)...))
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	orphanExited := make(chan struct{})
	go func() { _ = orphan.Wait(); close(orphanExited) }()
	t.Cleanup(func() {
		_ = orphan.Process.Kill()
		<-orphanExited
	})
	probe := &Instance{log: log, dir: dir, socketDir: filepath.Join(dir, "run"), port: socketPort}
	if err := waitReady(ctx, probe, orphanExited); err != nil {
		t.Fatal(err)
	}
	exec1(t, ctx, connect(t, ctx, probe, "postgres"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('orphan data')")

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := writeOwner(dir, owner{pid: dead.Process.Pid, startTime: 1}); err != nil {
		t.Fatal(err)
	}

	inst := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings, Logger: log})
	if inst.Attached() {
		t.Fatal("attached to an orphan")
	}
	select {
	case <-orphanExited:
	case <-time.After(5 * time.Second):
		t.Fatal("orphan still running after Start")
	}
	if pm := postmasterPid(t, dir); pm == orphan.Process.Pid || pm != inst.proc.Pid {
		t.Errorf("postmaster.pid names %d; orphan %d, ours %d", pm, orphan.Process.Pid, inst.proc.Pid)
	}
	if got := queryString(t, ctx, connect(t, ctx, inst, "postgres"), "SELECT v FROM t"); got != "orphan data" {
		t.Errorf("got %q", got)
	}
}

// TestPostmasterSIGKILL leaves a stale postmaster.pid behind (the server
// itself is killed); the next Start must succeed and recover committed data.
func TestPostmasterSIGKILL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "pg")
	first := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	exec1(t, ctx, connect(t, ctx, first, "postgres"), "CREATE TABLE t (v text); INSERT INTO t VALUES ('committed')")

	if err := first.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.Done()
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatalf("expected a stale postmaster.pid: %v", err)
	}

	second := mustStart(t, ctx, Options{Dir: dir, Settings: fastSettings})
	if second.Attached() {
		t.Fatal("attached to a dead server")
	}
	if got := queryString(t, ctx, connect(t, ctx, second, "postgres"), "SELECT v FROM t"); got != "committed" {
		t.Errorf("got %q", got)
	}
	if err := first.Stop(ctx); err != nil {
		t.Errorf("Stop of the killed instance: %v", err)
	}
	// Stopping the dead instance must not touch its successor.
	if got := queryString(t, ctx, connect(t, ctx, second, "postgres"), "SELECT v FROM t"); got != "committed" {
		t.Errorf("got %q", got)
	}
}

// TestStartFailureShowsLog checks that a server that cannot start surfaces
// its own log lines.
func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(testDir(t), "pg")
	_, err := Start(ctx, Options{Dir: dir, Settings: map[string]string{"fsync": "off", "no_such_setting": "1"}, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("Start succeeded with a bogus setting")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), `unrecognized configuration parameter "no_such_setting"`) {
		t.Errorf("error does not quote the server log: %v", err)
	}
	if pids := processesMentioning(dir); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
}

// TestUnreachableDirAsRoot: the unprivileged server user cannot enter a 0700
// root-owned directory, and Start must say so instead of failing obscurely.
func TestUnreachableDirAsRoot(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only relevant as root")
	}
	private := testDir(t)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(testCtx(t), Options{Dir: filepath.Join(private, "pg"), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "cannot traverse "+private) || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	log := testLogger(t)
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Skip("pg_config not installed")
	}
	bindir := strings.TrimSpace(string(out))
	pgConfig, err := exec.LookPath("pg_config")
	if err != nil {
		t.Fatal(err)
	}
	onlyPgConfig := t.TempDir()
	if err := os.Symlink(pgConfig, filepath.Join(onlyPgConfig, "pg_config")); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	// embedded-postgres leaves a log file in os.TempDir() on every Start;
	// tidy up the ones this test causes.
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "embedded_postgres_log*"))
	t.Cleanup(func() {
		after, _ := filepath.Glob(filepath.Join(os.TempDir(), "embedded_postgres_log*"))
		for _, f := range after {
			if !slices.Contains(before, f) {
				os.Remove(f)
			}
		}
	})

	for _, tc := range []struct {
		name       string
		f          binFinder
		wantSource string
		wantErr    string
	}{
		{"BinDir", binFinder{binDir: bindir}, "BinDir", ""},
		{"BinDir without server", binFinder{binDir: empty, pathEnv: bindir}, "", "no executable postgres"},
		{"PATH", binFinder{pathEnv: empty + ":" + bindir}, "PATH", ""},
		{"pg_config", binFinder{pathEnv: onlyPgConfig}, "pg_config --bindir", ""},
		// A closed local port stands in for the unreachable download site.
		{"nothing", binFinder{pathEnv: empty, cacheDir: t.TempDir(), repoURL: "http://127.0.0.1:1"}, "", installHint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.f.find(ctx, log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.source != tc.wantSource || filepath.Base(b.postgres) != "postgres" || filepath.Base(b.initdb) != "initdb" {
				t.Errorf("got %+v, want source %s", b, tc.wantSource)
			}
		})
	}
}

func TestMajorOf(t *testing.T) {
	for in, want := range map[string]string{"15.13": "15", "9.6.24": "9.6", "16beta1": "16", "17": "17"} {
		if got := majorOf(in); got != want {
			t.Errorf("majorOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConnStringQuoting(t *testing.T) {
	inst := &Instance{socketDir: `/tmp/it's a dir\x`, port: socketPort}
	cfg, err := pgx.ParseConfig(inst.ConnString("db name"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != inst.socketDir || cfg.Database != "db name" || cfg.User != superuser || cfg.Port != socketPort {
		t.Errorf("parsed %q %q %q %d", cfg.Host, cfg.Database, cfg.User, cfg.Port)
	}
}

func TestSharedBuffersFollowMemory(t *testing.T) {
	for _, c := range []struct{ mem, want uint64 }{
		{0, 128},          // unknown
		{512 << 20, 128},  // a small VM: PostgreSQL's own default
		{8 << 30, 1024},   // an eighth
		{24 << 30, 3072},  // this project's benchmark machine
		{256 << 30, 4096}, // capped
	} {
		if got := sharedBuffersMB(c.mem); got != c.want {
			t.Errorf("sharedBuffersMB(%d) = %d, want %d", c.mem, got, c.want)
		}
	}
	if runtime.GOOS == "linux" && memTotal() == 0 {
		t.Error("memTotal read nothing from /proc/meminfo")
	}
}

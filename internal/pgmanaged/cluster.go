package pgmanaged

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// superuser is the role initdb creates and ConnString connects as.
const superuser = "zhangban"

// socketPort names the socket file (.s.PGSQL.5432). Nothing listens on TCP,
// so it cannot clash with a system PostgreSQL on the same number.
const socketPort = 5432

// maxSocketPath is the longest unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// runAs is the identity initdb and postgres run under.
type runAs struct {
	name string
	// cred is nil when running as ourselves (we are not root).
	cred *syscall.Credential
}

// pickUser returns who runs the server: ourselves, or when we are root
// (which initdb and postgres refuse) the postgres system user, else nobody.
func pickUser() (runAs, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		name := strconv.Itoa(os.Geteuid())
		if err == nil {
			name = u.Username
		}
		return runAs{name: name}, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return runAs{}, fmt.Errorf("pgmanaged: running as root, and PostgreSQL refuses root, but neither a \"postgres\" nor a \"nobody\" user exists to run it as; create one, or set DATABASE_URL")
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return runAs{}, fmt.Errorf("pgmanaged: user %s has non-numeric uid/gid %s/%s", u.Username, u.Uid, u.Gid)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.ParseUint(id, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(g))
			}
		}
	}
	return runAs{name: u.Username, cred: cred}, nil
}

// canTraverse checks that r may search (execute) every existing directory on
// the way to path, so that postgres running as r can reach it. Directories
// that do not exist yet are skipped: we create them 0755. ACLs are ignored;
// a false alarm there is better than postgres failing obscurely later.
func (r runAs) canTraverse(path string) error {
	if r.cred == nil {
		return nil
	}
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			st, ok := fi.Sys().(*syscall.Stat_t)
			if ok && !r.mayExecute(fi.Mode().Perm(), st.Uid, st.Gid) {
				return fmt.Errorf("pgmanaged: PostgreSQL refuses to run as root, so it runs as user %q, which cannot traverse %s (mode %04o, owner uid %d); "+
					"choose a data directory outside it (for example under /var/lib or /srv), or set DATABASE_URL to use an existing PostgreSQL server",
					r.name, p, fi.Mode().Perm(), st.Uid)
			}
		}
		if parent := filepath.Dir(p); parent == p {
			return nil
		}
	}
}

func (r runAs) mayExecute(perm fs.FileMode, uid, gid uint32) bool {
	switch {
	case uid == r.cred.Uid:
		return perm&0o100 != 0
	case gid == r.cred.Gid || containsUint32(r.cred.Groups, gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

func containsUint32(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// chown gives path to r when we run the server as someone else.
func (r runAs) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	return os.Lchown(path, int(r.cred.Uid), int(r.cred.Gid))
}

// chownTree gives the whole cluster to r if its top directory belongs to
// someone else, e.g. after a restore done as root. postgres insists on owning
// its data directory. Checking only the top keeps warm starts cheap.
func (r runAs) chownTree(dir string) error {
	if r.cred == nil {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == r.cred.Uid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return r.chown(p)
	})
}

// prepare makes cmd, a PostgreSQL program, run as r, with an environment
// stripped of PG* variables (PGPORT, PGDATA, … would silently change what
// the server does).
func (r runAs) prepare(cmd *exec.Cmd) *exec.Cmd {
	// Our working directory may be unreadable for r (e.g. /root).
	cmd.Dir = "/"
	cmd.Env = nil
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	return cmd
}

// initialised reports whether dir holds a cluster; an error when it holds
// something else.
func initialised(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return true, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("pgmanaged: reading %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("pgmanaged: %s is neither empty nor a PostgreSQL data directory (no PG_VERSION); refusing to initialise a cluster there", dir)
	}
	return false, nil
}

// initCluster runs initdb. A missing dir is initialised under a temporary
// sibling name and renamed into place, so a crash mid-initdb never leaves a
// half-made cluster at dir. An existing empty dir (a mount point, say) is
// initialised in place; initdb cleans up after its own failures there.
func initCluster(ctx context.Context, log *slog.Logger, bins binaries, r runAs, dir string, noSync bool) error {
	target := dir
	_, statErr := os.Stat(dir)
	inPlace := statErr == nil
	if !inPlace {
		target = dir + ".initdb-tmp"
		if err := os.RemoveAll(target); err != nil {
			return fmt.Errorf("pgmanaged: removing leftover %s: %w", target, err)
		}
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("pgmanaged: %w", err)
		}
	}
	if err := r.chown(target); err != nil {
		return fmt.Errorf("pgmanaged: chown %s to %s: %w", target, r.name, err)
	}
	args := []string{
		"-D", target,
		"-U", superuser,
		// Trust on the socket, which only its owner can open; no TCP access
		// at all, even if someone later sets listen_addresses.
		"--auth-local=trust", "--auth-host=reject",
		// C collation sorts UTF-8 by code point (fine for Chinese) and, unlike
		// libc locales, never changes across glibc upgrades, which would
		// silently corrupt text indexes.
		"--encoding=UTF8", "--locale=C",
		// Cheap, and the only way to notice storage corrupting pages; it
		// cannot be switched on later without downtime.
		"--data-checksums",
		"--no-instructions",
	}
	if noSync {
		// Only when the caller runs the server with fsync=off anyway (tests).
		args = append(args, "--no-sync")
	}
	start := time.Now()
	out, err := r.prepare(exec.CommandContext(ctx, bins.initdb, args...)).CombinedOutput()
	if err != nil {
		if !inPlace {
			_ = os.RemoveAll(target)
		}
		return fmt.Errorf("pgmanaged: initdb %s failed: %w\n%s", dir, err, tail(out, 20))
	}
	if !inPlace {
		if err := os.Rename(target, dir); err != nil {
			return fmt.Errorf("pgmanaged: moving new cluster into place: %w", err)
		}
	}
	log.Info("pgmanaged: initialised cluster", "dir", dir, "user", r.name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// socketDir returns where the server's socket goes: <dir>/run when the
// socket path fits the kernel limit, else a fresh private directory under
// os.TempDir(); temp reports the latter, which Stop removes.
func socketDir(r runAs, dir string) (path string, temp bool, err error) {
	sockName := fmt.Sprintf(".s.PGSQL.%d", socketPort)
	path = filepath.Join(dir, "run")
	if len(filepath.Join(path, sockName)) > maxSocketPath {
		temp = true
		if path, err = os.MkdirTemp("", "zhangban-pg-"); err != nil {
			return "", false, fmt.Errorf("pgmanaged: creating socket directory: %w", err)
		}
		if len(filepath.Join(path, sockName)) > maxSocketPath {
			_ = os.Remove(path)
			return "", false, fmt.Errorf("pgmanaged: data directory path too long for a unix socket and so is the temp dir %s; use a shorter path", path)
		}
	} else if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", false, fmt.Errorf("pgmanaged: creating socket directory: %w", err)
	}
	if err := os.Chmod(path, 0o700); err != nil {
		return "", false, fmt.Errorf("pgmanaged: %w", err)
	}
	if err := r.chown(path); err != nil {
		return "", false, fmt.Errorf("pgmanaged: chown socket directory: %w", err)
	}
	return path, temp, nil
}

// lockDir takes an exclusive flock on the sibling file <dir>.lock, polling
// so that ctx can cancel the wait. The lock is released by closing the file.
func lockDir(ctx context.Context, dir string) (*os.File, error) {
	f, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgmanaged: opening lock file: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("pgmanaged: locking %s.lock: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("pgmanaged: waiting for another Start on %s: %w", dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logTail returns the last n lines of the server log, for error messages.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	defer f.Close()
	const window = 8 << 10
	fi, err := f.Stat()
	if err != nil {
		return "(server log unreadable: " + err.Error() + ")"
	}
	off := max(fi.Size()-window, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return "(server log unreadable: " + err.Error() + ")"
	}
	return tail(buf, n)
}

package pgmanaged

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// This file reads /proc to judge whether the pids recorded in postmaster.pid
// and zhangban-owner.pid still name the processes that wrote them.

// procAlive reports whether pid exists and is not a zombie. A zombie has
// exited but kill(pid, 0) still succeeds on it until its parent reaps it, so
// signal 0 alone would make a stopped orphan look alive.
func procAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	state, _, err := procStat(pid)
	if err != nil {
		// Exited between the two checks.
		return false
	}
	return state != 'Z' && state != 'X'
}

// procStat returns the state letter and start time (clock ticks since boot)
// of pid from /proc/<pid>/stat.
func procStat(pid int) (state byte, startTime uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may itself contain
	// spaces or parentheses, so parse from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); start time is field 22.
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	startTime, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return fields[0][0], startTime, nil
}

// isPostmasterFor reports whether pid is a live postgres server for dataDir.
// Pids are reused (a reboot, a new container), so a live pid in a stale
// postmaster.pid may belong to anything.
func isPostmasterFor(pid int, dataDir string) bool {
	if !procAlive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	if !isPostgresName(filepath.Base(string(argv0))) {
		return false
	}
	// The postmaster chdirs into its data directory. Reading another user's
	// cwd needs privileges we may lack; then the name check has to do.
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
		return sameFile(cwd, dataDir)
	}
	return true
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// owner identifies a process across pid reuse: a pid plus its start time.
type owner struct {
	pid       int
	startTime uint64
}

func selfOwner() (owner, error) {
	pid := os.Getpid()
	_, st, err := procStat(pid)
	if err != nil {
		return owner{}, fmt.Errorf("pgmanaged: reading own start time: %w", err)
	}
	return owner{pid: pid, startTime: st}, nil
}

// alive reports whether the process that wrote o is still running.
func (o owner) alive() bool {
	if !procAlive(o.pid) {
		return false
	}
	_, st, err := procStat(o.pid)
	return err == nil && st == o.startTime
}

// ownerFile is <Dir>/zhangban-owner.pid: the pid on the first line (so tools
// can `cat` it), the start time on the second.
const ownerFile = "zhangban-owner.pid"

func writeOwner(dir string, o owner) error {
	data := fmt.Sprintf("%d\n%d\n", o.pid, o.startTime)
	tmp := filepath.Join(dir, ownerFile+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return fmt.Errorf("pgmanaged: writing owner pid file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ownerFile)); err != nil {
		return fmt.Errorf("pgmanaged: writing owner pid file: %w", err)
	}
	return nil
}

// readOwner returns the recorded owner; ok is false when there is none or it
// is unreadable, which callers treat as a dead owner.
func readOwner(dir string) (o owner, ok bool) {
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return owner{}, false
	}
	lines := strings.Fields(string(data))
	if len(lines) < 2 {
		return owner{}, false
	}
	pid, err1 := strconv.Atoi(lines[0])
	st, err2 := strconv.ParseUint(lines[1], 10, 64)
	if err1 != nil || err2 != nil {
		return owner{}, false
	}
	return owner{pid: pid, startTime: st}, true
}

// postmasterPID is what pgmanaged needs from <Dir>/postmaster.pid, whose
// lines are: pid, data dir, start time, port, socket dir, listen address,
// shared memory key, status.
type postmasterPID struct {
	pid       int
	port      int
	socketDir string
}

// readPostmasterPID returns ok=false when the file does not exist.
func readPostmasterPID(dir string) (p postmasterPID, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return postmasterPID{}, false, nil
	}
	if err != nil {
		return postmasterPID{}, false, fmt.Errorf("pgmanaged: reading postmaster.pid: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) < 1 {
		return postmasterPID{}, true, nil
	}
	p.pid, _ = strconv.Atoi(strings.TrimSpace(lines[0]))
	if len(lines) >= 5 {
		p.port, _ = strconv.Atoi(strings.TrimSpace(lines[3]))
		p.socketDir = strings.TrimSpace(lines[4])
	}
	// A postmaster that is still starting may not have written the later
	// lines yet; a zero port or empty socket dir then means "unknown".
	return p, true, nil
}

// procsInDir lists live postgres processes whose working directory is dir.
// Every server process chdirs into its data directory, so this finds a
// server's backends even after their postmaster died and they were
// reparented. (The name check spares, say, a shell someone left in the
// directory.) Other users' working directories are visible only to root, but
// as non-root the server runs as ourselves anyway.
func procsInDir(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || !isPostgresName(strings.TrimSpace(string(comm))) {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && sameFile(cwd, dir) && procAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isPostgresName(name string) bool { return name == "postgres" || name == "postmaster" }

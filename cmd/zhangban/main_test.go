package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/testenv"
)

var binary string // the zhangban binary built for these tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "zhangban-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "zhangban")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building zhangban: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	testenv.Main(m, components()...)
}

// proc is a zhangban process under test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	out  bytes.Buffer // stdout and stderr together
	done chan struct{}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func dataDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "zhangban-data-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // the managed PostgreSQL's user must reach it when tests run as root
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// start runs the binary with args and env added to a clean environment.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "ZHANGBAN_ARGON2_MEMORY_KIB=1024", "ZHANGBAN_DEMO=false"}, env...)
	for _, e := range env {
		if a, ok := strings.CutPrefix(e, "ZHANGBAN_ADDR="); ok {
			p.addr = a
		}
	}
	p.cmd.Stdout = p
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitReady polls /readyz and returns how long it took.
func (p *proc) waitReady(timeout time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		select {
		case <-p.done:
			p.t.Fatalf("zhangban exited before ready: %v\n%s", p.cmd.ProcessState, p.output())
		default:
		}
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("not ready within %s\n%s", timeout, p.output())
	return 0
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("zhangban did not exit within %s\n%s", timeout, p.output())
		return -1
	}
}

// postgresFor lists live postgres processes whose command line names dir.
func postgresFor(dir string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, "postgres") && strings.Contains(cmdline, dir) {
			found = append(found, cmdline)
		}
	}
	return found
}

func waitNoPostgres(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error {
		if ps := postgresFor(dir); len(ps) > 0 {
			return fmt.Errorf("postgres still running: %v", ps)
		}
		return nil
	})
}

func call(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func login(t *testing.T, addr, user, password string) string {
	t.Helper()
	status, body := call(t, "POST", "http://"+addr+"/v1/auth/login", "", map[string]string{"login": user, "password": password})
	if status != 200 {
		t.Fatalf("login %s: %d %s", user, status, body)
	}
	var p auth.TokenPair
	json.Unmarshal(body, &p)
	return p.AccessToken
}

// TestLifecycle covers the managed PostgreSQL end to end: cold start on an
// empty data directory with a generated admin password, graceful stop,
// restart with data kept, SIGKILL, and restart after it.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	dir := dataDir(t)
	addr := freeAddr(t)
	env := []string{"ZHANGBAN_ADDR=" + addr, "ZHANGBAN_DATA_DIR=" + dir, "ZHANGBAN_DEMO=true"}

	p := start(t, env)
	cold := p.waitReady(60 * time.Second)
	m := regexp.MustCompile(`Sign in as "admin" with password "([^"]+)"`).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no generated password on the console:\n%s", p.output())
	}
	password := m[1]
	token := login(t, addr, "admin", password)
	if status, body := call(t, "POST", "http://"+addr+"/v1/accounts", token, map[string]string{"login": "kept", "display_name": "Kept", "password": "kept-password"}); status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	if info, err := os.Stat(filepath.Join(dir, auth.KeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info.Mode(), err)
	}
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.HasPrefix(line, "{") && strings.Contains(line, password) {
			t.Fatalf("a log line contains the generated password: %s", line)
		}
	}

	// Graceful stop: exit 0 within the bound, PostgreSQL stopped with it.
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, p.output())
	}
	waitNoPostgres(t, dir, 5*time.Second)

	// Warm restart keeps the data and does not print a password again.
	// It also takes a setting the messaging service must get.
	p = start(t, append(env, "ZHANGBAN_SEND_COMMITTERS=3"))
	warm := p.waitReady(30 * time.Second)
	login(t, addr, "kept", "kept-password")
	if strings.Contains(p.output(), "Sign in as") {
		t.Fatal("a second start created another administrator")
	}
	if !strings.Contains(p.output(), `"msg":"sends are stored by committers","committers":3,`) {
		t.Fatalf("ZHANGBAN_SEND_COMMITTERS=3 did not reach the messaging service:\n%s", p.output())
	}
	t.Logf("cold start to ready %s, warm restart %s", cold, warm)

	// SIGKILL leaves no postgres behind, and the next start recovers.
	p.cmd.Process.Kill()
	p.wait(5 * time.Second)
	waitNoPostgres(t, dir, 10*time.Second)
	p = start(t, env)
	p.waitReady(60 * time.Second)
	login(t, addr, "kept", "kept-password")
	login(t, addr, "admin", password)
}

func TestBootstrapAdminFromEnvironment(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	p := start(t, []string{"ZHANGBAN_ADDR=" + addr, "DATABASE_URL=" + testenv.URL(t), "ZHANGBAN_DATA_DIR=" + dataDir(t),
		"ZHANGBAN_BOOTSTRAP_ADMIN=chief:chief-password"})
	p.waitReady(30 * time.Second)
	login(t, addr, "chief", "chief-password")
	if strings.Contains(p.output(), "chief-password") {
		t.Fatalf("the bootstrap password was printed:\n%s", p.output())
	}
	if strings.Contains(p.output(), "Sign in as") {
		t.Fatal("a password was generated although one was configured")
	}
	// Effective configuration is logged, with secrets redacted.
	var startLine map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"msg":"starting zhangban"`) {
			json.Unmarshal(sc.Bytes(), &startLine)
		}
	}
	if startLine["bootstrap_admin"] != "***" || startLine["addr"] != addr {
		t.Fatalf("start line: %v", startLine)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestConfigurationErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"ZHANGBAN_ADDR=nonsense"}, nil, "--addr (ZHANGBAN_ADDR)"},
		{nil, []string{"--addr", "127.0.0.1:99999"}, "--addr (ZHANGBAN_ADDR)"},
		{[]string{"ZHANGBAN_ACCESS_TTL=forever"}, nil, "--access-ttl (ZHANGBAN_ACCESS_TTL)"},
		{[]string{"ZHANGBAN_JWT_KEY=short"}, nil, "--jwt-key (ZHANGBAN_JWT_KEY)"},
		{[]string{"ZHANGBAN_BOOTSTRAP_ADMIN=nopassword"}, nil, "--bootstrap-admin (ZHANGBAN_BOOTSTRAP_ADMIN)"},
		{[]string{"ZHANGBAN_LOG_LEVEL=loud"}, nil, "--log-level (ZHANGBAN_LOG_LEVEL)"},
		{nil, []string{"--no-such-flag"}, "flag provided but not defined"},
		{nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, c := range cases {
		p := start(t, c.env, c.args...)
		code := p.wait(10 * time.Second)
		if code == 0 || !strings.Contains(p.output(), c.want) {
			t.Errorf("%v %v: exit %d, output:\n%s\nwant it to mention %q", c.env, c.args, code, p.output(), c.want)
		}
		if strings.Contains(p.output(), "short") && c.want == "--jwt-key (ZHANGBAN_JWT_KEY)" {
			t.Errorf("the secret value was echoed: %s", p.output())
		}
	}
}

func TestMigrateAndNewerDatabaseRefused(t *testing.T) {
	t.Parallel()
	url := testenv.URL(t) // already migrated from the template
	p := start(t, []string{"DATABASE_URL=" + url}, "migrate")
	if code := p.wait(30 * time.Second); code != 0 || !strings.Contains(p.output(), "applied 0 migration(s)") {
		t.Fatalf("migrate: exit %d\n%s", code, p.output())
	}
	pool := testenv.DB(t)
	_ = pool
	ctx := context.Background()
	conn, err := dbConnect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO zhangban_migrations (component, version, name) VALUES ('auth', 99, 'from_the_future')`); err != nil {
		t.Fatal(err)
	}
	p = start(t, []string{"DATABASE_URL=" + url}, "migrate")
	if code := p.wait(30 * time.Second); code == 0 || !strings.Contains(p.output(), "newer than this binary") {
		t.Fatalf("newer database accepted: exit %d\n%s", code, p.output())
	}
	addr := freeAddr(t)
	p = start(t, []string{"DATABASE_URL=" + url, "ZHANGBAN_ADDR=" + addr, "ZHANGBAN_DATA_DIR=" + dataDir(t)})
	if code := p.wait(30 * time.Second); code == 0 || !strings.Contains(p.output(), "newer than this binary") {
		t.Fatalf("serve on a newer database: exit %d\n%s", code, p.output())
	}
}

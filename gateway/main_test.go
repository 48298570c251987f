package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/bus"
	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/messaging"
)

func TestMain(m *testing.M) {
	testenv.Main(m, auth.Migrations(), messaging.Migrations(), Migrations())
}

// everyone sees everyone except the pairs hidden.
type everyone struct {
	known  map[int64]bool
	hidden map[[2]int64]bool
}

func (v everyone) VisiblePeople(_ context.Context, a authz.Actor, ids []int64) (map[int64]bool, error) {
	out := map[int64]bool{}
	for _, id := range ids {
		out[id] = v.known[id] && !v.hidden[[2]int64{a.AccountID, id}]
	}
	return out, nil
}

// env is a gateway over a fresh database and bus, with accounts.
type env struct {
	t      *testing.T
	pool   *pgxpool.Pool
	gw     *Gateway
	msg    *messaging.Service
	auth   *auth.Service
	srv    *httptest.Server
	url    string
	ids    []int64
	tokens []string
	hidden map[[2]int64]bool
	vis    everyone
	bus    *bus.Bus
}

func newEnv(t *testing.T, accounts int) *env { return newEnvWith(t, accounts, time.Hour, time.Second) }

// newEnvTTL is newEnv with access tokens living ttl.
func newEnvTTL(t *testing.T, accounts int, ttl time.Duration) *env {
	return newEnvWith(t, accounts, ttl, time.Second)
}

// newEnvWith sets the token lifetime and the heartbeat; the tick is fast.
func newEnvWith(t *testing.T, accounts int, ttl, heartbeat time.Duration, opts ...func(*Deps)) *env {
	t.Helper()
	ctx := context.Background()
	pool := testenv.DB(t)
	b := testenv.Bus(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &env{t: t, pool: pool, hidden: map[[2]int64]bool{}, bus: b}
	keys := auth.NewKeyring(bytes.Repeat([]byte("k"), 32))
	e.auth = auth.New(pool, keys, auth.Settings{AccessTTL: ttl, RefreshTTL: time.Hour, Hash: auth.HashParams{Time: 1, MemoryKiB: 1024}}, log)
	for i := range accounts {
		login := fmt.Sprintf("user%d", i)
		a, err := e.auth.CreateAccount(ctx, auth.NewAccount{Login: login, DisplayName: login, Password: "password-" + login})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := e.auth.Login(ctx, auth.LoginRequest{Login: login, Password: "password-" + login, Device: "test"})
		if err != nil {
			t.Fatal(err)
		}
		e.ids = append(e.ids, a.ID)
		e.tokens = append(e.tokens, pair.AccessToken)
	}
	known := map[int64]bool{}
	for _, id := range e.ids {
		known[id] = true
	}
	vis := everyone{known, e.hidden}
	e.vis = vis
	events := event.NewBus(b.Events(), log)
	e.msg = messaging.New(pool, vis, events, log, messaging.Options{})
	d := Deps{Auth: e.auth, Messaging: e.msg, Visibility: vis, Pool: pool, NATS: b.Conn(), Events: events, Log: log, Node: "test", AuthTimeout: 500 * time.Millisecond,
		Tick: 100 * time.Millisecond, Heartbeat: heartbeat, MaxSettingUp: 4, AdmissionWait: 50 * time.Millisecond}
	for _, o := range opts {
		o(&d)
	}
	gw, err := New(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	e.gw = gw
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ws", gw)
	e.srv = httptest.NewServer(mux)
	e.url = "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/ws"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gw.Shutdown(ctx)
		e.srv.Close()
		e.msg.Close(ctx)
	})
	return e
}

func (e *env) actor(i int) authz.Actor { return authz.Actor{AccountID: e.ids[i]} }

// raw is a protocol-level client: frames in, frames out, no smarts.
type raw struct {
	t      *testing.T
	c      *websocket.Conn
	frames chan map[string]any
	mu     sync.Mutex
	closed *websocket.CloseError // how the server closed, once it did
	log    []map[string]any      // every frame received, in order
	done   chan struct{}
}

func (e *env) dial(header http.Header) *raw {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPHeader: header})
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetReadLimit(16 << 20)
	r := &raw{t: e.t, c: c, frames: make(chan map[string]any, 10000), done: make(chan struct{})}
	go r.read()
	e.t.Cleanup(func() { c.CloseNow() })
	return r
}

// connect opens an authenticated connection for account i (by frame) and
// waits for hello.
func (e *env) connect(i int) *raw {
	r := e.dial(nil)
	r.send(map[string]any{"type": "auth", "id": "a", "data": map[string]any{"token": e.tokens[i]}})
	r.expect("hello")
	r.expectReply("a")
	return r
}

// online connects account i and syncs, after which live events flow.
func (e *env) online(i int) *raw {
	r := e.connect(i)
	if f := r.request("sync0", "sync", map[string]any{}); f["error"] != nil {
		e.t.Fatalf("first sync: %v", f)
	}
	return r
}

func (r *raw) read() {
	defer close(r.done)
	for {
		_, buf, err := r.c.Read(context.Background())
		if err != nil {
			var ce websocket.CloseError
			if asClose(err, &ce) {
				r.mu.Lock()
				r.closed = &ce
				r.mu.Unlock()
			}
			return
		}
		for _, line := range bytes.Split(buf, []byte("\n")) {
			var f map[string]any
			if err := json.Unmarshal(line, &f); err != nil {
				r.t.Errorf("server sent a frame that is not JSON: %q", line)
				continue
			}
			r.mu.Lock()
			r.log = append(r.log, f)
			r.mu.Unlock()
			r.frames <- f
		}
	}
}

func asClose(err error, ce *websocket.CloseError) bool {
	code := websocket.CloseStatus(err)
	if code == -1 {
		return false
	}
	ce.Code = code
	return true
}

func (r *raw) send(v any) {
	r.t.Helper()
	buf, _ := json.Marshal(v)
	r.sendRaw(websocket.MessageText, buf)
}

func (r *raw) sendRaw(typ websocket.MessageType, buf []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.c.Write(ctx, typ, buf) // errors show up as the close the test expects
}

// next returns the next frame, failing after a timeout.
func (r *raw) next() map[string]any {
	r.t.Helper()
	select {
	case f := <-r.frames:
		return f
	case <-time.After(5 * time.Second):
		r.t.Fatal("no frame within 5 s")
		return nil
	}
}

// expect skips frames until one of the type arrives.
func (r *raw) expect(typ string) map[string]any {
	r.t.Helper()
	for {
		f := r.next()
		if f["type"] == typ {
			return f
		}
	}
}

// expectReply skips frames until the reply with the id arrives.
func (r *raw) expectReply(id string) map[string]any {
	r.t.Helper()
	for {
		f := r.next()
		if f["type"] == "reply" && f["id"] == id {
			return f
		}
	}
}

// saw reports whether any frame so far satisfies pred.
func (r *raw) saw(pred func(map[string]any) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.log {
		if pred(f) {
			return true
		}
	}
	return false
}

func errCode(f map[string]any) string {
	e, _ := f["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// closeCode waits for the server to close and returns the code.
func (r *raw) closeCode() int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.t.Fatal("the server did not close the connection")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed == nil {
		return -1
	}
	return int(r.closed.Code)
}

// request sends a frame with an id and returns its reply.
func (r *raw) request(id, typ string, data any) map[string]any {
	r.t.Helper()
	r.send(map[string]any{"id": id, "type": typ, "data": data})
	return r.expectReply(id)
}

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	c.Write(&d)
	return d.GetCounter().GetValue()
}

func gaugeValue(g prometheus.Gauge) float64 {
	var d dto.Metric
	g.Write(&d)
	return d.GetGauge().GetValue()
}

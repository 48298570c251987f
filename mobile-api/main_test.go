package mobileapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/messaging"
	"github.com/zhangban/zhangban/org"
)

func TestMain(m *testing.M) {
	testenv.Main(m, auth.Migrations(), authz.Migrations(), org.Migrations(), messaging.Migrations(), Migrations())
}

// testServer is the whole API over a fresh database.
type testServer struct {
	*httptest.Server
	t     *testing.T
	api   *API
	auth  *auth.Service
	org   *org.Service
	authz *authz.Authorizer
	admin string // access token of a superuser
}

const adminPassword = "admin-password-1"

// testHash is cheap so that tests spend their time on behaviour, not argon2.
var testHash = auth.HashParams{Time: 1, MemoryKiB: 1024}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	pool := testenv.DB(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := auth.New(pool, auth.NewKeyring(bytes.Repeat([]byte("k"), 32)), auth.Settings{
		AccessTTL: time.Minute, RefreshTTL: time.Hour, Hash: testHash,
	}, log)
	if _, _, _, err := svc.Bootstrap(context.Background(), "admin:"+adminPassword); err != nil {
		t.Fatal(err)
	}
	bus := testenv.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tree, err := org.LoadTree(ctx, pool, bus.Conn(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tree.Close)
	az, err := authz.New(ctx, pool, bus.Conn(), tree, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(az.Close)
	orgSvc := org.NewService(pool, az, tree, log)
	msgSvc := messaging.New(pool, orgSvc, event.Discard{}, log, messaging.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := msgSvc.Close(ctx); err != nil {
			t.Errorf("closing messaging: %v", err)
		}
	})
	api := New(Deps{Auth: svc, Authz: az, Org: orgSvc, Messaging: msgSvc, Pool: pool, Log: log, Registry: prometheus.NewRegistry(),
		Ready: func(ctx context.Context) error { return pool.Ping(ctx) }})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	ts := &testServer{Server: srv, t: t, api: api, auth: svc, org: orgSvc, authz: az}
	ts.admin = ts.login("admin", adminPassword, "admin-device").AccessToken
	return ts
}

// do sends a request; body may be nil, a string (sent as is) or a value
// (encoded as JSON). It returns the status, headers and body.
func (ts *testServer) do(method, path, token string, body any, hdr ...string) (int, http.Header, []byte) {
	ts.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			ts.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

func (ts *testServer) login(login, password, device string) auth.TokenPair {
	ts.t.Helper()
	status, _, body := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": login, "password": password, "device": device})
	if status != http.StatusOK {
		ts.t.Fatalf("login %s: %d %s", login, status, body)
	}
	var p auth.TokenPair
	if err := json.Unmarshal(body, &p); err != nil {
		ts.t.Fatal(err)
	}
	return p
}

// errorCode decodes the error shape and fails the test if body is not in it.
func errorCode(t *testing.T, body []byte) Code {
	t.Helper()
	var e struct {
		Error *Error `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" || e.Error.RequestID == "" {
		t.Fatalf("not the error shape: %s", body)
	}
	if _, ok := codeStatus[e.Error.Code]; !ok {
		t.Fatalf("undocumented error code %q", e.Error.Code)
	}
	return e.Error.Code
}

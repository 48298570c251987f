package mobileapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
)

func TestLoginRefreshRotationReuseLogout(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	pair := ts.login("admin", adminPassword, "phone-1")

	status, _, body := ts.do("GET", "/v1/me", pair.AccessToken, nil)
	if status != 200 || !strings.Contains(string(body), `"login":"admin"`) {
		t.Fatalf("me: %d %s", status, body)
	}

	// Rotation: the refresh token gives a new pair, and only once.
	status, _, body = ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": pair.RefreshToken})
	if status != 200 {
		t.Fatalf("refresh: %d %s", status, body)
	}
	var next auth.TokenPair
	json.Unmarshal(body, &next)
	if next.RefreshToken == pair.RefreshToken || next.AccessToken == "" {
		t.Fatalf("refresh did not rotate: %+v", next)
	}
	if status, _, _ := ts.do("GET", "/v1/me", next.AccessToken, nil); status != 200 {
		t.Fatalf("new access token refused: %d", status)
	}

	// Reuse of the rotated token revokes the whole family: the new tokens die too.
	status, _, body = ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": pair.RefreshToken})
	if status != 401 || errorCode(t, body) != CodeRefreshReused {
		t.Fatalf("reuse: %d %s", status, body)
	}
	status, _, body = ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": next.RefreshToken})
	if status != 401 || errorCode(t, body) != CodeUnauthenticated {
		t.Fatalf("refresh after reuse: %d %s", status, body)
	}
	status, _, body = ts.do("GET", "/v1/me", next.AccessToken, nil)
	if status != 401 || errorCode(t, body) != CodeUnauthenticated {
		t.Fatalf("access after reuse: %d %s", status, body)
	}

	// Logout ends the session: access and refresh tokens stop working.
	p2 := ts.login("admin", adminPassword, "phone-2")
	if status, _, body := ts.do("POST", "/v1/auth/logout", p2.AccessToken, nil); status != 204 {
		t.Fatalf("logout: %d %s", status, body)
	}
	if status, _, _ := ts.do("GET", "/v1/me", p2.AccessToken, nil); status != 401 {
		t.Fatalf("access after logout: %d", status)
	}
	if status, _, _ := ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": p2.RefreshToken}); status != 401 {
		t.Fatalf("refresh after logout: %d", status)
	}
}

func TestRefreshBoundToDevice(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	p := ts.login("admin", adminPassword, "phone-a")
	status, _, body := ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": p.RefreshToken, "device": "phone-b"})
	if status != 401 || errorCode(t, body) != CodeUnauthenticated {
		t.Fatalf("refresh from another device: %d %s", status, body)
	}
	// A new sign-in on the same device replaces the old session.
	p2 := ts.login("admin", adminPassword, "phone-a")
	if status, _, _ := ts.do("GET", "/v1/me", p.AccessToken, nil); status != 401 {
		t.Fatalf("old session on the device still works: %d", status)
	}
	if status, _, _ := ts.do("GET", "/v1/me", p2.AccessToken, nil); status != 200 {
		t.Fatalf("new session refused: %d", status)
	}
}

func TestConcurrentRefreshOnlyOneWins(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	p := ts.login("admin", adminPassword, "phone")
	var wg sync.WaitGroup
	results := make([]int, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _, _ = ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": p.RefreshToken})
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range results {
		if s == 200 {
			ok++
		} else if s != 401 {
			t.Fatalf("unexpected status %d", s)
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent refreshes with one token succeeded, want 1 (%v)", ok, results)
	}
}

func TestLoginDoesNotRevealAccounts(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	_, _, known := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": "admin", "password": "wrong-password"})
	_, _, unknown := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": "nobody", "password": "wrong-password"})
	strip := func(b []byte) string {
		var e struct{ Error Error }
		json.Unmarshal(b, &e)
		return string(e.Error.Code) + "|" + e.Error.Message
	}
	if strip(known) != strip(unknown) {
		t.Fatalf("answers differ:\n%s\n%s", known, unknown)
	}
	if errorCode(t, known) != CodeInvalidCredentials {
		t.Fatalf("wrong code: %s", known)
	}
}

func TestLoginThrottledPerAccount(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	for _, login := range []string{"admin", "ghost"} { // existing and unknown behave alike
		for i := 0; i < 5; i++ {
			status, _, body := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": login, "password": "wrong-password"})
			if status != 401 {
				t.Fatalf("%s attempt %d: %d %s", login, i, status, body)
			}
		}
		status, hdr, body := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": login, "password": adminPassword})
		if status != 429 || errorCode(t, body) != CodeTooManyRequests || hdr.Get("Retry-After") == "" {
			t.Fatalf("%s after 5 failures: %d %s (Retry-After %q)", login, status, body, hdr.Get("Retry-After"))
		}
	}
}

func TestLoginThrottledPerAddress(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	// One address spraying one password over many names is stopped.
	for i := 0; i < 30; i++ {
		status, _, body := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": fmt.Sprintf("user%d", i), "password": "spray-password"})
		if status != 401 {
			t.Fatalf("attempt %d: %d %s", i, status, body)
		}
	}
	status, _, body := ts.do("POST", "/v1/auth/login", "", map[string]string{"login": "admin", "password": adminPassword})
	if status != 429 {
		t.Fatalf("address not throttled: %d %s", status, body)
	}
}

func TestAdminSessions(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	status, _, body := ts.do("POST", "/v1/accounts", ts.admin, map[string]any{"login": "zhang.san", "mobile": "13800001234", "display_name": "张三", "password": "zhangsan-pw"})
	if status != 201 {
		t.Fatalf("create account: %d %s", status, body)
	}
	var acc auth.Account
	json.Unmarshal(body, &acc)
	p := ts.login("13800001234", "zhangsan-pw", "zs-phone") // by mobile number

	// A plain user may not administer others.
	status, _, body = ts.do("GET", "/v1/accounts/1/sessions", p.AccessToken, nil)
	if status != 403 || errorCode(t, body) != CodePermissionDenied {
		t.Fatalf("non-admin listing: %d %s", status, body)
	}
	status, _, body = ts.do("POST", "/v1/accounts", p.AccessToken, map[string]any{"login": "x1", "display_name": "x", "password": "12345678"})
	if status != 403 {
		t.Fatalf("non-admin create: %d %s", status, body)
	}

	status, _, body = ts.do("GET", fmt.Sprintf("/v1/accounts/%d/sessions", acc.ID), ts.admin, nil)
	var list struct{ Sessions []auth.Session }
	json.Unmarshal(body, &list)
	if status != 200 || len(list.Sessions) != 1 || list.Sessions[0].Device != "zs-phone" {
		t.Fatalf("sessions: %d %s", status, body)
	}
	path := fmt.Sprintf("/v1/accounts/%d/sessions/%d", acc.ID, list.Sessions[0].ID)
	if status, _, body := ts.do("DELETE", path, ts.admin, nil); status != 204 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if status, _, _ := ts.do("GET", "/v1/me", p.AccessToken, nil); status != 401 {
		t.Fatalf("revoked session still works: %d", status)
	}
	if status, _, _ := ts.do("POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": p.RefreshToken}); status != 401 {
		t.Fatalf("revoked refresh still works: %d", status)
	}
	status, _, body = ts.do("DELETE", fmt.Sprintf("/v1/accounts/%d/sessions/999999", acc.ID), ts.admin, nil)
	if status != 404 || errorCode(t, body) != CodeNotFound {
		t.Fatalf("revoke unknown: %d %s", status, body)
	}
	status, _, body = ts.do("GET", "/v1/accounts/999999/sessions", ts.admin, nil)
	if status != 404 {
		t.Fatalf("sessions of unknown account: %d %s", status, body)
	}
}

func TestCreateAccountIdempotent(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	req := map[string]any{"login": "li.si", "display_name": "李四", "password": "lisi-password"}
	s1, h1, b1 := ts.do("POST", "/v1/accounts", ts.admin, req, "Idempotency-Key", "k-1")
	s2, h2, b2 := ts.do("POST", "/v1/accounts", ts.admin, req, "Idempotency-Key", "k-1")
	if s1 != 201 || s2 != 201 || string(b1) != string(b2) || h2.Get("Idempotent-Replayed") != "true" || h1.Get("Location") != h2.Get("Location") {
		t.Fatalf("replay differs:\n%d %s\n%d %s", s1, b1, s2, b2)
	}
	var n int
	ts.api.pool.QueryRow(t.Context(), `SELECT count(*) FROM accounts WHERE login = 'li.si'`).Scan(&n)
	if n != 1 {
		t.Fatalf("%d accounts created", n)
	}
	req["display_name"] = "李四二"
	status, _, body := ts.do("POST", "/v1/accounts", ts.admin, req, "Idempotency-Key", "k-1")
	if status != 422 || errorCode(t, body) != CodeIdempotencyKeyReused {
		t.Fatalf("key reuse: %d %s", status, body)
	}
	// Without a key a repeat is a conflict, not a second account.
	delete(req, "display_name")
	req["display_name"] = "李四"
	status, _, body = ts.do("POST", "/v1/accounts", ts.admin, req)
	if status != 409 || errorCode(t, body) != CodeAlreadyExists {
		t.Fatalf("duplicate: %d %s", status, body)
	}
	status, _, body = ts.do("POST", "/v1/accounts", ts.admin, req, "Idempotency-Key", strings.Repeat("k", 300))
	if status != 400 {
		t.Fatalf("long key: %d %s", status, body)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	forged := ts.admin[:len(ts.admin)-4] + "AAAA"
	cases := []struct {
		name, method, path, token string
		body                      any
		hdr                       []string
		status                    int
		code                      Code
	}{
		{"malformed json", "POST", "/v1/auth/login", "", `{"login":`, nil, 400, CodeMalformedJSON},
		{"not an object", "POST", "/v1/auth/login", "", `[1,2]`, nil, 400, CodeMalformedJSON},
		{"two objects", "POST", "/v1/auth/login", "", `{"login":"a","password":"b"}{}`, nil, 400, CodeMalformedJSON},
		{"empty body", "POST", "/v1/auth/login", "", ``, nil, 400, CodeMalformedJSON},
		{"wrong type", "POST", "/v1/auth/login", "", `{"login":["a"],"password":"b"}`, nil, 400, CodeInvalidArgument},
		{"unknown field", "POST", "/v1/auth/login", "", `{"login":"a","password":"b","admin":true}`, nil, 400, CodeInvalidArgument},
		{"missing password", "POST", "/v1/auth/login", "", `{"login":"a"}`, nil, 400, CodeInvalidArgument},
		{"oversized", "POST", "/v1/auth/login", "", `{"login":"` + strings.Repeat("a", 5000) + `","password":"b"}`, nil, 413, CodePayloadTooLarge},
		{"way oversized", "POST", "/v1/accounts", "", strings.Repeat(" ", 2<<20), nil, 413, CodePayloadTooLarge},
		{"form body", "POST", "/v1/auth/login", "", `login=a`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, CodeUnsupportedMediaType},
		{"unknown route", "GET", "/v1/nothing", "", nil, nil, 404, CodeNotFound},
		{"wrong method", "PUT", "/v1/me", "", nil, nil, 405, CodeMethodNotAllowed},
		{"no token", "GET", "/v1/me", "", nil, nil, 401, CodeUnauthenticated},
		{"not bearer", "GET", "/v1/me", "", nil, []string{"Authorization", "Basic YTpi"}, 401, CodeUnauthenticated},
		{"forged token", "GET", "/v1/me", forged, nil, nil, 401, CodeUnauthenticated},
		{"garbage token", "GET", "/v1/me", "not.a.jwt", nil, nil, 401, CodeUnauthenticated},
		{"bad refresh", "POST", "/v1/auth/refresh", "", `{"refresh_token":"zbr_nope"}`, nil, 401, CodeUnauthenticated},
		{"refresh wrong type", "POST", "/v1/auth/refresh", "", `{"refresh_token":5}`, nil, 400, CodeInvalidArgument},
		{"bad id", "GET", "/v1/accounts/abc", ts.admin, nil, nil, 400, CodeInvalidArgument},
		{"negative id", "GET", "/v1/accounts/-1", ts.admin, nil, nil, 400, CodeInvalidArgument},
		{"unknown account", "GET", "/v1/accounts/424242", ts.admin, nil, nil, 404, CodeNotFound},
		{"invalid new account", "POST", "/v1/accounts", ts.admin, `{"login":"UPPER CASE","display_name":"x","password":"12345678"}`, nil, 400, CodeInvalidArgument},
		{"short password", "POST", "/v1/accounts", ts.admin, `{"login":"abc","display_name":"x","password":"1"}`, nil, 400, CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before int
			ts.api.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM auth_sessions)`).Scan(&before)
			status, hdr, body := ts.do(c.method, c.path, c.token, c.body, c.hdr...)
			if status != c.status || errorCode(t, body) != c.code {
				t.Fatalf("got %d %s, want %d %s", status, body, c.status, c.code)
			}
			if hdr.Get("X-Request-Id") == "" {
				t.Fatal("no X-Request-Id")
			}
			var after int
			ts.api.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM auth_sessions)`).Scan(&after)
			if after != before {
				t.Fatalf("bad request wrote rows: %d → %d", before, after)
			}
		})
	}
}

func TestExpiredToken(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	p := ts.login("admin", adminPassword, "d")
	ts.auth.SetClock(func() time.Time { return time.Now().Add(2 * time.Minute) })
	status, _, body := ts.do("GET", "/v1/me", p.AccessToken, nil)
	if status != 401 || errorCode(t, body) != CodeTokenExpired {
		t.Fatalf("expired token: %d %s", status, body)
	}
}

func TestRequestIDAndCompression(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	_, hdr, _ := ts.do("GET", "/healthz", "", nil, "X-Request-Id", "client-id-1")
	if hdr.Get("X-Request-Id") != "client-id-1" {
		t.Fatalf("request id not echoed: %q", hdr.Get("X-Request-Id"))
	}
	_, hdr, _ = ts.do("GET", "/healthz", "", nil, "X-Request-Id", "bad id with spaces")
	if id := hdr.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Fatalf("bad request id accepted: %q", id)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/openapi.json", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(OpenAPI()) > 1024 && resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("large response not compressed: %v", resp.Header)
	}
}

func TestTokenFromAnotherKeyRefused(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	// Another server with another key, same database: a real session, a
	// well-formed token, but not signed by us.
	other := auth.New(ts.api.pool, auth.NewKeyring([]byte(strings.Repeat("x", 32))), auth.Settings{AccessTTL: time.Minute, RefreshTTL: time.Hour, Hash: testHash}, ts.api.log)
	p, err := other.Login(t.Context(), auth.LoginRequest{Login: "admin", Password: adminPassword, Device: "other"})
	if err != nil {
		t.Fatal(err)
	}
	status, _, body := ts.do("GET", "/v1/me", p.AccessToken, nil)
	if status != 401 || errorCode(t, body) != CodeUnauthenticated {
		t.Fatalf("token of another key: %d %s", status, body)
	}
}

// TestThrottleHoldsUnderConcurrency: forty guesses at once still get only
// five password checks; the rest are throttled.
func TestThrottleHoldsUnderConcurrency(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	var wg sync.WaitGroup
	statuses := make([]int, 40)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _ = ts.do("POST", "/v1/auth/login", "", map[string]string{"login": "admin", "password": "guess-" + fmt.Sprint(i)})
		}()
	}
	wg.Wait()
	count := map[int]int{}
	for _, s := range statuses {
		count[s]++
	}
	if count[401] != 5 || count[429] != 35 {
		t.Fatalf("statuses %v, want 5×401 and 35×429", count)
	}
}

func TestSweep(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t)
	p := ts.login("admin", adminPassword, "old-phone")
	ts.do("POST", "/v1/auth/logout", p.AccessToken, nil)
	ts.do("POST", "/v1/auth/login", "", map[string]string{"login": "someone", "password": "wrong-password"})
	pool := ts.api.pool
	pool.Exec(t.Context(), `UPDATE auth_sessions SET revoked_at = now() - interval '8 days' WHERE device = 'old-phone'`)
	pool.Exec(t.Context(), `UPDATE auth_throttle SET first_failure_at = now() - interval '1 hour'`)
	n, err := ts.auth.Sweep(t.Context())
	if err != nil || n < 3 { // the session (its token goes by cascade, uncounted) and two throttle rows
		t.Fatalf("swept %d: %v", n, err)
	}
	var left int
	pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM auth_sessions WHERE device = 'old-phone') + (SELECT count(*) FROM auth_throttle)`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d rows left", left)
	}
	// The admin's current session is untouched.
	if status, _, _ := ts.do("GET", "/v1/me", ts.admin, nil); status != 200 {
		t.Fatalf("live session swept: %d", status)
	}
}

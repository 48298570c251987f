package mobileapi

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/klauspost/compress/gzhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/messaging"
	"github.com/zhangban/zhangban/org"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the tables this package owns.
func Migrations() db.Component {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Component{Name: "mobileapi", FS: sub}
}

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return openAPIDoc }

// Deps are what the API is built from.
type Deps struct {
	Auth      *auth.Service
	Authz     *authz.Authorizer
	Org       *org.Service
	Messaging *messaging.Service
	Pool      *pgxpool.Pool
	Ready     func(ctx context.Context) error // database and bus reachable
	Log       *slog.Logger
	Registry  *prometheus.Registry // metrics are registered here and served at /metrics
}

// API is the HTTP handler tree.
type API struct {
	auth     *auth.Service
	authz    *authz.Authorizer
	org      *org.Service
	msg      *messaging.Service
	pool     *pgxpool.Pool
	ready    func(ctx context.Context) error
	log      *slog.Logger
	metrics  *httpMetrics
	registry *prometheus.Registry
	mux      *http.ServeMux
	draining atomic.Bool // set by Drain: /readyz answers 503 so balancers stop sending
}

// New builds the API and its routes.
func New(d Deps) *API {
	a := &API{auth: d.Auth, authz: d.Authz, org: d.Org, msg: d.Messaging, pool: d.Pool, ready: d.Ready, log: d.Log, registry: d.Registry,
		metrics: newHTTPMetrics(d.Registry), mux: http.NewServeMux()}
	a.routes()
	return a
}

// Handle adds a route served by another package (the gateway's /v1/ws).
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// Drain makes /readyz fail so load balancers stop routing here before the
// listener closes.
func (a *API) Drain() { a.draining.Store(true) }

func (a *API) routes() {
	m := a.mux
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /readyz", a.readyz)
	m.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
	m.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPIDoc)
	})

	m.HandleFunc("POST /v1/auth/login", a.login)
	m.HandleFunc("POST /v1/auth/refresh", a.refresh)
	m.HandleFunc("POST /v1/auth/logout", a.authed(a.logout))
	m.HandleFunc("GET /v1/me", a.authed(a.me))

	m.HandleFunc("POST /v1/accounts", a.authed(a.idempotent(a.createAccount)))
	m.HandleFunc("GET /v1/accounts/{id}", a.authed(a.getAccount))
	m.HandleFunc("GET /v1/accounts/{id}/sessions", a.authed(a.listSessions))
	m.HandleFunc("DELETE /v1/accounts/{id}/sessions/{sid}", a.authed(a.revokeSession))
	a.orgRoutes()
	a.messagingRoutes()
}

// Handler is the whole HTTP surface with its middleware.
func (a *API) Handler() http.Handler {
	gz, err := gzhttp.NewWrapper(gzhttp.MinSize(1024))
	if err != nil {
		panic(err) // only on invalid constant options
	}
	return a.observe(gz(http.HandlerFunc(a.dispatch)))
}

// dispatch routes through the mux, answering unknown routes and wrong
// methods in the API's error shape instead of the mux's plain text.
func (a *API) dispatch(w http.ResponseWriter, r *http.Request) {
	h, pattern := a.mux.Handler(r)
	if pattern != "" {
		if r.ContentLength > maxBodyHard {
			writeAPIError(w, r, apiErr(CodePayloadTooLarge, "request body exceeds %d bytes", maxBodyHard))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyHard)
		a.mux.ServeHTTP(w, r)
		return
	}
	// Ask the mux what it would have said (404, or 405 with Allow).
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code >= 300 && rec.Code < 400 { // path cleaning redirects
		h.ServeHTTP(w, r)
		return
	}
	if rec.Code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.Header().Get("Allow"))
		writeAPIError(w, r, apiErr(CodeMethodNotAllowed, "%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, rec.Header().Get("Allow")))
		return
	}
	writeAPIError(w, r, apiErr(CodeNotFound, "no route %s %s; see /openapi.json", r.Method, r.URL.Path))
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.draining.Load() {
		writeAPIError(w, r, apiErr(CodeUnavailable, "shutting down"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.ready(ctx); err != nil {
		// The detail may name hosts and users: log it, do not show it.
		a.log.WarnContext(ctx, "not ready", "err", err)
		writeAPIError(w, r, apiErr(CodeUnavailable, "not ready: a dependency is unreachable; see the server log"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

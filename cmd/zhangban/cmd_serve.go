package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/zhangban/zhangban/gateway"
	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/bus"
	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/messaging"
	mobileapi "github.com/zhangban/zhangban/mobile-api"
	"github.com/zhangban/zhangban/org"
)

// serve runs the server until ctx ends, then stops gracefully within
// cfg.ShutdownTimeout: stop accepting, finish in-flight requests, close the
// bus and the database, stop the managed PostgreSQL.
func serve(ctx context.Context, stopSignals func(), cfg *config.Config, log *slog.Logger, console io.Writer) (err error) {
	started := time.Now()
	log.Info("starting zhangban", append([]any{"version", version}, cfg.LogAttrs()...)...)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data directory: %w (set --data-dir / ZHANGBAN_DATA_DIR to a writable directory)", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (set --addr / ZHANGBAN_ADDR to a free address)", cfg.Addr, err)
	}
	defer ln.Close()
	if cfg.DebugAddr != "" {
		dln, err := net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w (set --debug-addr / ZHANGBAN_DEBUG_ADDR to a free address, or leave it empty)", cfg.DebugAddr, err)
		}
		defer dln.Close()
		go http.Serve(dln, debugHandler())
		log.Info("profiling endpoints", "addr", "http://"+dln.Addr().String()+"/debug/pprof/")
	}

	d, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.close(context.WithoutCancel(ctx)); cerr != nil {
			log.Error("stopping PostgreSQL", "err", cerr)
		}
		log.Info("stopped")
	}()
	if _, err := db.Migrate(ctx, d.pool, log, components()...); err != nil {
		return err
	}

	b, err := bus.Open(ctx, bus.Options{URL: cfg.NATSURL, Name: "zhangban " + cfg.Addr, Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()

	keys, err := loadKeys(cfg, log)
	if err != nil {
		return err
	}
	authSvc := auth.New(d.pool, keys, auth.Settings{
		AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL,
		Hash: auth.HashParams{Time: cfg.Argon2Time, MemoryKiB: cfg.Argon2MemoryKiB},
	}, log)
	created, login, generated, err := authSvc.Bootstrap(ctx, cfg.BootstrapAdmin)
	if err != nil {
		return err
	}
	if created {
		log.Info("created the first administrator", "login", login)
		if generated != "" {
			fmt.Fprintf(console, "\n  First administrator created. Sign in as %q with password %q\n  This password is shown only once: change it after signing in.\n\n", login, generated)
		}
	}

	janitorCtx, stopJanitor := context.WithCancel(context.WithoutCancel(ctx))
	janitorDone := make(chan struct{})
	go func() { defer close(janitorDone); authSvc.RunJanitor(janitorCtx, 10*time.Minute) }()
	defer func() { stopJanitor(); <-janitorDone }()

	if cfg.Demo {
		if err := loadDemo(ctx, d, authSvc, console); err != nil {
			return err
		}
	}
	tree, err := org.LoadTree(ctx, d.pool, b.Conn(), log)
	if err != nil {
		return fmt.Errorf("loading the organisation tree: %w", err)
	}
	defer tree.Close()
	az, err := authz.New(ctx, d.pool, b.Conn(), tree, log)
	if err != nil {
		return fmt.Errorf("loading permissions: %w", err)
	}
	defer az.Close()
	orgSvc := org.NewService(d.pool, az, tree, log)
	events := event.NewBus(b.Events(), log)
	msgSvc := messaging.New(d.pool, orgSvc, events, log, messaging.Options{Committers: cfg.SendCommitters, CommitGap: cfg.SendCommitGap})
	defer func() {
		if cerr := msgSvc.Close(context.WithoutCancel(ctx)); cerr != nil {
			log.Warn("sends still queued at exit", "err", cerr)
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), db.NewPoolCollector(d.pool))
	gw, err := gateway.New(ctx, gateway.Deps{Auth: authSvc, Messaging: msgSvc, Visibility: orgSvc, Pool: d.pool, NATS: b.Conn(), Events: events, Log: log, Registry: reg, Node: cfg.Node})
	if err != nil {
		return fmt.Errorf("starting the gateway: %w", err)
	}
	api := mobileapi.New(mobileapi.Deps{
		Auth: authSvc, Authz: az, Org: orgSvc, Messaging: msgSvc, Pool: d.pool, Log: log, Registry: reg,
		Ready: func(ctx context.Context) error {
			if err := d.pool.Ping(ctx); err != nil {
				return fmt.Errorf("database: %w", err)
			}
			if err := b.Ping(ctx); err != nil {
				return fmt.Errorf("bus: %w", err)
			}
			return nil
		},
	})
	api.Handle("GET /v1/ws", gw)
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("ready", "addr", ln.Addr().String(), "startup_ms", time.Since(started).Milliseconds())

	select {
	case err = <-serveErr:
		return fmt.Errorf("HTTP server: %w", err)
	case <-d.managedDone():
		err = errors.New("the managed PostgreSQL exited unexpectedly; see postgres.log in the data directory")
		log.Error("stopping", "err", err)
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	}
	stopSignals() // a second signal now kills the process
	api.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if gerr := gw.Shutdown(sctx); gerr != nil {
		log.Warn("WebSocket connections did not all close in time", "err", gerr)
	}
	if serr := srv.Shutdown(sctx); serr != nil {
		log.Warn("in-flight requests did not finish in time", "err", serr)
		srv.Close()
	}
	return err
}

// loadKeys returns the configured signing keys, or the generated keyring in
// the data directory.
func loadKeys(cfg *config.Config, log *slog.Logger) (*auth.Keyring, error) {
	if cfg.JWTKey != nil {
		return auth.NewKeyring(cfg.JWTKey, cfg.JWTPreviousKeys...), nil
	}
	keys, created, err := auth.LoadOrCreateKeyring(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("token signing keys: %w", err)
	}
	if created {
		log.Info("generated a token signing key", "file", auth.KeyFile)
	}
	return keys, nil
}

// debugHandler serves net/http/pprof's endpoints, on their own listener so
// that they never share the API's address.
func debugHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}

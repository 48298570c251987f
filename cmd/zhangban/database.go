package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/gateway"
	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/pgmanaged"
	"github.com/zhangban/zhangban/messaging"
	mobileapi "github.com/zhangban/zhangban/mobile-api"
	"github.com/zhangban/zhangban/org"
)

// components are every package's migrations, in dependency order.
func components() []db.Component {
	return []db.Component{auth.Migrations(), authz.Migrations(), org.Migrations(), messaging.Migrations(), gateway.Migrations(), mobileapi.Migrations()}
}

// database is an open pool and, when managed, the PostgreSQL behind it.
type database struct {
	pool    *pgxpool.Pool
	managed *pgmanaged.Instance // nil with DATABASE_URL
}

// openDatabase connects to DATABASE_URL, or starts (or attaches to) the
// managed PostgreSQL in the data directory.
func openDatabase(ctx context.Context, cfg *config.Config, log *slog.Logger) (*database, error) {
	d := &database{}
	url := cfg.DatabaseURL
	if url == "" {
		inst, err := pgmanaged.Start(ctx, pgmanaged.Options{Dir: filepath.Join(cfg.DataDir, "postgres"), Logger: log})
		if err != nil {
			return nil, fmt.Errorf("managed PostgreSQL in %s: %w", cfg.DataDir, err)
		}
		d.managed = inst
		if err := inst.EnsureDatabase(ctx, "zhangban"); err != nil {
			d.close(context.WithoutCancel(ctx))
			return nil, err
		}
		url = inst.ConnString("zhangban")
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := db.Open(octx, url, cfg.DBMaxConns)
	if err != nil {
		d.close(context.WithoutCancel(ctx))
		return nil, err
	}
	d.pool = pool
	return d, nil
}

// openMigrated opens the database and brings its schema up to date, for
// the commands that work on it directly; the caller closes it.
func openMigrated(ctx context.Context, cfg *config.Config, log *slog.Logger) (*database, error) {
	d, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx, d.pool, log, components()...); err != nil {
		d.close(context.WithoutCancel(ctx))
		return nil, err
	}
	return d, nil
}

func (d *database) close(ctx context.Context) error {
	if d.pool != nil {
		d.pool.Close()
	}
	if d.managed != nil {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return d.managed.Stop(ctx)
	}
	return nil
}

// managedDone is closed if the managed PostgreSQL exits; nil (never ready)
// with DATABASE_URL or when attached to another process's server.
func (d *database) managedDone() <-chan struct{} {
	if d.managed == nil {
		return nil
	}
	return d.managed.Done()
}

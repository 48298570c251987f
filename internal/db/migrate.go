package db

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Component is one package's migrations: files named NNNN_description.sql in
// FS, applied in version order, each in its own transaction.
type Component struct {
	Name string
	FS   fs.FS
}

// ErrDatabaseTooNew means the database was migrated by a newer zhangban than
// this binary: running would risk misreading tables it does not know.
var ErrDatabaseTooNew = errors.New("database schema is newer than this binary")

type migration struct {
	version int
	name    string
	sql     string
}

var migrationFile = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

func (c Component) migrations() ([]migration, error) {
	entries, err := fs.ReadDir(c.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("migrations of %s: %w", c.Name, err)
	}
	var ms []migration
	for _, e := range entries {
		m := migrationFile.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migrations of %s: %q is not named NNNN_description.sql", c.Name, e.Name())
		}
		body, err := fs.ReadFile(c.FS, path.Clean(e.Name()))
		if err != nil {
			return nil, err
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migrations of %s: expected version %04d, found %04d (versions must be 1, 2, 3, … without gaps)", c.Name, i+1, m.version)
		}
	}
	return ms, nil
}

// migrationLockID is the advisory lock that serialises nodes starting at once.
const migrationLockID = 0x7a68616e // "zhan"

// Migrate applies every pending migration of the components, in the order
// given, and returns how many it applied. Several processes may call it at
// once: an advisory lock lets one migrate while the others wait.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, components ...Component) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockID); err != nil {
		return 0, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockID) //nolint:errcheck

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS zhangban_migrations (
		component  text NOT NULL,
		version    int  NOT NULL,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (component, version))`); err != nil {
		return 0, err
	}
	applied := map[string]int{}
	rows, err := conn.Query(ctx, `SELECT component, max(version) FROM zhangban_migrations GROUP BY component`)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var c string
		var v int
		if err := rows.Scan(&c, &v); err != nil {
			return 0, err
		}
		applied[c] = v
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}

	plan := make([][]migration, len(components))
	known := map[string]bool{}
	for i, c := range components {
		ms, err := c.migrations()
		if err != nil {
			return 0, err
		}
		known[c.Name] = true
		if have := applied[c.Name]; have > len(ms) {
			return 0, fmt.Errorf("%w: %s is at version %d, this binary knows up to %d; run the newer zhangban or restore a matching backup", ErrDatabaseTooNew, c.Name, have, len(ms))
		}
		plan[i] = ms
	}
	for c, v := range applied {
		if !known[c] {
			return 0, fmt.Errorf("%w: it has component %q (version %d) that this binary does not know; run the newer zhangban", ErrDatabaseTooNew, c, v)
		}
	}

	n := 0
	for i, c := range components {
		for _, m := range plan[i] {
			if m.version <= applied[c.Name] {
				continue
			}
			err := InTx(ctx, conn, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, m.sql); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `INSERT INTO zhangban_migrations (component, version, name) VALUES ($1, $2, $3)`, c.Name, m.version, m.name)
				return err
			})
			if err != nil {
				return n, fmt.Errorf("migration %s %04d_%s: %w", c.Name, m.version, m.name, err)
			}
			log.Info("applied migration", "component", c.Name, "version", m.version, "name", m.name)
			n++
		}
	}
	return n, nil
}

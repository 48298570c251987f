package authz

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// How the in-memory grants follow PostgreSQL:
//
//   - Every statement that changes authz_grants or authz_policies bumps
//     authz_state.version and logs the changed accounts in authz_changes
//     (triggers, so an importer's COPY counts too).
//   - A node knows the version its state reflects at least. Sync reads the
//     changes after it: few accounts are reloaded one by one, a policy change,
//     a bulk change or a gap (pruned log) reloads everything.
//   - After a committed Grant or Revoke the node reloads the account itself
//     and publishes its id on Subject; every node reloads that account from
//     PostgreSQL, so a lost, doubled or reordered notice cannot leave state
//     wrong, and Sync every syncInterval catches whatever was missed.

// Reload reloads the p rules and all grants from PostgreSQL and tells the
// other nodes to catch up (for an importer that wrote authz_grants itself).
func (a *Authorizer) Reload(ctx context.Context) error {
	a.syncMu.Lock()
	err := a.reloadAll(ctx)
	a.syncMu.Unlock()
	if err == nil {
		a.notify("sync")
	}
	return err
}

// Sync brings the node up to the database's version: what the background
// worker does every 30 s and on every notice that could not be queued.
func (a *Authorizer) Sync(ctx context.Context) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	full, err := a.catchUpLocked(ctx)
	if err != nil || !full {
		return err
	}
	return a.reloadAll(ctx)
}

// reloadAll loads a new generation, swaps it in and catches up with what
// changed meanwhile. The caller holds syncMu.
func (a *Authorizer) reloadAll(ctx context.Context) error {
	for try := 0; ; try++ {
		if err := a.loadGeneration(ctx); err != nil {
			return err
		}
		full, err := a.catchUpLocked(ctx)
		if err != nil || !full {
			return err
		}
		if try == 2 {
			// Changes keep needing full reloads; the next Sync continues.
			return nil
		}
	}
}

// loadGeneration reads the version, the p rules and every grant in one
// snapshot, builds a generation and publishes it. The old one keeps serving
// until then: peak memory is two generations. The caller holds syncMu.
func (a *Authorizer) loadGeneration(ctx context.Context) error {
	start := time.Now()
	tx, err := a.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("authz: load: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	var version, n int64
	if err := tx.QueryRow(ctx, `SELECT version FROM authz_state`).Scan(&version); err != nil {
		return fmt.Errorf("authz: load version: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM authz_grants`).Scan(&n); err != nil {
		return fmt.Errorf("authz: count grants: %w", err)
	}
	m, err := newModel()
	if err != nil {
		return fmt.Errorf("authz: model: %w", err)
	}
	if err := (&adapter{db: tx}).LoadFilteredPolicyCtx(ctx, m, Filter{}); err != nil {
		return fmt.Errorf("authz: load p rules: %w", err)
	}
	g, err := buildGeneration(m, &adapter{db: a.pool}, int(n))
	if err != nil {
		return err
	}
	skipped, err := loadGrants(ctx, tx, g.idx, `SELECT account_id, role, unit_id FROM authz_grants`)
	if err != nil {
		return fmt.Errorf("authz: load grants: %w", err)
	}
	if skipped > 0 {
		a.log.Error("authz: grants of roles beyond the supported number were not loaded", "grants", skipped, "max_roles", maxRoles)
	}
	a.gen.Store(g)
	a.version.Store(version)
	a.log.Info("authz: loaded", "grants", g.idx.grants, "accounts", len(g.idx.first), "version", version, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// loadGrants streams (account_id, role, unit_id) rows of sql into x. It
// decodes the raw values so that a million rows cost no allocation each.
// It returns how many grants named a role the index has no room for.
func loadGrants(ctx context.Context, q querier, x *index, sql string, args ...any) (skipped int, err error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	x.mu.Lock()
	defer x.mu.Unlock()
	for rows.Next() {
		fds := rows.FieldDescriptions()
		raw := rows.RawValues()
		if len(raw) != 3 || len(fds) != 3 {
			return skipped, errors.New("want account_id, role, unit_id")
		}
		account, err := int8Value(raw[0], fds[0].Format)
		if err != nil {
			return skipped, err
		}
		unit, err := int8Value(raw[2], fds[2].Format)
		if err != nil {
			return skipped, err
		}
		id, ok := x.roleIDs[string(raw[1])]
		if !ok {
			if id, err = x.roleIDLocked(string(raw[1])); err != nil {
				skipped++
				continue
			}
		}
		x.addLocked(account, id, unit)
	}
	return skipped, rows.Err()
}

// int8Value decodes a bigint in PostgreSQL's binary (1) or text (0) format.
func int8Value(b []byte, format int16) (int64, error) {
	if format == 1 {
		if len(b) != 8 {
			return 0, fmt.Errorf("bigint of %d bytes", len(b))
		}
		return int64(binary.BigEndian.Uint64(b)), nil
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// reloadAccounts replaces the in-memory grants of accounts with what
// PostgreSQL holds now. The caller holds syncMu.
func (a *Authorizer) reloadAccounts(ctx context.Context, accounts []int64) error {
	if len(accounts) == 0 {
		return nil
	}
	type row struct {
		account, unit int64
		role          string
	}
	rows, err := a.pool.Query(ctx, `SELECT account_id, role, unit_id FROM authz_grants WHERE account_id = ANY($1)`, accounts)
	if err != nil {
		return fmt.Errorf("authz: reload accounts: %w", err)
	}
	var r row
	var got []row
	if _, err := pgx.ForEachRow(rows, []any{&r.account, &r.role, &r.unit}, func() error {
		got = append(got, r)
		return nil
	}); err != nil {
		return fmt.Errorf("authz: reload accounts: %w", err)
	}
	x := a.gen.Load().idx
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, account := range accounts {
		x.dropLocked(account)
	}
	for _, r := range got {
		id, err := x.roleIDLocked(r.role)
		if err != nil {
			a.log.Error("authz: grant not loaded", "account", r.account, "role", r.role, "unit", r.unit, "err", err)
			continue
		}
		x.addLocked(r.account, id, r.unit)
	}
	return nil
}

// catchUpLocked applies the changes logged after the node's version and
// reports whether only a full reload can do that. The caller holds syncMu.
func (a *Authorizer) catchUpLocked(ctx context.Context) (full bool, err error) {
	from := a.version.Load()
	rows, err := a.pool.Query(ctx, `SELECT version, account_ids FROM authz_changes WHERE version > $1 ORDER BY version LIMIT $2`, from, maxAccountBatch+1)
	if err != nil {
		return false, fmt.Errorf("authz: read changes: %w", err)
	}
	var (
		v, last int64
		ids     []int64
		changed = map[int64]bool{}
		n       int
	)
	_, err = pgx.ForEachRow(rows, []any{&v, &ids}, func() error {
		n++
		if n == 1 && v != from+1 {
			full = true // the log was pruned past our version
		}
		if ids == nil {
			full = true
		}
		for _, id := range ids {
			changed[id] = true
		}
		last = v
		ids = nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("authz: read changes: %w", err)
	}
	if n == 0 {
		var cur int64
		if err := a.pool.QueryRow(ctx, `SELECT version FROM authz_state`).Scan(&cur); err != nil {
			return false, fmt.Errorf("authz: read version: %w", err)
		}
		return cur != from, nil // ahead with no log (pruned), or behind (restored database)
	}
	if full || n > maxAccountBatch || len(changed) > maxAccountBatch {
		return true, nil
	}
	accounts := make([]int64, 0, len(changed))
	for id := range changed {
		accounts = append(accounts, id)
	}
	if err := a.reloadAccounts(ctx, accounts); err != nil {
		return false, err
	}
	a.version.Store(last)
	return false, nil
}

// onNotice queues a change notice for the worker. It never blocks the NATS
// dispatcher: when the queue is full the notice is dropped and the worker
// catches up by version instead.
func (a *Authorizer) onNotice(m *nats.Msg) {
	var id int64
	if s := string(m.Data); s != "sync" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			a.log.Warn("authz: bad change notice; catching up", "payload", s)
		} else {
			id = v
		}
	}
	select {
	case a.notices <- id:
	default:
		a.missed.Store(true)
	}
}

// notify publishes a change notice. A lost notice only delays the other
// nodes until their next Sync.
func (a *Authorizer) notify(payload string) {
	if a.conn == nil {
		return
	}
	if err := a.conn.Publish(Subject, []byte(payload)); err != nil {
		a.log.Warn("authz: publish change notice", "err", err)
	}
}

// run is the worker: it applies notices in batches and catches up every
// syncInterval, until ctx ends.
func (a *Authorizer) run(ctx context.Context) {
	defer a.wg.Done()
	tick := time.NewTicker(syncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-a.notices:
			var accounts []int64
			catchUp := id == 0
			if id != 0 {
				accounts = append(accounts, id)
			}
		drain:
			for len(accounts) < 1000 {
				select {
				case id := <-a.notices:
					if id == 0 {
						catchUp = true
					} else {
						accounts = append(accounts, id)
					}
				default:
					break drain
				}
			}
			a.apply(ctx, accounts, catchUp || a.missed.Swap(false))
		case <-tick.C:
			a.missed.Store(false)
			a.apply(ctx, nil, true)
			if _, err := a.pool.Exec(ctx, `DELETE FROM authz_changes WHERE changed_at < now() - $1::interval`, changeRetention); err != nil && ctx.Err() == nil {
				a.log.Warn("authz: prune change log", "err", err)
			}
		}
	}
}

func (a *Authorizer) apply(ctx context.Context, accounts []int64, catchUp bool) {
	var err error
	if len(accounts) > 0 {
		a.syncMu.Lock()
		err = a.reloadAccounts(ctx, accounts)
		a.syncMu.Unlock()
	}
	if catchUp || err != nil {
		err = a.Sync(ctx)
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("authz: applying changes failed; retrying at the next notice or sync", "err", err)
		a.missed.Store(true)
	}
}

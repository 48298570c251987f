package authz

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/testenv"
)

// nodes opens n pools on one fresh database, like n processes would.
func nodes(t *testing.T, n int) []*pgxpool.Pool {
	t.Helper()
	url := testenv.URL(t)
	var pools []*pgxpool.Pool
	for range n {
		p, err := db.Open(context.Background(), url, 5)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		pools = append(pools, p)
	}
	return pools
}

// within waits until cond holds and fails when that takes longer than limit.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func TestPropagation(t *testing.T) {
	t.Parallel()
	pools := nodes(t, 2)
	bus := testenv.Bus(t)
	tree := testTree()
	a := newAuthorizer(t, pools[0], bus.Conn(), tree)
	b := newAuthorizer(t, pools[1], bus.Conn(), tree)
	ctx := context.Background()
	worker := Actor{AccountID: 50}

	mustGrant(t, a, 50, RoleGridWorker, V1)
	if !a.Allowed(worker, IncidentReport, G1) {
		t.Fatal("not in effect on the granting node")
	}
	d := within(t, time.Second, "grant reaches the other node", func() bool { return b.Allowed(worker, IncidentReport, G1) })
	t.Logf("grant reached the other node in %s", d)

	if err := b.Revoke(ctx, superuser, 50, RoleGridWorker, V1); err != nil {
		t.Fatal(err)
	}
	d = within(t, time.Second, "revocation reaches the other node", func() bool { return !a.Allowed(worker, IncidentReport, G1) })
	t.Logf("revocation reached the other node in %s", d)

	// An importer writes the table itself, then reloads one node; the other
	// follows the "sync" notice.
	if _, err := pools[0].CopyFrom(ctx, pgx.Identifier{"authz_grants"}, []string{"account_id", "role", "unit_id"},
		pgx.CopyFromRows([][]any{{int64(51), "staff", K1}, {int64(52), "leader", K2}})); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "import reaches the other node", func() bool {
		return b.Allowed(Actor{AccountID: 51}, TaskHandle, G1) && b.Allowed(Actor{AccountID: 52}, TaskDispatch, K2)
	})
}

// A node that misses notices (here: none at all) catches up by version.
func TestSyncCatchesUp(t *testing.T) {
	t.Parallel()
	pools := nodes(t, 2)
	tree := testTree()
	a := newAuthorizer(t, pools[0], nil, tree)
	b := newAuthorizer(t, pools[1], nil, tree)
	ctx := context.Background()
	sync := func() {
		t.Helper()
		if err := b.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}

	mustGrant(t, a, 60, RoleLeader, K1)
	if b.Allowed(Actor{AccountID: 60}, TaskDispatch, K1) {
		t.Fatal("b saw the grant without a notice or a sync")
	}
	sync()
	if !b.Allowed(Actor{AccountID: 60}, TaskDispatch, K1) {
		t.Error("grant not seen after Sync")
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if v1, v2 := a.Stats().Version, b.Stats().Version; v1 != v2 || v1 == 0 {
		t.Errorf("versions %d and %d", v1, v2)
	}

	// Direct SQL: a few rows, then many (logged as "everything").
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pools[0].Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`DELETE FROM authz_grants WHERE account_id = 60`)
	exec(`INSERT INTO authz_grants (account_id, role, unit_id) SELECT g, 'staff', $1 FROM generate_series(1000, 3000) g`, G1)
	sync()
	if b.Allowed(Actor{AccountID: 60}, TaskDispatch, K1) || !b.Allowed(Actor{AccountID: 2500}, TaskHandle, G1) {
		t.Error("bulk change not seen after Sync")
	}
	if st := b.Stats(); st.Grants != 2001 {
		t.Errorf("b holds %d grants", st.Grants)
	}

	// A policy change reloads everything: staff may now read statistics.
	exec(`INSERT INTO authz_policies (role, action) VALUES ('staff', 'stats.read'), ('inspector', 'stats.read')`)
	sync()
	if !b.Allowed(Actor{AccountID: 2500}, StatsRead, G1) {
		t.Error("policy change not seen after Sync")
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Grant(ctx, superuser, 61, "inspector", K1); err != nil {
		t.Errorf("grant of a role added to the p rules: %v", err)
	}

	// A node behind a pruned log reloads everything.
	exec(`UPDATE authz_grants SET unit_id = $1 WHERE account_id = 1000`, K4)
	exec(`DELETE FROM authz_changes`)
	sync()
	if !b.Allowed(Actor{AccountID: 1000}, TaskHandle, K4) {
		t.Error("change behind a pruned log not seen after Sync")
	}
}

// Concurrent decisions while grants change and generations are swapped: for
// the race detector.
func TestConcurrentDecisions(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for acc := int64(70); acc < 75; acc++ {
				a.Allowed(Actor{AccountID: acc}, UnitRead, G1)
				a.Reach(acc, UnitRead)
				a.Grants(acc)
				a.Enforce(fmt.Sprint(acc), fmt.Sprint(K1), "unit", "read") //nolint:errcheck
			}
		}
	}()
	for i := range 20 {
		acc := int64(70 + i%5)
		mustGrant(t, a, acc, RoleStaff, K1)
		if i%7 == 0 {
			if err := a.Reload(ctx); err != nil {
				t.Error(err)
			}
		}
		if err := a.Revoke(ctx, superuser, acc, RoleStaff, K1); err != nil && !errors.Is(err, ErrGrantNotFound) {
			t.Error(err)
		}
	}
	close(stop)
	<-done
}

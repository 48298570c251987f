package authz

import (
	"context"
	"slices"
	"testing"

	"github.com/casbin/casbin/v2"

	"github.com/zhangban/zhangban/internal/testenv"
)

// The adapter serves a stock casbin enforcer (default role manager, every
// rule in the model), and that enforcer decides like the Authorizer.
func TestAdapterWithStockCasbin(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	a := newAuthorizer(t, pool, nil, testTree())
	mustGrant(t, a, 10, RoleAdmin, K1)
	mustGrant(t, a, 10, RoleAuditor, C2)
	mustGrant(t, a, 11, RoleGridWorker, G1)

	m, err := newModel()
	if err != nil {
		t.Fatal(err)
	}
	ad := &adapter{db: pool}
	e, err := casbin.NewEnforcer(m, ad)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.GetModel()["g"]["g"].Policy); n != 3 {
		t.Errorf("stock enforcer loaded %d g rules", n)
	}
	for _, sub := range []string{"10", "11", "12"} {
		for _, dom := range []string{"111", "12", "111111", "1"} {
			for _, act := range allActions {
				obj, verb, _ := splitAction(act)
				want, err1 := e.Enforce(sub, dom, obj, verb)
				got, err2 := a.Enforce(sub, dom, obj, verb)
				if err1 != nil || err2 != nil || got != want {
					t.Errorf("Enforce(%s, %s, %s): stock %v %v, authz %v %v", sub, dom, act, want, err1, got, err2)
				}
			}
		}
	}

	// Filtered: p rules only, or one account's grants.
	m2, _ := newModel()
	if err := ad.LoadFilteredPolicy(m2, Filter{Grants: true, Accounts: []int64{11}}); err != nil {
		t.Fatal(err)
	}
	if g := m2["g"]["g"].Policy; len(g) != 1 || !slices.Equal(g[0], []string{"11", "grid_worker", "111111"}) {
		t.Errorf("filtered g rules %v", g)
	}
	if !ad.IsFiltered() || ad.SavePolicy(m2) == nil {
		t.Error("a filtered load must not be saved")
	}

	// Auto-save paths.
	ctx := context.Background()
	if err := ad.AddPolicy("p", "p", []string{"staff", "stats", "read"}); err != nil {
		t.Fatal(err)
	}
	if err := ad.AddPolicy("g", "g", []string{"12", "staff", "111"}); err != nil {
		t.Fatal(err)
	}
	if err := ad.RemoveFilteredPolicy("g", "g", 0, "10"); err != nil {
		t.Fatal(err)
	}
	if err := ad.RemovePolicy("p", "p", []string{"auditor", "audit", "read"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		actor  int64
		action Action
		unit   int64
		want   bool
	}{
		{12, StatsRead, G1, true},   // new p rule and new grant
		{10, UnitManage, K1, false}, // grants of 10 removed
		{10, AuditRead, K3, false},
	} {
		if got := a.Allowed(Actor{AccountID: c.actor}, c.action, c.unit); got != c.want {
			t.Errorf("%d %s at %d: %v, want %v", c.actor, c.action, c.unit, got, c.want)
		}
	}

	// SavePolicy replaces the p rules and keeps the grants.
	m3, _ := newModel()
	if err := ad.LoadFilteredPolicy(m3, Filter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m3.RemovePolicy("p", "p", []string{"staff", "stats", "read"}); err != nil {
		t.Fatal(err)
	}
	ad.filtered = false // the p rules are all there: saving them is what we mean
	if err := ad.SavePolicy(m3); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Allowed(Actor{AccountID: 12}, StatsRead, G1) || !a.Allowed(Actor{AccountID: 12}, TaskHandle, G1) {
		t.Error("after SavePolicy: wrong p rules or lost grants")
	}
}

package authz

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, Migrations()) }

// memTree is a Tree over dense unit ids with every ancestor path precomputed,
// as the org package's cache does. Built before use, read-only afterwards.
type memTree struct {
	anc [][]int64 // unit id → the unit, its parent, …, the root; nil: unknown
}

func (t *memTree) add(id, parent int64) {
	for int64(len(t.anc)) <= id {
		t.anc = append(t.anc, nil)
	}
	path := []int64{id}
	if parent != 0 {
		path = append(path, t.anc[parent]...)
	}
	t.anc[id] = path
}

func (t *memTree) Ancestors(id int64) ([]int64, error) {
	if id <= 0 || id >= int64(len(t.anc)) || t.anc[id] == nil {
		return nil, ErrUnknownUnit
	}
	return t.anc[id], nil
}

// The test tree. Ids spell the path: 111 is county 1 of city 1 of province 1.
const (
	P1 int64 = 1      // province
	C1 int64 = 11     // city in P1
	K1 int64 = 111    // county in C1: where the actors of the matrix hold their roles
	T1 int64 = 1111   // township in K1
	V1 int64 = 11111  // village in T1
	G1 int64 = 111111 // grid in V1
	K2 int64 = 112    // county in C1, sibling of K1
	C2 int64 = 12     // city in P1
	K3 int64 = 121    // county in C2
	P2 int64 = 2      // another province
	C3 int64 = 21     // city in P2
	K4 int64 = 211    // county in C3
)

func testTree() *memTree {
	t := &memTree{}
	for _, u := range [][2]int64{{P1, 0}, {C1, P1}, {K1, C1}, {T1, K1}, {V1, T1}, {G1, V1}, {K2, C1}, {C2, P1}, {K3, C2}, {P2, 0}, {C3, P2}, {K4, C3}} {
		t.add(u[0], u[1])
	}
	return t
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var superuser = Actor{AccountID: 1, Superuser: true, ClientAddr: "127.0.0.1", RequestID: "test"}

func newAuthorizer(t testing.TB, pool *pgxpool.Pool, conn *nats.Conn, tree Tree) *Authorizer {
	t.Helper()
	a, err := New(context.Background(), pool, conn, tree, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func mustGrant(t testing.TB, a *Authorizer, account int64, role Role, unit int64) {
	t.Helper()
	if err := a.Grant(context.Background(), superuser, account, role, unit); err != nil {
		t.Fatalf("grant %s to %d at %d: %v", role, account, unit, err)
	}
}

var allActions = []Action{UnitRead, UnitManage, MemberManage, MemberReadMobile, RoleGrant, AuditRead, StatsRead,
	TaskDispatch, NoticeSend, TaskHandle, IncidentReport}

// wantActions is the default p rules, written out: what each role allows.
var wantActions = map[Role][]Action{
	RoleAdmin:      {UnitRead, UnitManage, MemberManage, MemberReadMobile, RoleGrant, StatsRead},
	RoleLeader:     {UnitRead, MemberReadMobile, TaskDispatch, NoticeSend, StatsRead, TaskHandle},
	RoleStaff:      {UnitRead, TaskHandle},
	RoleGridWorker: {UnitRead, IncidentReport, TaskHandle},
	RoleAuditor:    {UnitRead, AuditRead, StatsRead},
}

// TestMatrix: an account holding one role at county K1, asking for every
// action at units in every relation to K1.
func TestMatrix(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	roles := []Role{RoleAdmin, RoleLeader, RoleStaff, RoleGridWorker, RoleAuditor}
	for i, r := range roles {
		mustGrant(t, a, int64(100+i), r, K1)
	}
	relations := []struct {
		name  string
		unit  int64
		reach bool // a role held at K1 applies here
	}{
		{"same unit", K1, true},
		{"child", T1, true},
		{"descendant grid", G1, true},
		{"ancestor", C1, false},
		{"root", P1, false},
		{"sibling", K2, false},
		{"other branch", K3, false},
		{"other province", K4, false},
		{"unknown unit", 999, false},
	}
	for i, role := range roles {
		actor := Actor{AccountID: int64(100 + i)}
		for _, rel := range relations {
			for _, act := range allActions {
				want := rel.reach && slices.Contains(wantActions[role], act)
				if got := a.Allowed(actor, act, rel.unit); got != want {
					t.Errorf("%s at K1, %s on %s (%d): Allowed = %v, want %v", role, act, rel.name, rel.unit, got, want)
				}
				// casbin over the same model and grants must agree.
				got, err := a.EnforceTree(actor, act, rel.unit)
				if err != nil || got != want {
					t.Errorf("%s at K1, %s on %s: casbin Enforce over ancestors = %v, %v; want %v", role, act, rel.name, got, err, want)
				}
			}
		}
	}

	// Other actors.
	if !a.Allowed(Actor{AccountID: 999, Superuser: true}, AuditRead, K4) || !a.Allowed(superuser, UnitManage, 424242) {
		t.Error("superuser denied")
	}
	if a.Allowed(Actor{AccountID: 999}, UnitRead, K1) {
		t.Error("account without grants allowed")
	}
	if a.Allowed(Actor{AccountID: 100}, "unit.fly", K1) || a.Allowed(Actor{AccountID: 100}, "", K1) {
		t.Error("unknown action allowed")
	}

	// An account with roles at several units: staff at K2, leader at G1.
	mustGrant(t, a, 120, RoleStaff, K2)
	mustGrant(t, a, 120, RoleLeader, G1)
	multi := Actor{AccountID: 120}
	for _, c := range []struct {
		act  Action
		unit int64
		want bool
	}{
		{TaskHandle, K2, true}, {TaskDispatch, K2, false}, {TaskDispatch, G1, true},
		{TaskDispatch, V1, false}, {UnitRead, K1, false}, {UnitRead, G1, true},
	} {
		if got := a.Allowed(multi, c.act, c.unit); got != c.want {
			t.Errorf("staff@K2+leader@G1: %s at %d = %v, want %v", c.act, c.unit, got, c.want)
		}
	}

	// casbin's Enforce in one concrete domain.
	for _, c := range []struct {
		sub, dom, obj, act string
		want               bool
	}{
		{"100", "111", "unit", "manage", true},
		{"100", "1111", "unit", "manage", false}, // casbin alone does not walk the tree
		{"104", "111", "audit", "read", true},
		{"101", "111", "task", "dispatch", true},
		{"102", "111", "task", "dispatch", false},
		{"x", "111", "unit", "read", false},
	} {
		got, err := a.Enforce(c.sub, c.dom, c.obj, c.act)
		if err != nil || got != c.want {
			t.Errorf("Enforce(%s, %s, %s, %s) = %v, %v; want %v", c.sub, c.dom, c.obj, c.act, got, err, c.want)
		}
	}
}

func TestAllowedDoesNotAllocate(t *testing.T) { // not parallel: AllocsPerRun
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	mustGrant(t, a, 7, RoleLeader, K1)
	mustGrant(t, a, 7, RoleAuditor, C2)
	actor := Actor{AccountID: 7}
	n := testing.AllocsPerRun(1000, func() {
		a.Allowed(actor, TaskDispatch, G1)
		a.Allowed(actor, AuditRead, K3)
		a.Allowed(actor, AuditRead, K1)
		a.Allowed(actor, UnitManage, K1)
		a.Allowed(Actor{AccountID: 8}, UnitRead, K1)
	})
	if n != 0 {
		t.Errorf("Allowed allocates %.1f times per 5 calls", n)
	}
}

// The default p rules seeded by the migration are the ones documented.
func TestDefaultRules(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	rows, err := pool.Query(context.Background(), `SELECT role, action FROM authz_policies`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[Role][]Action{}
	var role, action string
	for rows.Next() {
		if err := rows.Scan(&role, &action); err != nil {
			t.Fatal(err)
		}
		got[Role(role)] = append(got[Role(role)], Action(action))
	}
	if len(got) != len(wantActions) {
		t.Errorf("roles %v, want %v", got, wantActions)
	}
	for r, want := range wantActions {
		g := slices.Clone(got[r])
		w := slices.Clone(want)
		slices.Sort(g)
		slices.Sort(w)
		if !slices.Equal(g, w) {
			t.Errorf("%s: %v, want %v", r, g, w)
		}
	}
}

func TestReachAndGrants(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	mustGrant(t, a, 5, RoleStaff, K1)
	mustGrant(t, a, 5, RoleStaff, G1) // below K1: not a root of its own
	mustGrant(t, a, 5, RoleLeader, K2)
	mustGrant(t, a, 5, RoleAuditor, K4)
	// A unit the tree no longer knows (Grant refuses unknown units).
	if _, err := a.pool.Exec(context.Background(), `INSERT INTO authz_grants (account_id, role, unit_id) VALUES (5, 'staff', 999)`); err != nil {
		t.Fatal(err)
	}
	a.Changed(context.Background(), 5)
	for _, c := range []struct {
		act  Action
		want []int64
	}{
		{UnitRead, []int64{K1, K2, K4}},
		{TaskHandle, []int64{K1, K2}},
		{TaskDispatch, []int64{K2}},
		{AuditRead, []int64{K4}},
		{UnitManage, nil},
		{"no.such", nil},
	} {
		if got := a.Reach(5, c.act); !slices.Equal(got, c.want) {
			t.Errorf("Reach(%s) = %v, want %v", c.act, got, c.want)
		}
	}
	want := []Grant{{5, RoleStaff, K1}, {5, RoleLeader, K2}, {5, RoleAuditor, K4}, {5, RoleStaff, 999}, {5, RoleStaff, G1}}
	if got := a.Grants(5); !slices.Equal(got, want) {
		t.Errorf("Grants = %v, want %v", got, want)
	}
	if got := a.Grants(6); len(got) != 0 {
		t.Errorf("Grants of nobody = %v", got)
	}
	if got := a.Actions(Actor{AccountID: 5}, K2); !slices.Equal(got, []Action{MemberReadMobile, NoticeSend, StatsRead, TaskDispatch, TaskHandle, UnitRead}) {
		t.Errorf("Actions at K2 = %v", got)
	}
	roles, _ := a.gen.Load().idx.GetRoles("5", strconv.FormatInt(K1, 10))
	if !slices.Equal(roles, []string{"staff"}) {
		t.Errorf("casbin GetRoles = %v", roles)
	}
	users, _ := a.gen.Load().idx.GetUsers("leader", strconv.FormatInt(K2, 10))
	if !slices.Equal(users, []string{"5"}) {
		t.Errorf("casbin GetUsers = %v", users)
	}
	if st := a.Stats(); st.Grants != 5 || st.Accounts != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

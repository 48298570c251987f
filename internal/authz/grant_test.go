package authz

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zhangban/zhangban/internal/testenv"
)

func auditCount(t *testing.T, a *Authorizer) map[AuditKind]int {
	t.Helper()
	rows, err := a.pool.Query(context.Background(), `SELECT kind, count(*) FROM authz_audit GROUP BY kind`)
	if err != nil {
		t.Fatal(err)
	}
	n := map[AuditKind]int{}
	for rows.Next() {
		var k string
		var c int
		if err := rows.Scan(&k, &c); err != nil {
			t.Fatal(err)
		}
		n[AuditKind(k)] = c
	}
	return n
}

func TestGrantRules(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()

	// The actors, by what they hold.
	const (
		adminK1       = 100 // admin at K1
		adminC1       = 101 // admin at C1
		adminLeaderK1 = 102 // admin and leader at K1
		staffK1       = 103 // staff at K1
		adminAuditC1  = 104 // admin and auditor at C1
		adminK1peer   = 105 // another admin at K1
	)
	for _, g := range []Grant{
		{adminK1, RoleAdmin, K1}, {adminC1, RoleAdmin, C1}, {adminLeaderK1, RoleAdmin, K1}, {adminLeaderK1, RoleLeader, K1},
		{staffK1, RoleStaff, K1}, {adminAuditC1, RoleAdmin, C1}, {adminAuditC1, RoleAuditor, C1}, {adminK1peer, RoleAdmin, K1},
	} {
		mustGrant(t, a, g.AccountID, g.Role, g.UnitID)
	}

	type op int
	const (
		grant op = iota
		revoke
	)
	cases := []struct {
		name   string
		setup  []Grant // granted by the superuser first
		actor  int64   // 0: the superuser
		op     op
		target int64
		role   Role
		unit   int64
		want   error     // nil, or the sentinel
		audit  AuditKind // the entry written, "" for none
	}{
		{"admin appoints admin below", nil, adminK1, grant, 200, RoleAdmin, T1, nil, AuditGrant},
		{"duties are not escalation: admin assigns staff", nil, adminK1, grant, 204, RoleStaff, T1, nil, AuditGrant},
		{"admin appoints admin deep below", nil, adminK1, grant, 201, RoleAdmin, G1, nil, AuditGrant},
		{"admin may not appoint a peer admin", nil, adminK1, grant, 202, RoleAdmin, K1, ErrDenied, AuditDenied},
		{"city admin appoints county admin", nil, adminC1, grant, 202, RoleAdmin, K1, nil, AuditGrant},
		{"outside reach: sibling", nil, adminK1, grant, 203, RoleAdmin, K2, ErrDenied, AuditDenied},
		{"outside reach: ancestor", nil, adminK1, grant, 203, RoleStaff, C1, ErrDenied, AuditDenied},
		{"outside reach: other province", nil, adminC1, grant, 203, RoleAdmin, K4, ErrDenied, AuditDenied},
		{"escalation: admin lacks audit.read", nil, adminK1, grant, 204, RoleAuditor, T1, ErrDenied, AuditDenied},
		{"admin and leader appoint staff", nil, adminLeaderK1, grant, 205, RoleStaff, T1, nil, AuditGrant},
		{"admin and leader appoint a peer leader", nil, adminLeaderK1, grant, 206, RoleLeader, K1, nil, AuditGrant},
		{"leader role is not held above K1", nil, adminLeaderK1, grant, 206, RoleLeader, C1, ErrDenied, AuditDenied},
		{"admin and auditor appoint auditor at own unit", nil, adminAuditC1, grant, 207, RoleAuditor, C1, nil, AuditGrant},
		{"no role.grant", nil, staffK1, grant, 208, RoleStaff, T1, ErrDenied, AuditDenied},
		{"self grant", nil, adminK1, grant, adminK1, RoleAdmin, T1, ErrDenied, AuditDenied},
		{"self grant of a lesser role", nil, adminLeaderK1, grant, adminLeaderK1, RoleStaff, G1, ErrDenied, AuditDenied},
		{"superuser grants anything", nil, 0, grant, 209, RoleAuditor, P1, nil, AuditGrant},
		{"superuser grants to itself", nil, 0, grant, superuser.AccountID, RoleAdmin, P2, nil, AuditGrant},
		{"unknown role", nil, 0, grant, 210, "king", K1, ErrInvalidRole, ""},
		{"unknown unit", nil, adminK1, grant, 210, RoleAdmin, 999, ErrUnknownUnit, ""},
		{"invalid account", nil, 0, grant, 0, RoleAdmin, K1, ErrInvalidAccount, ""},
		{"granting what is held changes nothing", []Grant{{211, RoleAdmin, T1}}, adminK1, grant, 211, RoleAdmin, T1, nil, ""},

		{"city admin removes county admin", []Grant{{212, RoleAdmin, K1}}, adminC1, revoke, 212, RoleAdmin, K1, nil, AuditRevoke},
		{"admin may not remove a peer admin", nil, adminK1, revoke, adminK1peer, RoleAdmin, K1, ErrDenied, AuditDenied},
		{"admin removes admin below", []Grant{{213, RoleAdmin, V1}}, adminK1, revoke, 213, RoleAdmin, V1, nil, AuditRevoke},
		{"admin may not remove an auditor", []Grant{{214, RoleAuditor, T1}}, adminK1, revoke, 214, RoleAuditor, T1, ErrDenied, AuditDenied},
		{"admin may not revoke outside reach", []Grant{{215, RoleAdmin, K2}}, adminK1, revoke, 215, RoleAdmin, K2, ErrDenied, AuditDenied},
		{"self revoke", nil, adminK1, revoke, adminK1, RoleAdmin, K1, ErrDenied, AuditDenied},
		{"revoke what is not held", nil, adminC1, revoke, 216, RoleAdmin, K1, ErrGrantNotFound, ""},
		{"revoke at the unit only, not held further up", []Grant{{217, RoleAdmin, K1}}, adminC1, revoke, 217, RoleAdmin, T1, ErrGrantNotFound, ""},
	}
	for _, c := range cases {
		for _, g := range c.setup {
			mustGrant(t, a, g.AccountID, g.Role, g.UnitID)
		}
		actor := superuser
		if c.actor != 0 {
			actor = Actor{AccountID: c.actor, ClientAddr: "10.0.0.1", RequestID: "req-" + c.name}
		}
		before := auditCount(t, a)
		var err error
		if c.op == grant {
			err = a.Grant(ctx, actor, c.target, c.role, c.unit)
		} else {
			err = a.Revoke(ctx, actor, c.target, c.role, c.unit)
		}
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			continue
		}
		after := auditCount(t, a)
		for _, k := range []AuditKind{AuditGrant, AuditRevoke, AuditDenied} {
			want := before[k]
			if k == c.audit {
				want++
			}
			if after[k] != want {
				t.Errorf("%s: %d %s audit entries, want %d", c.name, after[k], k, want)
			}
		}
		// The change is visible on this node at once.
		if c.want == nil && c.audit != "" {
			held := false
			for _, g := range a.Grants(c.target) {
				held = held || (g.Role == c.role && g.UnitID == c.unit)
			}
			if held != (c.op == grant) {
				t.Errorf("%s: in memory after the change: held = %v", c.name, held)
			}
		}
	}

	// The audit entry of a grant carries who, what, where and from where.
	es, err := a.Audit(ctx, superuser, AuditQuery{Kind: AuditGrant, ActorID: adminK1, Limit: 1})
	if err != nil || len(es) != 1 {
		t.Fatalf("audit: %v %v", es, err)
	}
	e := es[0]
	if e.TargetAccountID != 201 || e.Role != RoleAdmin || e.UnitID != G1 || e.Action != RoleGrant || e.ClientAddr != "10.0.0.1" ||
		e.RequestID != "req-admin appoints admin deep below" || e.At.IsZero() {
		t.Errorf("grant audit entry = %+v", e)
	}
	es, _ = a.Audit(ctx, superuser, AuditQuery{Kind: AuditDenied, ActorID: adminK1, Limit: 1})
	if len(es) != 1 || !strings.Contains(es[0].Detail, "revoke") || es[0].TargetAccountID != adminK1 {
		t.Errorf("denied audit entry = %+v", es)
	}

	// The grants table holds who granted.
	var by int64
	if err := a.pool.QueryRow(ctx, `SELECT granted_by FROM authz_grants WHERE account_id = 200`).Scan(&by); err != nil || by != adminK1 {
		t.Errorf("granted_by = %d, %v", by, err)
	}
	// Granted rights work at once.
	if !a.Allowed(Actor{AccountID: 200}, UnitManage, G1) || a.Allowed(Actor{AccountID: 200}, UnitManage, K1) {
		t.Error("admin granted at T1 has the wrong reach")
	}
}

func TestRevokeAllTx(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	mustGrant(t, a, 300, RoleStaff, T1)
	mustGrant(t, a, 300, RoleLeader, G1)
	mustGrant(t, a, 300, RoleStaff, K3)
	org := Actor{AccountID: 100}
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := a.RevokeAllTx(ctx, tx, org, 300, K1, "member left K1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a.Changed(ctx, 300)
	if len(removed) != 2 {
		t.Errorf("removed %v", removed)
	}
	if got := a.Grants(300); len(got) != 1 || got[0].UnitID != K3 {
		t.Errorf("left %v", got)
	}
	es, _ := a.Audit(ctx, superuser, AuditQuery{Kind: AuditRevoke})
	if len(es) != 2 || es[0].Detail != "member left K1" {
		t.Errorf("revoke audit entries %+v", es)
	}
}

func TestLoadGrants(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	gs := []Grant{{400, RoleStaff, T1}, {401, RoleGridWorker, G1}, {401, RoleGridWorker, G1}, {402, RoleLeader, K1}}
	if _, err := a.LoadGrants(ctx, Actor{AccountID: 5}, gs); !errors.Is(err, ErrDenied) {
		t.Errorf("non-superuser import: %v", err)
	}
	if _, err := a.LoadGrants(ctx, superuser, []Grant{{400, "king", T1}}); !errors.Is(err, ErrInvalidRole) {
		t.Errorf("bad role: %v", err)
	}
	n, err := a.LoadGrants(ctx, superuser, gs)
	if err != nil || n != 3 {
		t.Fatalf("import: %d, %v", n, err)
	}
	if !a.Allowed(Actor{AccountID: 401}, IncidentReport, G1) || !a.Allowed(Actor{AccountID: 402}, TaskDispatch, G1) {
		t.Error("imported grants not in effect")
	}
	if n, err := a.LoadGrants(ctx, superuser, gs); err != nil || n != 0 {
		t.Errorf("second import: %d, %v", n, err)
	}
}

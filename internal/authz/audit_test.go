package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/testenv"
)

func TestAuditAppendOnly(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	mustGrant(t, a, 10, RoleStaff, K1)
	for _, sql := range []string{
		`UPDATE authz_audit SET detail = 'edited'`,
		`UPDATE authz_audit SET detail = 'edited' WHERE false`,
		`DELETE FROM authz_audit`,
		`TRUNCATE authz_audit`,
	} {
		_, err := a.pool.Exec(ctx, sql)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want refusal", sql, err)
		}
	}
	if n := auditCount(t, a)[AuditGrant]; n != 1 {
		t.Errorf("%d grant entries left", n)
	}
}

func TestCheckAudits(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	mustGrant(t, a, 10, RoleStaff, K1)
	actor := Actor{AccountID: 10, ClientAddr: "10.1.2.3", RequestID: "r1"}
	if err := a.Check(ctx, actor, TaskHandle, G1); err != nil {
		t.Errorf("allowed check: %v", err)
	}
	err := a.Check(ctx, actor, UnitManage, G1)
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "unit.manage") {
		t.Errorf("denied check: %v", err)
	}
	if err := a.Check(ctx, actor, UnitRead, 999); !errors.Is(err, ErrDenied) {
		t.Errorf("unknown unit: %v", err)
	}
	es, err := a.Audit(ctx, superuser, AuditQuery{Kind: AuditDenied})
	if err != nil || len(es) != 2 {
		t.Fatalf("entries %+v, %v", es, err)
	}
	if e := es[1]; e.ActorID != 10 || e.Action != UnitManage || e.UnitID != G1 || e.ClientAddr != "10.1.2.3" || e.RequestID != "r1" {
		t.Errorf("entry %+v", e)
	}
	if es[0].UnitID != 999 || es[0].Detail != "unknown unit" {
		t.Errorf("entry %+v", es[0])
	}
}

func TestAuditVisibility(t *testing.T) {
	t.Parallel()
	a := newAuthorizer(t, testenv.DB(t), nil, testTree())
	ctx := context.Background()
	const (
		auditorK1 = 20
		auditorC1 = 21
		adminC1   = 22
		nobody    = 23
	)
	mustGrant(t, a, auditorK1, RoleAuditor, K1)
	mustGrant(t, a, auditorC1, RoleAuditor, C1)
	mustGrant(t, a, adminC1, RoleAdmin, C1)
	// One denied check by nobody at each of these units.
	for _, u := range []int64{G1, K1, K2, K3, K4} {
		if err := a.Check(ctx, Actor{AccountID: nobody}, UnitRead, u); err == nil {
			t.Fatal("nobody allowed")
		}
	}
	units := func(es []AuditEntry) []int64 {
		var us []int64
		for _, e := range es {
			if e.Kind == AuditDenied && e.ActorID == nobody {
				us = append(us, e.UnitID)
			}
		}
		return us
	}
	for _, c := range []struct {
		name  string
		actor Actor
		q     AuditQuery
		want  []int64 // units of nobody's entries, newest first
		err   error
	}{
		{"auditor at K1 sees K1's subtree", Actor{AccountID: auditorK1}, AuditQuery{}, []int64{K1, G1}, nil},
		{"auditor at C1 sees C1's subtree", Actor{AccountID: auditorC1}, AuditQuery{}, []int64{K2, K1, G1}, nil},
		{"superuser sees everything", superuser, AuditQuery{}, []int64{K4, K3, K2, K1, G1}, nil},
		{"unit filter within reach", Actor{AccountID: auditorC1}, AuditQuery{UnitID: K2}, []int64{K2}, nil},
		{"unit filter outside reach", Actor{AccountID: auditorK1}, AuditQuery{UnitID: K2}, nil, ErrDenied},
		{"admin lacks audit.read", Actor{AccountID: adminC1}, AuditQuery{}, nil, ErrDenied},
		{"page", superuser, AuditQuery{ActorID: nobody, Limit: 2}, []int64{K4, K3}, nil},
		{"actor filter", superuser, AuditQuery{ActorID: nobody}, []int64{K4, K3, K2, K1, G1}, nil},
		{"since the future", superuser, AuditQuery{Since: time.Now().Add(time.Hour)}, nil, nil},
		{"until the past", superuser, AuditQuery{Until: time.Now().Add(-time.Hour)}, nil, nil},
	} {
		es, err := a.Audit(ctx, c.actor, c.q)
		if !errors.Is(err, c.err) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			continue
		}
		if got := units(es); !slices.Equal(got, c.want) {
			t.Errorf("%s: units %v, want %v", c.name, got, c.want)
		}
	}

	// The auditor at K1 also sees the grant made at K1, not the one at C1.
	es, _ := a.Audit(ctx, Actor{AccountID: auditorK1}, AuditQuery{Kind: AuditGrant})
	if len(es) != 1 || es[0].TargetAccountID != auditorK1 {
		t.Errorf("grants seen by the K1 auditor: %+v", es)
	}

	// Paging by cursor visits every entry once.
	var seen []int64
	q := AuditQuery{Limit: 3}
	for {
		page, err := a.Audit(ctx, superuser, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			seen = append(seen, e.ID)
		}
		q.Before = page[len(page)-1].ID
	}
	all, _ := a.Audit(ctx, superuser, AuditQuery{Limit: 1000})
	if len(seen) != len(all) || !slices.IsSortedFunc(seen, func(x, y int64) int { return int(y - x) }) {
		t.Errorf("paged %v, all %d", seen, len(all))
	}
}

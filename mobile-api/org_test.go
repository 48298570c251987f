package mobileapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/org"
)

var superuser = authz.Actor{Superuser: true}

// orgWorld is a tree with people in it, reached only through HTTP by the
// actors of the permission matrix.
//
//	浙江 P ─ 杭州 C1 ─ 西湖区 K1 (the actors' unit) ─ 北山街道 T1
//	       │         └ 上城区 K2 (sibling)
//	       └ 宁波 C2 ─ 海曙区 K3 (another branch)
//	江苏 P2 ─ 南京 C3 (another province)
type orgWorld struct {
	*testServer
	units   map[string]int64 // by relation to K1: same, descendant, ancestor, sibling, branch, province
	member  map[string]int64 // a non-leader member of each of those units
	leader  map[string]int64 // a leader of each
	tokens  map[authz.Role]string
	mobiles atomic.Int64
}

var relations = []string{"same", "descendant", "ancestor", "sibling", "branch", "province"}

func newOrgWorld(t *testing.T) *orgWorld {
	ts := newTestServer(t)
	w := &orgWorld{testServer: ts, units: map[string]int64{}, member: map[string]int64{}, leader: map[string]int64{}, tokens: map[authz.Role]string{}}
	w.mobiles.Store(13000000000)
	ctx := context.Background()
	mk := func(parent int64, name, code string) int64 {
		u, err := ts.org.CreateUnit(ctx, superuser, org.NewUnit{ParentID: parent, Name: name, Code: code})
		if err != nil {
			t.Fatal(err)
		}
		return u.ID
	}
	p := mk(0, "浙江省", "33")
	c1 := mk(p, "杭州市", "3301")
	k1 := mk(c1, "西湖区", "330106")
	t1 := mk(k1, "北山街道", "330106004")
	k2 := mk(c1, "上城区", "330102")
	c2 := mk(p, "宁波市", "3302")
	k3 := mk(c2, "海曙区", "330203")
	p2 := mk(0, "江苏省", "32")
	c3 := mk(p2, "南京市", "3201")
	w.units = map[string]int64{"same": k1, "descendant": t1, "ancestor": c1, "sibling": k2, "branch": k3, "province": c3}
	for rel, u := range w.units {
		w.member[rel] = w.person(u, "成员"+rel, false)
		w.leader[rel] = w.person(u, "领导"+rel, true)
	}
	for _, role := range []authz.Role{authz.RoleAdmin, authz.RoleLeader, authz.RoleStaff, authz.RoleGridWorker, authz.RoleAuditor} {
		acc, err := ts.auth.CreateAccount(ctx, auth.NewAccount{Login: "actor-" + strings.ReplaceAll(string(role), "_", "-"), DisplayName: "Actor " + string(role), Password: "actor-password", Mobile: w.nextMobile()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ts.org.AddMember(ctx, superuser, k1, org.NewMember{AccountID: acc.ID, Title: string(role)}); err != nil {
			t.Fatal(err)
		}
		if err := ts.authz.Grant(ctx, superuser, acc.ID, role, k1); err != nil {
			t.Fatal(err)
		}
		w.tokens[role] = ts.login(acc.Login, "actor-password", "phone").AccessToken
	}
	return w
}

func (w *orgWorld) nextMobile() string { return fmt.Sprint(w.mobiles.Add(1)) }

func (w *orgWorld) person(unit int64, name string, leader bool) int64 {
	pos, err := w.org.AddMember(context.Background(), superuser, unit, org.NewMember{Name: name, Mobile: w.nextMobile(), Leader: leader})
	if err != nil {
		w.t.Fatal(err)
	}
	return pos.AccountID
}

// TestPermissionMatrix runs every role × relation × action through the HTTP
// API as a phone would, and checks the status (and, where it matters, what
// the answer reveals) against the expected rule.
func TestPermissionMatrix(t *testing.T) {
	t.Parallel()
	w := newOrgWorld(t)
	near := func(rel string) bool { return rel == "same" || rel == "descendant" }
	// expect gives the status for a role at a relation: allowed in the
	// subtree if the role has the action, 403 on a visible unit otherwise,
	// and 404 where the unit is invisible (another branch or province).
	expect := func(has bool, rel string, ok int) int {
		switch {
		case near(rel) && has:
			return ok
		case near(rel) || rel == "ancestor":
			return http.StatusForbidden
		default:
			return http.StatusNotFound
		}
	}
	type action struct {
		name string
		may  map[authz.Role]bool
		run  func(t *testing.T, role authz.Role, rel string) (int, []byte)
		ok   int
	}
	roles := []authz.Role{authz.RoleAdmin, authz.RoleLeader, authz.RoleStaff, authz.RoleGridWorker, authz.RoleAuditor}
	all := map[authz.Role]bool{authz.RoleAdmin: true, authz.RoleLeader: true, authz.RoleStaff: true, authz.RoleGridWorker: true, authz.RoleAuditor: true}
	actions := []action{
		{"rename unit", map[authz.Role]bool{authz.RoleAdmin: true}, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("PATCH", fmt.Sprintf("/v1/org/units/%d", w.units[rel]), w.tokens[role], map[string]any{"sort_order": 7})
			return s, b
		}, 200},
		{"add member", map[authz.Role]bool{authz.RoleAdmin: true}, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("POST", fmt.Sprintf("/v1/org/units/%d/members", w.units[rel]), w.tokens[role], map[string]any{"name": "新人", "mobile": w.nextMobile()})
			return s, b
		}, 201},
		{"grant staff", map[authz.Role]bool{authz.RoleAdmin: true}, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("POST", "/v1/org/grants", w.tokens[role], map[string]any{"account_id": w.member[rel], "role": "staff", "unit_id": w.units[rel]})
			return s, b
		}, 201},
		{"read audit log", map[authz.Role]bool{authz.RoleAuditor: true}, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("GET", fmt.Sprintf("/v1/audit?unit_id=%d", w.units[rel]), w.tokens[role], nil)
			return s, b
		}, 200},
		{"read stats", map[authz.Role]bool{authz.RoleAdmin: true, authz.RoleLeader: true, authz.RoleAuditor: true}, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("GET", fmt.Sprintf("/v1/org/units/%d/stats", w.units[rel]), w.tokens[role], nil)
			return s, b
		}, 200},
		{"list children", all, func(t *testing.T, role authz.Role, rel string) (int, []byte) {
			s, _, b := w.do("GET", fmt.Sprintf("/v1/org/units/%d/children", w.units[rel]), w.tokens[role], nil)
			if rel == "ancestor" && s == 200 { // above one's unit: visible, for its leaders
				return http.StatusForbidden, b
			}
			return s, b
		}, 200},
	}
	for _, act := range actions {
		for _, role := range roles {
			for _, rel := range relations {
				t.Run(fmt.Sprintf("%s/%s/%s", act.name, role, rel), func(t *testing.T) {
					want := expect(act.may[role], rel, act.ok)
					got, body := act.run(t, role, rel)
					if got != want {
						t.Fatalf("got %d %s, want %d", got, body, want)
					}
					var e struct{ Error Error }
					if json.Unmarshal(body, &e); want == 404 && e.Error.Message != "not found" {
						t.Fatalf("a not-found answer says more than that: %s", body)
					}
				})
			}
		}
	}

	// Reading people: members of one's subtree in full; only the leaders of
	// the units above; nobody elsewhere. Full mobile numbers only for roles
	// with member.read_mobile, and only in their subtree.
	readsMobile := map[authz.Role]bool{authz.RoleAdmin: true, authz.RoleLeader: true}
	for _, role := range roles {
		for _, rel := range relations {
			t.Run(fmt.Sprintf("members/%s/%s", role, rel), func(t *testing.T) {
				status, _, body := w.do("GET", fmt.Sprintf("/v1/org/units/%d/members", w.units[rel]), w.tokens[role], nil)
				var list struct{ Members []org.Member }
				json.Unmarshal(body, &list)
				switch {
				case near(rel):
					if status != 200 || len(list.Members) < 2 {
						t.Fatalf("got %d %s", status, body)
					}
				case rel == "ancestor":
					if status != 200 || len(list.Members) != 1 || list.Members[0].AccountID != w.leader[rel] {
						t.Fatalf("above one's unit only its leaders: %d %s", status, body)
					}
				default:
					if status != 404 {
						t.Fatalf("got %d %s", status, body)
					}
				}
				for who, id := range map[string]int64{"member": w.member[rel], "leader": w.leader[rel]} {
					status, _, body := w.do("GET", fmt.Sprintf("/v1/org/people/%d", id), w.tokens[role], nil)
					var card org.Card
					json.Unmarshal(body, &card)
					visible := near(rel) || (rel == "ancestor" && who == "leader")
					switch {
					case !visible && status != 404:
						t.Fatalf("%s card: got %d %s, want 404", who, status, body)
					case visible && status != 200:
						t.Fatalf("%s card: got %d %s", who, status, body)
					case visible && card.MobileMasked == (readsMobile[role] && near(rel)):
						t.Fatalf("%s card: masked=%v for %s at %s", who, card.MobileMasked, role, rel)
					}
				}
			})
		}
	}
}

package org

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/testenv"
)

var root = authz.Actor{AccountID: 0, Superuser: true}

// fixture is a small tree:
//
//	浙江(P) ─ 杭州(C1) ─ 西湖区(K1) ─ 北山街道(T1) ─ 曙光社区(V1) ─ 第1网格(G1)
//	        │                     └ 灵隐街道(T2)
//	        └ 宁波(C2)
//	江苏(P2)
type fixture struct {
	t                                 *testing.T
	s                                 *Service
	pool                              *pgxpool.Pool
	az                                *authz.Authorizer
	P, C1, C2, K1, T1, T2, V1, G1, P2 int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	pool := testenv.DB(t)
	bus := testenv.Bus(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tree, err := LoadTree(ctx, pool, bus.Conn(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tree.Close)
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	az, err := authz.New(actx, pool, bus.Conn(), tree, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(az.Close)
	f := &fixture{t: t, s: NewService(pool, az, tree, log), pool: pool, az: az}
	f.P = f.unit(0, "浙江省", "33")
	f.C1 = f.unit(f.P, "杭州市", "3301")
	f.C2 = f.unit(f.P, "宁波市", "3302")
	f.K1 = f.unit(f.C1, "西湖区", "330106")
	f.T1 = f.unit(f.K1, "北山街道", "330106004")
	f.T2 = f.unit(f.K1, "灵隐街道", "330106008")
	f.V1 = f.unit(f.T1, "曙光社区", "330106004001")
	f.G1 = f.unit(f.V1, "第1网格", "330106004001001")
	f.P2 = f.unit(0, "江苏省", "32")
	return f
}

func (f *fixture) unit(parent int64, name, code string) int64 {
	f.t.Helper()
	u, err := f.s.CreateUnit(context.Background(), root, NewUnit{ParentID: parent, Name: name, Code: code})
	if err != nil {
		f.t.Fatalf("create %s: %v", name, err)
	}
	return u.ID
}

// person adds a new person to unit and returns their account id.
func (f *fixture) person(unit int64, name, mobile string, leader bool) int64 {
	f.t.Helper()
	p, err := f.s.AddMember(context.Background(), root, unit, NewMember{Name: name, Mobile: mobile, Leader: leader, Title: "科员"})
	if err != nil {
		f.t.Fatalf("add %s: %v", name, err)
	}
	return p.AccountID
}

func (f *fixture) grant(account int64, role authz.Role, unit int64) {
	f.t.Helper()
	if err := f.az.Grant(context.Background(), root, account, role, unit); err != nil {
		f.t.Fatalf("grant %s: %v", role, err)
	}
}

func TestTreeRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		n    NewUnit
		want error
	}{
		{"village under county", NewUnit{ParentID: f.K1, Name: "x", Level: Village}, ErrLevelMismatch},
		{"child of a grid", NewUnit{ParentID: f.G1, Name: "x"}, ErrLevelMismatch},
		{"unknown parent", NewUnit{ParentID: 999999, Name: "x"}, ErrNotFound},
		{"duplicate code", NewUnit{ParentID: f.K1, Name: "x", Code: "330106004"}, ErrDuplicateCode},
		{"bad code", NewUnit{ParentID: f.K1, Name: "x", Code: "33010"}, ErrInvalid},
		{"empty name", NewUnit{ParentID: f.K1, Name: "  "}, ErrInvalid},
	}
	for _, c := range cases {
		if _, err := f.s.CreateUnit(ctx, root, c.n); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	u, err := f.s.Unit(ctx, root, f.T1)
	if err != nil || u.Level != Township || *u.Code != "330106004000" || *u.ParentID != f.K1 {
		t.Fatalf("township: %+v %v", u, err)
	}
	if u, err := f.s.UnitByCode(ctx, root, "330106"); err != nil || u.ID != f.K1 {
		t.Fatalf("by code: %+v %v", u, err)
	}

	// Moves: to a parent of the right level only, never under oneself.
	if _, err := f.s.MoveUnit(ctx, root, f.K1, f.T1); !errors.Is(err, ErrCycle) {
		t.Errorf("move under own descendant: %v", err)
	}
	if _, err := f.s.MoveUnit(ctx, root, f.K1, f.P); !errors.Is(err, ErrLevelMismatch) {
		t.Errorf("level skip: %v", err)
	}
	if _, err := f.s.MoveUnit(ctx, root, f.K1, f.C2); err != nil {
		t.Fatal(err)
	}
	anc, _ := f.s.Ancestors(ctx, root, f.G1)
	var names []string
	for _, a := range anc {
		names = append(names, a.Name)
	}
	if strings.Join(names, "/") != "浙江省/宁波市/西湖区/北山街道/曙光社区/第1网格" {
		t.Fatalf("ancestors after move: %v", names)
	}
	if !f.s.Tree().Contains(f.C2, f.G1) || f.s.Tree().Contains(f.C1, f.G1) {
		t.Fatal("tree cache not updated by the move")
	}
	sub, next, err := f.s.Subtree(ctx, root, f.C2, SubtreeQuery{Level: Grid})
	if err != nil || len(sub) != 1 || sub[0].ID != f.G1 || next != 0 {
		t.Fatalf("subtree after move: %v %d %v", sub, next, err)
	}
	// Renames keep the code.
	name := "西湖区（新）"
	if u, err := f.s.UpdateUnit(ctx, root, f.K1, UnitPatch{Name: &name}); err != nil || u.Name != name || *u.Code != "330106000000" {
		t.Fatalf("rename: %+v %v", u, err)
	}
	if units, err := f.s.SearchUnits(ctx, root, "西湖", 10); err != nil || len(units) != 1 {
		t.Fatalf("search: %v %v", units, err)
	}
}

func TestDissolve(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	zs := f.person(f.V1, "张三", "13800000001", false)
	_, err := f.s.DissolveUnit(ctx, root, f.V1)
	var blocked *BlockedError
	if !errors.As(err, &blocked) || len(blocked.Blockers) != 2 {
		t.Fatalf("dissolve with a grid and a member: %v", err)
	}
	if blocked.Blockers[0].Kind != "active_children" || blocked.Blockers[0].Sample[0] != "第1网格" || blocked.Blockers[1].Sample[0] != "张三" {
		t.Fatalf("blockers: %+v", blocked.Blockers)
	}
	if _, err := f.s.DissolveUnit(ctx, root, f.G1); err != nil {
		t.Fatal(err)
	}
	card, _ := f.s.Card(ctx, root, zs)
	if err := f.s.RemovePosition(ctx, root, card.Positions[0].ID); err != nil {
		t.Fatal(err)
	}
	u, err := f.s.DissolveUnit(ctx, root, f.V1)
	if err != nil || u.Status != "dissolved" {
		t.Fatalf("dissolve: %+v %v", u, err)
	}
	if _, err := f.s.CreateUnit(ctx, root, NewUnit{ParentID: f.V1, Name: "x"}); !errors.Is(err, ErrDissolved) {
		t.Fatalf("create under dissolved: %v", err)
	}
	if _, err := f.s.DissolveUnit(ctx, root, f.V1); !errors.Is(err, ErrDissolved) {
		t.Fatalf("dissolve twice: %v", err)
	}
}

func TestMembersAndAddressBook(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// 张三 works in the village and part-time (兼职) in the township.
	zs := f.person(f.V1, "张三", "13800001234", false)
	if _, err := f.s.AddMember(ctx, root, f.T1, NewMember{Mobile: "13800001234", Title: "兼职"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.AddMember(ctx, root, f.T1, NewMember{Mobile: "13800001234"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("second position in the same unit: %v", err)
	}
	leader := f.person(f.T1, "李书记", "13900002222", true)
	clerk := f.person(f.T1, "王科员", "13900003333", false)
	other := f.person(f.T2, "赵六", "13900004444", false)
	f.grant(zs, authz.RoleStaff, f.V1)

	actor := authz.Actor{AccountID: zs}
	card, err := f.s.Card(ctx, root, zs)
	if err != nil || len(card.Positions) != 2 || !card.Positions[0].Primary || card.Positions[0].UnitID != f.V1 {
		t.Fatalf("card: %+v %v", card, err)
	}
	// Own card: full mobile; watermark names the viewer.
	own, err := f.s.Card(ctx, actor, zs)
	if err != nil || own.Mobile != "13800001234" || own.MobileMasked || own.Watermark.Name != "张三" || own.Watermark.MobileTail != "1234" {
		t.Fatalf("own card: %+v %v", own, err)
	}
	// The township's leader is visible (a leader above one's unit), masked;
	// its clerk is not (张三's role is at the village), except that 张三
	// also sits in the township (兼职), so the township's members are his own.
	lc, err := f.s.Card(ctx, actor, leader)
	if err != nil || lc.Mobile != "139****2222" || !lc.MobileMasked {
		t.Fatalf("leader card: %+v %v", lc, err)
	}
	if _, err := f.s.Card(ctx, actor, clerk); err != nil {
		t.Fatalf("clerk of own (兼职) unit: %v", err)
	}
	if _, err := f.s.Card(ctx, actor, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("member of a sibling township: %v", err)
	}
	if _, err := f.s.Children(ctx, actor, f.T2, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("children of a sibling township: %v", err)
	}
	// Both refusals are in the audit log, though answered as not found.
	var denied int
	f.pool.QueryRow(ctx, `SELECT count(*) FROM authz_audit WHERE kind = 'denied' AND actor_id = $1`, zs).Scan(&denied)
	if denied != 2 {
		t.Fatalf("%d denials audited, want 2", denied)
	}

	for q, want := range map[string]string{"张": "张三", "zhangs": "张三", "zs": "张三", "1234": "张三", "lsj": "李书记"} {
		ms, _, err := f.s.SearchPeople(ctx, root, q, "", 10)
		if err != nil || len(ms) != 1 || ms[0].Name != want {
			t.Errorf("search %q: %+v %v", q, ms, err)
		}
	}
	// 张三's view is narrow (a village and a township): search starts from it.
	for q, want := range map[string]string{"lsj": "李书记", "3333": "王科员", "王": "王科员"} {
		ms, _, err := f.s.SearchPeople(ctx, actor, q, "", 10)
		if err != nil || len(ms) != 1 || ms[0].Name != want {
			t.Errorf("narrow search %q: %+v %v", q, ms, err)
		}
	}
	page1, next, err := f.s.SearchPeople(ctx, actor, "l", "", 1)
	if err != nil || len(page1) != 1 || next == "" {
		t.Fatalf("narrow page 1: %+v %q %v", page1, next, err)
	}
	if page2, _, err := f.s.SearchPeople(ctx, actor, "l", next, 1); err != nil || len(page2) != 0 && page2[0].AccountID == page1[0].AccountID {
		t.Fatalf("narrow page 2 repeats page 1: %+v %v", page2, err)
	}
	if ms, _, _ := f.s.SearchPeople(ctx, actor, "zl", "", 10); len(ms) != 0 {
		t.Fatalf("search found an invisible person: %+v", ms)
	}
	if _, _, err := f.s.SearchPeople(ctx, root, "12", "", 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("two digits: %v", err)
	}

	// Paging through a unit's members.
	ms, next, err := f.s.Members(ctx, root, f.T1, "", 2)
	if err != nil || len(ms) != 2 || next == "" {
		t.Fatalf("page 1: %v %q %v", ms, next, err)
	}
	ms2, next2, err := f.s.Members(ctx, root, f.T1, next, 2)
	if err != nil || len(ms2) != 1 || next2 != "" || ms2[0].AccountID == ms[0].AccountID {
		t.Fatalf("page 2: %v %q %v", ms2, next2, err)
	}
	if _, _, err := f.s.Members(ctx, root, f.T1, "garbage!", 2); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
	kids, err := f.s.Children(ctx, root, f.K1, false)
	if err != nil || len(kids) != 2 || *kids[0].Members != 3 || *kids[1].Members != 1 {
		t.Fatalf("children with counts: %+v %v", kids, err)
	}
}

func TestChangesSync(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	viewer := f.person(f.K1, "观察员", "13700000000", false)
	f.grant(viewer, authz.RoleStaff, f.K1)
	a := authz.Actor{AccountID: viewer}

	cs, err := f.s.Changes(ctx, a, 0, 100)
	if err != nil || cs.Reset || cs.More {
		t.Fatalf("first sync: %+v %v", cs, err)
	}
	seen := map[int64]bool{}
	for _, c := range cs.Changes {
		if c.Entity == "unit" {
			seen[c.ID] = true
		}
	}
	if !seen[f.K1] || !seen[f.G1] || seen[f.C2] || seen[f.P2] {
		t.Fatalf("first sync units: %v", seen)
	}
	cursor := cs.Cursor

	// A member moves out of the viewer's county: the viewer is told to drop it.
	zs := f.person(f.V1, "张三", "13800001234", false)
	card, _ := f.s.Card(ctx, root, zs)
	cs, _ = f.s.Changes(ctx, a, cursor, 100)
	if len(cs.Changes) != 1 || cs.Changes[0].Op != "upsert" || cs.Changes[0].Position.Name != "张三" {
		t.Fatalf("add: %+v", cs)
	}
	cursor = cs.Cursor
	if _, err := f.s.MovePosition(ctx, root, card.Positions[0].ID, f.C2); err != nil {
		t.Fatal(err)
	}
	cs, err = f.s.Changes(ctx, a, cursor, 100)
	if err != nil || len(cs.Changes) != 1 || cs.Changes[0].Op != "delete" || cs.Changes[0].ID != card.Positions[0].ID {
		t.Fatalf("move away: %+v %v", cs, err)
	}
	cursor = cs.Cursor
	// A whole township moves away: its units leave the viewer's sight.
	f.unit(f.C2, "江北区", "330205")
	var k2 int64
	f.pool.QueryRow(ctx, `SELECT id FROM org_units WHERE code = '330205000000'`).Scan(&k2)
	if _, err := f.s.MoveUnit(ctx, root, f.T2, k2); err != nil {
		t.Fatal(err)
	}
	cs, _ = f.s.Changes(ctx, a, cursor, 100)
	if len(cs.Changes) != 1 || cs.Changes[0].ID != f.T2 || cs.Changes[0].Op != "delete" {
		t.Fatalf("township moved away: %+v", cs)
	}
	if _, err := f.s.Changes(ctx, a, cs.Cursor+1000, 100); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cursor from the future: %v", err)
	}
	// A bulk import raises the epoch: older cursors must reset.
	f.pool.Exec(ctx, `UPDATE org_sync SET epoch = (SELECT last_value FROM org_version)`)
	if cs, err := f.s.Changes(ctx, a, cursor, 100); err != nil || !cs.Reset {
		t.Fatalf("after bulk import: %+v %v", cs, err)
	}
}

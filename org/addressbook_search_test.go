package org

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zhangban/zhangban/internal/authz"
)

// searchNames pages through a search (page size 2, to cross pages) and
// returns "name@unit" for every hit, in order.
func searchNames(t *testing.T, f *fixture, a authz.Actor, q string, wide bool) []string {
	t.Helper()
	var out []string
	after := ""
	for range 100 {
		ms, next, err := f.s.searchPeople(context.Background(), a, q, after, 2, wide)
		if err != nil {
			t.Fatalf("search %q: %v", q, err)
		}
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%s@%d", m.Name, m.Position.UnitID))
		}
		if next == "" {
			return out
		}
		after = next
	}
	t.Fatalf("search %q does not end", q)
	return nil
}

// TestSearchPeopleConfinedMatchesWide: the search confined to the viewer's
// areas finds exactly what walking every match finds, page by page, for
// viewers of every kind of reach.
func TestSearchPeopleConfinedMatchesWide(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	k2 := f.unit(f.C2, "海曙区", "330203")
	t3 := f.unit(k2, "南门街道", "330203001")
	// People everywhere: leaders and staff at every level, one 兼职.
	f.person(f.P, "张省长", "13700000001", true)
	f.person(f.P, "张秘书", "13700000002", false)
	f.person(f.C1, "李市长", "13700000003", true)
	f.person(f.C1, "李干事", "13700000004", false)
	f.person(f.K1, "张区长", "13700000005", true)
	f.person(f.T1, "王书记", "13700000006", true)
	f.person(f.T2, "张灵隐", "13700000007", false)
	zv := f.person(f.V1, "张村", "13700000008", false)
	f.person(f.G1, "赵网格", "13700000009", false)
	f.person(f.C2, "张宁波", "13700000010", true)
	f.person(k2, "张海曙", "13700000011", false)
	f.person(t3, "周南门", "13700000012", true)
	f.person(f.P2, "张江苏", "13700000013", true)
	if _, err := f.s.AddMember(ctx, root, t3, NewMember{AccountID: zv, Title: "兼职", Leader: true}); err != nil {
		t.Fatal(err)
	}
	// Viewers: a province admin, a city leader, a county staff member, a
	// grid worker (own unit only, leaders above), someone with roles in two
	// provinces, and someone with no place at all.
	viewer := func(mobile string, unit int64, role authz.Role, more ...int64) authz.Actor {
		id := f.person(unit, "看"+mobile[9:], mobile, false)
		if role != "" {
			f.grant(id, role, unit)
			for _, u := range more {
				f.grant(id, role, u)
			}
		}
		return authz.Actor{AccountID: id}
	}
	viewers := map[string]authz.Actor{
		"province": viewer("13600000001", f.P, authz.RoleAdmin),
		"city":     viewer("13600000002", f.C1, authz.RoleLeader),
		"county":   viewer("13600000003", f.K1, authz.RoleStaff),
		"grid":     viewer("13600000004", f.G1, ""),
		"two":      viewer("13600000005", f.T1, authz.RoleStaff, f.P2),
		"root":     root,
	}
	for name, a := range viewers {
		for _, q := range []string{"张", "李", "z", "zh", "zhang", "zs", "l", "137", "1370", "0000", "0001", "看", "k"} {
			if len(q) == 3 && isDigits(q) {
				continue
			}
			got, want := searchNames(t, f, a, q, false), searchNames(t, f, a, q, true)
			if !slices.Equal(got, want) {
				t.Errorf("%s searching %q:\nconfined %v\nwide     %v", name, q, got, want)
			}
		}
	}
	// The county staff member sees the county and the leaders above.
	if got := searchNames(t, f, viewers["county"], "张", false); len(got) != 4 {
		t.Errorf("county staff searching 张: %v", got)
	}
}

// TestSearchPeopleFollowsWriters: a search after a move of a position or of
// a unit, a rename and a removal shows the change.
func TestSearchPeopleFollowsWriters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	k2 := f.unit(f.C2, "海曙区", "330203")
	county := func(unit int64, mobile string) authz.Actor {
		id := f.person(unit, "看"+mobile[9:], mobile, false)
		f.grant(id, authz.RoleStaff, unit)
		return authz.Actor{AccountID: id}
	}
	k1Staff, k2Staff := county(f.K1, "13600000001"), county(k2, "13600000002")
	find := func(a authz.Actor, q string) []string { return searchNames(t, f, a, q, false) }
	expect := func(what string, got []string, want ...string) {
		t.Helper()
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}

	zs := f.person(f.V1, "张三", "13800001234", false)
	at := func(unit int64) string { return fmt.Sprintf("张三@%d", unit) }
	expect("added", find(k1Staff, "zhangsan"), at(f.V1))
	expect("added, other county", find(k2Staff, "zhangsan"))

	// Moving the position to the other county.
	card, err := f.s.Card(ctx, root, zs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.MovePosition(ctx, root, card.Positions[0].ID, k2); err != nil {
		t.Fatal(err)
	}
	expect("position moved away", find(k1Staff, "张"))
	expect("position moved in", find(k2Staff, "张"), at(k2))
	expect("position moved in, by mobile", find(k2Staff, "1234"), at(k2))

	// Moving a unit (with a member) to the other county.
	ls := f.person(f.T2, "李四", "13800005678", false)
	expect("before the unit moves", find(k1Staff, "ls"), fmt.Sprintf("李四@%d", f.T2))
	if _, err := f.s.MoveUnit(ctx, root, f.T2, k2); err != nil {
		t.Fatal(err)
	}
	expect("unit moved away", find(k1Staff, "ls"))
	expect("unit moved in", find(k2Staff, "ls"), fmt.Sprintf("李四@%d", f.T2))

	// Renaming people by a member import (the importer is where names
	// change): 张三 becomes 章三, 李四 becomes 黎四.
	file := filepath.Join(t.TempDir(), "m.csv")
	os.WriteFile(file, []byte("name,mobile,unitCode,title,leader,roles\n章三,13800001234,330203,科员,no,\n黎四,13800005678,330106008,科员,no,\n"), 0o644)
	if _, err := ImportMembers(ctx, f.pool, file, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("renamed, old name", find(k2Staff, "张"))
	expect("renamed, new name", find(k2Staff, "章"), fmt.Sprintf("章三@%d", k2))
	expect("renamed, new name", find(k2Staff, "黎"), fmt.Sprintf("黎四@%d", f.T2))
	expect("renamed, same pinyin", find(k2Staff, "zhangsan"), fmt.Sprintf("章三@%d", k2))

	// Removing.
	card, err = f.s.Card(ctx, root, ls)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.s.RemovePosition(ctx, root, card.Positions[0].ID); err != nil {
		t.Fatal(err)
	}
	expect("removed", find(k2Staff, "黎"))
	expect("removed, by mobile", find(k2Staff, "5678"))
}

func TestPrefixUpper(t *testing.T) {
	for in, want := range map[string]string{"zhang": "zhanh", "张": "弡", "4321": "4322", "a\uD7FF": "a\uE000"} {
		if got, ok := prefixUpper(in); !ok || got != want {
			t.Errorf("prefixUpper(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := prefixUpper("a\U0010FFFF"); ok {
		t.Error("no string is above U+10FFFF")
	}
}

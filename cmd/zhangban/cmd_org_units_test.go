package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/org"
)

// TestOrgUnitCommands drives the tree operations through the binary.
func TestOrgUnitCommands(t *testing.T) {
	t.Parallel()
	env := []string{"DATABASE_URL=" + testenv.URL(t)}
	run := func(want int, args ...string) string {
		t.Helper()
		p := start(t, env, append([]string{"org", "unit"}, args...)...)
		if code := p.wait(30 * time.Second); code != want {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, want, p.output())
		}
		return p.output()
	}
	unit := func(out string) org.Unit {
		t.Helper()
		var u org.Unit
		if err := json.Unmarshal([]byte(out), &u); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return u
	}
	p := unit(run(0, "create", "--name", "浙江省", "--code", "33"))
	c := unit(run(0, "create", "--parent", itoa(p.ID), "--name", "杭州市", "--code", "3301"))
	c2 := unit(run(0, "create", "--parent", itoa(p.ID), "--name", "宁波市", "--code", "3302"))
	k := unit(run(0, "create", "--parent", itoa(c.ID), "--name", "西湖区", "--code", "330106"))
	if k.Level != org.County {
		t.Fatalf("county: %+v", k)
	}
	if out := run(0, "children", itoa(p.ID)); !strings.Contains(out, "杭州市") || !strings.Contains(out, "宁波市") {
		t.Fatalf("children: %s", out)
	}
	if u := unit(run(0, "rename", itoa(k.ID), "--name", "西湖区新")); u.Name != "西湖区新" {
		t.Fatalf("rename: %+v", u)
	}
	if u := unit(run(0, "move", itoa(k.ID), "--parent", itoa(c2.ID))); *u.ParentID != c2.ID {
		t.Fatalf("move: %+v", u)
	}
	if out := run(0, "ancestors", itoa(k.ID)); strings.Index(out, "浙江省") > strings.Index(out, "宁波市") {
		t.Fatalf("ancestors: %s", out)
	}
	if u := unit(run(0, "get", "--code", "330106")); u.ID != k.ID {
		t.Fatalf("get by code: %+v", u)
	}
	if out := run(0, "search", "西湖"); !strings.Contains(out, "西湖区新") {
		t.Fatalf("search: %s", out)
	}
	if out := run(1, "move", itoa(c2.ID), "--parent", itoa(k.ID)); !strings.Contains(out, "cannot move under itself") {
		t.Fatalf("cycle: %s", out)
	}
	if out := run(1, "dissolve", itoa(c2.ID)); !strings.Contains(out, "active children") {
		t.Fatalf("blocked dissolve: %s", out)
	}
	if u := unit(run(0, "dissolve", itoa(k.ID))); u.Status != "dissolved" {
		t.Fatalf("dissolve: %+v", u)
	}
	if out := run(1, "get", "999999"); !strings.Contains(out, "not found") {
		t.Fatalf("unknown: %s", out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

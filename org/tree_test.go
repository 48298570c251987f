package org

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/testenv"
)

// TestTreeFollowsOtherNodes: a move committed through one node's service is
// in another node's tree (and so in its permission decisions) within a
// second, by the NATS notification.
func TestTreeFollowsOtherNodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other, err := LoadTree(context.Background(), f.pool, f.s.tree.conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if !other.Contains(f.C1, f.G1) {
		t.Fatal("second tree did not load")
	}
	start := time.Now()
	if _, err := f.s.MoveUnit(context.Background(), root, f.K1, f.C2); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Second, func() error {
		if !other.Contains(f.C2, f.G1) || other.Contains(f.C1, f.G1) {
			return fmt.Errorf("other node still has the old ancestors")
		}
		return nil
	})
	t.Logf("seen by the other node after %s", time.Since(start))
}

func TestPathIDs(t *testing.T) {
	for in, want := range map[string]string{"1": "[1]", "1.22.333": "[1 22 333]"} {
		got, err := pathIDs(in)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"", ".", "1..2", "a.b", "1.", "-1"} {
		if _, err := pathIDs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPinyin(t *testing.T) {
	for name, want := range map[string][2]string{
		"张三":     {"zhangsan", "zs"},
		"欧阳娜娜":   {"ouyangnana", "oynn"},
		"Alice王": {"alicewang", "aw"},
		"李 四 2号": {"lisi2hao", "ls2h"},
	} {
		full, in := Pinyin(name)
		if full != want[0] || in != want[1] {
			t.Errorf("%s: %s %s, want %v", name, full, in, want)
		}
	}
}

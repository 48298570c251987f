package messaging

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zhangban/zhangban/internal/testenv"
)

// TestSendUsesGenericPlans: msg_send runs with generic plans (migration
// 0003), so its statements are not planned again on every call; sends of
// one and of many in a batch still store every message (the other tests).
func TestSendUsesGenericPlans(t *testing.T) {
	pool := testenv.DB(t)
	var config []string
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = 'msg_send'`).Scan(&config); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "plan_cache_mode=force_generic_plan") {
		t.Errorf("msg_send's settings are %q, want plan_cache_mode=force_generic_plan", config)
	}
}

// TestCommitGap: sends that arrive within CommitGap of a commit's start
// wait for the gap and go together, in one transaction; a send that finds
// the committer idle for longer goes at once.
func TestCommitGap(t *testing.T) {
	const gap = 2 * time.Second
	f := newFixtureWith(t, Options{CommitGap: gap}, 2)
	ctx := context.Background()
	c, err := f.svc.Direct(ctx, f.actor(0), f.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	send := func(id string) (Sent, time.Duration) {
		t0 := time.Now()
		s, err := f.svc.Send(ctx, f.actor(0), SendRequest{Conv: c.ID, ClientID: id, Text: id})
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return s, time.Since(t0)
	}
	t0 := time.Now()
	if _, d := send("first"); d > gap/2 {
		t.Errorf("the first send took %v: it found the committer idle and should not wait", d)
	}
	var wg sync.WaitGroup
	seqs := make([]int64, 5)
	for i := range seqs {
		wg.Go(func() { s, _ := send(fmt.Sprint("gathered-", i)); seqs[i] = s.Seq })
	}
	wg.Wait()
	if d := time.Since(t0); d < gap {
		t.Errorf("five sends right after a commit were stored %v after it began, before the %v gap", d, gap)
	}
	var txs int
	if err := f.svc.pool.QueryRow(ctx, `SELECT count(DISTINCT xmin::text) FROM msg_messages WHERE conversation_id = $1 AND seq = ANY($2)`,
		c.ID, seqs).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	if txs != 1 {
		t.Errorf("the five sends went in %d transactions, want 1", txs)
	}
	time.Sleep(gap + gap/10)
	if _, d := send("after-idle"); d > gap/2 {
		t.Errorf("a send %v after the last commit took %v, want no wait", gap+gap/10, d)
	}
}

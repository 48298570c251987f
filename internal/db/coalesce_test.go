package db

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCoalescerBatchesWhileBusy(t *testing.T) {
	// One query runs at a time and is held until 200 lookups wait: they are
	// then answered by far fewer queries than lookups, each key once per
	// query, and every lookup gets its own key's value (or none).
	var queries, keysAsked atomic.Int64
	release := make(chan struct{})
	c := &Coalescer[int, string]{Rounds: 1, MaxKeys: 64, Load: func(ctx context.Context, keys []int) (map[int]string, error) {
		if queries.Add(1) == 1 {
			<-release
		}
		keysAsked.Add(int64(len(keys)))
		seen := map[int]bool{}
		out := map[int]string{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %d asked twice in one query", k)
			}
			seen[k] = true
			if k%7 != 0 {
				out[k] = string(rune('a' + k%26))
			}
		}
		return out, nil
	}}
	var wg sync.WaitGroup
	for i := range 201 {
		wg.Go(func() {
			k := i % 150 // some keys asked twice
			v, ok, err := c.Get(context.Background(), k)
			switch {
			case err != nil:
				t.Errorf("key %d: %v", k, err)
			case k%7 == 0 && ok:
				t.Errorf("key %d has no value, got %q", k, v)
			case k%7 != 0 && (!ok || v != string(rune('a'+k%26))):
				t.Errorf("key %d: got %q %v", k, v, ok)
			}
		})
		if i == 0 {
			for queries.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	awaitQueued(c, 200)
	close(release)
	wg.Wait()
	if q := queries.Load(); q > 1+4 { // 150 distinct keys at 64 a query
		t.Errorf("%d queries for 201 lookups", q)
	}
	if k := keysAsked.Load(); k > 1+150 {
		t.Errorf("%d keys asked for 150 distinct ones", k)
	}
}

func TestCoalescerErrorsAndCancel(t *testing.T) {
	// A lookup whose context has ended is not asked; one whose context ends
	// while it waits behind a running query returns then; the query's error
	// reaches every lookup it answers, the caller that ran it too.
	boom := errors.New("boom")
	block := make(chan struct{})
	c := &Coalescer[int, int]{Rounds: 1, Load: func(ctx context.Context, keys []int) (map[int]int, error) {
		<-block
		return nil, boom
	}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := c.Get(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled lookup: %v", err)
	}
	leader := make(chan error, 1)
	go func() {
		_, _, err := c.Get(context.Background(), 2)
		leader <- err
	}()
	for {
		c.mu.Lock()
		running := c.running
		c.mu.Unlock()
		if running == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if _, _, err := c.Get(wctx, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a lookup whose context ended while it waited: %v", err)
	}
	close(block)
	if err := <-leader; !errors.Is(err, boom) {
		t.Errorf("the caller that ran the failed query: %v", err)
	}
	if _, ok, err := c.Get(context.Background(), 4); !errors.Is(err, boom) || ok {
		t.Errorf("failed query: %v %v", ok, err)
	}
}

func TestCoalescerAnswersOnlyWithLaterQueries(t *testing.T) {
	// A lookup asked while a query for the same key runs is not answered by
	// that query, which may have read before a change the caller made, but
	// by the next one.
	var mu sync.Mutex
	var calls [][]int
	version := atomic.Int64{}
	started := make(chan struct{})
	release := make(chan struct{})
	c := &Coalescer[int, int64]{Rounds: 1, Load: func(ctx context.Context, keys []int) (map[int]int64, error) {
		mu.Lock()
		calls = append(calls, append([]int(nil), keys...))
		n := len(calls)
		mu.Unlock()
		v := version.Load() // what the query reads
		if n == 1 {
			close(started)
			<-release
		}
		out := map[int]int64{}
		for _, k := range keys {
			out[k] = v
		}
		return out, nil
	}}
	first := make(chan int64)
	go func() {
		v, _, _ := c.Get(context.Background(), 1)
		first <- v
	}()
	<-started
	version.Store(1) // a change committed after the first query read
	second := make(chan int64)
	go func() {
		v, _, _ := c.Get(context.Background(), 1)
		second <- v
	}()
	awaitQueued(c, 1)
	close(release)
	if v := <-first; v != 0 {
		t.Errorf("first lookup: %d, want 0", v)
	}
	if v := <-second; v != 1 {
		t.Errorf("lookup asked after the change: %d, want 1 (it was answered by the query already running)", v)
	}
	if len(calls) != 2 {
		t.Errorf("%d queries, want 2", len(calls))
	}
}

// awaitQueued waits until n lookups wait for the next query.
func awaitQueued[K comparable, V any](c *Coalescer[K, V], n int) {
	for {
		c.mu.Lock()
		queued := len(c.queue)
		c.mu.Unlock()
		if queued == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalescerEveryLookupGetsItsAnswer(t *testing.T) {
	// Many callers at once over several rounds: a caller's lookup may be
	// taken by a query another caller runs; each still gets its own value,
	// never "none".
	c := &Coalescer[int, int]{Rounds: 4, MaxKeys: 3, Load: func(ctx context.Context, keys []int) (map[int]int, error) {
		runtime.Gosched()
		out := map[int]int{}
		for _, k := range keys {
			out[k] = k * 2
		}
		return out, nil
	}}
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for i := range 20000 {
		wg.Go(func() {
			v, ok, err := c.Get(context.Background(), i%97)
			if err != nil || !ok || v != (i%97)*2 {
				wrong.Add(1)
			}
		})
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d of 20000 lookups got no or a wrong answer", n)
	}
	// The last round gives up its place just after it answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		running, queued := c.running, len(c.queue)
		c.mu.Unlock()
		if running == 0 && queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the last answer: %d rounds running, %d queued", running, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCoalescerCallerWaitsWhenItsKeyMissesItsQuery(t *testing.T) {
	// The caller that runs a query waits for its own answer when the query
	// was full (MaxKeys) before its key: a later round gives it.
	c := &Coalescer[int, int]{Rounds: 1, MaxKeys: 1, Load: func(ctx context.Context, keys []int) (map[int]int, error) {
		return map[int]int{keys[0]: keys[0] * 2}, nil
	}}
	ahead := &lookup[int, int]{key: 9, done: make(chan struct{})}
	c.queue = append(c.queue, ahead) // asked before, not yet in a query
	v, ok, err := c.Get(context.Background(), 5)
	if err != nil || !ok || v != 10 {
		t.Errorf("the caller's own key: %d %v %v, want 10", v, ok, err)
	}
	<-ahead.done
	if !ahead.ok || ahead.val != 18 {
		t.Errorf("the key ahead: %d %v", ahead.val, ahead.ok)
	}
}

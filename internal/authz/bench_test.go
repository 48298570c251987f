package authz

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/casbin/casbin/v2/persist"
	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/testenv"
)

// Zhejiang's tree: province, cities, counties, townships, villages (NBS
// 2023) and about 85,000 grids: 112,036 units. 1.4M grants: 1.3M accounts
// with one role, 100k of them with a second role elsewhere.
var levelSizes = []int{1, 11, 90, 1387, 25547, 85000}

const (
	synthAccounts = 1_300_000
	synthGrants   = 1_400_000
)

type synth struct {
	tree     *memTree
	levels   [][]int64 // unit ids by level (0: province)
	children [][]int64 // unit id → its children
	grants   []Grant
	queries  []query
}

type query struct {
	actor  Actor
	action Action
	unit   int64
}

var synthetic = sync.OnceValue(func() *synth {
	r := rand.New(rand.NewPCG(1, 2))
	s := &synth{tree: &memTree{}}
	next := int64(1)
	for l, n := range levelSizes {
		ids := make([]int64, n)
		for j := range ids {
			ids[j] = next
			next++
			var parent int64
			if l > 0 {
				parent = s.levels[l-1][j*len(s.levels[l-1])/n]
			}
			s.tree.add(ids[j], parent)
		}
		s.levels = append(s.levels, ids)
	}
	s.children = make([][]int64, next)
	for id := int64(1); id < next; id++ {
		if anc := s.tree.anc[id]; len(anc) > 1 {
			s.children[anc[1]] = append(s.children[anc[1]], id)
		}
	}

	// Where people hold roles: mostly low in the tree.
	pickUnit := func() (int64, int) {
		x := r.Float64()
		l := 5
		switch {
		case x < 0.001:
			l = 0
		case x < 0.01:
			l = 1
		case x < 0.05:
			l = 2
		case x < 0.15:
			l = 3
		case x < 0.40:
			l = 4
		}
		return s.levels[l][r.IntN(len(s.levels[l]))], l
	}
	pickRole := func(level int) Role {
		x := r.Float64()
		switch {
		case level == 5:
			if x < 0.8 {
				return RoleGridWorker
			}
			return RoleStaff
		case level == 4 && x < 0.7, x < 0.6:
			return RoleStaff
		case x < 0.85:
			return RoleLeader
		case x < 0.95:
			return RoleAdmin
		}
		return RoleAuditor
	}
	s.grants = make([]Grant, 0, synthGrants)
	for acc := int64(1); acc <= synthAccounts; acc++ {
		u, l := pickUnit()
		s.grants = append(s.grants, Grant{acc, pickRole(l), u})
	}
	for acc := int64(1); len(s.grants) < synthGrants; acc++ {
		u, l := pickUnit()
		if g := (Grant{acc, pickRole(l), u}); g != s.grants[acc-1] {
			s.grants = append(s.grants, g)
		}
	}

	// Decisions: half at or below a unit where the account holds a role,
	// half anywhere.
	s.queries = make([]query, 1<<20)
	for i := range s.queries {
		acc := 1 + r.Int64N(synthAccounts)
		u := s.grants[acc-1].UnitID
		if r.IntN(2) == 0 {
			for d := r.IntN(4); d > 0 && len(s.children[u]) > 0; d-- {
				u = s.children[u][r.IntN(len(s.children[u]))]
			}
		} else {
			l := r.IntN(len(s.levels))
			u = s.levels[l][r.IntN(len(s.levels[l]))]
		}
		s.queries[i] = query{Actor{AccountID: acc}, allActions[r.IntN(len(allActions))], u}
	}
	return s
})

// memAuthorizer is an Authorizer over the default p rules and the given
// grants, built in memory without PostgreSQL: for decision benchmarks.
func memAuthorizer(tb testing.TB, tree Tree, grants []Grant) *Authorizer {
	tb.Helper()
	m, err := newModel()
	if err != nil {
		tb.Fatal(err)
	}
	for role, acts := range wantActions {
		for _, act := range acts {
			obj, verb, _ := splitAction(act)
			if err := persist.LoadPolicyArray([]string{"p", string(role), obj, verb}, m); err != nil {
				tb.Fatal(err)
			}
		}
	}
	g, err := buildGeneration(m, nil, len(grants))
	if err != nil {
		tb.Fatal(err)
	}
	g.idx.mu.Lock()
	for _, gr := range grants {
		id, err := g.idx.roleIDLocked(string(gr.Role))
		if err != nil {
			tb.Fatal(err)
		}
		g.idx.addLocked(gr.AccountID, id, gr.UnitID)
	}
	g.idx.mu.Unlock()
	a := &Authorizer{tree: tree, log: quietLog()}
	a.gen.Store(g)
	return a
}

var synthAuthorizer = sync.OnceValue(func() *Authorizer {
	s := synthetic()
	return memAuthorizer(&testing.B{}, s.tree, s.grants)
})

func BenchmarkAllowed_1400kGrants(b *testing.B) {
	s, a := synthetic(), synthAuthorizer()
	b.ReportAllocs()
	allowed, i := 0, 0
	for b.Loop() {
		q := &s.queries[i&(len(s.queries)-1)]
		if a.Allowed(q.actor, q.action, q.unit) {
			allowed++
		}
		i++
	}
	b.ReportMetric(float64(allowed)/float64(i), "allowed/op")
}

func BenchmarkAllowed_1400kGrants_Parallel(b *testing.B) {
	s, a := synthetic(), synthAuthorizer()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(s.queries))
		for pb.Next() {
			q := &s.queries[i&(len(s.queries)-1)]
			a.Allowed(q.actor, q.action, q.unit)
			i++
		}
	})
}

// copyGrants writes grants into the database's authz_grants with COPY, as
// the member importer does.
func copyGrants(tb testing.TB, a interface {
	CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error)
}, grants []Grant) time.Duration {
	tb.Helper()
	start := time.Now()
	n, err := a.CopyFrom(context.Background(), pgx.Identifier{"authz_grants"}, []string{"account_id", "role", "unit_id"},
		pgx.CopyFromSlice(len(grants), func(i int) ([]any, error) {
			return []any{grants[i].AccountID, string(grants[i].Role), grants[i].UnitID}, nil
		}))
	if err != nil || n != int64(len(grants)) {
		tb.Fatalf("COPY: %d rows, %v", n, err)
	}
	return time.Since(start)
}

// loadFigure measures New over the database: time, heap retained after a GC,
// and bytes allocated while loading.
type loadFigure struct {
	took              time.Duration
	retained, alloced uint64
}

func measureLoad(tb testing.TB, load func() *Authorizer) (loadFigure, *Authorizer) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	a := load()
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&m1)
	return loadFigure{took, m1.HeapAlloc - min(m0.HeapAlloc, m1.HeapAlloc), m1.TotalAlloc - m0.TotalAlloc}, a
}

func BenchmarkLoad_1400kGrants(b *testing.B) {
	s := synthetic()
	pool := testenv.DB(b)
	copyGrants(b, pool, s.grants)
	if _, err := pool.Exec(context.Background(), `VACUUM ANALYZE authz_grants`); err != nil {
		b.Fatal(err)
	}
	var f loadFigure
	for b.Loop() {
		var a *Authorizer
		f, a = measureLoad(b, func() *Authorizer {
			a, err := New(context.Background(), pool, nil, s.tree, quietLog())
			if err != nil {
				b.Fatal(err)
			}
			return a
		})
		if st := a.Stats(); st.Grants != synthGrants {
			b.Fatalf("loaded %d grants", st.Grants)
		}
		a.Close()
	}
	b.ReportMetric(float64(f.retained)/(1<<20), "MiB-retained")
	b.ReportMetric(float64(f.alloced)/(1<<20), "MiB-allocated")
}

// TestFigures prints the figures of docs/permissions.md: the latency
// distribution of Allowed over 1.4M grants, and the time and memory of
// loading them from PostgreSQL. Run with ZHANGBAN_BENCH=1.
func TestFigures(t *testing.T) {
	if os.Getenv("ZHANGBAN_BENCH") == "" {
		t.Skip("set ZHANGBAN_BENCH=1")
	}
	s := synthetic()
	t.Logf("tree: %d units; %d grants of %d accounts", len(s.children)-1, len(s.grants), synthAccounts)

	f, a := measureLoad(t, func() *Authorizer { return memAuthorizer(t, s.tree, s.grants) })
	st := a.Stats()
	t.Logf("in-memory index: %d grants, %d accounts, %.1f MiB retained (built in %s)", st.Grants, st.Accounts, float64(f.retained)/(1<<20), f.took.Round(time.Millisecond))

	// Latency of single decisions, timed one by one (the clock's own cost,
	// some tens of ns, is included).
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		const perWorker = 2_000_000
		lat := make([][]time.Duration, workers)
		for w := range lat {
			lat[w] = make([]time.Duration, perWorker)
		}
		allowed := make([]int, workers)
		runtime.GC() // nothing below allocates: no collection runs while timing
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := lat[w]
				for i := range l {
					q := &s.queries[(i*workers+w)&(len(s.queries)-1)]
					t0 := time.Now()
					ok := a.Allowed(q.actor, q.action, q.unit)
					l[i] = time.Since(t0)
					if ok {
						allowed[w]++
					}
				}
			}()
		}
		wg.Wait()
		all := slices.Concat(lat...)
		slices.Sort(all)
		pct := func(p float64) time.Duration { return all[int(p*float64(len(all)-1))] }
		n := 0
		for _, x := range allowed {
			n += x
		}
		t.Logf("Allowed, %d goroutine(s), %d decisions (%.0f%% allowed): p50 %s  p90 %s  p99 %s  p99.9 %s  p99.99 %s  max %s",
			workers, len(all), 100*float64(n)/float64(len(all)), pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(0.9999), all[len(all)-1])
	}

	// Loading from PostgreSQL.
	pool := testenv.DB(t)
	took := copyGrants(t, pool, s.grants)
	t.Logf("COPY of %d grants into authz_grants: %s", len(s.grants), took.Round(time.Millisecond))
	if _, err := pool.Exec(context.Background(), `VACUUM ANALYZE authz_grants`); err != nil {
		t.Fatal(err)
	}
	var figs []loadFigure
	for range 5 {
		f, a := measureLoad(t, func() *Authorizer {
			a, err := New(context.Background(), pool, nil, s.tree, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			return a
		})
		if st := a.Stats(); st.Grants != synthGrants {
			t.Fatalf("loaded %d grants", st.Grants)
		}
		a.Close()
		figs = append(figs, f)
		t.Logf("New with %d grants: %s, %.1f MiB retained, %.1f MiB allocated while loading", synthGrants, f.took.Round(time.Millisecond),
			float64(f.retained)/(1<<20), float64(f.alloced)/(1<<20))
	}
	slices.SortFunc(figs, func(x, y loadFigure) int { return int(x.took - y.took) })
	med := figs[len(figs)/2]
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("median New: %s, %.1f MiB retained; process heap in use now %.0f MiB, obtained from the OS %.0f MiB",
		med.took.Round(time.Millisecond), float64(med.retained)/(1<<20), float64(ms.HeapInuse)/(1<<20), float64(ms.HeapSys)/(1<<20))
	fmt.Fprintln(os.Stderr)
}

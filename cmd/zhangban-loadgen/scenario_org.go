package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The org scenario measures the address-book reads a phone makes: a unit's
// children, its ancestors (breadcrumbs), the first page of a county's subtree
// and the people search, as one acting user, so that the visibility rules of
// that user (a province admin sees a whole subtree, a county staff member
// only a branch) are part of what is measured.
//
// Each endpoint (and each kind of search query) is measured in its own
// closed-loop phase, one after the other, so that every figure is that
// endpoint's own latency and not a mix. Unit ids are discovered through the
// API from the units where the user holds roles (GET /v1/org/grants), going
// down with /children, so only units the user can see are asked for.

type orgUnit struct {
	ID    int64  `json:"id"`
	Level string `json:"level"`
	Name  string `json:"name"`
}

// getJSON sends a GET and decodes a 2xx answer into out (unless out is nil).
func (c *apiClient) getJSON(ctx context.Context, path, bearer string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := decodeAPIError(resp.StatusCode, data)
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return &badResponseError{Status: resp.StatusCode, Problem: err.Error()}
		}
	}
	return nil
}

// orgPhases are the measured phases, in order.
var orgPhaseNames = []string{"children", "ancestors", "subtree", "people-name", "people-pinyin", "people-initials", "people-mobile"}

// Query pools for the people search: surnames and common two-character
// prefixes, their pinyin, initials of common given names. Mobile suffixes
// are random 4-digit strings.
var (
	orgNameQueries     = []string{"张", "王", "李", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "林", "郑", "谢", "张伟", "王芳", "李娜", "陈静", "刘强"}
	orgPinyinQueries   = []string{"zhang", "wang", "li", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun", "ma", "zhu", "hu", "lin", "zheng", "xie", "zhangw", "wangf", "lina", "chenj"}
	orgInitialsQueries = []string{"zs", "zw", "wf", "ln", "cj", "lq", "yl", "hm", "zj", "wj", "xh", "sy", "mx", "zh", "ly", "cx", "wh", "lj"}
)

func runOrg(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		lf       loadFlags
		login    string
		password string
		phases   string
		limit    int
		explore  int
		seed     uint64
	)
	fs := flag.NewFlagSet("org", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf.register(fs)
	fs.StringVar(&login, "login", "", "login of the acting user (required)")
	fs.StringVar(&password, "password", "", "password of the acting user (required)")
	fs.StringVar(&phases, "phases", strings.Join(orgPhaseNames, ","), "comma-separated phases to run, in order")
	fs.IntVar(&limit, "limit", 500, "page size of the subtree and limit of the people search (search uses min(limit, 50))")
	fs.IntVar(&explore, "explore", 40, "units per level whose children are listed while discovering unit ids")
	fs.Uint64Var(&seed, "seed", 1, "random seed for the choice of units and queries")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: zhangban-loadgen org --login L --password P [flags]\n\n"+
			"Measures children, ancestors, subtree (first page) and people search,\n"+
			"one closed-loop phase each, as the given user. Flags:\n")
		fs.PrintDefaults()
	}
	// This scenario reads; a few clients are what a 2-core machine can serve
	// without measuring its own queueing. The shared default of 50 is for
	// sign-ins.
	clientsSet := false
	for _, a := range args {
		if strings.HasPrefix(strings.TrimLeft(a, "-"), "clients") {
			clientsSet = true
		}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !clientsSet {
		lf.clients = 4
	}
	if err := lf.check(); err != nil {
		return err
	}
	if login == "" || password == "" {
		return usageError{"--login and --password are required"}
	}
	selected := strings.Split(phases, ",")
	for _, p := range selected {
		ok := false
		for _, n := range orgPhaseNames {
			ok = ok || n == p
		}
		if !ok {
			return usageError{fmt.Sprintf("unknown phase %q (want %s)", p, strings.Join(orgPhaseNames, ", "))}
		}
	}

	api, err := newAPIClient(lf.target, lf.clients, lf.timeout)
	if err != nil {
		return err
	}
	defer api.close()
	tp, err := api.login(ctx, loginBody(login, password, "zhangban-loadgen-org"))
	if err != nil {
		return fmt.Errorf("signing in as %q: %w", login, err)
	}
	token := tp.AccessToken
	// Access tokens expire (15 min by default); refresh by signing in again
	// between phases, which is outside the measured windows.
	relogin := func() error {
		tp, err := api.login(ctx, loginBody(login, password, "zhangban-loadgen-org"))
		if err == nil {
			token = tp.AccessToken
		}
		return err
	}

	// Discover: the units of the user's grants, then down level by level.
	var grants struct {
		Grants []struct {
			UnitID int64 `json:"unit_id"`
		} `json:"grants"`
	}
	if err := api.getJSON(ctx, "/v1/org/grants", token, &grants); err != nil {
		return fmt.Errorf("listing own grants: %w", err)
	}
	if len(grants.Grants) == 0 {
		return fmt.Errorf("%s holds no role: nothing to start discovering units from", login)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var pool, counties, frontier []orgUnit
	for _, g := range grants.Grants {
		var a struct {
			Units []orgUnit `json:"units"`
		}
		if err := api.getJSON(ctx, fmt.Sprintf("/v1/org/units/%d/ancestors", g.UnitID), token, &a); err != nil {
			return fmt.Errorf("ancestors of granted unit %d: %w", g.UnitID, err)
		}
		if n := len(a.Units); n > 0 {
			frontier = append(frontier, a.Units[n-1])
		}
	}
	t0 := time.Now()
	for len(frontier) > 0 {
		pool = append(pool, frontier...)
		for _, u := range frontier {
			if u.Level == "county" {
				counties = append(counties, u)
			}
		}
		rng.Shuffle(len(frontier), func(i, j int) { frontier[i], frontier[j] = frontier[j], frontier[i] })
		var next []orgUnit
		for _, u := range frontier[:min(explore, len(frontier))] {
			if u.Level == "village" || u.Level == "grid" {
				continue
			}
			var c struct {
				Units []orgUnit `json:"units"`
			}
			if err := api.getJSON(ctx, fmt.Sprintf("/v1/org/units/%d/children", u.ID), token, &c); err != nil {
				return fmt.Errorf("children of %d: %w", u.ID, err)
			}
			next = append(next, c.Units...)
		}
		frontier = next
	}
	if len(counties) == 0 {
		return fmt.Errorf("no county visible to %s for the subtree phase", login)
	}
	var inner []orgUnit // units with children, for the children phase
	for _, u := range pool {
		if u.Level != "village" && u.Level != "grid" {
			inner = append(inner, u)
		}
	}
	fmt.Fprintf(stderr, "org: %s sees %d sampled units (%d with children, %d counties), discovered in %s\n",
		login, len(pool), len(inner), len(counties), time.Since(t0).Round(time.Millisecond))

	searchLimit := min(limit, 50)
	pick := func(r *rand.Rand, us []orgUnit) int64 { return us[r.IntN(len(us))].ID }
	pathFor := func(phase string, r *rand.Rand) string {
		switch phase {
		case "children":
			return fmt.Sprintf("/v1/org/units/%d/children", pick(r, inner))
		case "ancestors":
			return fmt.Sprintf("/v1/org/units/%d/ancestors", pick(r, pool))
		case "subtree":
			return fmt.Sprintf("/v1/org/units/%d/subtree?limit=%d", pick(r, counties), limit)
		case "people-name":
			return "/v1/org/people?limit=" + fmt.Sprint(searchLimit) + "&q=" + url.QueryEscape(orgNameQueries[r.IntN(len(orgNameQueries))])
		case "people-pinyin":
			return "/v1/org/people?limit=" + fmt.Sprint(searchLimit) + "&q=" + orgPinyinQueries[r.IntN(len(orgPinyinQueries))]
		case "people-initials":
			return "/v1/org/people?limit=" + fmt.Sprint(searchLimit) + "&q=" + orgInitialsQueries[r.IntN(len(orgInitialsQueries))]
		default: // people-mobile
			return fmt.Sprintf("/v1/org/people?limit=%d&q=%04d", searchLimit, r.IntN(10000))
		}
	}

	type phaseResult struct {
		Phase string `json:"phase"`
		summary
	}
	var results []phaseResult
	failed := false
	for pi, phase := range selected {
		if pi > 0 {
			if err := relogin(); err != nil {
				return fmt.Errorf("signing in again: %w", err)
			}
		}
		bearer := token
		ops := make([]op, lf.clients)
		for i := range ops {
			r := rand.New(rand.NewPCG(seed+uint64(pi)*1000+uint64(i), 7))
			ops[i] = func(ctx context.Context) error {
				return api.getJSON(ctx, pathFor(phase, r), bearer, nil)
			}
		}
		fmt.Fprintf(stderr, "org %s: %d clients, %s warm-up then %s measured\n", phase, lf.clients, lf.warmup, lf.duration)
		m := closedLoop{warmup: lf.warmup, duration: lf.duration, ops: ops}.run(ctx)
		s := summarize(m)
		s.Scenario, s.Label, s.Target, s.Clients, s.WarmupSec = "org", lf.label, lf.target, lf.clients, lf.warmup.Seconds()
		results = append(results, phaseResult{phase, s})
		failed = failed || s.failed()
		if m.stopCause != nil {
			return fmt.Errorf("stopped early: %w", m.stopCause)
		}
	}

	fmt.Fprintf(stdout, "org as %s, %d clients, %s per phase against %s\n", login, lf.clients, lf.duration, lf.target)
	fmt.Fprintf(stdout, "%-16s %8s %8s %8s %8s %8s %8s %7s\n", "phase", "count", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
	for _, r := range results {
		fmt.Fprintf(stdout, "%-16s %8d %8.1f %8.3f %8.3f %8.3f %8.3f %7d\n", r.Phase, r.Latency.Samples, r.Throughput,
			r.Latency.P50, r.Latency.P95, r.Latency.P99, r.Latency.Max, r.Errors+r.WarmupErrorCount)
		for _, e := range append(r.ErrorsByKind, r.WarmupErrors...) {
			fmt.Fprintf(stdout, "    %s: %d\n", e.Kind, e.Count)
		}
	}
	if lf.json {
		for _, r := range results {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(b))
		}
	}
	if failed {
		return fmt.Errorf("some requests failed")
	}
	return nil
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The WebSocket scenarios need many accounts that can see each other, and
// groups and direct conversations between them. Making 100,000 accounts
// through the API takes most of an hour (30-50 a second: create, place,
// sign in), so everything made is kept in a state file (--state) and reused
// by later runs against the same server: accounts wslg-1…N, one province
// unit holding them all (visibility is by unit), groups by layout
// ("10x1900": ten groups of 1,900 consecutive accounts, the first the
// owner) and direct conversations by pair count. The accounts can instead
// come from `zhangban accounts seed` on the server side, which writes them
// in bulk in seconds (ws-setup --unit-only, then seed, then ws-setup
// --accounts FILE; scripts/bench-ws.sh does this).

// wsAccountPrefix names the accounts the WebSocket scenarios create.
const wsAccountPrefix = "wslg-"

// wsAccount is one account of the state file; a zero field is a step not
// done yet.
type wsAccount struct {
	ID     int64  `json:"id"`
	Member bool   `json:"member,omitempty"` // placed in the unit
	Token  string `json:"token,omitempty"`  // access token (the server's ZHANGBAN_ACCESS_TTL must outlive the runs)
}

// wsState is the state file: what setup made on one server.
type wsState struct {
	API      string             `json:"api"`
	Unit     int64              `json:"unit"`
	Accounts []wsAccount        `json:"accounts"` // index i is wslg-(i+1)
	Groups   map[string][]int64 `json:"groups"`   // layout "GxS" → conversation ids
	Directs  map[string][]int64 `json:"directs"`  // "P" pairs → conversation of accounts 2k and 2k+1

	path string     // where it is saved; "" for nowhere
	mu   sync.Mutex // guards Accounts' elements during setup, and saving
}

// loadWSState reads the state file, or returns an empty state for api when
// there is none. A state made against another server is refused.
func loadWSState(path, api string) (*wsState, error) {
	st := &wsState{API: api, path: path}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, err
		default:
			if err := json.Unmarshal(data, st); err != nil {
				return nil, fmt.Errorf("state file %s: %w", path, err)
			}
			if st.API != api {
				return nil, fmt.Errorf("state file %s was made against %s, not %s: use another --state", path, st.API, api)
			}
		}
	}
	if st.Groups == nil {
		st.Groups = map[string][]int64{}
	}
	if st.Directs == nil {
		st.Directs = map[string][]int64{}
	}
	return st, nil
}

// save writes the state atomically (a temporary file renamed over it).
func (st *wsState) save() error {
	if st.path == "" {
		return nil
	}
	st.mu.Lock()
	data, err := json.Marshal(st)
	st.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := st.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, st.path)
}

// wsSetup makes what a scenario needs, with a few requests at a time.
type wsSetup struct {
	api        *apiClient
	adminToken string
	password   string
	workers    int
	progress   io.Writer
}

// unit makes sure the state has the province unit the accounts sit in.
func (s *wsSetup) unit(ctx context.Context, st *wsState) error {
	if st.Unit != 0 {
		return nil
	}
	var u struct {
		ID int64 `json:"id"`
	}
	body, _ := json.Marshal(map[string]any{"name": "zhangban-loadgen " + strconv.FormatInt(time.Now().Unix(), 10)})
	if _, err := s.api.postJSON(ctx, "/v1/org/units", s.adminToken, body, &u); err != nil {
		return fmt.Errorf("creating the province unit for the accounts: %w", err)
	}
	st.Unit = u.ID
	return st.save()
}

// accounts makes sure accounts 0…n-1 exist, sit in the unit and have tokens.
func (s *wsSetup) accounts(ctx context.Context, st *wsState, n int) error {
	if err := s.unit(ctx, st); err != nil {
		return err
	}
	for len(st.Accounts) < n {
		st.Accounts = append(st.Accounts, wsAccount{})
	}
	var todo []int
	for i := range n {
		a := st.Accounts[i]
		if a.ID == 0 || !a.Member || a.Token == "" {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	fmt.Fprintf(s.progress, "setup: %d of %d accounts to create, place or sign in\n", len(todo), n)
	return s.parallel(ctx, st, "accounts", len(todo), func(ctx context.Context, k int) error {
		return s.account(ctx, st, todo[k])
	})
}

func (s *wsSetup) account(ctx context.Context, st *wsState, i int) error {
	st.mu.Lock()
	a := st.Accounts[i]
	st.mu.Unlock()
	login := wsAccountPrefix + strconv.Itoa(i+1)
	if a.ID == 0 {
		var acc struct {
			ID int64 `json:"id"`
		}
		body, _ := json.Marshal(map[string]string{"login": login, "display_name": "WS load " + strconv.Itoa(i+1), "password": s.password})
		_, err := s.api.postJSON(ctx, "/v1/accounts", s.adminToken, body, &acc)
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusConflict:
			return fmt.Errorf("account %s exists but is not in the state file: use the state file it was made with, or a fresh server", login)
		case err != nil:
			return fmt.Errorf("creating %s: %w", login, err)
		}
		a.ID = acc.ID
	}
	if !a.Member {
		body, _ := json.Marshal(map[string]any{"account_id": a.ID, "title": "load"})
		_, err := s.api.postJSON(ctx, fmt.Sprintf("/v1/org/units/%d/members", st.Unit), s.adminToken, body, nil)
		if err != nil {
			return fmt.Errorf("placing %s in unit %d: %w", login, st.Unit, err)
		}
		a.Member = true
	}
	if a.Token == "" {
		tp, err := s.api.login(ctx, loginBody(login, s.password, "wslg-device"))
		if err != nil {
			return fmt.Errorf("signing in as %s: %w", login, err)
		}
		a.Token = tp.AccessToken
	}
	st.mu.Lock()
	st.Accounts[i] = a
	st.mu.Unlock()
	return nil
}

// seededAccount is one line of the file `zhangban accounts seed --out`
// writes; the fields the load generator uses.
type seededAccount struct {
	Login string `json:"login"`
	ID    int64  `json:"id"`
	Unit  int64  `json:"unit"`
	Token string `json:"token"`
}

// loadSeeded takes the accounts wslg-1…wslg-N from a file written by
// `zhangban accounts seed --prefix wslg-`, which makes, places and signs in
// 100,000 accounts in seconds where the API takes most of an hour. They
// replace the tokens of the state's accounts; an account the state knows
// under another id, or a unit other than the state's, means the state was
// made against another database, and is refused. It returns N.
func (st *wsState) loadSeeded(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var seeded []seededAccount
	dec := json.NewDecoder(bufio.NewReaderSize(f, 256<<10))
	for {
		var a seededAccount
		if err := dec.Decode(&a); err == io.EOF {
			break
		} else if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		seeded = append(seeded, a)
	}
	if len(seeded) == 0 {
		return 0, fmt.Errorf("%s has no accounts", path)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	unit := seeded[0].Unit
	if st.Unit != 0 && st.Unit != unit {
		return 0, fmt.Errorf("%s places its accounts in unit %d, but the state's are in unit %d: seed with --unit %d, or use a fresh --state", path, unit, st.Unit, st.Unit)
	}
	accounts := slices.Clone(st.Accounts)
	for len(accounts) < len(seeded) {
		accounts = append(accounts, wsAccount{})
	}
	seen := make([]bool, len(seeded))
	for _, a := range seeded {
		n, err := strconv.Atoi(strings.TrimPrefix(a.Login, wsAccountPrefix))
		switch {
		case err != nil || !strings.HasPrefix(a.Login, wsAccountPrefix) || n < 1 || n > len(seeded) || seen[n-1]:
			return 0, fmt.Errorf("%s: account %q: want %s1 … %s%d, each once (zhangban accounts seed --prefix %s)", path, a.Login, wsAccountPrefix, wsAccountPrefix, len(seeded), wsAccountPrefix)
		case a.Unit != unit || a.ID <= 0 || a.Token == "":
			return 0, fmt.Errorf("%s: account %s lacks its id or token, or is in another unit than the others", path, a.Login)
		}
		seen[n-1] = true
		if old := accounts[n-1].ID; old != 0 && old != a.ID {
			return 0, fmt.Errorf("the state has %s as account %d, %s as %d: the state was made against another database; use a fresh --state", a.Login, old, path, a.ID)
		}
		accounts[n-1] = wsAccount{ID: a.ID, Member: true, Token: a.Token}
	}
	st.Unit, st.Accounts = unit, accounts
	return len(seeded), nil
}

// groups makes sure the layout of g groups of size consecutive accounts
// exists and returns its conversation ids.
func (s *wsSetup) groups(ctx context.Context, st *wsState, g, size int) ([]int64, error) {
	key := fmt.Sprintf("%dx%d", g, size)
	if ids := st.Groups[key]; len(ids) == g {
		return ids, nil
	}
	ids := make([]int64, g)
	err := s.parallel(ctx, st, "groups "+key, g, func(ctx context.Context, k int) error {
		members := make([]int64, 0, size-1)
		for i := k*size + 1; i < (k+1)*size; i++ {
			members = append(members, st.Accounts[i].ID)
		}
		body, _ := json.Marshal(map[string]any{"title": fmt.Sprintf("load %s #%d", key, k+1), "members": members})
		var c struct {
			ID int64 `json:"id"`
		}
		if _, err := s.api.postJSON(ctx, "/v1/conversations", st.Accounts[k*size].Token, body, &c); err != nil {
			return fmt.Errorf("creating group %d of %s: %w", k+1, key, err)
		}
		ids[k] = c.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	st.Groups[key] = ids
	st.mu.Unlock()
	return ids, st.save()
}

// directs makes sure accounts 2k and 2k+1 have a direct conversation for
// k < pairs and returns their ids.
func (s *wsSetup) directs(ctx context.Context, st *wsState, pairs int) ([]int64, error) {
	key := strconv.Itoa(pairs)
	if ids := st.Directs[key]; len(ids) == pairs {
		return ids, nil
	}
	ids := make([]int64, pairs)
	err := s.parallel(ctx, st, "direct pairs", pairs, func(ctx context.Context, k int) error {
		body, _ := json.Marshal(map[string]int64{"account": st.Accounts[2*k+1].ID})
		var c struct {
			ID int64 `json:"id"`
		}
		if _, err := s.api.postJSON(ctx, "/v1/conversations/direct", st.Accounts[2*k].Token, body, &c); err != nil {
			return fmt.Errorf("direct conversation of pair %d: %w", k, err)
		}
		ids[k] = c.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	st.mu.Lock()
	st.Directs[key] = ids
	st.mu.Unlock()
	return ids, st.save()
}

// parallel runs fn(0…n-1) on s.workers goroutines, saving the state and
// printing progress every second; it stops at the first error.
func (s *wsSetup) parallel(ctx context.Context, st *wsState, what string, n int, fn func(ctx context.Context, k int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range min(s.workers, n) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, k); err != nil {
					cancel(err)
					return
				}
				done.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	t0 := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-finished:
			err := st.save()
			if c := context.Cause(ctx); c != nil {
				return c
			}
			fmt.Fprintf(s.progress, "setup: %s: %d done in %.1fs\n", what, n, time.Since(t0).Seconds())
			return err
		case <-tick.C:
			d := done.Load()
			fmt.Fprintf(s.progress, "setup: %s: %d/%d (%.0f/s)\n", what, d, n, float64(d)/time.Since(t0).Seconds())
			if err := st.save(); err != nil {
				cancel(err)
			}
		}
	}
}

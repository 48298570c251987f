package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// The login scenario measures what password sign-in costs the server: the
// argon2id check dominates, so it is the figure that decides the hash
// parameters.
//
// Only successful sign-ins are sent. Failed ones are throttled per login
// (after 5) and per client address (after 30 in 15 minutes); since all
// simulated clients share one address, a run with wrong passwords would lock
// this machine out. Hence the pre-flight check of reused accounts and the
// abort on the first invalid_credentials or too_many_requests answer.

// loginAccountPrefix names the accounts the scenario creates and reuses.
const loginAccountPrefix = "loadgen-"

func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		lf       loadFlags
		admin    string
		accounts int
		password string
	)
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf.register(fs)
	fs.StringVar(&admin, "admin", "", "login:password of an administrator, to create the accounts (required)")
	fs.IntVar(&accounts, "accounts", 0, "accounts loadgen-1…N to create or reuse; 0 means one per client (with fewer, clients share accounts but keep their own device)")
	fs.StringVar(&password, "password", "loadgen-password", "password of the loadgen-N accounts (8-256 bytes)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: zhangban-loadgen login --admin login:password [flags]\n\n"+
			"Each client signs in again as soon as its previous sign-in is answered,\n"+
			"with its own account and device. Flags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := lf.check(); err != nil {
		return err
	}
	adminLogin, adminPassword, ok := strings.Cut(admin, ":")
	if !ok || adminLogin == "" || adminPassword == "" {
		return usageError{"--admin login:password is required"}
	}
	if accounts == 0 {
		accounts = lf.clients
	}
	if accounts < 1 {
		return usageError{"--accounts must be at least 1"}
	}
	if len(password) < 8 || len(password) > 256 {
		return usageError{"--password must be 8-256 bytes, as the server requires"}
	}

	api, err := newAPIClient(lf.target, lf.clients, lf.timeout)
	if err != nil {
		return err
	}
	defer api.close()

	adminTokens, err := api.login(ctx, loginBody(adminLogin, adminPassword, "zhangban-loadgen-admin"))
	if err != nil {
		return fmt.Errorf("signing in as %q (--admin): %w", adminLogin, err)
	}
	created, reused, err := ensureLoginAccounts(ctx, api, adminTokens.AccessToken, accounts, password)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "accounts: %d created, %d reused (%s1…%s%d)\n", len(created), len(reused), loginAccountPrefix, loginAccountPrefix, accounts)
	if err := checkReusedAccounts(ctx, api, reused, password); err != nil {
		return err
	}

	ops := make([]op, lf.clients)
	for i := range ops {
		body := loginBody(accountName((i%accounts)+1), password, fmt.Sprintf("loadgen-device-%d", i+1))
		ops[i] = func(ctx context.Context) error {
			_, err := api.login(ctx, body)
			var ae *apiError
			if errors.As(err, &ae) && (ae.Code == "invalid_credentials" || ae.Status == http.StatusTooManyRequests) {
				return &abortError{err}
			}
			return err
		}
	}
	fmt.Fprintf(stderr, "login: %d clients against %s, %s warm-up then %s measured\n", lf.clients, lf.target, lf.warmup, lf.duration)
	m := closedLoop{warmup: lf.warmup, duration: lf.duration, ops: ops, progress: stderr}.run(ctx)

	s := summarize(m)
	s.Scenario, s.Label, s.Target, s.Clients, s.Accounts, s.WarmupSec = "login", lf.label, lf.target, lf.clients, accounts, lf.warmup.Seconds()
	s.print(stdout)
	if lf.json {
		if err := s.printJSON(stdout); err != nil {
			return err
		}
	}
	switch {
	case m.stopCause != nil:
		return fmt.Errorf("stopped early: %w", m.stopCause)
	case s.failed():
		return fmt.Errorf("%d of %d measured requests failed, and %d of %d in the warm-up", s.Errors, s.Requests, s.WarmupErrorCount, s.WarmupRequests)
	}
	return nil
}

func accountName(n int) string { return fmt.Sprintf("%s%d", loginAccountPrefix, n) }

// ensureLoginAccounts creates loadgen-1…n, reusing those that exist. A few
// requests run at once because each costs the server a password hash; more
// would only queue behind its two cores.
func ensureLoginAccounts(ctx context.Context, api *apiClient, adminToken string, n int, password string) (created, reused []string, err error) {
	const workers = 4
	var (
		next     atomic.Int64 // the last account number handed out
		mu       sync.Mutex   // guards created, reused, firstErrr
		firstErr error
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n || ctx.Err() != nil {
					return
				}
				name := accountName(i)
				ok, err := api.createAccount(ctx, adminToken, name, fmt.Sprintf("Load generator %d", i), password)
				mu.Lock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = fmt.Errorf("creating account %s: %w", name, err)
					}
					cancel()
				case ok:
					created = append(created, name)
				default:
					reused = append(reused, name)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return created, reused, firstErr
}

// checkReusedAccounts signs in once to each account that already existed, one
// at a time, and stops at the first refusal: an account left over with
// another password must cost one failed attempt, not one per client.
func checkReusedAccounts(ctx context.Context, api *apiClient, names []string, password string) error {
	for _, name := range names {
		if _, err := api.login(ctx, loginBody(name, password, "zhangban-loadgen-check")); err != nil {
			return fmt.Errorf("account %s already exists but signing in to it with --password failed: %w "+
				"(use the password it was created with, or a fresh server)", name, err)
		}
	}
	return nil
}

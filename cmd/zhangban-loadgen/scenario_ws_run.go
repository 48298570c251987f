package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zhangban/zhangban/gateway/client"
)

// connectTimeout bounds opening and syncing every connection of a shard.
const connectTimeout = 5 * time.Minute

// planSpread sends account i to target i mod n, the others following as
// fall-backs in turn.
func (r *wsRun) planSpread(i int) []string {
	n := len(r.targets)
	out := make([]string, n)
	for k := range n {
		out[k] = r.targets[(i+k)%n]
	}
	return out
}

// runWSSetup only makes accounts, groups and pairs, for shards to share.
func runWSSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var groups, size, pairs int
	var accounts string
	var unitOnly bool
	r, err := parseWSFlags("ws-setup", args, stderr, func(fs *flag.FlagSet) {
		fs.IntVar(&groups, "groups", 0, "groups to make (with --group-size)")
		fs.IntVar(&size, "group-size", 0, "members per group, owner included (at most 2000)")
		fs.IntVar(&pairs, "pairs", 0, "direct conversations between accounts 2k and 2k+1 to make")
		fs.StringVar(&accounts, "accounts", "", "take the accounts from this `file`, written by \"zhangban accounts seed --prefix wslg- --unit <the state's unit>\", instead of making them through the API")
		fs.BoolVar(&unitOnly, "unit-only", false, "only make the unit the accounts go in (needs --admin), print its id and stop: for zhangban accounts seed --unit")
	}, "Makes --conns accounts in one unit, and the groups and pairs asked for, into --state.\n"+
		"Accounts made by the API take long (30-50 a second); zhangban accounts seed makes them in seconds:\n"+
		"  unit=$(zhangban-loadgen ws-setup --unit-only --admin … --state S)\n"+
		"  zhangban accounts seed --prefix wslg- --count N --unit $unit --password … --device wslg-device --out F\n"+
		"  zhangban-loadgen ws-setup --accounts F --conns N --groups … --state S")
	if err != nil {
		return err
	}
	if unitOnly {
		r.setup = &wsSetup{api: r.api, workers: r.f.workers, progress: r.stderr}
		if err := r.adminSetup(ctx, func() error { return r.setup.unit(ctx, r.st) }); err != nil {
			return err
		}
		_, err := fmt.Fprintln(stdout, r.st.Unit)
		return err
	}
	need := max(r.f.conns, groups*size, 2*pairs)
	if accounts != "" {
		n, err := r.st.loadSeeded(accounts)
		if err != nil {
			return err
		}
		if n < need {
			return fmt.Errorf("%s has %d accounts, this setup needs %d: seed with --count %d", accounts, n, need, need)
		}
		if err := r.st.save(); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "setup: %d accounts with tokens from %s, unit %d\n", n, accounts, r.st.Unit)
	}
	if err := r.prepare(ctx, need); err != nil {
		return err
	}
	if groups > 0 {
		if _, err := r.groups(ctx, groups, size); err != nil {
			return err
		}
	}
	if pairs > 0 {
		if _, err := r.directs(ctx, pairs); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "state %s: %d accounts, unit %d, groups %v, pairs %d\n", r.f.state, need, r.st.Unit, slices.Sorted(mapKeys(r.st.Groups)), pairs)
	return nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// runWSIdle measures what idle connections cost the server.
func runWSIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	r, err := parseWSFlags("ws-idle", args, stderr, nil,
		"Opens --conns connections (spread over --targets), waits until all synced and --settle,\n"+
			"then reports each server's RSS growth per connection, again after --duration idle.")
	if err != nil {
		return err
	}
	if err := r.prepare(ctx, r.f.conns); err != nil {
		return err
	}
	fl, s := r.start(ctx, "ws-idle")
	defer fl.close()
	t0 := time.Now()
	if err := fl.connect(ctx, r.planSpread, false, connectTimeout); err != nil {
		s.StoppedEarly = err.Error()
		return r.finish(s, stdout)
	}
	s.ConnectSec = time.Since(t0).Seconds()
	stop := fl.progress("idle", time.Now(), nil)
	sleepCtx(ctx, r.f.settle+r.f.duration)
	stop()
	s.Servers = r.scrape(ctx)
	s.RSSPerConn = rssPerConn(s.ServersBefore, s.Servers)
	s.Disconnects = fl.disc.Load()
	if n := fl.connected.Load(); n != int64(len(fl.clients)) {
		s.StoppedEarly = fmt.Sprintf("%d of %d connections were down at the end", int64(len(fl.clients))-n, len(fl.clients))
	}
	return r.finish(s, stdout)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// sender stores messages at a target rate with a bound on those in flight.
type sender struct {
	rate     float64 // messages per second; 0 for as fast as inflight allows
	inflight int
	send     func(ctx context.Context, n int64, at time.Time) (time.Duration, error) // sends message n; returns send→reply

	sent, failed, behind atomic.Int64
	mu                   sync.Mutex
	replyLats            []time.Duration
}

// run sends until ctx ends or until is reached; it returns after every
// send in flight has finished. count > 0 stops after that many.
func (sd *sender) run(ctx context.Context, until time.Time, count int64) (window time.Duration) {
	slots := make(chan struct{}, sd.inflight)
	var wg sync.WaitGroup
	t0 := time.Now()
	for n := int64(0); count == 0 || n < count; n++ {
		if sd.rate > 0 {
			due := t0.Add(time.Duration(float64(n) / sd.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				sleepCtx(ctx, d)
			}
		}
		now := time.Now()
		if ctx.Err() != nil || !now.Before(until) {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			sd.behind.Add(1)
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			lat, err := sd.send(ctx, n, time.Now())
			if err != nil {
				sd.failed.Add(1)
				return
			}
			sd.sent.Add(1)
			sd.mu.Lock()
			sd.replyLats = append(sd.replyLats, lat)
			sd.mu.Unlock()
		})
	}
	window = time.Since(t0)
	wg.Wait()
	return window
}

// httpGroupSend returns a send function that posts message n into
// conversation convOf(n) as its owner, over HTTP, retrying transport
// failures with the same client_id (sends are idempotent).
func (r *wsRun) httpGroupSend(api *apiClient, convOf func(n int64) (conv int64, token string), record func(conv, seq int64)) func(ctx context.Context, n int64, at time.Time) (time.Duration, error) {
	return func(ctx context.Context, n int64, at time.Time) (time.Duration, error) {
		conv, token := convOf(n)
		body, _ := json.Marshal(map[string]string{"client_id": "lg-" + r.runTag + "-" + strconv.FormatInt(n, 10), "text": tagText(r.runTag, at, n)})
		var out struct {
			Seq int64 `json:"seq"`
		}
		var err error
		for attempt := range 5 {
			_, err = api.postJSON(ctx, "/v1/conversations/"+strconv.FormatInt(conv, 10)+"/messages", token, body, &out)
			if err == nil || answered(err) || ctx.Err() != nil {
				break
			}
			sleepCtx(ctx, time.Duration(attempt+1)*200*time.Millisecond)
		}
		if err != nil {
			fmt.Fprintf(r.stderr, "send %d into %d: %v\n", n, conv, err)
			return 0, err
		}
		record(conv, out.Seq)
		return time.Since(at), nil
	}
}

// seqLog collects the sequences stored per conversation.
type seqLog struct {
	mu   sync.Mutex
	seqs map[int64][]int64
}

func (l *seqLog) add(conv, seq int64) {
	l.mu.Lock()
	if l.seqs == nil {
		l.seqs = map[int64][]int64{}
	}
	l.seqs[conv] = append(l.seqs[conv], seq)
	l.mu.Unlock()
}

// groupMembers maps each group to its members among the fleet's clients.
func groupMembers(fl *fleet, convs []int64, size int) map[int64][]*wsClient {
	m := map[int64][]*wsClient{}
	for _, cl := range fl.clients {
		g := cl.idx / size
		if g < len(convs) {
			m[convs[g]] = append(m[convs[g]], cl)
		}
	}
	return m
}

// runWSBroadcast sends into large groups and checks every delivery.
func runWSBroadcast(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		groups, size, inflight, burst int
		rate                          float64
		goFile, readyFile             string
		doneFile, endFile             string
		drain                         time.Duration
		sendProc, sendOnly            bool
	)
	r, err := parseWSFlags("ws-broadcast", args, stderr, func(fs *flag.FlagSet) {
		fs.IntVar(&groups, "groups", 10, "groups; --conns must be groups × group-size")
		fs.IntVar(&size, "group-size", 1900, "members per group, owner included (at most 2000)")
		fs.Float64Var(&rate, "rate", 100, "messages per second over all groups, round robin (0: as fast as --inflight allows)")
		fs.IntVar(&inflight, "inflight", 64, "sends outstanding at most")
		fs.IntVar(&burst, "burst", 0, "instead of --rate for --duration: send this many messages into every group at once, then wait for delivery")
		fs.StringVar(&goFile, "go-file", "", "with --burst: wait until this file exists before sending (to start shards together)")
		fs.StringVar(&readyFile, "ready-file", "", "create this file once every connection of the shard is synced")
		fs.StringVar(&doneFile, "done-file", "", "create this file once the shard's deliveries are in (or --drain ran out)")
		fs.StringVar(&endFile, "end-file", "", "then wait until this file exists (at most --drain) before the report and before closing the\n"+
			"connections, so that a shard that is done neither closes its clients nor sorts its latencies while\n"+
			"the others still receive")
		fs.DurationVar(&drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
		fs.BoolVar(&sendProc, "send-process", false, "send from a process of its own (this program again, with --send-only), so that the sends do not wait\n"+
			"behind the clients' work for this process's CPU; not with --burst or --shard")
		fs.BoolVar(&sendOnly, "send-only", false, "connect no clients: send at --rate for --duration and print each stored message as a line (for --send-process)")
	}, "Connects groups × group-size members; the owners (first member of each group) send tagged\n"+
		"messages over HTTP (--api), and every member's deliveries are checked. With --shard, each\n"+
		"process holds a slice of the members and sends for the groups whose owner it holds;\n"+
		"combine the shards' --json output with ws-merge.")
	if err != nil {
		return err
	}
	if groups*size != r.f.conns || size < 2 || size > 2000 {
		return usageError{"--conns must equal --groups × --group-size, and 2 ≤ group-size ≤ 2000"}
	}
	if sendProc && (burst > 0 || r.shardN != 1 || sendOnly) {
		return usageError{"--send-process is for one process sending at --rate: not with --burst, --shard or --send-only"}
	}
	if err := r.prepare(ctx, r.f.conns); err != nil {
		return err
	}
	convs, err := r.groups(ctx, groups, size)
	if err != nil {
		return err
	}
	// The groups this shard sends into: those whose owner it holds.
	var mine []int
	for g := range groups {
		if o := g * size; o >= r.lo && o < r.hi {
			mine = append(mine, g)
		}
	}
	convOf := func(n int64) (int64, string) {
		g := mine[int(n)%len(mine)]
		return convs[g], r.st.Accounts[g*size].Token
	}
	if sendOnly {
		return r.sendOnly(ctx, convOf, rate, inflight, stdout)
	}
	fl, s := r.start(ctx, "ws-broadcast")
	defer fl.close()
	t0 := time.Now()
	if err := fl.connect(ctx, r.planSpread, true, connectTimeout); err != nil {
		s.StoppedEarly = err.Error()
		return r.finish(s, stdout)
	}
	s.ConnectSec = time.Since(t0).Seconds()
	if burst > 0 {
		// Collect what connecting left behind (upgrade and sync replies),
		// so that the burst allocates from memory already mapped: the
		// heap grows (GOGC=300 in the fan-out) otherwise, into fresh
		// pages, and in the fan-out's burst a tenth of the load
		// generator's time went to those page faults (docs/benchmarks.md,
		// session 15).
		runtime.GC()
	}
	if readyFile != "" {
		if err := os.WriteFile(readyFile, nil, 0o644); err != nil {
			return err
		}
	}
	sleepCtx(ctx, r.f.settle)

	var log seqLog
	var sd *sender
	if sendProc {
		sd = &sender{rate: rate, inflight: inflight}
	} else {
		var closeAPI func()
		if sd, closeAPI, err = r.groupSender(rate, inflight, convOf, log.add); err != nil {
			return err
		}
		defer closeAPI()
	}
	var count int64
	until := time.Now().Add(r.f.duration)
	if burst > 0 {
		count, until, sd.rate, sd.inflight = int64(burst*len(mine)), time.Now().Add(time.Hour), 0, max(inflight, burst*len(mine))
		if goFile != "" {
			fmt.Fprintf(stderr, "waiting for %s\n", goFile)
			for ctx.Err() == nil {
				if _, err := os.Stat(goFile); err == nil {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
	members := groupMembers(fl, convs, size)
	exp := expectation{members: members, seqs: map[int64][]int64{}}
	var want int64
	if r.shardN == 1 {
		exp.seqs = nil // filled after sending
	} else {
		exp.perConv = burst
		for _, rs := range members {
			want += int64(burst * len(rs))
		}
	}
	r.markSend(ctx)
	sendStart := time.Now()
	stop := fl.progress("send", sendStart, func() string {
		return fmt.Sprintf("sent=%d failed=%d late=%d", sd.sent.Load(), sd.failed.Load(), sd.behind.Load())
	})
	switch {
	case sendProc:
		window, err := sendFromProcess(ctx, args, r.runTag, sd, &log, stderr)
		if err != nil {
			return err
		}
		s.SendWindowS = window.Seconds()
	case len(mine) > 0:
		s.SendWindowS = sd.run(ctx, until, count).Seconds()
	}
	if r.shardN == 1 {
		exp.seqs = log.seqs
		for conv, rs := range members {
			want += int64(len(log.seqs[conv]) * len(rs))
		}
	}
	fl.waitDelivered(ctx, want, drain)
	stop()
	r.selfAtEnd = selfCPU() // not the wait for the other shards
	if err := holdOpen(ctx, doneFile, endFile, drain); err != nil {
		return err
	}
	return r.report(ctx, fl, s, exp, sd, sendStart, stdout)
}

// holdOpen creates doneFile, then waits until endFile exists, ctx ends or
// limit passes: the caller's connections stay open meanwhile, and its
// report waits. Closing 16,667 connections at once is work for the
// gateways and the database (presence), and a report (the servers scraped,
// 16,667 latencies sorted and written) is work for this process; shards
// still receiving would share the CPU with both (the report was 3.8 % of
// the load generator's CPU while the last deliveries came, in a fan-out of
// docs/benchmarks.md, session 24).
func holdOpen(ctx context.Context, doneFile, endFile string, limit time.Duration) error {
	if doneFile != "" {
		if err := os.WriteFile(doneFile, nil, 0o644); err != nil {
			return err
		}
	}
	if endFile == "" {
		return nil
	}
	deadline := time.Now().Add(limit)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if _, err := os.Stat(endFile); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// start samples the servers before a scenario and makes the fleet its
// connections go in (the caller closes it) and the summary it fills.
func (r *wsRun) start(ctx context.Context, scenario string) (*fleet, *wsSummary) {
	s := &wsSummary{Scenario: scenario, Conns: r.hi - r.lo, ServersBefore: r.scrape(ctx)}
	fl := &fleet{r: r}
	r.fleet = fl
	return fl, s
}

// groupSender sends group messages over HTTP (--api) as the conversation's
// owner that convOf names, recording what was stored in log; done ends
// its HTTP client.
func (r *wsRun) groupSender(rate float64, inflight int, convOf func(n int64) (conv int64, token string), record func(conv, seq int64)) (sd *sender, done func(), err error) {
	api, err := newAPIClient(r.f.api, inflight+8, 60*time.Second)
	if err != nil {
		return nil, nil, err
	}
	sd = &sender{rate: rate, inflight: inflight}
	sd.send = r.httpGroupSend(api, convOf, record)
	return sd, api.close, nil
}

// report fills in the common parts of a sending scenario's summary.
func (r *wsRun) report(ctx context.Context, fl *fleet, s *wsSummary, exp expectation, sd *sender, sendStart time.Time, stdout io.Writer) error {
	s.Servers = r.scrape(ctx)
	s.Sent, s.SendErrors, s.Behind = int(sd.sent.Load()), int(sd.failed.Load()), int(sd.behind.Load())
	if s.SendWindowS > 0 {
		s.SendRate = float64(s.Sent) / s.SendWindowS
	}
	s.deliveryCheck = fl.check(exp)
	lats, arrs := fl.latencies()
	s.Latency = latencyStats(lats)
	s.ArrivalLatency = latencyStatsOf(arrs)
	if last := fl.lastDelivery(); !last.IsZero() && s.Delivered > 0 {
		s.DeliverySec = last.Sub(sendStart).Seconds()
		s.Throughput = float64(s.Delivered) / s.DeliverySec
	}
	slices.Sort(sd.replyLats)
	s.SendLatency = latencyStatsOf(sd.replyLats)
	s.Disconnects = fl.disc.Load()
	s.OtherMessages = fl.other.Load()
	r.cpuPerDelivery(s)
	if r.f.latencyOut != "" {
		if err := writeLatencies(r.f.latencyOut, lats); err != nil {
			return err
		}
		if err := writeLatencies(r.f.latencyOut+arrivalSuffix, arrs); err != nil {
			return err
		}
		s.LatencyFile = r.f.latencyOut
	}
	if ctx.Err() != nil {
		s.StoppedEarly = ctx.Err().Error()
	}
	return r.finish(s, stdout)
}

// cpuPerDelivery fills in the CPU per delivery since markSend. The
// servers' share is left out for a shard, which sees only its own
// deliveries, and when a target could not be read.
func (r *wsRun) cpuPerDelivery(s *wsSummary) {
	if r.selfAtSend == 0 || s.Delivered == 0 {
		return
	}
	end := r.selfAtEnd
	if end == 0 {
		end = selfCPU()
	}
	s.LoadgenCPUPerDelivery = float64(end-r.selfAtSend) / float64(time.Microsecond) / float64(s.Delivered)
	if r.shardN != 1 || len(s.Servers) != len(r.atSend) {
		return
	}
	var cpu float64
	for i, a := range s.Servers {
		if a.Err != "" || r.atSend[i].Err != "" {
			return
		}
		cpu += a.CPU - r.atSend[i].CPU
	}
	s.ServerCPUPerDelivery = cpu * 1e6 / float64(s.Delivered)
}

// runWSDirect sends direct messages between pairs of connected clients.
func runWSDirect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		inflight int
		rate     float64
		drain    time.Duration
	)
	r, err := parseWSFlags("ws-direct", args, stderr, func(fs *flag.FlagSet) {
		fs.Float64Var(&rate, "rate", 2000, "messages per second over all pairs (0: as fast as --inflight allows)")
		fs.IntVar(&inflight, "inflight", 512, "sends outstanding at most")
		fs.DurationVar(&drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	}, "Pairs accounts 2k and 2k+1 in direct conversations; clients take turns sending over their\n"+
		"own WebSocket at --rate. Reports send→reply (stored), send→delivered to the peer, and the\n"+
		"round (both), exactly.")
	if err != nil {
		return err
	}
	if r.f.conns%2 != 0 || r.shardN != 1 {
		return usageError{"ws-direct wants an even --conns and one process"}
	}
	if err := r.prepare(ctx, r.f.conns); err != nil {
		return err
	}
	pairs := r.f.conns / 2
	convs, err := r.directs(ctx, pairs)
	if err != nil {
		return err
	}
	fl, s := r.start(ctx, "ws-direct")
	defer fl.close()

	// Per message: when it was sent, replied and delivered to the peer.
	maxMsgs := int64(rate*r.f.duration.Seconds()*1.1) + 1000
	if rate == 0 {
		maxMsgs = 50_000_000
	}
	type times struct{ replied, delivered atomic.Int64 } // ns since the send
	track := make([]times, min(maxMsgs, 50_000_000))
	fl.onMessage = func(cl *wsClient, m client.Message, now, sent time.Time, n int64) {
		if m.Sender != cl.acct && n < int64(len(track)) {
			track[n].delivered.CompareAndSwap(0, int64(now.Sub(sent)))
		}
	}
	t0 := time.Now()
	if err := fl.connect(ctx, r.planSpread, true, connectTimeout); err != nil {
		s.StoppedEarly = err.Error()
		return r.finish(s, stdout)
	}
	s.ConnectSec = time.Since(t0).Seconds()
	sleepCtx(ctx, r.f.settle)

	var log seqLog
	sd := &sender{rate: rate, inflight: inflight}
	sd.send = func(ctx context.Context, n int64, at time.Time) (time.Duration, error) {
		cl := fl.clients[int(n)%len(fl.clients)]
		conv := convs[cl.idx/2]
		sent, err := cl.c.Send(ctx, client.Send{Conv: conv, ClientID: "lg-" + r.runTag + "-" + strconv.FormatInt(n, 10), Text: tagText(r.runTag, at, n)})
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(stderr, "send %d: %v\n", n, err)
			}
			return 0, err
		}
		d := time.Since(at)
		if n < int64(len(track)) {
			track[n].replied.Store(int64(d))
		}
		log.add(conv, sent.Seq)
		return d, nil
	}
	r.markSend(ctx)
	sendStart := time.Now()
	stop := fl.progress("send", sendStart, func() string {
		return fmt.Sprintf("sent=%d failed=%d late=%d", sd.sent.Load(), sd.failed.Load(), sd.behind.Load())
	})
	s.SendWindowS = sd.run(ctx, sendStart.Add(r.f.duration), int64(len(track))).Seconds()
	exp := expectation{members: map[int64][]*wsClient{}, seqs: log.seqs}
	var want int64
	for _, cl := range fl.clients {
		conv := convs[cl.idx/2]
		exp.members[conv] = append(exp.members[conv], cl)
		want += int64(len(log.seqs[conv]))
	}
	fl.waitDelivered(ctx, want, drain)
	stop()
	var round []time.Duration
	for i := range min(int64(len(track)), sd.sent.Load()+sd.failed.Load()) {
		rp, dl := track[i].replied.Load(), track[i].delivered.Load()
		if rp > 0 && dl > 0 {
			round = append(round, time.Duration(max(rp, dl)))
		}
	}
	slices.Sort(round)
	rl := latencyStats(round)
	s.RoundLatency = &rl
	return r.report(ctx, fl, s, exp, sd, sendStart, stdout)
}

// runWSStorm kills the node every client is on and measures the resync.
func runWSStorm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		groups, size, inflight, killPid int
		rate                            float64
		killAfter, drain                time.Duration
	)
	r, err := parseWSFlags("ws-storm", args, stderr, func(fs *flag.FlagSet) {
		fs.IntVar(&groups, "groups", 10, "groups; --conns must be groups × group-size")
		fs.IntVar(&size, "group-size", 1900, "members per group, owner included (at most 2000)")
		fs.Float64Var(&rate, "rate", 20, "messages per second over all groups, sent throughout over HTTP to --api")
		fs.IntVar(&inflight, "inflight", 32, "sends outstanding at most")
		fs.IntVar(&killPid, "kill-pid", 0, "process id of the first target's server, killed with SIGKILL after --kill-after (0: kill it yourself when told)")
		fs.DurationVar(&killAfter, "kill-after", 5*time.Second, "time from the first send to the kill")
		fs.DurationVar(&drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	}, "Connects every client to the first of --targets (the others are fall-backs, spread),\n"+
		"sends into the groups throughout, kills the first target's server, and reports the time\n"+
		"until every client is synced on another node, and exact lost/duplicated counts.\n"+
		"--api must be another node than the first target.")
	if err != nil {
		return err
	}
	if groups*size != r.f.conns || size < 2 || size > 2000 || len(r.targets) < 2 || r.shardN != 1 {
		return usageError{"--conns must equal --groups × --group-size (2-2000), with ≥ 2 targets and one process"}
	}
	if r.f.api == "http://"+r.targets[0] {
		return usageError{"--api must not be the first target, which is killed"}
	}
	if err := r.prepare(ctx, r.f.conns); err != nil {
		return err
	}
	convs, err := r.groups(ctx, groups, size)
	if err != nil {
		return err
	}
	fl, s := r.start(ctx, "ws-storm")
	defer fl.close()
	n := len(r.targets)
	plan := func(i int) []string {
		out := []string{r.targets[0]}
		for k := range n - 1 {
			out = append(out, r.targets[1+(i+k)%(n-1)])
		}
		return out
	}
	t0 := time.Now()
	if err := fl.connect(ctx, plan, true, connectTimeout); err != nil {
		s.StoppedEarly = err.Error()
		return r.finish(s, stdout)
	}
	s.ConnectSec = time.Since(t0).Seconds()
	sleepCtx(ctx, r.f.settle)

	var log seqLog
	sd, closeAPI, err := r.groupSender(rate, inflight, func(n int64) (int64, string) {
		g := int(n) % groups
		return convs[g], r.st.Accounts[g*size].Token
	}, log.add)
	if err != nil {
		return err
	}
	defer closeAPI()
	sendStart := time.Now()
	var killAt atomic.Int64
	stop := fl.progress("storm", sendStart, func() string {
		return fmt.Sprintf("sent=%d failed=%d", sd.sent.Load(), sd.failed.Load())
	})
	var wg sync.WaitGroup
	wg.Go(func() { s.SendWindowS = sd.run(ctx, sendStart.Add(r.f.duration), 0).Seconds() })
	sleepCtx(ctx, killAfter)
	if killPid > 0 {
		killAt.Store(time.Now().UnixNano())
		if err := syscall.Kill(killPid, syscall.SIGKILL); err != nil {
			stop()
			return fmt.Errorf("killing %d: %w", killPid, err)
		}
		fmt.Fprintf(stderr, "killed %d (the server at %s)\n", killPid, r.targets[0])
	} else {
		fmt.Fprintf(stderr, "KILL THE SERVER AT %s NOW (waiting for the first disconnect)\n", r.targets[0])
		for fl.disc.Load() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		killAt.Store(time.Now().UnixNano())
	}
	kill := time.Unix(0, killAt.Load())
	s.KilledAt = kill.Format(time.RFC3339Nano)
	// Every client must sync on a new connection after the kill.
	resynced := func() (done int, last time.Time, each []time.Duration) {
		for _, cl := range fl.clients {
			cl.mu.Lock()
			if cl.syncedAt.After(kill) && cl.syncedAt.After(cl.discAt) && cl.discAt.After(kill) {
				done++
				last = maxTime(last, cl.syncedAt)
				each = append(each, cl.syncedAt.Sub(kill))
			}
			cl.mu.Unlock()
		}
		return
	}
	deadline := time.Now().Add(connectTimeout)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if d, _, _ := resynced(); d == len(fl.clients) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	done, last, each := resynced()
	s.NotResynced = len(fl.clients) - done
	if !last.IsZero() {
		s.ResyncAllSec = last.Sub(kill).Seconds()
	}
	slices.Sort(each)
	rl := latencyStats(each)
	s.Resync = &rl
	fmt.Fprintf(stderr, "resync: %d of %d clients synced again, the last %.2fs after the kill\n", done, len(fl.clients), s.ResyncAllSec)
	wg.Wait()
	members := groupMembers(fl, convs, size)
	exp := expectation{members: members, seqs: log.seqs}
	var want int64
	for conv, rs := range members {
		want += int64(len(log.seqs[conv]) * len(rs))
	}
	fl.waitDelivered(ctx, want, drain)
	stop()
	return r.report(ctx, fl, s, exp, sd, sendStart, stdout)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

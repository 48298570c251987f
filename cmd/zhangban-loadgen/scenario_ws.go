package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // --debug-addr
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zhangban/zhangban/gateway/client"
)

// The WebSocket scenarios (ws-idle, ws-broadcast, ws-fanout, ws-direct,
// ws-storm) open many gateway connections with the Go client package and
// check every delivery exactly: each message carries a run tag and its send
// time in its text ("lg <run> <unix-ns> <n>"), and each receiver keeps, per
// conversation, how often it got each sequence. Lost is expected minus
// received, listed; duplicated is every sequence seen more than once. The
// client package already drops duplicates and fills gaps, so what it
// delivers to OnMessage is what an app would show; that is what is counted.
//
// Latency is receive time minus the send time in the text; every process
// runs on this machine and shares its clock.

// wsFlags are the flags the WebSocket scenarios share.
type wsFlags struct {
	api        string
	targets    string
	sources    int
	sourceBase int
	conns      int
	shard      string
	admin      string
	password   string
	state      string
	workers    int
	connecting int
	duration   time.Duration
	settle     time.Duration
	json       bool
	label      string
	latencyOut string
	run        string
	debugAddr  string
	onReader   bool
}

func (f *wsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.api, "api", "", "base URL of the HTTP API for setup and HTTP sends (default: http:// + the first target)")
	fs.StringVar(&f.targets, "targets", "127.0.0.1:8080", "comma-separated gateway addresses host:port (loopback only)")
	fs.IntVar(&f.sources, "sources", 1, "number of 127.0.0.x source addresses to spread connections over")
	fs.IntVar(&f.sourceBase, "source-base", 11, "first x of the 127.0.0.x source addresses")
	fs.IntVar(&f.conns, "conns", 1000, "connections (accounts wslg-1…N) in the whole run, over all shards")
	fs.StringVar(&f.shard, "shard", "0/1", "i/n: this process holds the i-th of n equal slices of the connections")
	fs.StringVar(&f.admin, "admin", "", "login:password of the superuser, for setup (not needed when --state has everything)")
	fs.StringVar(&f.password, "password", "wslg-password", "password of the wslg-N accounts")
	fs.StringVar(&f.state, "state", "", "state file: accounts, tokens and conversations made by earlier runs, reused and extended")
	fs.IntVar(&f.workers, "setup-workers", 16, "concurrent setup requests")
	fs.IntVar(&f.connecting, "connecting", 256, "connections being opened at once")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "measured time")
	fs.DurationVar(&f.settle, "settle", 5*time.Second, "wait after every connection synced, before measuring")
	fs.BoolVar(&f.json, "json", false, "also print the result as one JSON line on stdout")
	fs.StringVar(&f.label, "label", "", "free text copied into the result")
	fs.StringVar(&f.latencyOut, "latency-out", "", "write every delivery latency (ns, one a line) here, and every arrival latency to FILE.arrival, for ws-merge")
	fs.StringVar(&f.run, "run", "", "run tag shared by the shards of one run (default: random)")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this loopback host:port, to see where the load generator's own CPU goes")
	fs.BoolVar(&f.onReader, "deliver-on-reader", true, "clients call OnMessage on their read loop when their dispatcher is idle (client.Config.DeliverOnReader); false hands every message to the dispatcher goroutine")
}

// wsRun is a parsed wsFlags plus what the process set up.
type wsRun struct {
	f          wsFlags
	targets    []string
	lo, hi     int // this shard's accounts [lo, hi)
	shardI     int
	shardN     int
	runTag     string
	api        *apiClient
	st         *wsState
	setup      *wsSetup
	stderr     io.Writer
	transports []*http.Client // per source address
	fleet      *fleet         // the scenario's clients, for the report

	atSend     []serverSample // the targets when the sending began (markSend)
	selfAtSend time.Duration  // this process's CPU time then
	selfAtEnd  time.Duration  // and when the deliveries were in, if the report comes later (0: at the report)
}

// markSend samples the CPU time of the targets and of this process as
// the sending begins, for the report's CPU per delivery. A shard reads only
// its own: the report leaves the servers' share out for a shard, and the
// shards start together, when six scrapes each would delay the send.
func (r *wsRun) markSend(ctx context.Context) {
	if r.shardN == 1 {
		r.atSend = r.scrape(ctx)
	}
	r.selfAtSend = selfCPU()
}

func parseWSFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet), about string) (*wsRun, error) {
	r := &wsRun{stderr: stderr}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	r.f.register(fs)
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: zhangban-loadgen %s [flags]\n\n%s\n\nFlags:\n", name, about)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	f := &r.f
	for t := range strings.SplitSeq(f.targets, ",") {
		t = strings.TrimSpace(t)
		host, _, err := net.SplitHostPort(t)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--targets: %q is not host:port", t)}
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, usageError{fmt.Sprintf("--targets: %q is not a loopback address; only loopback may be targeted", t)}
		}
		r.targets = append(r.targets, t)
	}
	if f.api == "" {
		f.api = "http://" + r.targets[0]
	}
	if u := strings.TrimPrefix(f.api, "http://"); u == f.api || !isLoopbackHostPort(strings.TrimRight(u, "/")) {
		return nil, usageError{"--api must be http://<loopback address>:port"}
	}
	if _, err := fmt.Sscanf(f.shard, "%d/%d", &r.shardI, &r.shardN); err != nil || r.shardN < 1 || r.shardI < 0 || r.shardI >= r.shardN {
		return nil, usageError{"--shard wants i/n with 0 ≤ i < n"}
	}
	switch {
	case f.conns < 1:
		return nil, usageError{"--conns must be at least 1"}
	case f.sources < 1 || f.sourceBase < 1 || f.sourceBase+f.sources > 255:
		return nil, usageError{"--sources and --source-base must give addresses within 127.0.0.1-254"}
	case f.connecting < 1 || f.workers < 1:
		return nil, usageError{"--connecting and --setup-workers must be at least 1"}
	}
	r.lo, r.hi = f.conns*r.shardI/r.shardN, f.conns*(r.shardI+1)/r.shardN
	r.runTag = f.run
	if r.runTag == "" {
		var b [4]byte
		rand.Read(b[:])
		r.runTag = hex.EncodeToString(b[:])
	}
	var err error
	if r.api, err = newAPIClient(f.api, 256, 60*time.Second); err != nil {
		return nil, err
	}
	if r.st, err = loadWSState(f.state, strings.TrimRight(f.api, "/")); err != nil {
		return nil, err
	}
	if f.debugAddr != "" {
		if !isLoopbackHostPort(f.debugAddr) {
			return nil, usageError{"--debug-addr must be a loopback host:port"}
		}
		ln, err := net.Listen("tcp", f.debugAddr)
		if err != nil {
			return nil, fmt.Errorf("--debug-addr: %w", err)
		}
		go http.Serve(ln, nil) //nolint:errcheck // lives as long as the process; net/http/pprof registers on the default mux
	}
	raiseFileLimit(stderr)
	return r, nil
}

func isLoopbackHostPort(hp string) bool {
	host, _, err := net.SplitHostPort(hp)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

// raiseFileLimit lifts the soft limit of open files to the hard one: every
// connection is a file.
func raiseFileLimit(w io.Writer) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			fmt.Fprintf(w, "warning: raising the open-file limit: %v\n", err)
		}
	}
}

// prepare signs in as --admin when setup is needed and makes sure the
// accounts exist. Setup is for shard 0 or a single process: run ws-setup
// (or any scenario without --shard) once before starting shards.
func (r *wsRun) prepare(ctx context.Context, accounts int) error {
	need := len(r.st.Accounts) < accounts
	for i := 0; !need && i < accounts; i++ {
		a := r.st.Accounts[i]
		need = a.ID == 0 || !a.Member || a.Token == ""
	}
	r.setup = &wsSetup{api: r.api, password: r.f.password, workers: r.f.workers, progress: r.stderr}
	if !need {
		return nil
	}
	return r.adminSetup(ctx, func() error { return r.setup.accounts(ctx, r.st, accounts) })
}

// adminSetup runs fn after signing in as --admin.
func (r *wsRun) adminSetup(ctx context.Context, fn func() error) error {
	if r.setup.adminToken == "" {
		if r.shardN > 1 {
			return fmt.Errorf("the state file lacks what this run needs; shards do not set up: run ws-setup first")
		}
		login, pw, ok := strings.Cut(r.f.admin, ":")
		if !ok {
			return usageError{"setup is needed: give --admin login:password"}
		}
		tp, err := r.api.login(ctx, loginBody(login, pw, "zhangban-loadgen-admin"))
		if err != nil {
			return fmt.Errorf("signing in as %q (--admin): %w", login, err)
		}
		r.setup.adminToken = tp.AccessToken
	}
	return fn()
}

func (r *wsRun) groups(ctx context.Context, g, size int) ([]int64, error) {
	key := fmt.Sprintf("%dx%d", g, size)
	if ids := r.st.Groups[key]; len(ids) == g {
		return ids, nil
	}
	if r.shardN > 1 {
		return nil, fmt.Errorf("groups %s are not in the state file; shards do not set up: run ws-setup first", key)
	}
	return r.setup.groups(ctx, r.st, g, size)
}

func (r *wsRun) directs(ctx context.Context, pairs int) ([]int64, error) {
	if ids := r.st.Directs[strconv.Itoa(pairs)]; len(ids) == pairs {
		return ids, nil
	}
	if r.shardN > 1 {
		return nil, fmt.Errorf("%d direct pairs are not in the state file; shards do not set up: run ws-setup first", pairs)
	}
	return r.setup.directs(ctx, r.st, pairs)
}

// wsDialKey carries a connection's dialing plan through the client's
// context into the shared transport's DialContext.
type wsDialKey struct{}

// dialPlan is the order in which one client tries the targets. The client
// package dials one URL; the transport dials the plan's addresses instead,
// in turn, so a client whose node was killed reconnects to another. As the
// client package does with Config.URLs, the attempt after a successful
// dial starts at the next address: a client that lost its node does not
// first dial the dead node again, whose port may still hold the old
// connections' TIME_WAIT entries that delay a new handshake by SYN
// retransmissions.
type dialPlan struct {
	addrs []string
	next  atomic.Int32             // index of the address to try first next time
	used  atomic.Value             // string: the address of the last successful dial
	conn  atomic.Pointer[upgraded] // the last connection upgraded
}

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT (linux/in.h; not in the
// syscall package) on a socket about to be bound to a source address: the
// source port is then picked at connect, per destination, not at bind,
// which would cap each source address at one ephemeral range for all
// targets together, and which searches the whole range, a millisecond and
// more of kernel time per dial once tens of thousands of ports are taken
// or in TIME_WAIT.
func bindAddressNoPort(fd uintptr) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1)
}

// httpClient returns the upgrade client for source address number s.
func (r *wsRun) httpClient(s int) *http.Client {
	if r.transports == nil {
		r.transports = make([]*http.Client, r.f.sources)
	}
	if c := r.transports[s]; c != nil {
		return c
	}
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(r.f.sourceBase+s))},
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) {
				serr = bindAddressNoPort(fd)
				if serr == nil {
					serr = stampArrivals(fd)
				}
			})
			return serr
		},
	}
	tr := &upgradeTransport{
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			p, _ := ctx.Value(wsDialKey{}).(*dialPlan)
			if p == nil {
				return d.DialContext(ctx, network, addr)
			}
			start := int(p.next.Load())
			var errs []error
			for k := range p.addrs {
				a := p.addrs[(start+k)%len(p.addrs)]
				c, err := d.DialContext(ctx, network, a)
				if err == nil {
					p.next.Store(int32((start + k + 1) % len(p.addrs)))
					p.used.Store(a)
					return c, nil
				}
				errs = append(errs, err)
				if ctx.Err() != nil {
					break
				}
			}
			return nil, errors.Join(errs...)
		},
	}
	c := &http.Client{Transport: tr}
	r.transports[s] = c
	return c
}

// wsClient is one simulated device.
type wsClient struct {
	idx  int   // account index
	acct int64 // account id
	c    *client.Client
	plan *dialPlan

	mu        sync.Mutex // guards the fields below
	got       []delivery // tagged messages of this run, in the order delivered
	everSync  bool
	syncedAt  time.Time // the last StateSynced
	discAt    time.Time // the last StateDisconnected
	resets    int
	overflows int
	lastAt    time.Time         // the last tagged delivery
	reasons   map[string]int    // disconnections by reason
	examples  map[string]string // the first error of each reason, as the client gave it
}

// delivery is one tagged message a client received. A client keeps a
// list, not a map by conversation and sequence: the fan-out's clients get
// one message each, and maps for it were most of what the load generator
// allocated while the message was in flight, in the CPU the gateways
// measured share.
type delivery struct {
	conv, seq int64
	lat       time.Duration // from the send to the delivery
	arr       time.Duration // from the send to its arrival in the socket (arrival_stamped.go); -1 unknown
}

// seen counts the deliveries of each sequence of conv (cl.mu held).
func (cl *wsClient) seen(conv int64) map[int64]int32 {
	n := map[int64]int32{}
	for _, d := range cl.got {
		if d.conv == conv {
			n[d.seq]++
		}
	}
	return n
}

// fleet is this process's clients and the counters the progress line shows.
type fleet struct {
	r         *wsRun
	clients   []*wsClient
	connected atomic.Int64 // clients currently synced
	delivered atomic.Int64 // tagged deliveries
	other     atomic.Int64 // untagged or other runs' messages, ignored
	disc      atomic.Int64 // disconnections seen
	wg        sync.WaitGroup
	onMessage func(cl *wsClient, m client.Message, now time.Time, sent time.Time, n int64) // extra per-message hook
}

// parseTag reads what tagText wrote, "lg <run> <unix-ns> <n>". It
// allocates nothing (the prefix, at most 32 bytes for the run tags made
// here, is built on the stack): every client runs it for every message
// (with strings.Fields it was a slice a message, 1 % of the load
// generator's CPU in a fan-out's burst).
func parseTag(text, run string) (sent time.Time, n int64, ok bool) {
	rest, ok := strings.CutPrefix(text, "lg "+run+" ")
	at, count, ok2 := strings.Cut(rest, " ")
	if !ok || !ok2 {
		return time.Time{}, 0, false
	}
	ns, err1 := strconv.ParseInt(at, 10, 64)
	n, err2 := strconv.ParseInt(count, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, 0, false
	}
	return time.Unix(0, ns), n, true
}

func tagText(run string, sent time.Time, n int64) string {
	return "lg " + run + " " + strconv.FormatInt(sent.UnixNano(), 10) + " " + strconv.FormatInt(n, 10)
}

// connect starts a client for each account of the shard, at most
// --connecting being opened at once, and waits until all have synced, ctx
// ends or timeout passes. plan gives each account's target order.
func (fl *fleet) connect(ctx context.Context, plan func(i int) []string, autoAck bool, timeout time.Duration) error {
	r := fl.r
	last, err := r.lastSeqs(ctx)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, r.f.connecting)
	t0 := time.Now()
	stopProg := fl.progress("connect", t0, nil)
	defer stopProg()
	for i := r.lo; i < r.hi; i++ {
		a := r.st.Accounts[i]
		cl := &wsClient{idx: i, acct: a.ID, plan: &dialPlan{addrs: plan(i)}}
		token := a.Token
		var released atomic.Bool
		release := func() {
			if released.CompareAndSwap(false, true) {
				<-sem
			}
		}
		cl.c = client.New(client.Config{
			URL:             "ws://" + cl.plan.addrs[0] + "/v1/ws",
			Token:           func(context.Context) (string, error) { return token, nil },
			HTTPClient:      r.httpClient((i - r.lo) % r.f.sources),
			HeaderAuth:      true,
			Seqs:            r.resumeState(i, last),
			AutoAck:         autoAck,
			SyncLimit:       500,
			MinBackoff:      100 * time.Millisecond,
			MaxBackoff:      2 * time.Second,
			OnMessage:       func(m client.Message) { fl.message(cl, m) },
			DeliverOnReader: r.f.onReader,
			OnEvent: func(e client.Event) {
				switch e.Type {
				case client.EventReset:
					cl.mu.Lock()
					cl.resets++
					cl.mu.Unlock()
				case client.EventOverflow:
					cl.mu.Lock()
					cl.overflows++
					cl.mu.Unlock()
				}
			},
			OnState: func(s client.State, err error) {
				now := time.Now()
				switch s {
				case client.StateSynced:
					cl.mu.Lock()
					cl.syncedAt, cl.everSync = now, true
					cl.mu.Unlock()
					fl.connected.Add(1)
					release()
				case client.StateDisconnected:
					if errors.Is(err, client.ErrClosed) {
						break // the load generator closed it: not a disconnection
					}
					// Counted per client and merged at the end: a lock
					// shared by the clients, which all disconnect at once
					// in a storm, held up their reconnecting by seconds.
					reason := disconnectReason(err)
					cl.mu.Lock()
					was := !cl.syncedAt.IsZero() && cl.syncedAt.After(cl.discAt)
					cl.discAt = now
					if cl.reasons == nil {
						cl.reasons, cl.examples = map[string]int{}, map[string]string{}
					}
					if cl.reasons[reason] == 0 && err != nil {
						cl.examples[reason] = err.Error()
					}
					cl.reasons[reason]++
					cl.mu.Unlock()
					if was {
						fl.connected.Add(-1)
					}
					fl.disc.Add(1)
				}
			},
		})
		fl.clients = append(fl.clients, cl)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		rctx := context.WithValue(ctx, wsDialKey{}, cl.plan)
		fl.wg.Go(func() {
			err := cl.c.Run(rctx)
			release()
			if err != nil && !errors.Is(err, client.ErrClosed) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(r.stderr, "client %d stopped: %v\n", i, err)
			}
		})
	}
	deadline := time.After(timeout)
	for fl.connected.Load() < int64(len(fl.clients)) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("only %d of %d connections synced within %s", fl.connected.Load(), len(fl.clients), timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(r.stderr, "connect: %d connections synced in %.1fs\n", len(fl.clients), time.Since(t0).Seconds())
	return nil
}

// lastSeqs reads the last sequence of every conversation in the state
// file, so that clients start up to date: like a phone that was online,
// their first sync is empty instead of replaying the history earlier runs
// left (which would be measured as connection cost).
func (r *wsRun) lastSeqs(ctx context.Context) (map[int64]int64, error) {
	type job struct {
		conv  int64
		token string
	}
	var jobs []job
	for key, ids := range r.st.Groups {
		var g, size int
		fmt.Sscanf(key, "%dx%d", &g, &size)
		for k, id := range ids {
			jobs = append(jobs, job{id, r.st.Accounts[k*size].Token})
		}
	}
	for _, ids := range r.st.Directs {
		for k, id := range ids {
			jobs = append(jobs, job{id, r.st.Accounts[2*k].Token})
		}
	}
	out := make(map[int64]int64, len(jobs))
	var mu sync.Mutex
	var next atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	for range min(32, len(jobs)) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= len(jobs) || ctx.Err() != nil {
					return
				}
				var c struct {
					LastSeq int64 `json:"last_seq"`
				}
				err := r.api.getJSON(ctx, "/v1/conversations/"+strconv.FormatInt(jobs[k].conv, 10), jobs[k].token, &c)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("reading conversation %d: %w", jobs[k].conv, err)
				}
				out[jobs[k].conv] = c.LastSeq
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out, firstErr
}

// resumeState is account i's Seqs: the last sequence of each conversation
// of the state file it is in.
func (r *wsRun) resumeState(i int, last map[int64]int64) map[int64]int64 {
	seqs := map[int64]int64{}
	for key, ids := range r.st.Groups {
		var g, size int
		fmt.Sscanf(key, "%dx%d", &g, &size)
		if size > 0 && i/size < len(ids) {
			seqs[ids[i/size]] = last[ids[i/size]]
		}
	}
	for _, ids := range r.st.Directs {
		if i/2 < len(ids) {
			seqs[ids[i/2]] = last[ids[i/2]]
		}
	}
	return seqs
}

// disconnectReason names why a connection ended, in few stable kinds.
func disconnectReason(err error) string {
	var ce *client.CloseError
	var ne net.Error
	var se *client.SetupError
	kind := ""
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &se):
		return "set-up " + se.Stage + ": " + disconnectReason(se.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		kind = "connection reset"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		strings.Contains(err.Error(), "deadline exceeded"):
		kind = "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "EOF"):
		kind = "EOF"
	case strings.Contains(err.Error(), "use of closed network connection"):
		kind = "closed locally"
	}
	switch {
	case errors.As(err, &ce) && strings.HasPrefix(ce.Reason, client.DroppedByClient):
		why, _, _ := strings.Cut(strings.TrimPrefix(ce.Reason, client.DroppedByClient), ":")
		return "dropped by the client (" + why + ")"
	case errors.As(err, &ce) && ce.Code != 1006:
		return fmt.Sprintf("close %d %s", ce.Code, ce.Reason)
	case ce != nil && kind != "":
		return "close 1006 (" + kind + ")"
	case kind != "":
		return kind
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && len(msg)-i < 60 {
		msg = msg[i+2:]
	}
	return msg
}

// message counts one delivery.
func (fl *fleet) message(cl *wsClient, m client.Message) {
	now := time.Now()
	sent, n, ok := parseTag(m.Text, fl.r.runTag)
	if !ok {
		fl.other.Add(1)
		return
	}
	d := delivery{conv: m.Conv, seq: m.Seq, lat: now.Sub(sent), arr: -1}
	if u := cl.plan.conn.Load(); u != nil {
		// A stamp from before the send is not this message's: unknown.
		if a := time.Unix(0, u.arrived.Load()); !a.Before(sent) {
			d.arr = a.Sub(sent)
		}
	}
	cl.mu.Lock()
	cl.got = append(cl.got, d)
	cl.lastAt = now
	cl.mu.Unlock()
	fl.delivered.Add(1)
	if fl.onMessage != nil {
		fl.onMessage(cl, m, now, sent, n)
	}
}

// lastDelivery is the time of the latest tagged delivery.
func (fl *fleet) lastDelivery() time.Time {
	var t time.Time
	for _, cl := range fl.clients {
		cl.mu.Lock()
		t = maxTime(t, cl.lastAt)
		cl.mu.Unlock()
	}
	return t
}

// close shuts every client down and waits for them.
func (fl *fleet) close() {
	for _, cl := range fl.clients {
		cl.c.Close()
	}
	fl.wg.Wait()
}

// progress prints a line a second until the returned function is called.
// extra adds scenario counters.
func (fl *fleet) progress(phase string, t0 time.Time, extra func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastT := fl.delivered.Load(), t0
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				d := fl.delivered.Load()
				line := fmt.Sprintf("%6.1fs %-9s synced=%d/%d disconnects=%d delivered=%d (%.0f/s)",
					now.Sub(t0).Seconds(), phase, fl.connected.Load(), len(fl.clients), fl.disc.Load(), d, float64(d-last)/now.Sub(lastT).Seconds())
				if extra != nil {
					line += " " + extra()
				}
				fmt.Fprintln(fl.r.stderr, line)
				last, lastT = d, now
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// expectation says which sequences each receiver should have got: for a
// conversation, its members among this shard's clients and the sequences.
type expectation struct {
	members map[int64][]*wsClient // conv → receivers held here
	seqs    map[int64][]int64     // conv → sequences sent (when known here)
	perConv int                   // when seqs are not known here: tagged messages expected per conversation
}

// deliveryCheck is the exact outcome of a run.
type deliveryCheck struct {
	Expected   int64    `json:"expected"`
	Delivered  int64    `json:"delivered"` // distinct expected (receiver, conv, seq) received
	Lost       int64    `json:"lost"`
	Duplicated int64    `json:"duplicated"` // extra deliveries of a (receiver, conv, seq)
	Unexpected int64    `json:"unexpected"` // tagged deliveries of a sequence not sent in this run
	LostList   []string `json:"lost_list,omitempty"`
	DupList    []string `json:"dup_list,omitempty"`
	Resets     int      `json:"client_resets"`
	Overflows  int      `json:"client_overflows"`
}

const listMax = 50

// check compares what arrived with what was expected.
func (fl *fleet) check(e expectation) deliveryCheck {
	var d deliveryCheck
	note := func(l *[]string, s string) {
		if len(*l) < listMax {
			*l = append(*l, s)
		}
	}
	for conv, rs := range e.members {
		seqs, known := e.seqs[conv]
		want := map[int64]bool{}
		for _, s := range seqs {
			want[s] = true
		}
		for _, cl := range rs {
			cl.mu.Lock()
			got := cl.seen(conv)
			if known {
				d.Expected += int64(len(seqs))
				for _, s := range seqs {
					n := got[s]
					if n == 0 {
						d.Lost++
						note(&d.LostList, fmt.Sprintf("account %d conv %d seq %d", cl.acct, conv, s))
					} else {
						d.Delivered++
					}
				}
				for s, n := range got {
					if !want[s] {
						d.Unexpected += int64(n)
					}
				}
			} else {
				d.Expected += int64(e.perConv)
				d.Delivered += int64(min(len(got), e.perConv))
				if len(got) < e.perConv {
					d.Lost += int64(e.perConv - len(got))
					note(&d.LostList, fmt.Sprintf("account %d conv %d: %d of %d", cl.acct, conv, len(got), e.perConv))
				}
				if len(got) > e.perConv {
					d.Unexpected += int64(len(got) - e.perConv)
				}
			}
			for s, n := range got {
				if n > 1 {
					d.Duplicated += int64(n - 1)
					note(&d.DupList, fmt.Sprintf("account %d conv %d seq %d ×%d", cl.acct, conv, s, n))
				}
			}
			cl.mu.Unlock()
		}
	}
	for _, cl := range fl.clients {
		cl.mu.Lock()
		d.Resets += cl.resets
		d.Overflows += cl.overflows
		cl.mu.Unlock()
	}
	slices.Sort(d.LostList)
	slices.Sort(d.DupList)
	return d
}

// latencies returns every delivery latency and every known arrival
// latency, sorted.
func (fl *fleet) latencies() (lats, arrs []time.Duration) {
	for _, cl := range fl.clients {
		cl.mu.Lock()
		for _, d := range cl.got {
			lats = append(lats, d.lat)
			if d.arr >= 0 {
				arrs = append(arrs, d.arr)
			}
		}
		cl.mu.Unlock()
	}
	slices.Sort(lats)
	slices.Sort(arrs)
	return lats, arrs
}

// waitDelivered waits until want tagged deliveries arrived, ctx ends or
// timeout passes, and returns the time of the wait's end.
func (fl *fleet) waitDelivered(ctx context.Context, want int64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for fl.delivered.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// latencyStatsOf summarises sorted latencies, or is nil when there are
// none: for the summary's optional latencies.
func latencyStatsOf(ls []time.Duration) *latencySummary {
	if len(ls) == 0 {
		return nil
	}
	l := latencyStats(ls)
	return &l
}

// latencyStats summarises sorted latencies like the HTTP scenarios do.
func latencyStats(sorted []time.Duration) latencySummary {
	var l latencySummary
	l.Samples = len(sorted)
	if len(sorted) == 0 {
		return l
	}
	l.Min, l.Max = ms(sorted[0]), ms(sorted[len(sorted)-1])
	for _, q := range []struct {
		p   float64
		dst *float64
	}{{50, &l.P50}, {95, &l.P95}, {99, &l.P99}} {
		d, _ := percentile(sorted, q.p)
		*q.dst = ms(d)
	}
	return l
}

func writeLatencies(path string, ls []time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, l := range ls {
		w.WriteString(strconv.FormatInt(int64(l), 10))
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// serverSample is one gateway's /metrics at one moment.
type serverSample struct {
	Target string  `json:"target"`
	RSS    float64 `json:"rss_bytes"`
	Conns  float64 `json:"connections"`
	Frames float64 `json:"frames_written"`
	Writes float64 `json:"writes"` // WebSocket messages written: frames / writes is the coalescing
	Slow   float64 `json:"slow_consumers"`
	Pongs  float64 `json:"pongs_failed"` // pongs to clients' pings not written in time
	CPU    float64 `json:"cpu_seconds"`  // the process's CPU time so far
	Err    string  `json:"error,omitempty"`
}

// scrape reads the gauges the scenarios report from every target.
func (r *wsRun) scrape(ctx context.Context) []serverSample {
	out := make([]serverSample, len(r.targets))
	var wg sync.WaitGroup
	for i, t := range r.targets {
		wg.Go(func() {
			s := serverSample{Target: t}
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t+"/metrics", nil)
			resp, err := r.api.http.Do(req)
			if err != nil {
				s.Err = err.Error()
				out[i] = s
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				name, val, ok := strings.Cut(sc.Text(), " ")
				if !ok || strings.HasPrefix(name, "#") {
					continue
				}
				v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
				if err != nil {
					continue
				}
				switch name {
				case "process_resident_memory_bytes":
					s.RSS = v
				case "process_cpu_seconds_total":
					s.CPU = v
				case "zhangban_gateway_connections":
					s.Conns = v
				case "zhangban_gateway_frames_written_total":
					s.Frames = v
				case "zhangban_gateway_writes_total":
					s.Writes = v
				case "zhangban_gateway_slow_consumers_total":
					s.Slow = v
				case "zhangban_gateway_pongs_failed_total":
					s.Pongs = v
				}
			}
			out[i] = s
		})
	}
	wg.Wait()
	return out
}

// selfCPU is the CPU time this process has used (user and system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfRSS is this process's resident set, from /proc.
func selfRSS() int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

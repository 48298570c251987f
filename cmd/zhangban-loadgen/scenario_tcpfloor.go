package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tcp-floor measures what the fan-out figure cannot go below on this
// machine: the same shape as the fan-out (docs/benchmarks.md, "Realtime
// (issue 4)"), --conns connections spread over --servers processes that
// each write one --size-byte message to every connection they accepted,
// and --receivers processes that read them, a goroutine per connection,
// but with nothing else: no WebSocket framing, no JSON, no routing, no
// NATS, no database, no client library. What it reports is the time from
// the moment the servers are told to write until each message has been
// read, as the fan-out's latency is from the send until OnMessage.
//
// Each role is this program again (os.Executable) with --role, so that
// every process stays under the per-process open-file limit, as the
// gateways and the fan-out's load generator shards do. The processes
// talk over their standard input and output, one line per message:
//
//	server:   "listen ADDR", "ready"; reads "go" (one per burst) from stdin
//	receiver: "ready"; per burst "a NANOS" (unix time each message was
//	          read) and then "burst B GOT"
//
// The connections are made once and the burst repeated --bursts times,
// --pause apart: making 100,000 loopback connections took 26 s here.
//
// With --raw the receivers have no goroutine per connection either: each
// reads all of its connections in one epoll loop (floorReceiveRaw), so
// what is measured is the kernel's loopback TCP with as little user space
// around it as a program in C would have. The difference between the two
// is what Go's scheduler and poller take for a goroutine per connection.

// floorMaxPerProcess keeps each process under the 20,000 open files a
// process may hold here, with room for the runtime's own.
const floorMaxPerProcess = 19_000

type floorFlags struct {
	conns, servers, receivers, size, bursts, writers, sourceBase int
	pause, timeout                                               time.Duration
	json, raw                                                    bool
	label                                                        string
	// child roles
	role, connect, source string
	n                     int
}

func runTCPFloor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f floorFlags
	fs := flag.NewFlagSet("tcp-floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.conns, "conns", 100_000, "connections in all")
	fs.IntVar(&f.servers, "servers", 6, "server processes (the fan-out's gateways)")
	fs.IntVar(&f.receivers, "receivers", 6, "receiving processes (the fan-out's load generator shards)")
	fs.IntVar(&f.size, "size", 240, "bytes of each message (a message event frame is about 240)")
	fs.IntVar(&f.bursts, "bursts", 3, "bursts, one message to every connection each")
	fs.IntVar(&f.writers, "writers", 2, "writing goroutines per server (a gateway's round writers)")
	fs.IntVar(&f.sourceBase, "source-base", 11, "receiver i dials from 127.0.0.(source-base+i)")
	fs.DurationVar(&f.pause, "pause", 5*time.Second, "wait before each burst")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "how long a burst may take before what is missing counts as lost")
	fs.BoolVar(&f.json, "json", false, "also print the result as one JSON line")
	fs.BoolVar(&f.raw, "raw", false, "receivers read in one epoll loop each, no goroutine per connection (Linux): the kernel's share")
	fs.StringVar(&f.label, "label", "", "label for the result")
	fs.StringVar(&f.role, "role", "", "internal: serve or receive")
	fs.StringVar(&f.connect, "connect", "", "internal: the server a receiver dials")
	fs.StringVar(&f.source, "source", "", "internal: a receiver's source address")
	fs.IntVar(&f.n, "n", 0, "internal: connections of this process")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch f.role {
	case "serve":
		return floorServe(ctx, f, os.Stdin, stdout)
	case "receive":
		return floorReceive(ctx, f, stdout)
	case "":
	default:
		return usageError{fmt.Sprintf("unknown --role %q", f.role)}
	}
	if f.conns <= 0 || f.servers <= 0 || f.receivers <= 0 || f.size <= 0 || f.bursts <= 0 || f.writers <= 0 {
		return usageError{"--conns, --servers, --receivers, --size, --bursts and --writers must be positive"}
	}
	if f.conns < f.receivers {
		return usageError{fmt.Sprintf("%d connections cannot give each of %d receivers one: lower --receivers", f.conns, f.receivers)}
	}
	if per := (f.conns + min(f.servers, f.receivers) - 1) / min(f.servers, f.receivers); per > floorMaxPerProcess {
		return usageError{fmt.Sprintf("%d connections in one process is over the %d a process may hold here: raise --servers and --receivers", per, floorMaxPerProcess)}
	}
	if f.sourceBase < 2 || f.sourceBase+f.receivers-1 > 254 {
		return usageError{"--source-base and --receivers must give addresses within 127.0.0.2-254"}
	}
	res, err := floorRun(ctx, f, stderr)
	if err != nil {
		return err
	}
	res.print(stdout)
	if f.json {
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			return err
		}
	}
	if res.Lost > 0 {
		return fmt.Errorf("%d messages were not read within --timeout", res.Lost)
	}
	return nil
}

// floorResult is what tcp-floor prints.
type floorResult struct {
	Scenario  string           `json:"scenario"`
	Label     string           `json:"label,omitempty"`
	Conns     int              `json:"conns"`
	Servers   int              `json:"servers"`
	Receivers int              `json:"receivers"`
	Size      int              `json:"size"`
	Raw       bool             `json:"raw"`
	ConnectS  float64          `json:"connect_s"`
	Expected  int              `json:"expected"`
	Delivered int              `json:"delivered"`
	Lost      int              `json:"lost"`
	Bursts    []latencySummary `json:"bursts"`
	P99Median float64          `json:"p99_ms_median"`
}

func (r *floorResult) print(w io.Writer) {
	var b strings.Builder
	reading := "a goroutine per connection"
	if r.Raw {
		reading = "one epoll loop per receiver"
	}
	fmt.Fprintf(&b, "tcp-floor %s: %d connections, %d servers, %d receivers (%s), %d-byte messages; connected in %.1fs\n",
		r.Label, r.Conns, r.Servers, r.Receivers, reading, r.Size, r.ConnectS)
	for i, l := range r.Bursts {
		fmt.Fprintf(&b, "burst %d: read %d of %d; ms min %.1f p50 %.1f p95 %.1f p99 %.1f max %.1f\n",
			i+1, l.Samples, r.Conns, l.Min, l.P50, l.P95, l.P99, l.Max)
	}
	fmt.Fprintf(&b, "delivered %d of %d, lost %d; p99 median of %d bursts: %.1f ms\n", r.Delivered, r.Expected, r.Lost, len(r.Bursts), r.P99Median)
	io.WriteString(w, b.String())
}

// floorChild is a started role process and its output lines.
type floorChild struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func startFloorChild(ctx context.Context, args []string, stderr io.Writer) (*floorChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"tcp-floor"}, args...)...)
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a tcp-floor process: %w", err)
	}
	c := &floorChild{cmd: cmd, in: in, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c, nil
}

// next returns the child's next line, or an error when it ended first.
func (c *floorChild) next(ctx context.Context) (string, error) {
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("a tcp-floor process (%s) ended early: %v", strings.Join(c.cmd.Args[2:4], " "), c.cmd.Wait())
		}
		return l, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// lockedWriter lets the processes' standard error, which os/exec copies
// in a goroutine each unless it is a file, share one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func floorRun(ctx context.Context, f floorFlags, stderr io.Writer) (*floorResult, error) {
	if _, ok := stderr.(*os.File); !ok {
		stderr = &lockedWriter{w: stderr}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var children []*floorChild
	defer func() {
		for _, c := range children {
			c.in.Close() // a server ends when its input does
		}
		cancel() // and what has not ended by now (after an error) is killed
		for _, c := range children {
			c.cmd.Wait()
		}
	}()
	// Receiver i dials server i % servers; each server is told how many
	// connections to wait for.
	perRecv := make([]int, f.receivers)
	perServer := make([]int, f.servers)
	for i := range perRecv {
		perRecv[i] = f.conns / f.receivers
		if i < f.conns%f.receivers {
			perRecv[i]++
		}
		perServer[i%f.servers] += perRecv[i]
	}
	common := []string{"--size", strconv.Itoa(f.size), "--bursts", strconv.Itoa(f.bursts), "--writers", strconv.Itoa(f.writers), "--timeout", f.timeout.String(),
		"--raw=" + strconv.FormatBool(f.raw)}
	addrs := make([]string, f.servers)
	servers := make([]*floorChild, f.servers)
	for i := range servers {
		c, err := startFloorChild(ctx, append([]string{"--role", "serve", "--n", strconv.Itoa(perServer[i])}, common...), stderr)
		if err != nil {
			return nil, err
		}
		children = append(children, c)
		servers[i] = c
		l, err := c.next(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := fmt.Sscanf(l, "listen %s", &addrs[i]); err != nil {
			return nil, fmt.Errorf("a tcp-floor server said %q, not its address", l)
		}
	}
	t0 := time.Now()
	fmt.Fprintf(stderr, "tcp-floor: connecting %d connections from %d processes to %d\n", f.conns, f.receivers, f.servers)
	recvs := make([]*floorChild, f.receivers)
	for i := range recvs {
		src := fmt.Sprintf("127.0.0.%d", f.sourceBase+i)
		c, err := startFloorChild(ctx, append([]string{"--role", "receive", "--n", strconv.Itoa(perRecv[i]),
			"--connect", addrs[i%f.servers], "--source", src}, common...), stderr)
		if err != nil {
			return nil, err
		}
		children = append(children, c)
		recvs[i] = c
	}
	for _, c := range append(slices.Clone(recvs), servers...) {
		if l, err := c.next(ctx); err != nil {
			return nil, err
		} else if l != "ready" {
			return nil, fmt.Errorf("a tcp-floor process said %q, not ready", l)
		}
	}
	res := &floorResult{Scenario: "tcp-floor", Label: f.label, Conns: f.conns, Servers: f.servers, Receivers: f.receivers,
		Size: f.size, Raw: f.raw, ConnectS: time.Since(t0).Seconds()}
	fmt.Fprintf(stderr, "tcp-floor: connected in %.1fs\n", res.ConnectS)
	var p99s []float64
	for b := range f.bursts {
		time.Sleep(f.pause)
		start := time.Now()
		for _, s := range servers {
			if _, err := io.WriteString(s.in, "go\n"); err != nil {
				return nil, err
			}
		}
		var lats []time.Duration
		for _, r := range recvs {
			n := 0
			for {
				l, err := r.next(ctx)
				if err != nil {
					return nil, err
				}
				if at, ok := strings.CutPrefix(l, "a "); ok {
					ns, err := strconv.ParseInt(at, 10, 64)
					if err != nil {
						return nil, fmt.Errorf("a tcp-floor receiver said %q", l)
					}
					lats = append(lats, time.Unix(0, ns).Sub(start))
					n++
					continue
				}
				var rb, rn int
				if _, err := fmt.Sscanf(l, "burst %d %d", &rb, &rn); err != nil || rb != b+1 || rn != n {
					return nil, fmt.Errorf("a tcp-floor receiver said %q after %d arrivals of burst %d", l, n, b+1)
				}
				break
			}
		}
		slices.Sort(lats)
		sum := latencyStats(lats)
		res.Bursts = append(res.Bursts, sum)
		res.Expected += f.conns
		res.Delivered += len(lats)
		p99s = append(p99s, sum.P99)
		fmt.Fprintf(stderr, "tcp-floor: burst %d: %d of %d read, p99 %.1f ms\n", b+1, len(lats), f.conns, sum.P99)
	}
	res.Lost = res.Expected - res.Delivered
	slices.Sort(p99s)
	res.P99Median = p99s[len(p99s)/2]
	if len(p99s)%2 == 0 {
		res.P99Median = (p99s[len(p99s)/2-1] + p99s[len(p99s)/2]) / 2
	}
	return res, nil
}

// floorServe accepts f.n connections, then writes one message to each of
// them for every "go" line on in.
func floorServe(ctx context.Context, f floorFlags, in io.Reader, out io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintf(out, "listen %s\n", ln.Addr())
	conns := make([]net.Conn, 0, f.n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < f.n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		conns = append(conns, c)
		// A reader per connection, as a gateway has: it waits in the
		// poller and costs nothing until the connection ends.
		go io.Copy(io.Discard, c)
	}
	fmt.Fprintln(out, "ready")
	msg := make([]byte, f.size)
	for i := range msg {
		msg[i] = 'x'
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if sc.Text() != "go" {
			continue
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		for range f.writers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(len(conns)); i = next.Add(1) - 1 {
					conns[i].Write(msg)
				}
			})
		}
		wg.Wait()
	}
	return ctx.Err()
}

// floorReceiveGo makes f.n connections from f.source to f.connect and
// reads each in a goroutine of its own, as the client library does, calling
// arrive with the burst, the connection's number and the time for each
// message read. stop closes the connections.
func floorReceiveGo(ctx context.Context, f floorFlags, arrive func(b, i int, at int64)) (stop func(), err error) {
	src, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(f.source, "0"))
	if err != nil {
		return nil, err
	}
	d := net.Dialer{LocalAddr: src, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = bindAddressNoPort(fd) }); err != nil {
			return err
		}
		return serr
	}}
	var conns []net.Conn
	stop = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range f.n {
		c, err := d.DialContext(ctx, "tcp", f.connect)
		if err != nil {
			stop()
			return nil, fmt.Errorf("connection %d of %d: %w", i+1, f.n, err)
		}
		conns = append(conns, c)
		go func() {
			buf := make([]byte, f.size)
			for b := range f.bursts {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				arrive(b, i, time.Now().UnixNano())
			}
		}()
	}
	return stop, nil
}

// floorReceive dials f.n connections from f.source to f.connect, reads
// them (floorReceiveGo, or floorReceiveRaw with --raw) and reports when
// each burst's message was read on each of them.
func floorReceive(ctx context.Context, f floorFlags, out io.Writer) error {
	arrived := make([][]int64, f.bursts)
	got := make([]atomic.Int64, f.bursts)
	done := make([]chan struct{}, f.bursts)
	for b := range arrived {
		arrived[b] = make([]int64, f.n)
		done[b] = make(chan struct{})
	}
	arrive := func(b, i int, at int64) {
		atomic.StoreInt64(&arrived[b][i], at)
		if got[b].Add(1) == int64(f.n) {
			close(done[b])
		}
	}
	receive := floorReceiveGo
	if f.raw {
		receive = floorReceiveRaw
	}
	stop, err := receive(ctx, f, arrive)
	if err != nil {
		return err
	}
	defer stop()
	w := bufio.NewWriter(out)
	fmt.Fprintln(w, "ready")
	w.Flush()
	for b := range f.bursts {
		t := time.NewTimer(f.timeout)
		select {
		case <-done[b]:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		t.Stop()
		var n int
		for i := range f.n {
			// A message still being read as the timeout ends may be
			// reported or not: either way it is counted once.
			if a := atomic.LoadInt64(&arrived[b][i]); a != 0 {
				fmt.Fprintf(w, "a %d\n", a)
				n++
			}
		}
		fmt.Fprintf(w, "burst %d %d\n", b+1, n)
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

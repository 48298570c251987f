// Command zhangban-loadgen puts load on a running zhangban server and reports
// throughput and exact latency percentiles.
//
//	zhangban-loadgen <scenario> [flags]
//	zhangban-loadgen login --admin admin:secret --clients 50 --duration 20s
//
// Each scenario lives in its own file (scenario_<name>.go) and is a closed
// loop: every simulated client waits for its answer before it sends the next
// request, so the offered load adapts to the server and latency and
// throughput are tied by Little's law (clients ≈ throughput × mean latency).
//
// Progress goes to stderr once a second; the result block (and with --json a
// single JSON line) goes to stdout. The exit status is 0 only when every
// request succeeded, 1 when some failed or the run could not be set up, 2 on
// a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ue usageError
		switch {
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0)
		case errors.As(err, &ue):
			fmt.Fprintln(os.Stderr, "zhangban-loadgen:", err)
			os.Exit(2)
		default:
			fmt.Fprintln(os.Stderr, "zhangban-loadgen:", err)
			os.Exit(1)
		}
	}
}

// scenario is one kind of load the command can generate.
type scenario struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// scenarios lists what `zhangban-loadgen <scenario>` accepts. A function, not
// a package-level table, so nothing global can be changed at run time.
func scenarios() []scenario {
	return []scenario{
		{name: "login", summary: "closed loop of successful password sign-ins, one account and device per client", run: runLogin},
		{name: "org", summary: "children, ancestors, subtree and people search as one user, a phase each", run: runOrg},
		{name: "ws-setup", summary: "make the accounts, groups and direct pairs of the ws-* scenarios into a --state file", run: runWSSetup},
		{name: "ws-idle", summary: "open N WebSocket connections and report the servers' RSS per connection", run: runWSIdle},
		{name: "ws-broadcast", summary: "send into large groups (at a rate, or a burst into all at once) and check every delivery", run: runWSBroadcast},
		{name: "ws-direct", summary: "direct messages between connected pairs at a target rate, checked exactly", run: runWSDirect},
		{name: "ws-storm", summary: "kill the node all clients are on; time until all resynced elsewhere, lost and doubled", run: runWSStorm},
		{name: "ws-merge", summary: "combine the --json results of ws-broadcast shards into one, with exact percentiles", run: runWSMerge},
		{name: "tcp-floor", summary: "the fan-out's shape on bare TCP: what its latency cannot go below on this machine", run: runTCPFloor},
	}
}

// usageError marks mistakes on the command line, which exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("usage: zhangban-loadgen <scenario> [flags]\n\nscenarios:\n")
	for _, s := range scenarios() {
		fmt.Fprintf(&b, "  %-10s %s\n", s.name, s.summary)
	}
	b.WriteString("\nRun \"zhangban-loadgen <scenario> -h\" for its flags.\n")
	io.WriteString(w, b.String())
}

// run is main without the process, so tests can drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usageError{"no scenario given"}
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	for _, s := range scenarios() {
		if s.name == name {
			return s.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return usageError{fmt.Sprintf("unknown scenario %q", name)}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"
)

// The sending process of ws-broadcast --send-process. In one process with
// 19,000 clients, the senders' goroutines wait behind the clients' for the
// process's CPU: at 100 msg/s offered, 46-90 were stored. A process of its
// own gets its share from the kernel's scheduler instead.
//
// It is this program again, run as ws-broadcast with the same flags and
// --send-only --run <tag>. It prints a line for every message stored,
//
//	stored <conv> <seq>
//
// and, at the end, the send→reply time of each (in no particular order)
// and a summary:
//
//	reply <ns>
//	done <failed> <behind> <window ns>

// sendOnly sends into every group at rate for --duration and prints what
// was stored.
func (r *wsRun) sendOnly(ctx context.Context, convs []int64, size int, rate float64, inflight int, stdout io.Writer) error {
	var mu sync.Mutex
	w := bufio.NewWriter(stdout)
	line := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(w, format, a...)
		w.Flush()
		mu.Unlock()
	}
	sd, closeAPI, err := r.groupSender(rate, inflight, func(n int64) (int64, string) {
		g := int(n) % len(convs)
		return convs[g], r.st.Accounts[g*size].Token
	}, func(conv, seq int64) { line("stored %d %d\n", conv, seq) })
	if err != nil {
		return err
	}
	defer closeAPI()
	window := sd.run(ctx, time.Now().Add(r.f.duration), 0)
	for _, l := range sd.replyLats {
		line("reply %d\n", l.Nanoseconds())
	}
	line("done %d %d %d\n", sd.failed.Load(), sd.behind.Load(), window.Nanoseconds())
	return nil
}

// sendFromProcess runs the sending process and collects what it stored
// into log and sd (sent, failed, behind), as sd.run would.
func sendFromProcess(ctx context.Context, args []string, run string, sd *sender, log *seqLog, stderr io.Writer) (time.Duration, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, exe, append(append([]string{"ws-broadcast"}, slices.Clone(args)...), "--send-process=false", "--send-only", "--run="+run, "--debug-addr=", "--json=false")...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting the sending process: %w", err)
	}
	var window time.Duration
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var conv, seq, failed, behind, ns int64
		if _, err := fmt.Sscanf(sc.Text(), "stored %d %d", &conv, &seq); err == nil {
			log.add(conv, seq)
			sd.sent.Add(1)
		} else if _, err := fmt.Sscanf(sc.Text(), "reply %d", &ns); err == nil {
			sd.replyLats = append(sd.replyLats, time.Duration(ns))
		} else if _, err := fmt.Sscanf(sc.Text(), "done %d %d %d", &failed, &behind, &ns); err == nil {
			sd.failed.Store(failed)
			sd.behind.Store(behind)
			window = time.Duration(ns)
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("the sending process: %w", err)
	}
	if window == 0 {
		return 0, fmt.Errorf("the sending process ended without its summary")
	}
	return window, nil
}

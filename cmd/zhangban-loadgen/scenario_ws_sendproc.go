package main

import (
	"bufio"
	"context"
	"errors"
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

// sendOnly sends at rate for --duration, as convOf says, and prints what
// was stored.
func (r *wsRun) sendOnly(ctx context.Context, convOf func(n int64) (int64, string), rate float64, inflight int, stdout io.Writer) error {
	var mu sync.Mutex
	line := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(stdout, format, a...)
		mu.Unlock()
	}
	sd, closeAPI, err := r.groupSender(rate, inflight, convOf, func(conv, seq int64) { line("stored %d %d\n", conv, seq) })
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
// into log and sd (sent, failed, behind, reply times), as sd.run would.
func sendFromProcess(ctx context.Context, args []string, run string, sd *sender, log *seqLog, stderr io.Writer) (time.Duration, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, exe, append(append([]string{"ws-broadcast"}, slices.Clone(args)...),
		"--send-process=false", "--send-only", "--run="+run, "--debug-addr=", "--json=false")...)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting the sending process: %w", err)
	}
	window, rerr := readSendLines(out, sd, log)
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("the sending process: %w", err)
	}
	return window, rerr
}

// readSendLines reads the sending process's lines into sd and log and
// returns the send window from its summary.
func readSendLines(out io.Reader, sd *sender, log *seqLog) (time.Duration, error) {
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
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if window == 0 {
		return 0, errors.New("the sending process ended without its summary")
	}
	return window, nil
}

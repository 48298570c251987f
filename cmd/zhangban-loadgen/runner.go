package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// loadFlags are the flags every scenario shares.
type loadFlags struct {
	target   string
	clients  int
	duration time.Duration
	warmup   time.Duration
	timeout  time.Duration
	json     bool
	label    string
}

func (f *loadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.target, "target", "http://127.0.0.1:8080", "base URL of the zhangban server")
	fs.IntVar(&f.clients, "clients", 50, "concurrent simulated clients, each a closed loop")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "measured time, after the warm-up")
	fs.DurationVar(&f.warmup, "warmup", 3*time.Second, "time before measuring; its requests are not in the percentiles")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.BoolVar(&f.json, "json", false, "also print the result as one JSON line on stdout")
	fs.StringVar(&f.label, "label", "", "free text copied into the result, e.g. the server settings under test")
}

func (f *loadFlags) check() error {
	switch {
	case f.clients < 1:
		return usageError{"--clients must be at least 1"}
	case f.duration <= 0:
		return usageError{"--duration must be positive"}
	case f.warmup < 0:
		return usageError{"--warmup must not be negative"}
	case f.timeout <= 0:
		return usageError{"--timeout must be positive"}
	}
	return nil
}

// parseFlags parses a scenario's arguments; errors are usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// op is one request of one simulated client. It returns nil on success.
// Wrapping the error in *abortError ends the whole run.
type op func(ctx context.Context) error

// abortError ends a run: continuing would be pointless or harmful (failed
// sign-ins, for one, count towards the server's per-address lockout, which
// would then refuse every login from this machine for 15 minutes).
type abortError struct{ err error }

func (e *abortError) Error() string { return "run aborted: " + e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// transportErrorPause is how long a client waits after a request that got
// no answer before it sends the next one.
const transportErrorPause = 100 * time.Millisecond

// sample is one finished request.
type sample struct {
	start   time.Duration // since the run began
	latency time.Duration
	kind    string // errorKind of the failure; "" for success
}

// liveCounters feed the progress line while clients run.
type liveCounters struct {
	requests atomic.Int64 // finished requests, warm-up included
	errors   atomic.Int64 // of which failed
}

// closedLoop runs one goroutine per op, each sending its next request as soon
// as the previous one is answered, for warmup+duration.
type closedLoop struct {
	warmup, duration time.Duration
	ops              []op      // one per simulated client
	progress         io.Writer // one line a second; nil for none
}

// run drives the clients and returns what they measured. It returns when
// every client has stopped: after the duration, when ctx ends, or when an op
// aborts. Requests in flight at the end of the duration are allowed to
// finish and count, since they started inside the measured window.
func (l closedLoop) run(ctx context.Context) *measurement {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	t0 := time.Now()
	warmEnd := t0.Add(l.warmup)
	end := warmEnd.Add(l.duration)

	// stoppedAt is when ctx ended early (signal or abort), as an offset from
	// t0; 0 while it has not. It bounds the measured window.
	var stoppedAt atomic.Int64
	stopWatch := context.AfterFunc(ctx, func() { stoppedAt.Store(int64(time.Since(t0))) })
	defer stopWatch()

	var live liveCounters
	perClient := make([][]sample, len(l.ops)) // each written only by its own client
	var wg sync.WaitGroup
	for i, o := range l.ops {
		wg.Go(func() {
			for {
				start := time.Now()
				if !start.Before(end) || ctx.Err() != nil {
					return
				}
				err := o(ctx)
				lat := time.Since(start)
				if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
					// We cut it short; the server never answered it.
					return
				}
				s := sample{start: start.Sub(t0), latency: lat}
				if err != nil {
					s.kind = errorKind(err)
					live.errors.Add(1)
					var ab *abortError
					if errors.As(err, &ab) {
						cancel(ab)
					}
				}
				live.requests.Add(1)
				perClient[i] = append(perClient[i], s)
				if err != nil && !answered(err) {
					// No answer at all (server down, connection refused): a
					// closed loop would otherwise spin at tens of thousands of
					// attempts a second and starve the server it shares the
					// machine with.
					select {
					case <-ctx.Done():
					case <-time.After(transportErrorPause):
					}
				}
			}
		})
	}

	done := make(chan struct{})
	var progWG sync.WaitGroup
	if l.progress != nil {
		progWG.Go(func() { reportProgress(done, l.progress, t0, warmEnd, &live) })
	}
	wg.Wait()
	close(done)
	progWG.Wait()

	window := l.duration
	var stopCause error
	s := time.Duration(stoppedAt.Load())
	if s == 0 && ctx.Err() != nil {
		// The AfterFunc runs in its own goroutine and may not have run yet.
		s = time.Since(t0)
	}
	if s > 0 && s < l.warmup+l.duration {
		window = max(s-l.warmup, 0)
		stopCause = context.Cause(ctx)
	}
	m := newMeasurement(perClient, l.warmup, window)
	m.stopCause = stopCause
	return m
}

// reportProgress prints a line a second until done is closed.
func reportProgress(done <-chan struct{}, w io.Writer, t0, warmEnd time.Time, live *liveCounters) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastT, lastN := t0, int64(0)
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			n := live.requests.Load()
			phase := "measure"
			if now.Before(warmEnd) {
				phase = "warm-up"
			}
			rate := float64(n-lastN) / now.Sub(lastT).Seconds()
			fmt.Fprintf(w, "%6.1fs %-7s requests=%-7d errors=%-5d rate=%.1f/s\n",
				now.Sub(t0).Seconds(), phase, n, live.errors.Load(), rate)
			lastT, lastN = now, n
		}
	}
}

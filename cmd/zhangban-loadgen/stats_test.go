package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	oneToHundred := make([]int, 100)
	for i := range oneToHundred {
		oneToHundred[i] = i + 1
	}
	oneToThousand := make([]int, 1000)
	for i := range oneToThousand {
		oneToThousand[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"single sample is every percentile", ms(7), 50, 7 * time.Millisecond},
		{"single sample p99", ms(7), 99, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(1, 2), 50, 1 * time.Millisecond},
		{"two samples p51 is the upper", ms(1, 2), 51, 2 * time.Millisecond},
		{"1..100 p50", ms(oneToHundred...), 50, 50 * time.Millisecond},
		{"1..100 p95 is not off by one", ms(oneToHundred...), 95, 95 * time.Millisecond},
		{"1..100 p99", ms(oneToHundred...), 99, 99 * time.Millisecond},
		{"1..100 p100 is the max", ms(oneToHundred...), 100, 100 * time.Millisecond},
		{"1..1000 p99.9", ms(oneToThousand...), 99.9, 999 * time.Millisecond},
		{"1..1000 p99", ms(oneToThousand...), 99, 990 * time.Millisecond},
		{"10 samples p95 rounds the rank up", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 95, 10 * time.Millisecond},
		{"10 samples p90", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"tiny p is the min", ms(3, 4, 5), 0.001, 3 * time.Millisecond},
		{"one outlier decides p99 of 50", ms(append(slices.Repeat([]int{10}, 49), 900)...), 99, 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := percentile(tt.sorted, tt.p)
			if !ok || got != tt.want {
				t.Errorf("percentile(p%v) = %v, %v; want %v", tt.p, got, ok, tt.want)
			}
		})
	}
	if _, ok := percentile(nil, 50); ok {
		t.Error("percentile of no samples reported ok")
	}
}

// TestPercentileMatchesDefinition checks the nearest-rank definition
// directly on random data: at least p% of samples are ≤ the answer, and
// fewer than p% are < it.
func TestPercentileMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := 1 + r.IntN(500)
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(r.IntN(1000))
		}
		slices.Sort(s)
		for _, p := range []float64{50, 95, 99, 99.9} {
			got, _ := percentile(s, p)
			le, lt := 0, 0
			for _, v := range s {
				if v <= got {
					le++
				}
				if v < got {
					lt++
				}
			}
			if float64(le)*100 < p*float64(n) || float64(lt)*100 >= p*float64(n) {
				t.Fatalf("n=%d p%v: got %v with %d ≤ and %d < it", n, p, got, le, lt)
			}
		}
	}
}

func TestMeasurementSplitsWarmupAndKeepsErrorKinds(t *testing.T) {
	sec := time.Second
	per := [][]sample{
		{{start: 0, latency: 5 * time.Millisecond}, {start: 2 * sec, latency: 9 * time.Millisecond, kind: "503 unavailable"}},
		{{start: 3 * sec, latency: 20 * time.Millisecond}, {start: 4 * sec, latency: 10 * time.Millisecond, kind: "500 internal"}},
		{{start: 5 * sec, latency: 30 * time.Millisecond, kind: "500 internal"}, {start: 6 * sec, latency: 40 * time.Millisecond}},
		{{start: 13 * sec, latency: time.Millisecond}}, // after the window: not counted
	}
	m := newMeasurement(per, 3*sec, 10*sec)
	s := summarize(m)
	if s.WarmupRequests != 2 || s.WarmupErrorCount != 1 {
		t.Errorf("warm-up: %d requests, %d errors; want 2, 1", s.WarmupRequests, s.WarmupErrorCount)
	}
	if s.Requests != 4 || s.OK != 2 || s.Errors != 2 {
		t.Errorf("measured: %d requests, %d ok, %d errors; want 4, 2, 2", s.Requests, s.OK, s.Errors)
	}
	if want := []errorCount{{"500 internal", 2}}; !slices.Equal(s.ErrorsByKind, want) {
		t.Errorf("errors by kind = %v, want %v", s.ErrorsByKind, want)
	}
	if s.Latency.P50 != 20 || s.Latency.Max != 40 || s.Latency.Samples != 2 {
		t.Errorf("latency = %+v; want p50 20ms, max 40ms over the 2 successes only", s.Latency)
	}
	if s.Throughput != 0.2 {
		t.Errorf("throughput = %v, want 0.2/s", s.Throughput)
	}
	if !s.failed() {
		t.Error("a run with errors must count as failed")
	}
}

func TestClosedLoopAbortStopsEveryClient(t *testing.T) {
	boom := errors.New("wrong password")
	calls := 0
	ops := []op{
		func(ctx context.Context) error { time.Sleep(time.Millisecond); return nil },
		func(ctx context.Context) error {
			calls++ // only this client's goroutine touches it
			if calls == 20 {
				return &abortError{boom}
			}
			time.Sleep(time.Millisecond)
			return nil
		},
	}
	start := time.Now()
	m := closedLoop{warmup: 0, duration: time.Minute, ops: ops}.run(context.Background())
	if time.Since(start) > 10*time.Second {
		t.Fatalf("abort did not stop the run (took %v)", time.Since(start))
	}
	if !errors.Is(m.stopCause, boom) {
		t.Errorf("stopCause = %v, want the abort", m.stopCause)
	}
	if m.window >= time.Minute || m.requests == 0 {
		t.Errorf("window %v with %d requests; want a short window with the requests made", m.window, m.requests)
	}
}

package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// measurement is what a closed loop saw, split at the end of the warm-up.
type measurement struct {
	warmupRequests int
	warmupErrors   map[string]int // by errorKind

	requests  int             // started inside the measured window
	errors    map[string]int  // by errorKind, measured window only
	latencies []time.Duration // of the successful measured requests, sorted
	window    time.Duration   // length of the measured window
	stopCause error           // why the run ended early; nil when it ran its course
}

// newMeasurement sorts every sample into the warm-up or the measured window
// [warmup, warmup+window) by the time the request started.
func newMeasurement(perClient [][]sample, warmup, window time.Duration) *measurement {
	m := &measurement{warmupErrors: map[string]int{}, errors: map[string]int{}, window: window}
	for _, ss := range perClient {
		for _, s := range ss {
			switch {
			case s.start < warmup:
				m.warmupRequests++
				if s.kind != "" {
					m.warmupErrors[s.kind]++
				}
			case s.start < warmup+window:
				m.requests++
				if s.kind != "" {
					m.errors[s.kind]++
				} else {
					m.latencies = append(m.latencies, s.latency)
				}
			}
		}
	}
	slices.Sort(m.latencies)
	return m
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of
// sorted, which must be in ascending order: the smallest sample that at
// least p% of the samples do not exceed. It is an actual sample, never an
// interpolation, and is exact because every sample is kept. ok is false for
// no samples.
func percentile(sorted []time.Duration, p float64) (d time.Duration, ok bool) {
	n := len(sorted)
	if n == 0 {
		return 0, false
	}
	// p*n/100 rather than p/100*n: 95/100 is not exact in binary and would
	// turn the rank 95 of 100 samples into 96. The epsilon absorbs what is
	// left of that for fractional p such as 99.9.
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1], true
}

// errorCount is one line of the error table.
type errorCount struct {
	Kind  string `json:"kind"`
	Count int    `json:"count"`
}

// latencySummary is in milliseconds for people and JSON readers alike.
type latencySummary struct {
	Samples int     `json:"samples"`
	Min     float64 `json:"min_ms"`
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

// summary is the result of a run: the result block and the JSON line.
type summary struct {
	Scenario         string         `json:"scenario"`
	Label            string         `json:"label,omitempty"`
	Target           string         `json:"target"`
	Clients          int            `json:"clients"`
	Accounts         int            `json:"accounts,omitempty"`
	WarmupSec        float64        `json:"warmup_s"`
	WindowSec        float64        `json:"duration_s"` // measured, shorter than asked when stopped early
	Requests         int            `json:"requests"`
	OK               int            `json:"ok"`
	Errors           int            `json:"errors"`
	ErrorsByKind     []errorCount   `json:"errors_by_kind"`
	WarmupRequests   int            `json:"warmup_requests"`
	WarmupErrorCount int            `json:"warmup_errors"`
	WarmupErrors     []errorCount   `json:"warmup_errors_by_kind"`
	Throughput       float64        `json:"throughput_rps"` // successful requests per second of the window
	Latency          latencySummary `json:"latency"`
	StoppedEarly     string         `json:"stopped_early,omitempty"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func sortedCounts(m map[string]int) []errorCount {
	out := make([]errorCount, 0, len(m))
	for k, n := range m {
		out = append(out, errorCount{k, n})
	}
	slices.SortFunc(out, func(a, b errorCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Kind, b.Kind))
	})
	return out
}

// summarize turns a measurement into a summary; the caller fills in the
// scenario's own fields.
func summarize(m *measurement) summary {
	s := summary{
		WarmupRequests: m.warmupRequests,
		WarmupErrors:   sortedCounts(m.warmupErrors),
		WindowSec:      m.window.Seconds(),
		Requests:       m.requests,
		OK:             len(m.latencies),
		ErrorsByKind:   sortedCounts(m.errors),
	}
	s.Errors = s.Requests - s.OK
	for _, c := range s.WarmupErrors {
		s.WarmupErrorCount += c.Count
	}
	if m.window > 0 {
		s.Throughput = float64(s.OK) / m.window.Seconds()
	}
	s.Latency.Samples = len(m.latencies)
	if len(m.latencies) > 0 {
		s.Latency.Min = ms(m.latencies[0])
		s.Latency.Max = ms(m.latencies[len(m.latencies)-1])
		for _, q := range []struct {
			p   float64
			dst *float64
		}{{50, &s.Latency.P50}, {95, &s.Latency.P95}, {99, &s.Latency.P99}} {
			d, _ := percentile(m.latencies, q.p)
			*q.dst = ms(d)
		}
	}
	if m.stopCause != nil {
		s.StoppedEarly = m.stopCause.Error()
	}
	return s
}

// failed reports whether any request failed, in the warm-up or after it.
func (s summary) failed() bool { return s.Errors > 0 || s.WarmupErrorCount > 0 }

// print writes the human-readable result block.
func (s summary) print(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s", s.Scenario)
	if s.Label != "" {
		fmt.Fprintf(&b, " [%s]", s.Label)
	}
	fmt.Fprintf(&b, ": %s, %d clients", s.Target, s.Clients)
	if s.Accounts > 0 {
		fmt.Fprintf(&b, ", %d accounts", s.Accounts)
	}
	fmt.Fprintf(&b, ", %.1fs measured after %.1fs warm-up\n", s.WindowSec, s.WarmupSec)
	if s.StoppedEarly != "" {
		fmt.Fprintf(&b, "stopped early  %s\n", s.StoppedEarly)
	}
	fmt.Fprintf(&b, "requests       %d (%d ok, %d failed)\n", s.Requests, s.OK, s.Errors)
	writeCounts(&b, "errors", s.ErrorsByKind)
	fmt.Fprintf(&b, "warm-up        %d requests (%d failed)\n", s.WarmupRequests, s.WarmupErrorCount)
	if len(s.WarmupErrors) > 0 {
		writeCounts(&b, "warm-up errors", s.WarmupErrors)
	}
	fmt.Fprintf(&b, "throughput     %.1f req/s (successful)\n", s.Throughput)
	l := s.Latency
	if l.Samples == 0 {
		b.WriteString("latency        no successful requests\n")
	} else {
		fmt.Fprintf(&b, "latency ms     p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  (min %.1f; exact, %d successful requests)\n",
			l.P50, l.P95, l.P99, l.Max, l.Min, l.Samples)
	}
	io.WriteString(w, b.String())
}

func writeCounts(b *strings.Builder, title string, cs []errorCount) {
	if len(cs) == 0 {
		fmt.Fprintf(b, "%-14s none\n", title)
		return
	}
	for i, c := range cs {
		if i == 0 {
			fmt.Fprintf(b, "%-14s %6d  %s\n", title, c.Count, c.Kind)
		} else {
			fmt.Fprintf(b, "%-14s %6d  %s\n", "", c.Count, c.Kind)
		}
	}
}

// printJSON writes the summary as one line.
func (s summary) printJSON(w io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

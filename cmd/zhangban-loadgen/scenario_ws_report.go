package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wsSummary is the result of a WebSocket scenario: the result block and
// the JSON line. Fields a scenario does not use stay zero and are left out.
type wsSummary struct {
	Scenario   string   `json:"scenario"`
	Label      string   `json:"label,omitempty"`
	Run        string   `json:"run"`
	Targets    []string `json:"targets"`
	Shard      string   `json:"shard"`
	Conns      int      `json:"conns"` // held by this process
	ConnectSec float64  `json:"connect_s,omitempty"`

	Sent        int     `json:"sent,omitempty"`
	SendErrors  int     `json:"send_errors,omitempty"`
	SendRate    float64 `json:"send_rate,omitempty"`    // messages stored per second of the send window
	Behind      int     `json:"sends_behind,omitempty"` // sends that started late because --inflight were outstanding
	SendWindowS float64 `json:"send_window_s,omitempty"`

	deliveryCheck
	DeliverySec float64 `json:"delivery_s,omitempty"` // first send → last delivery
	Throughput  float64 `json:"deliveries_per_s,omitempty"`

	Latency latencySummary `json:"latency"` // send time → OnMessage
	// ArrivalLatency: send time → the message in the client's socket
	// (arrival_stamped.go), for the deliveries whose arrival is known.
	ArrivalLatency *latencySummary `json:"arrival_latency,omitempty"`
	SendLatency    *latencySummary `json:"send_latency,omitempty"`  // send → stored reply
	RoundLatency   *latencySummary `json:"round_latency,omitempty"` // send → reply and delivery both

	Servers       []serverSample `json:"servers,omitempty"`        // after
	ServersBefore []serverSample `json:"servers_before,omitempty"` // before connecting
	RSSPerConn    float64        `json:"server_rss_per_conn_bytes,omitempty"`
	LoadgenRSS    int64          `json:"loadgen_rss_bytes,omitempty"`
	// CPU per delivery from the first send to the report: all the targets
	// together, and this process. Less at the mercy of a busy machine
	// than the rates are, so it compares builds better.
	ServerCPUPerDelivery  float64 `json:"server_cpu_us_per_delivery,omitempty"`
	LoadgenCPUPerDelivery float64 `json:"loadgen_cpu_us_per_delivery,omitempty"`

	KilledAt     string          `json:"killed_at,omitempty"`
	ResyncAllSec float64         `json:"resync_all_s,omitempty"` // kill → every client synced on a new connection
	Resync       *latencySummary `json:"resync,omitempty"`       // kill → each client synced again
	NotResynced  int             `json:"not_resynced,omitempty"`
	LatencyFile  string          `json:"latency_file,omitempty"`
	StoppedEarly string          `json:"stopped_early,omitempty"`
	Disconnects  int64           `json:"disconnects"`
	DiscReasons  []errorCount    `json:"disconnect_reasons,omitempty"`
	// DiscExamples is an error as the client gave it, for each reason.
	DiscExamples  map[string]string `json:"disconnect_examples,omitempty"`
	OtherMessages int64             `json:"other_messages,omitempty"` // untagged deliveries (older runs' messages from sync)
}

func (s *wsSummary) ok() bool {
	return s.Lost == 0 && s.Duplicated == 0 && s.Unexpected == 0 && s.StoppedEarly == "" && s.NotResynced == 0
}

func (s *wsSummary) print(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n== %s", s.Scenario)
	if s.Label != "" {
		fmt.Fprintf(&b, " [%s]", s.Label)
	}
	fmt.Fprintf(&b, ": run %s, shard %s, %d connections to %s\n", s.Run, s.Shard, s.Conns, strings.Join(s.Targets, ","))
	if s.StoppedEarly != "" {
		fmt.Fprintf(&b, "stopped early  %s\n", s.StoppedEarly)
	}
	if s.ConnectSec > 0 {
		fmt.Fprintf(&b, "connected      %d in %.1fs (all synced); %d disconnects during the run\n", s.Conns, s.ConnectSec, s.Disconnects)
	}
	if s.Sent > 0 || s.SendErrors > 0 {
		fmt.Fprintf(&b, "sent           %d stored (%d failed) in %.1fs: %.1f msg/s; %d sends late (in-flight cap)\n",
			s.Sent, s.SendErrors, s.SendWindowS, s.SendRate, s.Behind)
	}
	if s.Expected > 0 {
		fmt.Fprintf(&b, "delivered      %d of %d expected  lost %d  duplicated %d  unexpected %d  (client resets %d, overflows %d)\n",
			s.Delivered, s.Expected, s.Lost, s.Duplicated, s.Unexpected, s.Resets, s.Overflows)
		for _, l := range s.LostList {
			fmt.Fprintf(&b, "  lost         %s\n", l)
		}
		for _, l := range s.DupList {
			fmt.Fprintf(&b, "  duplicated   %s\n", l)
		}
		fmt.Fprintf(&b, "throughput     %.0f deliveries/s (%d in %.2fs, first send to last delivery)\n", s.Throughput, s.Delivered, s.DeliverySec)
	}
	if len(s.DiscReasons) > 0 {
		writeCounts(&b, "disconnects", s.DiscReasons)
	}
	printLat := func(title string, l latencySummary) {
		if l.Samples > 0 {
			fmt.Fprintf(&b, "%-14s p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  (min %.1f; exact, %d samples)\n", title, l.P50, l.P95, l.P99, l.Max, l.Min, l.Samples)
		}
	}
	printLat("latency ms", s.Latency)
	if s.ArrivalLatency != nil {
		printLat("arrival ms", *s.ArrivalLatency)
	}
	if s.SendLatency != nil {
		printLat("send→reply ms", *s.SendLatency)
	}
	if s.RoundLatency != nil {
		printLat("round ms", *s.RoundLatency)
	}
	if s.KilledAt != "" {
		fmt.Fprintf(&b, "storm          killed at %s; all %d clients synced again after %.2fs (%d not)\n", s.KilledAt, s.Conns-s.NotResynced, s.ResyncAllSec, s.NotResynced)
		if s.Resync != nil {
			printLat("resync ms", *s.Resync)
		}
	}
	for i, a := range s.Servers {
		if a.Err != "" {
			fmt.Fprintf(&b, "server %-21s %s\n", a.Target, a.Err)
			continue
		}
		fmt.Fprintf(&b, "server %-21s RSS %.1f MiB, %d connections, %d slow-consumer cuts, %d pongs failed", a.Target, a.RSS/(1<<20), int(a.Conns), int(a.Slow), int(a.Pongs))
		if i < len(s.ServersBefore) && s.ServersBefore[i].Err == "" {
			bf := s.ServersBefore[i]
			if dc := a.Conns - bf.Conns; dc > 0 {
				fmt.Fprintf(&b, "; +%.1f MiB for +%d connections = %.0f B/conn", (a.RSS-bf.RSS)/(1<<20), int(dc), (a.RSS-bf.RSS)/dc)
			}
		}
		b.WriteString("\n")
	}
	if s.RSSPerConn > 0 {
		fmt.Fprintf(&b, "server RSS     %.0f bytes (%.2f KiB) per connection over all targets\n", s.RSSPerConn, s.RSSPerConn/1024)
	}
	if s.LoadgenRSS > 0 {
		fmt.Fprintf(&b, "loadgen RSS    %.1f MiB\n", float64(s.LoadgenRSS)/(1<<20))
	}
	switch {
	case s.ServerCPUPerDelivery > 0:
		fmt.Fprintf(&b, "CPU            %.1f us per delivery on the servers, %.1f us in this process (from the first send)\n", s.ServerCPUPerDelivery, s.LoadgenCPUPerDelivery)
	case s.LoadgenCPUPerDelivery > 0: // a shard, or a target not read: the servers' share is unknown
		fmt.Fprintf(&b, "CPU            %.1f us per delivery in this process (from the first send)\n", s.LoadgenCPUPerDelivery)
	}
	io.WriteString(w, b.String())
}

func (s *wsSummary) printJSON(w io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// rssPerConn is the RSS growth per connection over all targets that
// answered both times.
func rssPerConn(before, after []serverSample) float64 {
	var drss, dconn float64
	for i := range after {
		if i >= len(before) || before[i].Err != "" || after[i].Err != "" {
			continue
		}
		drss += after[i].RSS - before[i].RSS
		dconn += after[i].Conns - before[i].Conns
	}
	if dconn <= 0 {
		return 0
	}
	return drss / dconn
}

// finish prints the summary (and JSON line) and turns a failed check into
// an error.
func (r *wsRun) finish(s *wsSummary, stdout io.Writer) error {
	s.Label, s.Run, s.Targets, s.Shard = r.f.label, r.runTag, r.targets, r.f.shard
	if fl := r.fleet; fl != nil {
		reasons, examples := map[string]int{}, map[string]string{}
		for _, cl := range fl.clients {
			cl.mu.Lock()
			for k, n := range cl.reasons {
				reasons[k] += n
				if _, ok := examples[k]; !ok && cl.examples[k] != "" {
					examples[k] = cl.examples[k]
				}
			}
			cl.mu.Unlock()
		}
		s.DiscReasons = sortedCounts(reasons)
		if len(examples) > 0 {
			s.DiscExamples = examples
		}
	}
	s.LoadgenRSS = selfRSS()
	s.print(stdout)
	if r.f.json {
		if err := s.printJSON(stdout); err != nil {
			return err
		}
	}
	if !s.ok() {
		return fmt.Errorf("%s: lost %d, duplicated %d, unexpected %d, not resynced %d %s", s.Scenario, s.Lost, s.Duplicated, s.Unexpected, s.NotResynced, s.StoppedEarly)
	}
	return nil
}

// runWSMerge combines the JSON lines of the shards of one run (each a file
// given as an argument, holding ws-* --json output) and their latency
// files into one result with exact percentiles.
func runWSMerge(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"usage: zhangban-loadgen ws-merge RESULT.json… (ws-* --json --latency-out output of the shards)"}
	}
	var total wsSummary
	var lats, arrs []time.Duration
	for _, path := range args {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var s *wsSummary
		for line := range strings.SplitSeq(string(data), "\n") {
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "{") {
				s = new(wsSummary)
				if err := json.Unmarshal([]byte(line), s); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
			}
		}
		if s == nil {
			return fmt.Errorf("%s: no JSON result line", path)
		}
		if total.Scenario == "" {
			total.Scenario, total.Label, total.Run, total.Shard = s.Scenario+" (merged)", s.Label, s.Run, fmt.Sprintf("%d shards", len(args))
		}
		total.Targets = append(total.Targets, s.Targets...)
		total.Conns += s.Conns
		total.ConnectSec = max(total.ConnectSec, s.ConnectSec)
		total.Sent += s.Sent
		total.SendErrors += s.SendErrors
		total.Expected += s.Expected
		total.Delivered += s.Delivered
		total.Lost += s.Lost
		total.Duplicated += s.Duplicated
		total.Unexpected += s.Unexpected
		total.Resets += s.Resets
		total.Overflows += s.Overflows
		total.Disconnects += s.Disconnects
		total.LostList = append(total.LostList, s.LostList...)
		total.DupList = append(total.DupList, s.DupList...)
		total.LoadgenRSS += s.LoadgenRSS
		if s.StoppedEarly != "" {
			total.StoppedEarly += s.StoppedEarly + "; "
		}
		if s.LatencyFile != "" {
			if lats, err = readLatencies(s.LatencyFile, lats); err != nil {
				return err
			}
			if arrs, err = readLatencies(s.LatencyFile+arrivalSuffix, arrs); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	slices.Sort(lats)
	slices.Sort(arrs)
	total.ArrivalLatency = latencyStatsOf(arrs)
	total.Targets = slices.Compact(slices.Sorted(slices.Values(total.Targets)))
	total.Latency = latencyStats(lats)
	if len(lats) > 0 {
		// Deliveries are timed from each message's own send; the last one
		// bounds the whole fan-out.
		total.DeliverySec = lats[len(lats)-1].Seconds()
		if total.DeliverySec > 0 {
			total.Throughput = float64(total.Delivered) / total.DeliverySec
		}
	}
	total.LostList = total.LostList[:min(len(total.LostList), listMax)]
	total.DupList = total.DupList[:min(len(total.DupList), listMax)]
	total.print(stdout)
	if err := total.printJSON(stdout); err != nil {
		return err
	}
	if !total.ok() {
		return fmt.Errorf("merged: lost %d, duplicated %d, unexpected %d", total.Lost, total.Duplicated, total.Unexpected)
	}
	return nil
}

// arrivalSuffix names the file of arrival latencies next to a --latency-out
// file.
const arrivalSuffix = ".arrival"

// readLatencies appends the latencies of a file writeLatencies wrote.
func readLatencies(path string, to []time.Duration) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return to, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, err := strconv.ParseInt(sc.Text(), 10, 64); err == nil {
			to = append(to, time.Duration(v))
		}
	}
	return to, sc.Err()
}

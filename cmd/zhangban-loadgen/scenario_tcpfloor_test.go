package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for the command when a scenario
// starts this program again (os.Executable) for its processes.
func TestMain(m *testing.M) {
	if os.Getenv("ZHANGBAN_LOADGEN_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func TestTCPFloor(t *testing.T) {
	t.Setenv("ZHANGBAN_LOADGEN_AS_MAIN", "1")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"tcp-floor", "--conns", "601", "--servers", "2", "--receivers", "3",
		"--bursts", "2", "--pause", "10ms", "--size", "100", "--timeout", "20s", "--json"}, &out, &errOut)
	if err != nil {
		t.Fatalf("tcp-floor: %v\n%s", err, errOut.String())
	}
	var res floorResult
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the JSON line: %v\n%s", err, out.String())
	}
	if res.Expected != 1202 || res.Delivered != 1202 || res.Lost != 0 || len(res.Bursts) != 2 {
		t.Fatalf("expected, delivered, lost, bursts = %d, %d, %d, %d; want 1202, 1202, 0, 2", res.Expected, res.Delivered, res.Lost, len(res.Bursts))
	}
	for i, b := range res.Bursts {
		if b.Samples != 601 || b.Min < 0 || b.Min > b.P50 || b.P50 > b.P99 || b.P99 > b.Max || b.Max > 10_000 {
			t.Errorf("burst %d: %+v", i+1, b)
		}
	}
	if p := res.P99Median; p != (res.Bursts[0].P99+res.Bursts[1].P99)/2 {
		t.Errorf("p99 median %v of bursts %v and %v", p, res.Bursts[0].P99, res.Bursts[1].P99)
	}
}

func TestTCPFloorUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--conns", "100000", "--servers", "2"},
		{"--receivers", "0"},
		{"--role", "both"},
		{"--source-base", "250"},
	} {
		err := run(context.Background(), append([]string{"tcp-floor"}, args...), new(bytes.Buffer), new(bytes.Buffer))
		if ue := (usageError{}); !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

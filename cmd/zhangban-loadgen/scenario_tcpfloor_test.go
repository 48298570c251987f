package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
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
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("raw=%v", raw), func(t *testing.T) {
			if raw && runtime.GOOS != "linux" {
				t.Skip("--raw reads with epoll")
			}
			testTCPFloor(t, raw)
		})
	}
}

func testTCPFloor(t *testing.T, raw bool) {
	t.Setenv("ZHANGBAN_LOADGEN_AS_MAIN", "1")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"tcp-floor", "--conns", "601", "--servers", "2", "--receivers", "3",
		"--bursts", "2", "--pause", "10ms", "--size", "100", "--timeout", "20s", "--json", "--raw=" + strconv.FormatBool(raw)}, &out, &errOut)
	if err != nil {
		t.Fatalf("tcp-floor: %v\n%s", err, errOut.String())
	}
	var res floorResult
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the JSON line: %v\n%s", err, out.String())
	}
	if res.Raw != raw {
		t.Errorf("the result says raw %v, run with %v", res.Raw, raw)
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
		{"--conns", "5", "--receivers", "6"},
	} {
		err := run(context.Background(), append([]string{"tcp-floor"}, args...), new(bytes.Buffer), new(bytes.Buffer))
		if ue := (usageError{}); !errors.As(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func TestTCPFloorRawErrors(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("--raw reads with epoll")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, c := range []struct{ n, connect, source, want string }{
		{"2", closed, "127.0.0.11", "connection 1 of 2: connect: connection refused"},
		{"2", "localhost:80", "127.0.0.11", "IPv4 address and port"},
		{"2", "[::1]:80", "127.0.0.11", "IPv4 address and port"},
		{"2", closed, "::1", "IPv4 source address"},
		{"0", closed, "127.0.0.11", "not --n 0"},
	} {
		err := run(context.Background(), []string{"tcp-floor", "--role", "receive", "--raw", "--n", c.n,
			"--connect", c.connect, "--source", c.source}, new(bytes.Buffer), new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--n %s --connect %s --source %s: %v, want an error with %q", c.n, c.connect, c.source, err, c.want)
		}
	}
}

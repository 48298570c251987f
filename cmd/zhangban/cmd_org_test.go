package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/zhangban/zhangban/internal/testenv"
)

// runOrg runs the binary to completion with env added to a clean
// environment and returns stdout, stderr and the exit code.
func runOrg(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "ZHANGBAN_LOG_FORMAT=text"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func statsJSON(t *testing.T, env []string) map[string]int64 {
	t.Helper()
	stdout, stderr, code := runOrg(t, env, "org", "stats", "--json")
	if code != 0 {
		t.Fatalf("org stats --json: exit %d\n%s", code, stderr)
	}
	if strings.Count(stdout, "\n") != 1 || !strings.HasPrefix(stdout, `{"province":`) {
		t.Fatalf("org stats --json printed %q, want one JSON object on one line", stdout)
	}
	var m map[string]int64
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("org stats --json: %v in %q", err, stdout)
	}
	return m
}

func TestOrgImportZhejiang(t *testing.T) {
	env := []string{"DATABASE_URL=" + testenv.URL(t)}
	if m := statsJSON(t, env); !reflect.DeepEqual(m, map[string]int64{"province": 0, "city": 0, "county": 0, "township": 0, "village": 0, "grid": 0, "members": 0}) {
		t.Errorf("empty database: %v", m)
	}
	stdout, stderr, code := runOrg(t, env, "org", "import", "--nbs", "../../org/demodata")
	if code != 0 {
		t.Fatalf("org import: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, s := range []string{"reading villages.csv: 25,547 rows", "writing: 27,036 units"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("progress lacks %q:\n%s", s, stderr)
		}
	}
	if !strings.Contains(stdout, "village       25,547") || !strings.Contains(stdout, "total         27,036") {
		t.Errorf("report:\n%s", stdout)
	}
	want := map[string]int64{"province": 1, "city": 11, "county": 90, "township": 1387, "village": 25547, "grid": 0, "members": 0}
	if m := statsJSON(t, env); !reflect.DeepEqual(m, want) {
		t.Errorf("stats %v, want %v", m, want)
	}
	stdout, _, code = runOrg(t, env, "org", "stats")
	if code != 0 || !strings.Contains(stdout, "township        1387") {
		t.Errorf("org stats: exit %d\n%s", code, stdout)
	}
}

func TestOrgImportSmall(t *testing.T) {
	env := []string{"DATABASE_URL=" + testenv.URL(t)}
	// A bad file: exit non-zero, the problem with file:line, nothing written.
	dir := t.TempDir()
	for _, src := range []string{"../../org/testdata/nbs-small", "../../org/testdata/nbs-bad/wrong-columns"} {
		files, _ := filepath.Glob(src + "/*.csv")
		for _, f := range files {
			b, _ := os.ReadFile(f)
			os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
		}
	}
	_, stderr, code := runOrg(t, env, "org", "import", "--nbs", dir)
	if code == 0 || !strings.Contains(stderr, filepath.Join(dir, "villages.csv")+":3: want 6 columns") || !strings.Contains(stderr, "nothing was written") {
		t.Errorf("bad input: exit %d\n%s", code, stderr)
	}
	if m := statsJSON(t, env); m["village"] != 0 {
		t.Errorf("a bad import wrote: %v", m)
	}

	stdout, stderr, code := runOrg(t, env, "org", "import", "--nbs=../../org/testdata/nbs-small",
		"--grids", "../../org/testdata/grids-small.csv", "-members", "../../org/testdata/members-small.csv")
	if code != 0 {
		t.Fatalf("org import: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "positions created           6") {
		t.Errorf("report:\n%s", stdout)
	}
	stdout, stderr, code = runOrg(t, env, "org", "generate-grids", "--per-village", "2")
	if code != 0 || !strings.Contains(stdout, "generated 12 grids") {
		t.Fatalf("generate-grids: exit %d\n%s\n%s", code, stdout, stderr)
	}
	want := map[string]int64{"province": 1, "city": 2, "county": 3, "township": 4, "village": 8, "grid": 15, "members": 5}
	if m := statsJSON(t, env); !reflect.DeepEqual(m, want) {
		t.Errorf("stats %v, want %v", m, want)
	}

	for _, args := range [][]string{
		{"org", "import"},
		{"org", "generate-grids", "--per-village", "0"},
		{"org", "stats", "--bogus"},
		{"org", "frobnicate"},
		{"org", "import", "--members", "../../org/testdata/members-bad.csv"},
	} {
		if _, stderr, code := runOrg(t, env, args...); code == 0 {
			t.Errorf("%v: exit 0\n%s", args, stderr)
		}
	}
}

func TestSplitOrgFlags(t *testing.T) {
	spec := map[string]bool{"nbs": false, "json": true}
	for _, tc := range []struct {
		args      []string
		own       map[string]string
		rest      []string
		wantError bool
	}{
		{[]string{"--nbs", "d", "--data-dir", "x"}, map[string]string{"nbs": "d"}, []string{"--data-dir", "x"}, false},
		{[]string{"-nbs=d", "--data-dir=x", "--json"}, map[string]string{"nbs": "d", "json": "true"}, []string{"--data-dir=x"}, false},
		{[]string{"--json=false", "--log-level", "debug"}, map[string]string{"json": "false"}, []string{"--log-level", "debug"}, false},
		{[]string{"--", "--nbs", "d"}, map[string]string{}, []string{"--", "--nbs", "d"}, false},
		{[]string{"stray"}, map[string]string{}, []string{"stray"}, false},
		{[]string{"--nbs"}, nil, nil, true},
	} {
		own, rest, err := splitOrgFlags(tc.args, spec)
		if (err != nil) != tc.wantError {
			t.Errorf("%v: error %v", tc.args, err)
			continue
		}
		if tc.wantError {
			continue
		}
		if !reflect.DeepEqual(own, tc.own) || !reflect.DeepEqual(rest, tc.rest) {
			t.Errorf("%v: own %v rest %v, want %v %v", tc.args, own, rest, tc.own, tc.rest)
		}
	}
}

package org

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

// checkImportError checks the shape of what a failed read returns.
func checkImportError(t *testing.T, err error) {
	t.Helper()
	var ie *ImportError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *ImportError", err)
	}
	if len(ie.Problems) == 0 || len(ie.Problems) > maxProblems || ie.Total < len(ie.Problems) {
		t.Fatalf("%d problems kept of %d", len(ie.Problems), ie.Total)
	}
	for _, p := range ie.Problems {
		if p.File == "" || p.Line < 0 || p.Message == "" {
			t.Fatalf("problem %+v", p)
		}
	}
	_ = ie.Error()
}

func checkName(t *testing.T, what, s string) {
	t.Helper()
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > 100 || strings.ContainsAny(s, "\x00\r\n\t") || s != strings.TrimSpace(s) {
		t.Fatalf("%s %q passed validation", what, s)
	}
}

// FuzzReadNBS feeds arbitrary bytes as villages.csv beside a small valid
// tree: reading must not panic, and whatever it accepts must be a tree.
func FuzzReadNBS(f *testing.F) {
	base := fstest.MapFS{}
	for _, file := range nbsFiles {
		b, err := os.ReadFile(filepath.Join("testdata/nbs-small", file.name))
		if err != nil {
			f.Fatal(err)
		}
		base[file.name] = &fstest.MapFile{Data: b}
	}
	f.Add(base["villages.csv"].Data)
	seeds, _ := filepath.Glob("testdata/nbs-bad/*/villages.csv")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte("\uFEFFcode,name,streetCode,provinceCode,cityCode,areaCode\r\n330102001051,\"a\"\"b\",330102001,33,3301,330102"))
	f.Add([]byte("code,name,streetCode,provinceCode,cityCode,areaCode\n330102001051,\"multi\nline\",330102001,33,3301,330102\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{}
		for k, v := range base {
			fsys[k] = v
		}
		fsys["villages.csv"] = &fstest.MapFile{Data: data}
		rows, _, err := readNBS(fsys, func(s string) string { return s }, ImportOptions{})
		if err != nil {
			checkImportError(t, err)
			return
		}
		codes := map[string]bool{}
		for i, r := range rows {
			if r.level < Province || r.level > Village || len(r.raw) != nbsCodeLen[r.level] || !csvDigits(r.raw) {
				t.Fatalf("row %d: level %d code %q", i, r.level, r.raw)
			}
			if r.code != "" && (len(r.code) != 12 || !strings.HasPrefix(r.code, r.raw) || codes[r.code]) {
				t.Fatalf("row %d: stored code %q", i, r.code)
			}
			codes[r.code] = true
			checkName(t, "name", r.name)
			if r.level == Province {
				if r.parent != -1 {
					t.Fatalf("province with a parent")
				}
			} else if r.parent < 0 || r.parent >= i || rows[r.parent].level != r.level-1 {
				t.Fatalf("row %d (%s) has parent %d", i, r.raw, r.parent)
			}
		}
	})
}

// FuzzReadMembers feeds arbitrary bytes as a member register: whatever is
// accepted must be valid.
func FuzzReadMembers(f *testing.F) {
	for _, s := range []string{"testdata/members-small.csv", "testdata/members-bad.csv"} {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("张三,13800000001,330102001051001,网格员,是,grid_worker；staff\n张三,13800000001,33,,,\n"))
	f.Add([]byte("a,13800000001,33,\"t\"\"x\",TRUE, admin ;;leader\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := newMemberInput("m.csv")
		readMembers("m.csv", in, bytes.NewReader(data))
		in.finish()
		if err := in.probs.err(); err != nil {
			checkImportError(t, err)
		}
		for _, r := range in.rows {
			p := in.people[r.person]
			checkName(t, "name", p.name)
			if len(p.mobile) != 11 || p.mobile[0] != '1' || !csvDigits(p.mobile) {
				t.Fatalf("mobile %q accepted", p.mobile)
			}
			if c := in.units[r.unit]; len(c) != 12 && len(c) != 15 || !csvDigits(c) {
				t.Fatalf("unit code %q accepted", c)
			}
			if r.roles >= 1<<len(memberRoles) || utf8.RuneCountInString(r.title) > 100 || !utf8.ValidString(r.title) {
				t.Fatalf("row %+v accepted", r)
			}
		}
		seen := map[[2]int32]bool{}
		for _, r := range in.rows {
			if seen[[2]int32{r.person, r.unit}] {
				t.Fatalf("person %d placed twice in unit %d", r.person, r.unit)
			}
			seen[[2]int32{r.person, r.unit}] = true
		}
	})
}

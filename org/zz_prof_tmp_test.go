package org

import (
	"os"
	"testing"
)

func BenchmarkTmpReadChina(b *testing.B) {
	dir := os.Getenv("CHINA_DIR")
	for i := 0; i < b.N; i++ {
		if _, _, err := readNBS(os.DirFS(dir), func(s string) string { return s }, ImportOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTmpReadMembers(b *testing.B) {
	for i := 0; i < b.N; i++ {
		f, _ := os.Open("/tmp/bench/members.csv")
		in := newMemberInput("m")
		st, _ := f.Stat()
		in.grow(int(st.Size() / 50))
		readMembers("m", in, f)
		f.Close()
		fillPinyin(in.people)
	}
}

package main

import (
	"testing"
	"time"
)

func TestTagRoundTrip(t *testing.T) {
	at := time.Unix(0, 1_700_000_000_123_456_789)
	sent, n, ok := parseTag(tagText("ab12", at, 42), "ab12")
	if !ok || !sent.Equal(at) || n != 42 {
		t.Fatalf("parseTag = %v %d %v", sent, n, ok)
	}
	for _, text := range []string{"hello", "lg other 1 2", "lg ab12 x 2", "lg ab12 1"} {
		if _, _, ok := parseTag(text, "ab12"); ok {
			t.Errorf("parseTag(%q) accepted", text)
		}
	}
}

func TestDeliveryCheckIsExact(t *testing.T) {
	a := &wsClient{acct: 1, seen: map[int64]map[int64]int32{7: {1: 1, 2: 2, 9: 1}}}
	b := &wsClient{acct: 2, seen: map[int64]map[int64]int32{7: {1: 1, 2: 1, 3: 1}}}
	fl := &fleet{clients: []*wsClient{a, b}}
	d := fl.check(expectation{members: map[int64][]*wsClient{7: {a, b}}, seqs: map[int64][]int64{7: {1, 2, 3}}})
	if d.Expected != 6 || d.Delivered != 5 || d.Lost != 1 || d.Duplicated != 1 || d.Unexpected != 1 {
		t.Fatalf("check = %+v", d)
	}
	if len(d.LostList) != 1 || d.LostList[0] != "account 1 conv 7 seq 3" {
		t.Errorf("lost list %v", d.LostList)
	}
	d = fl.check(expectation{members: map[int64][]*wsClient{7: {a, b}}, perConv: 4})
	if d.Expected != 8 || d.Lost != 2 || d.Delivered != 6 {
		t.Fatalf("count check = %+v", d)
	}
}

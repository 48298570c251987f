package messaging

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSend measures a send from the caller to its commit, with 64
// senders each in its own direct conversation sending one message at a
// time, so the committers batch what arrives together, as under load.
//
//	go test ./messaging -run '^$' -bench Send -count 5
func BenchmarkSend(b *testing.B) {
	const pairs = 64
	f := newFixture(b, 2*pairs)
	ctx := context.Background()
	convs := make([]int64, pairs)
	for i := range pairs {
		c, err := f.svc.Direct(ctx, f.actor(2*i), f.ids[2*i+1])
		if err != nil {
			b.Fatal(err)
		}
		convs[i] = c.ID
	}
	var next, n atomic.Int64
	b.SetParallelism(pairs / 2) // GOMAXPROCS × pairs/2 senders: one per conversation on 2 cores, sharing them on more
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)-1) % pairs
		for pb.Next() {
			k := n.Add(1)
			if _, err := f.svc.Send(ctx, f.actor(2*i), SendRequest{Conv: convs[i], ClientID: fmt.Sprintf("b%d-%d", b.N, k), Text: "你好"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

var appendJSONMessages = []Message{
	{Conv: 12, Seq: 40, Sender: 7, ClientID: "c-1", Kind: "text", Text: "下午三点开会", At: time.Date(2026, 11, 24, 22, 15, 33, 123456000, time.UTC)},
	{Conv: -1, Seq: 0, Sender: 9_007_199_254_740_993, ClientID: `"q" <&> \ ` + "\x00\t\u2028", Kind: "", Text: "a\nb\xff", Mentions: []int64{}, At: time.Date(1, 1, 1, 0, 0, 0, 0, time.FixedZone("", 5*3600+1800))},
	{Conv: 3, Seq: 2, Mentions: []int64{5, -6}, At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CST", 8*3600))},
	{Conv: 3, Seq: 2, Payload: json.RawMessage(`{ "a" : "<b>" }`), At: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
	{Conv: 3, Seq: 2, At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	{},
}

// appendJSON writes what json.Marshal writes, and what json.Marshal
// refuses goes through it.
func TestMessageAppendJSON(t *testing.T) {
	for _, m := range appendJSONMessages {
		want, wantErr := json.Marshal(m)
		got, gotErr := func() (b []byte, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("%v", r)
				}
			}()
			return m.appendJSON(nil), nil
		}()
		if (wantErr == nil) != (gotErr == nil) || string(got) != string(want) {
			t.Errorf("%+v:\n got %s (%v)\nwant %s (%v)", m, got, gotErr, want, wantErr)
		}
	}
}

func FuzzMessageAppendJSON(f *testing.F) {
	for _, m := range appendJSONMessages[:3] {
		f.Add(m.Conv, m.Seq, m.ClientID, m.Kind, m.Text, m.At.UnixNano(), int64(len(m.Mentions)))
	}
	f.Fuzz(func(t *testing.T, conv, seq int64, client, kind, text string, at, mentions int64) {
		m := Message{Conv: conv, Seq: seq, Sender: seq ^ conv, ClientID: client, Kind: kind, Text: text,
			At: time.Unix(0, at).In(time.FixedZone("", int(at%50_000)))}
		if mentions%3 == 1 {
			m.Mentions = []int64{}
		} else if mentions%3 == 2 {
			m.Mentions = []int64{conv, seq, mentions}
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Skip(err)
		}
		if got := m.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkMessageJSON(b *testing.B) {
	m := appendJSONMessages[0]
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.appendJSON(nil)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mustJSON(&m)
		}
	})
}

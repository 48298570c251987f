package messaging

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
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

//go:build linux

package main

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// TestFloorReceiveRaw: the raw receiver counts a message once all its
// bytes are in, however the writes split or join them, and a burst only
// on the connection it came on.
func TestFloorReceiveRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for range 3 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var mu sync.Mutex
	got := map[[2]int]int{} // (burst, connection) → arrivals
	arrived := make(chan struct{}, 16)
	arrive := func(b, i int, at int64) {
		mu.Lock()
		got[[2]int{b, i}]++
		mu.Unlock()
		arrived <- struct{}{}
	}
	f := floorFlags{n: 3, size: 10, bursts: 2, connect: ln.Addr().String(), source: "127.0.0.1"}
	stop, err := floorReceiveRaw(context.Background(), f, arrive)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var conns []net.Conn
	for range 3 {
		c := <-accepted
		defer c.Close()
		conns = append(conns, c)
	}
	// The receiver numbers connections in the order it made them, which
	// is the order they were accepted here.
	write := func(c net.Conn, n int) {
		if _, err := c.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // a read of its own
	}
	write(conns[0], 4)  // half a message: nothing yet
	write(conns[0], 6)  // burst 1 on connection 0
	write(conns[1], 20) // bursts 1 and 2 on connection 1, in one read
	write(conns[2], 15) // burst 1 on connection 2 and half of burst 2
	for range 4 {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatalf("arrivals so far: %v", got)
		}
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong fifth
	mu.Lock()
	defer mu.Unlock()
	want := map[[2]int]int{{0, 0}: 1, {0, 1}: 1, {1, 1}: 1, {0, 2}: 1}
	if len(got) != len(want) {
		t.Fatalf("arrivals %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("burst %d on connection %d: %d arrivals, want %d", k[0], k[1], got[k], n)
		}
	}
}

package gateway

import (
	"testing"
	"time"
)

// TestSeamDropsWhatTheFirstSyncGave: while a connection keeps the first
// sync reply's seam, a live message that reply already contained (its
// event was still on its way through the bus) is dropped; later ones,
// other conversations' and, once the seam is dropped, any are delivered.
func TestSeamDropsWhatTheFirstSyncGave(t *testing.T) {
	c := &Conn{seam: map[int64]int64{5: 7}}
	for _, tc := range []struct {
		conv, seq int64
		want      bool
	}{
		{5, 6, false}, {5, 7, false}, {5, 8, true}, {6, 1, true}, {5, 0, true},
	} {
		n := len(c.queue)
		c.deliver(&outFrame{conv: tc.conv, seq: tc.seq})
		if got := len(c.queue) > n; got != tc.want {
			t.Errorf("conv %d seq %d: queued %v, want %v", tc.conv, tc.seq, got, tc.want)
		}
	}
	c.seam = nil // as the sweep leaves it after the window
	c.deliver(&outFrame{conv: 5, seq: 7})
	if len(c.queue) != 4 {
		t.Errorf("after the window: %d queued, want the message queued", len(c.queue))
	}
}

// TestSeamIsNotKeptByAnIdleConnection: the maintenance sweep drops the
// seam of a connection that receives nothing once its window is over.
func TestSeamIsNotKeptByAnIdleConnection(t *testing.T) {
	g := &Gateway{heartbeat: time.Hour, silence: time.Hour}
	c := &Conn{g: g, seam: map[int64]int64{5: 7}, seamUntil: time.Now().Add(time.Second).UnixNano()}
	c.lastRead.Store(time.Now().UnixNano())
	c.lastPing.Store(time.Now().UnixNano())
	c.tick(time.Now())
	if c.seam == nil {
		t.Fatal("the sweep dropped the seam within its window")
	}
	c.tick(time.Now().Add(2 * time.Second))
	if c.seam != nil {
		t.Fatal("the sweep kept the seam after its window")
	}
}

// TestPingDue: who the sweep pings. A connection just written to waits a
// fifth of a heartbeat more, never longer; one with traffic both ways is
// not pinged at all.
func TestPingDue(t *testing.T) {
	const hb = 25 * time.Second
	now := time.Now()
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	never := time.Duration(now.UnixNano()) // the zero time: never happened
	for _, tc := range []struct {
		name                string
		read, write, pinged time.Duration // how long ago
		writing             bool
		want                bool
	}{
		{"new, never pinged", 2 * time.Second, never, never, false, true},
		{"idle, pinged a heartbeat ago", 40 * time.Second, 40 * time.Second, hb, false, true},
		{"idle, pinged recently", 40 * time.Second, 40 * time.Second, 10 * time.Second, false, false},
		{"traffic both ways", time.Second, time.Second, 40 * time.Second, false, false},
		{"frames on their way", 40 * time.Second, 40 * time.Second, 40 * time.Second, true, false},
		{"written to just now", 40 * time.Second, time.Second, 26 * time.Second, false, false},
		{"written to just now, ping overdue", 40 * time.Second, time.Second, 30 * time.Second, false, true},
		{"written to a fifth of a heartbeat ago", 40 * time.Second, 5 * time.Second, 26 * time.Second, false, true},
	} {
		c := &Conn{g: &Gateway{heartbeat: hb}, writing: tc.writing}
		c.lastRead.Store(ago(tc.read))
		c.lastWrite.Store(ago(tc.write))
		c.lastPing.Store(ago(tc.pinged))
		if got := c.pingDue(now.UnixNano()); got != tc.want {
			t.Errorf("%s: pingDue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

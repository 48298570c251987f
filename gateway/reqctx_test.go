package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A connection's requests end when it does, and an idle connection keeps
// no request state.
func TestRequestContexts(t *testing.T) {
	c := &Conn{}
	a, doneA := c.reqContext(time.Minute)
	b, doneB := c.reqContext(time.Minute)
	doneA()
	if a.Err() == nil {
		t.Fatal("a finished request's context is still live")
	}
	if b.Err() != nil || c.nreqs != 1 {
		t.Fatalf("the other request: err %v, %d in flight; want live, 1", b.Err(), c.nreqs)
	}
	d, doneD := c.reqContext(time.Minute) // reuses a's slot
	doneB()
	doneD()
	if d.Err() == nil || c.reqs != nil || c.nreqs != 0 {
		t.Fatalf("after every request ended: reqs %v, %d in flight; want nil, 0", c.reqs, c.nreqs)
	}

	e, doneE := c.reqContext(time.Minute)
	f, doneF := c.reqContext(time.Minute)
	doneF()
	c.endRequests()
	if !errors.Is(e.Err(), context.Canceled) {
		t.Fatalf("a request in flight when the connection ended: err %v, want canceled", e.Err())
	}
	doneE() // after endRequests: must not panic or count
	if !errors.Is(f.Err(), context.Canceled) {
		t.Fatalf("f: %v", f.Err())
	}
	g, doneG := c.reqContext(time.Minute)
	defer doneG()
	if !errors.Is(g.Err(), context.Canceled) {
		t.Fatalf("a request after the connection ended: err %v, want canceled", g.Err())
	}

	h, doneH := (&Conn{}).reqContext(time.Millisecond)
	defer doneH()
	<-h.Done()
	if !errors.Is(h.Err(), context.DeadlineExceeded) {
		t.Fatalf("a request past its time: err %v, want deadline exceeded", h.Err())
	}
}

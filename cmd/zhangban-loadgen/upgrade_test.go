package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func upgradeClient() *http.Client {
	var d net.Dialer
	return &http.Client{Transport: &upgradeTransport{dial: d.DialContext}}
}

// TestUpgradeTransport: an upgrade through upgradeTransport gives a working
// WebSocket, including the frame the server writes right after its 101; a
// refused upgrade gives its status and body; a server that never answers
// is left when the context ends.
func TestUpgradeTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer ok" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"unauthenticated"}}`)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"test.v1"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		c.Write(ctx, websocket.MessageText, []byte("hello")) // at once: may share a read with the 101
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			c.Write(ctx, typ, append([]byte("echo "), msg...))
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: upgradeClient(),
		Subprotocols: []string{"test.v1"}, HTTPHeader: http.Header{"Authorization": {"Bearer ok"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "test.v1" {
		t.Fatalf("status %d, subprotocol %q", resp.StatusCode, c.Subprotocol())
	}
	for _, want := range []string{"hello", "echo one", "echo two"} {
		if want != "hello" {
			if err := c.Write(ctx, websocket.MessageText, []byte(strings.TrimPrefix(want, "echo "))); err != nil {
				t.Fatal(err)
			}
		}
		_, msg, err := c.Read(ctx)
		if err != nil || string(msg) != want {
			t.Fatalf("read %q, %v; want %q", msg, err, want)
		}
	}

	_, resp, err = websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: upgradeClient()})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("refused upgrade: %v, %+v", err, resp)
	}
	if body, _ := io.ReadAll(resp.Body); !strings.Contains(string(body), "unauthenticated") {
		t.Errorf("refused upgrade's body %q", body)
	}

	// A listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	start := time.Now()
	if _, _, err := websocket.Dial(sctx, "ws://"+ln.Addr().String(), &websocket.DialOptions{HTTPClient: upgradeClient()}); err == nil {
		t.Fatal("an upgrade without an answer succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("an unanswered upgrade took %v to give up; its context ended after 200 ms", d)
	}
}

// TestArrivalTimes: a connection dialled with stampArrivals reads through
// recv, which keeps the kernel's receive time of what it read: after the
// server wrote it and before the client read it. A server that goes away
// ends the reads.
func TestArrivalTimes(t *testing.T) {
	if !arrivalsStamped {
		t.Skip("no receive timestamps on this platform")
	}
	wrote := make(chan time.Time, 1)
	hangUp := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		time.Sleep(100 * time.Millisecond) // not with the 101: read from the socket
		wrote <- time.Now()
		c.Write(r.Context(), websocket.MessageText, []byte("stamped"))
		<-hangUp // then CloseNow: the socket closes without a close frame
	}))
	defer srv.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = stampArrivals(fd) })
		return serr
	}}
	hc := &http.Client{Transport: &upgradeTransport{dial: d.DialContext}}
	plan := &dialPlan{}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), wsDialKey{}, plan), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	u := plan.conn.Load()
	if u == nil || u.rc == nil {
		t.Fatal("the dial plan holds no stamped connection")
	}
	_, msg, err := c.Read(ctx)
	read := time.Now()
	if err != nil || string(msg) != "stamped" {
		t.Fatalf("read %q, %v", msg, err)
	}
	at := time.Unix(0, u.arrived.Load())
	if w := <-wrote; at.Before(w) || at.After(read) {
		t.Fatalf("arrival %v, not between the write %v and the read %v", at, w, read)
	}
	close(hangUp)
	if _, _, err := c.Read(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("a read after the server went away: %v (context: %v)", err, ctx.Err())
	}
}

package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
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

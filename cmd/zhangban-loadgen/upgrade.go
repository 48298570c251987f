package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// upgradeTransport sends a WebSocket upgrade request on a connection of
// its own and reads the answer, all in the caller's goroutine. The client
// package dials through an http.Client; with net/http's Transport every
// dial also passes through a dialling goroutine and the connection's read
// and write goroutines, each a wait in the scheduler's queue when 19,000
// clients of a killed node dial at once in one process. (Session 5 found
// the gateways holding thousands of accepted connections whose upgrade
// request had not been written yet. With this transport a session-6 probe
// still found 7,000 at +6.8 s: the load generator's CPU, not these
// hand-offs alone, is what they wait for; its effect on a storm was not
// measured on its own, docs/benchmarks.md.) Only for upgrades: no
// keep-alive, no proxy, no TLS, no redirects.
type upgradeTransport struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (t *upgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return nil, errors.New("loadgen: upgrades go over plain HTTP only (ws://)")
	}
	ctx := req.Context()
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	conn, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A cancelled request unblocks the handshake's reads and writes.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	resp, br, err := handshake(conn, req)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		u := &upgraded{Conn: conn, br: br, rc: rawOf(conn)}
		if p, _ := ctx.Value(wsDialKey{}).(*dialPlan); p != nil {
			p.conn.Store(u)
		}
		resp.Body = u
	} else {
		resp.Body = &closeBoth{ReadCloser: resp.Body, conn: conn}
	}
	return resp, nil
}

func handshake(conn net.Conn, req *http.Request) (*http.Response, *bufio.Reader, error) {
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 1024)
	resp, err := http.ReadResponse(br, req)
	return resp, br, err
}

// upgraded is the connection after a 101: reads first drain what the
// response's reader holds beyond the response (the server's first frames
// may have come with it), then read the socket, keeping the kernel's
// receive time of what they read (arrival_stamped.go).
type upgraded struct {
	net.Conn
	br      *bufio.Reader   // nil once drained
	rc      syscall.RawConn // nil: no receive times
	arrived atomic.Int64    // unix nanoseconds: when the data last read reached the socket; 0 unknown
	oob     [64]byte        // control messages of a read (recv only)
	rd      rawRead         // the read recv is making
	readFn  func(fd uintptr) bool
}

// rawRead is recv's read in progress: what recvmsg is given and got.
type rawRead struct {
	p       []byte
	n, oobn int
	err     error
}

func (u *upgraded) Read(p []byte) (int, error) {
	if u.br != nil {
		if u.br.Buffered() > 0 {
			return u.br.Read(p)
		}
		u.br = nil
	}
	if u.rc == nil {
		return u.Conn.Read(p)
	}
	return u.recv(p)
}

// closeBoth is the body of a refused upgrade: closing it closes the
// connection.
type closeBoth struct {
	io.ReadCloser
	conn net.Conn
}

func (c *closeBoth) Close() error {
	c.ReadCloser.Close()
	return c.conn.Close()
}

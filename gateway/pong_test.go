package gateway

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// stuckConn is a client socket that takes what is written until stuck is
// set; then a write waits until release is closed, as on a client that
// stopped reading once the socket buffers are full.
type stuckConn struct {
	net.Conn // nil: anything else gorilla calls would panic
	stuck    atomic.Bool
	entered  chan struct{} // a write is waiting
	release  chan struct{}
}

func (c *stuckConn) Write(p []byte) (int, error) {
	if c.stuck.Load() {
		c.entered <- struct{}{}
		<-c.release
	}
	return len(p), nil
}

func (c *stuckConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *stuckConn) Close() error                     { return nil }
func (c *stuckConn) SetDeadline(time.Time) error      { return nil }
func (c *stuckConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stuckConn) SetWriteDeadline(time.Time) error { return nil }

// A pong the gateway cannot write within a second, here because a write
// stuck on a client that does not read holds the connection, is counted in
// zhangban_gateway_pongs_failed_total; a pong written is not.
func TestPongNotWrittenIsCounted(t *testing.T) {
	sc := &stuckConn{entered: make(chan struct{}), release: make(chan struct{})}
	ws, fc := upgradeOver(t, sc)
	c := &Conn{g: &Gateway{metrics: newMetrics(prometheus.NewRegistry())}, ws: ws, fc: fc}
	failed := c.g.metrics.pongsFailed

	c.control(opPing, []byte("a"))
	if n := counterValue(failed); n != 0 {
		t.Fatalf("pongs failed after a pong that could be written: %v, want 0", n)
	}

	sc.stuck.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- ws.WriteMessage(gorilla.TextMessage, []byte(`{"type":"x"}`)) }()
	<-sc.entered // the writer holds the connection
	start := time.Now()
	c.control(opPing, []byte("b"))
	if took := time.Since(start); took < 900*time.Millisecond || took > 5*time.Second {
		t.Errorf("the pong gave up after %v, want about 1 s", took)
	}
	if n := counterValue(failed); n != 1 {
		t.Fatalf("pongs failed: %v, want 1", n)
	}
	sc.stuck.Store(false)
	close(sc.release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}

	c.control(opPing, []byte("c"))
	if n := counterValue(failed); n != 1 {
		t.Fatalf("pongs failed after the client read again: %v, want 1", n)
	}
}

package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Limits of the embedded server. They bound what one slow subscriber or one
// oversized event can cost the process.
const (
	embeddedMaxPayload = 1 << 20  // bytes per event
	embeddedMaxPending = 64 << 20 // bytes buffered per connection before it is a slow consumer
)

// Options configure Open.
type Options struct {
	URL    string // external NATS server or cluster; empty runs one in-process
	Name   string // connection name shown by the server's monitoring
	Logger *slog.Logger
}

// Bus is a node's NATS connections and, when embedded, the server behind
// them.
type Bus struct {
	conn   *nats.Conn
	events *nats.Conn     // NoEcho: see Events
	server *server.Server // nil when external
	log    *slog.Logger
	once   sync.Once
}

// Open connects to opts.URL, or starts an in-process server when it is empty.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{log: log}
	copts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("bus reconnected", "server", c.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("bus error", "subject", subj, "err", err)
		}),
	}
	url := opts.URL
	if url == "" {
		srv, err := server.NewServer(&server.Options{
			ServerName: "zhangban-embedded",
			DontListen: true,
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: embeddedMaxPayload,
			MaxPending: embeddedMaxPending,
			JetStream:  false,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		srv.Start()
		wait := 10 * time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = time.Until(d)
		}
		if !srv.ReadyForConnections(wait) {
			srv.Shutdown()
			return nil, errors.New("embedded NATS did not become ready")
		}
		b.server = srv
		copts = append(copts, nats.InProcessServer(srv))
	}
	for {
		conn, err := nats.Connect(url, copts...)
		if err == nil {
			b.conn = conn
			break
		}
		select {
		case <-ctx.Done():
			b.Close()
			return nil, fmt.Errorf("NATS at %s not reachable: %w (check NATS_URL, or unset it to run NATS in-process)", url, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	events, err := nats.Connect(url, append(copts, nats.Name(opts.Name+" events"), nats.NoEcho())...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("NATS at %s: connecting for events: %w", url, err)
	}
	b.events = events
	return b, nil
}

// Conn is the connection for publishing and subscribing.
func (b *Bus) Conn() *nats.Conn { return b.conn }

// Events is the connection for the events of package event: the node
// publishes its events and subscribes to everyone's on it. It does not
// echo (nats.NoEcho): the server never sends the node its own events
// back, which the node hands over in process instead (event.Bus.SetLocal).
func (b *Bus) Events() *nats.Conn { return b.events }

// Embedded reports whether the server runs in this process.
func (b *Bus) Embedded() bool { return b.server != nil }

// Ping makes a round trip to the server.
func (b *Bus) Ping(ctx context.Context) error {
	if b.conn == nil || !b.conn.IsConnected() || b.events == nil || !b.events.IsConnected() {
		return errors.New("bus not connected")
	}
	if _, ok := ctx.Deadline(); !ok { // nats insists on one
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := b.events.FlushWithContext(ctx); err != nil {
		return err
	}
	return b.conn.FlushWithContext(ctx)
}

// Close drains the connection and stops the embedded server. Idempotent.
func (b *Bus) Close() {
	b.once.Do(func() {
		for _, c := range []*nats.Conn{b.events, b.conn} {
			if c == nil {
				continue
			}
			if err := c.Drain(); err != nil {
				c.Close()
			}
			// Drain is asynchronous; wait for it, but not for ever.
			for deadline := time.Now().Add(5 * time.Second); !c.IsClosed() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			c.Close()
		}
		if b.server != nil {
			b.server.Shutdown()
			b.server.WaitForShutdown()
		}
	})
}

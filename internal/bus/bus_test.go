package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestEmbeddedRoundTrip(t *testing.T) {
	b, err := Open(context.Background(), Options{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.Embedded() {
		t.Fatal("not embedded")
	}
	got := make(chan string, 1)
	sub, err := b.Conn().Subscribe("x", func(m *nats.Msg) { got <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := b.Conn().Publish("x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatal(s)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no message")
	}
	if err := b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Close() // idempotent
	if err := b.Ping(context.Background()); err == nil {
		t.Fatal("ping after close")
	}
}

func TestExternalServer(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	b, err := Open(context.Background(), Options{URL: srv.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Embedded() {
		t.Fatal("embedded with a URL")
	}
	if err := b.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, Options{URL: "nats://127.0.0.1:1"}); err == nil {
		t.Fatal("connected to nothing")
	}
}

package event

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/bus"
)

// SetLocal hands each published event over in process, on a connection
// without echo only, and stops when set to nil; the event goes on the bus
// all the same.
func TestSetLocal(t *testing.T) {
	b, err := bus.Open(context.Background(), bus.Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	onBus := make(chan *nats.Msg, 16)
	if _, err := b.Conn().ChanSubscribe(Subject, onBus); err != nil { // another node
		t.Fatal(err)
	}
	own := make(chan *nats.Msg, 16)
	if _, err := b.Events().ChanSubscribe(Subject, own); err != nil { // this node
		t.Fatal(err)
	}
	if err := b.Events().Flush(); err != nil {
		t.Fatal(err)
	}
	if NewBus(b.Conn(), log).SetLocal(func(*Event) { t.Error("handed over on a connection with echo") }) {
		t.Error("SetLocal took effect on a connection with echo")
	}

	p := NewBus(b.Events(), log)
	var got []Event
	if !p.SetLocal(func(e *Event) { got = append(got, *e) }) {
		t.Fatal("SetLocal refused the connection without echo")
	}
	e := Event{Type: TypeMessage, Conv: 3, Seq: 9, Data: json.RawMessage(`{"seq":9}`)}
	p.Publish(context.Background(), e)
	if len(got) != 1 || got[0].Seq != 9 || string(got[0].Data) != `{"seq":9}` {
		t.Fatalf("handed over %+v", got)
	}
	select {
	case m := <-onBus:
		if d, err := Decode(m.Data); err != nil || d.Seq != 9 {
			t.Fatalf("on the bus: %s %v", m.Data, err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the event did not go on the bus")
	}
	p.SetLocal(nil)
	p.Publish(context.Background(), e)
	if len(got) != 1 {
		t.Fatalf("handed over after SetLocal(nil): %+v", got)
	}
	<-onBus
	if err := b.Events().Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-own:
		t.Fatalf("the server echoed the node's own event: %s", m.Data)
	case <-time.After(100 * time.Millisecond):
	}
}

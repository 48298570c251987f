package event

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/jsonlit"
)

// Subject is the bus subject every event travels on; every gateway node
// subscribes to it and keeps what concerns its own connections.
const Subject = "zhangban.events"

// Types of events, as clients see them in a frame's "type".
const (
	TypeMessage      = "message"
	TypeRead         = "read"
	TypeConversation = "conversation"
	TypePresence     = "presence"
)

// Event is one thing that happened, addressed to a conversation's members
// or to a list of accounts (or both).
type Event struct {
	Type string `json:"type"`
	// Conv addresses every member of the conversation (after Join and
	// Leave are applied); zero when only To is addressed.
	Conv int64 `json:"conv,omitempty"`
	// Seq is the message sequence for message events; the gateway uses it to
	// drop what a syncing client has already received.
	Seq int64 `json:"seq,omitempty"`
	// To addresses these accounts as well (all their devices).
	To []int64 `json:"to,omitempty"`
	// Join and Leave change who is in Conv; the gateway applies them before
	// delivering, so a removed member gets the removal and nothing after it.
	Join  []int64 `json:"join,omitempty"`
	Leave []int64 `json:"leave,omitempty"`
	// Data is the frame's data object exactly as clients receive it.
	Data json.RawMessage `json:"data"`
}

// validate reports whether an event received from the bus can be routed.
// That Data is JSON json.Unmarshal checked when it filled it (Decode).
func (e *Event) validate() error {
	switch {
	case e.Type == "":
		return errors.New("event without a type")
	case e.Conv == 0 && len(e.To) == 0:
		return errors.New("event without recipients")
	case len(e.Data) == 0:
		return errors.New("event data is not JSON")
	}
	return nil
}

// AppendJSON appends e as json.Marshal encodes it, without validating
// Data again, which its publisher encoded: a node publishes an event for
// every message, and re-validating what it had just encoded was a
// noticeable part of a busy node's CPU (docs/benchmarks.md, session 13).
// A receiver checks it (Decode).
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = AppendJSONString(b, e.Type)
	if e.Conv != 0 {
		b = append(b, `,"conv":`...)
		b = strconv.AppendInt(b, e.Conv, 10)
	}
	if e.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, e.Seq, 10)
	}
	b = appendIDs(b, `,"to":`, e.To)
	b = appendIDs(b, `,"join":`, e.Join)
	b = appendIDs(b, `,"leave":`, e.Leave)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, `null`...)
	}
	b = append(b, e.Data...)
	return append(b, '}')
}

func appendIDs(b []byte, key string, ids []int64) []byte {
	if len(ids) == 0 {
		return b
	}
	b = append(b, key...)
	for i, id := range ids {
		if i == 0 {
			b = append(b, '[')
		} else {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return append(b, ']')
}

// AppendJSONString appends s as json.Marshal writes it (with HTML
// escaping): messages are mostly Chinese text, for which json.Marshal
// took twice as long, with an allocation.
func AppendJSONString(b []byte, s string) []byte { return jsonlit.AppendString(b, s, true) }

// Publisher sends events after their transaction committed. Publishing is
// best effort: an error is logged by the implementation, never returned to
// the user whose write already succeeded.
type Publisher interface {
	Publish(ctx context.Context, e Event)
}

// Bus publishes events on NATS, and hands them to this node's own
// subscriber in process when there is one (SetLocal).
type Bus struct {
	nc    *nats.Conn
	log   *slog.Logger
	local atomic.Pointer[func(*Event)]
}

// NewBus returns a Publisher over nc.
func NewBus(nc *nats.Conn, log *slog.Logger) *Bus { return &Bus{nc: nc, log: log} }

// Conn is the connection the events are published on. A subscriber that
// takes this node's events from SetLocal subscribes on it: a connection
// without echo never receives its own publications.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// SetLocal makes Publish hand every event to fn as well, on the
// publisher's goroutine once the event is on its way to the other nodes;
// nil stops it. It works only over a connection without echo
// (nats.NoEcho, bus.Bus.Events), whose subscriptions never receive what
// it published, and reports whether it took effect: over one with echo
// the node's subscription gets its own events from the server, and fn
// would make them twice.
//
// For a node's own events this skips the bus's round trip: the server's
// work, the node's reading and decoding, and on a machine whose cores are
// busy the wait for nats-server to be scheduled (docs/benchmarks.md,
// session 19). fn must be quick and must not block, and must not publish.
func (b *Bus) SetLocal(fn func(*Event)) bool {
	if !b.nc.Opts.NoEcho {
		return false
	}
	if fn == nil {
		b.local.Store(nil)
	} else {
		b.local.Store(&fn)
	}
	return true
}

// Publish encodes e and publishes it on Subject, then hands it to the
// local subscriber, if any: even when publishing failed, the recipients
// on this node get it live.
func (b *Bus) Publish(ctx context.Context, e Event) {
	if err := b.nc.Publish(Subject, e.AppendJSON(make([]byte, 0, 96+len(e.Data)))); err != nil {
		b.log.WarnContext(ctx, "publishing an event failed; clients will get it when they sync", "type", e.Type, "conv", e.Conv, "err", err)
	}
	if fn := b.local.Load(); fn != nil {
		local := e // on the heap only here: &e would put every event there
		(*fn)(&local)
	}
}

// Decode parses an event received from the bus. Data may share buf's
// bytes, so buf must not change while the event is in use.
//
// Events as AppendJSON writes them, which is how every node publishes,
// are parsed by hand (decodeCanonical); json.Unmarshal's reflection and
// its passes over the data were a sixth of a busy node's JSON decoding
// (docs/benchmarks.md, session 16). Anything else is decoded by
// json.Unmarshal, and both give the same event (FuzzDecode).
func Decode(buf []byte) (Event, error) {
	if e, ok := decodeCanonical(buf); ok {
		return e, e.validate()
	}
	return decodeReflect(buf)
}

func decodeReflect(buf []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(buf, &e); err != nil {
		return Event{}, fmt.Errorf("decoding an event: %w", err)
	}
	return e, e.validate()
}

// decodeCanonical parses buf when it has exactly AppendJSON's layout:
// the keys in its order, no space, a type of printable ASCII without
// escapes, decimal integers, non-empty id lists and data that is one JSON
// value. ok is false for anything else, which json.Unmarshal
// then decides.
func decodeCanonical(buf []byte) (e Event, ok bool) {
	rest, ok := bytes.CutPrefix(buf, []byte(`{"type":"`))
	if !ok {
		return Event{}, false
	}
	end := 0
	for end < len(rest) && rest[end] != '"' {
		if c := rest[end]; c < 0x20 || c > 0x7e || c == '\\' {
			return Event{}, false
		}
		end++
	}
	if end == len(rest) {
		return Event{}, false
	}
	e.Type, rest = eventType(rest[:end]), rest[end+1:]
	if rest, ok = cutInt(rest, `,"conv":`, &e.Conv); !ok {
		return Event{}, false
	}
	if rest, ok = cutInt(rest, `,"seq":`, &e.Seq); !ok {
		return Event{}, false
	}
	if rest, ok = cutIDs(rest, `,"to":`, &e.To); !ok {
		return Event{}, false
	}
	if rest, ok = cutIDs(rest, `,"join":`, &e.Join); !ok {
		return Event{}, false
	}
	if rest, ok = cutIDs(rest, `,"leave":`, &e.Leave); !ok {
		return Event{}, false
	}
	data, ok := bytes.CutPrefix(rest, []byte(`,"data":`))
	if !ok || len(data) < 2 || data[len(data)-1] != '}' {
		return Event{}, false
	}
	data = data[:len(data)-1]
	// json.Valid allows space around the value, which json.Unmarshal
	// would not keep in Data.
	if jsonlit.IsSpace(data[0]) || jsonlit.IsSpace(data[len(data)-1]) || !json.Valid(data) {
		return Event{}, false
	}
	e.Data = data[:len(data):len(data)]
	return e, true
}

// eventType returns the known types without allocating.
func eventType(b []byte) string {
	switch string(b) {
	case TypeMessage:
		return TypeMessage
	case TypeRead:
		return TypeRead
	case TypeConversation:
		return TypeConversation
	case TypePresence:
		return TypePresence
	}
	return string(b)
}

// cutInt parses key and the integer after it at the start of b, if b
// starts with key; ok is false when the integer is not one
// strconv.AppendInt writes for a value json.Unmarshal takes as it is.
func cutInt(b []byte, key string, v *int64) (rest []byte, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte(key))
	if !found {
		return b, true
	}
	n, rest, ok := jsonlit.CutInt(rest)
	*v = n
	return rest, ok
}

// cutIDs parses key and the non-empty list of integers after it at the
// start of b, if b starts with key.
func cutIDs(b []byte, key string, ids *[]int64) (rest []byte, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte(key))
	if !found {
		return b, true
	}
	*ids, rest, ok = jsonlit.CutInts(rest)
	return rest, ok
}

// Discard is a Publisher that drops everything (operator tools, tests).
type Discard struct{}

// Publish does nothing.
func (Discard) Publish(context.Context, Event) {}

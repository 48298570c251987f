package client

import (
	"encoding/json"
	"time"
)

// Subprotocol is the WebSocket subprotocol this package speaks
// (docs/protocol.md, version 1).
const Subprotocol = "zhangban.v1"

// Protocol limits the client keeps to (docs/protocol.md, "Limits").
const (
	maxHistory = 200 // messages per history request
)

// Event types sent by the server, and the client's own (client.*), which
// the server never sends.
const (
	EventHello        = "hello"
	EventMessage      = "message" // never given to OnEvent: messages go to OnMessage
	EventRead         = "read"
	EventConversation = "conversation"
	EventPresence     = "presence"
	EventRefresh      = "refresh"
	EventReconnect    = "reconnect"
	// EventResync: live events may have been lost on their way to this
	// connection; the client syncs again by itself.
	EventResync = "resync"

	// EventSync carries one page of a sync reply, before its messages go to
	// OnMessage; Event.Sync decodes it without them.
	EventSync = "client.sync"
	// EventOverflow says live events were dropped because the dispatcher
	// queue was full; messages are recovered by the sync that follows,
	// other events (read marks, presence) are not: query them again.
	EventOverflow = "client.overflow"
	// EventReset says the server refused the resume state (invalid_cursor
	// or not_found on sync): the client forgot its sequences and cursor and
	// synced from the beginning, so messages below the old state are
	// delivered again.
	EventReset = "client.reset"
)

// Message is a message event, and an element of history and sync replies.
type Message struct {
	Conv     int64           `json:"conv"`
	Seq      int64           `json:"seq"`
	Sender   int64           `json:"sender"`
	ClientID string          `json:"client_id"`
	Kind     string          `json:"kind"`
	Text     string          `json:"text"`
	Mentions []int64         `json:"mentions"`
	Payload  json.RawMessage `json:"payload"`
	At       time.Time       `json:"at"`
}

// Send is the data of a send. An empty ClientID is filled in by
// Client.Send with a random one.
type Send struct {
	Conv     int64           `json:"conv"`
	ClientID string          `json:"client_id"`
	Kind     string          `json:"kind,omitempty"` // default "text"
	Text     string          `json:"text,omitempty"`
	Mentions []int64         `json:"mentions,omitempty"`
	Payload  json.RawMessage `json:"payload,omitempty"`
}

// Sent is the reply to a send. Duplicate is true when the server had the
// client_id already, which also happens when the client resent the frame
// after a dropped connection.
type Sent struct {
	Conv      int64     `json:"conv"`
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	Duplicate bool      `json:"duplicate"`
	ClientID  string    `json:"-"` // the client_id sent, filled in by the client
}

// HistoryQuery pages a conversation: forwards, oldest first, from after
// After (0: the beginning); or, with Before set, backwards from before it,
// newest first; or, with Latest, backwards from the newest message.
type HistoryQuery struct {
	Conv   int64
	After  int64
	Before int64
	Latest bool
	Limit  int // at most 200; 0: the server's default, 50
}

// MarshalJSON encodes the history frame's data, which says "after" even
// when it is 0: without "after" or "before" the server reads backwards
// from the newest message.
func (q HistoryQuery) MarshalJSON() ([]byte, error) {
	w := historyData{Conv: q.Conv, Limit: q.Limit}
	switch {
	case q.Latest:
	case q.Before > 0:
		w.Before = &q.Before
	default:
		w.After = &q.After
	}
	return json.Marshal(w)
}

// ReadState is the reply to a read.
type ReadState struct {
	Conv    int64 `json:"conv"`
	ReadSeq int64 `json:"read_seq"`
	Unread  int64 `json:"unread"`
}

// Conversation is a conversation; the fields after MemberCount are the
// viewer's own state and are empty in events shared by all members.
type Conversation struct {
	ID          int64      `json:"id"`
	Kind        string     `json:"kind"` // direct, group
	Title       string     `json:"title"`
	Peer        int64      `json:"peer,omitempty"`
	Members     []int64    `json:"members,omitempty"`
	CreatedBy   int64      `json:"created_by"`
	CreatedAt   time.Time  `json:"created_at"`
	LastSeq     int64      `json:"last_seq"`
	LastAt      *time.Time `json:"last_at"`
	MemberCount int        `json:"member_count"`

	Role      string `json:"role,omitempty"`
	JoinedSeq int64  `json:"joined_seq"`
	LeftSeq   *int64 `json:"left_seq,omitempty"`
	ReadSeq   int64  `json:"read_seq"`
	Unread    int64  `json:"unread"`
}

// Presence is one account's presence: an element of a presence reply and
// the data of a presence event.
type Presence struct {
	Account  int64      `json:"account"`
	Online   bool       `json:"online"`
	LastSeen *time.Time `json:"last_seen"` // when an offline account was last online; nil while online
}

// Hello is the data of the hello event and of the auth reply.
type Hello struct {
	AccountID   int64     `json:"account_id"`
	SessionID   int64     `json:"session_id"`
	Node        string    `json:"node"`
	HeartbeatMS int64     `json:"heartbeat_ms"`
	ExpiresAt   time.Time `json:"expires_at"`
	Limits      Limits    `json:"limits"`
}

// Limits are the server's limits, announced in hello.
type Limits struct {
	FrameBytes      int `json:"frame_bytes"`
	FramesPerSecond int `json:"frames_per_second"`
	Burst           int `json:"burst"`
	Queue           int `json:"queue"`
}

// ReadEvent is the data of a read event.
type ReadEvent struct {
	Conv    int64 `json:"conv"`
	Account int64 `json:"account"`
	Seq     int64 `json:"seq"`
}

// ConversationEvent is the data of a conversation event.
type ConversationEvent struct {
	Conv   Conversation `json:"conv"`
	Change string       `json:"change"` // created, renamed, joined, left, removed, member_added, member_removed, role
}

// RefreshEvent is the data of a refresh event.
type RefreshEvent struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// ReconnectEvent is the data of a reconnect event.
type ReconnectEvent struct {
	DelayMS int64 `json:"delay_ms"`
}

// SyncPage is one sync reply without its messages: the conversations that
// changed, the new cursor, and whether another page follows.
type SyncPage struct {
	Conversations []Conversation `json:"conversations"`
	Cursor        string         `json:"cursor"`
	More          bool           `json:"more"`
}

// Event is a server event other than message, or one of the client's own
// (client.*). Data is the event's JSON data; decode it with Decode or a
// typed helper.
type Event struct {
	Type string
	Data json.RawMessage
}

// Decode decodes the event's data into v.
func (e Event) Decode(v any) error { return json.Unmarshal(e.Data, v) }

// Hello decodes a hello event.
func (e Event) Hello() (h Hello, err error) { err = e.Decode(&h); return }

// Read decodes a read event.
func (e Event) Read() (r ReadEvent, err error) { err = e.Decode(&r); return }

// Conversation decodes a conversation event.
func (e Event) Conversation() (c ConversationEvent, err error) { err = e.Decode(&c); return }

// Presence decodes a presence event.
func (e Event) Presence() (p Presence, err error) { err = e.Decode(&p); return }

// Sync decodes a client.sync event.
func (e Event) Sync() (p SyncPage, err error) { err = e.Decode(&p); return }

// Wire shapes of what the client sends and receives.
type (
	// syncData is the data of a sync frame.
	syncData struct {
		Convs  map[int64]int64 `json:"convs,omitempty"` // encoded with string keys
		Cursor string          `json:"cursor,omitempty"`
		Limit  int             `json:"limit,omitempty"`
	}
	// syncReply is the reply to a sync.
	syncReply struct {
		Conversations []Conversation `json:"conversations"`
		Messages      []Message      `json:"messages"`
		Cursor        string         `json:"cursor"`
		More          bool           `json:"more"`
	}
	historyData struct {
		Conv   int64  `json:"conv"`
		After  *int64 `json:"after,omitempty"`
		Before *int64 `json:"before,omitempty"`
		Limit  int    `json:"limit,omitempty"`
	}
	historyReply struct {
		Messages []Message `json:"messages"`
		More     bool      `json:"more"`
	}
	presenceData struct {
		Accounts []int64 `json:"accounts"`
		Watch    bool    `json:"watch,omitempty"`
	}
	presenceReply struct {
		Presence []Presence `json:"presence"`
	}
	convSeq struct {
		Conv int64 `json:"conv"`
		Seq  int64 `json:"seq"`
	}
)

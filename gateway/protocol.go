package gateway

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/messaging"
)

// Subprotocol is the WebSocket subprotocol of this version of the protocol.
const Subprotocol = "zhangban.v1"

// Limits of docs/protocol.md.
const (
	maxFrameBytes   = 64 << 10
	maxIDBytes      = 64
	queueSize       = 256  // frames queued for a client whose socket is not taking them
	maxQueue        = 4096 // frames queued for any client
	writeTimeout    = 10 * time.Second
	pingInterval    = 25 * time.Second
	authTimeout     = 10 * time.Second
	refreshBefore   = 60 * time.Second
	ratePerSecond   = 50
	rateBurst       = 100
	maxRefusedInRow = 200
	maxInflight     = 64   // pipelined sends per connection
	maxHeld         = 2048 // live events held back while the first sync is answered
	maxPresence     = 200
)

// Close codes (docs/protocol.md): 4000-4099 transient, reconnect with
// back-off and sync; 4100-4199 the client must change something first.
const (
	CloseDraining          = 4000
	CloseSlowConsumer      = 4001
	CloseHeartbeatTimeout  = 4002
	CloseInternal          = 4003
	CloseRateLimited       = 4004
	CloseAuthTimeout       = 4005
	CloseTokenExpired      = 4101
	CloseSessionRevoked    = 4102
	CloseProtocolViolation = 4103
	CloseFrameTooLarge     = 4104
)

// closeReasons are the names sent with each close code.
var closeReasons = map[int]string{
	CloseDraining:          "draining",
	CloseSlowConsumer:      "slow_consumer",
	CloseHeartbeatTimeout:  "heartbeat_timeout",
	CloseInternal:          "internal",
	CloseRateLimited:       "rate_limited",
	CloseAuthTimeout:       "auth_timeout",
	CloseTokenExpired:      "token_expired",
	CloseSessionRevoked:    "session_revoked",
	CloseProtocolViolation: "protocol_violation",
	CloseFrameTooLarge:     "frame_too_large",
}

// Error codes of replies.
const (
	ErrInvalidFrame    = "invalid_frame"
	ErrUnknownType     = "unknown_type"
	ErrInvalidArgument = "invalid_argument"
	ErrInvalidCursor   = "invalid_cursor"
	ErrUnauthenticated = "unauthenticated"
	ErrTokenExpired    = "token_expired"
	ErrNotFound        = "not_found"
	ErrForbidden       = "forbidden"
	ErrConflict        = "conflict"
	ErrRateLimited     = "rate_limited"
	ErrTooLarge        = "too_large"
	ErrUnavailable     = "unavailable"
	ErrInternal        = "internal"
)

// Frame is a client frame.
type Frame struct {
	ID   string          `json:"id,omitempty"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

// ReplyError is the error of a reply.
type ReplyError struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

func (e *ReplyError) Error() string { return e.Code + ": " + e.Message }

func replyErr(code, msg string) *ReplyError { return &ReplyError{Code: code, Message: msg} }

// reply is a server reply.
type reply struct {
	Type  string      `json:"type"` // always "reply"
	ID    string      `json:"id"`
	Data  any         `json:"data,omitempty"`
	Error *ReplyError `json:"error,omitempty"`
}

// serverEvent is an event frame whose data is already encoded.
type serverEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// Hello is sent after authentication.
type Hello struct {
	AccountID   int64     `json:"account_id"`
	SessionID   int64     `json:"session_id"`
	Node        string    `json:"node"`
	HeartbeatMS int64     `json:"heartbeat_ms"`
	ExpiresAt   time.Time `json:"expires_at"`
	Limits      Limits    `json:"limits"`
}

// Limits tells clients the protocol limits.
type Limits struct {
	FrameBytes      int `json:"frame_bytes"`
	FramesPerSecond int `json:"frames_per_second"`
	Burst           int `json:"burst"`
	Queue           int `json:"queue"`
}

// Request data of the operations.
type (
	authData struct {
		Token string `json:"token"`
	}
	convSeq struct {
		Conv int64 `json:"conv"`
		Seq  int64 `json:"seq"`
	}
	historyData struct {
		Conv   int64  `json:"conv"`
		After  *int64 `json:"after,omitempty"`  // forwards from here (0: the beginning)
		Before *int64 `json:"before,omitempty"` // backwards from here; neither: the newest
		Limit  int    `json:"limit,omitempty"`
	}
	directData struct {
		Account int64 `json:"account"`
	}
	// syncData is messaging.SyncRequest as JSON carries it: object keys
	// are strings.
	syncData struct {
		Convs  map[string]int64 `json:"convs,omitempty"`
		Cursor string           `json:"cursor,omitempty"`
		Limit  int              `json:"limit,omitempty"`
	}
	presenceData struct {
		Accounts []int64 `json:"accounts"`
		Watch    bool    `json:"watch,omitempty"`
	}
)

// DecodeFrame parses one client frame strictly: one JSON object, known
// fields only, a type, an id of at most 64 bytes. It is the decoder fuzzed
// by FuzzDecodeFrame.
func DecodeFrame(buf []byte) (Frame, *ReplyError) {
	var f Frame
	if err := strictUnmarshal(buf, &f); err != nil {
		return Frame{}, replyErr(ErrInvalidFrame, "a frame is one JSON object {\"id\",\"type\",\"data\"}: "+err.Error())
	}
	if f.Type == "" {
		return f, replyErr(ErrInvalidFrame, "the frame has no type")
	}
	if len(f.ID) > maxIDBytes {
		f.ID = ""
		return f, replyErr(ErrInvalidFrame, "id is longer than 64 bytes")
	}
	return f, nil
}

// decodeData parses a frame's data strictly into v.
func decodeData(f Frame, v any) *ReplyError {
	data := f.Data
	if len(data) == 0 || string(data) == "null" {
		data = []byte("{}")
	}
	if err := strictUnmarshal(data, v); err != nil {
		return replyErr(ErrInvalidFrame, f.Type+": "+err.Error())
	}
	return nil
}

// The frames a busy node writes most, replies to sends and message
// events, are encoded by hand: encoding/json's reflection, and its
// re-validating of already encoded event data, were a tenth of a node's
// CPU at 10,000 direct messages/s (docs/benchmarks.md, session 13). The
// bytes are those json.Marshal gives (TestHandEncodedFramesMatchJSON).

// sentReply is the reply to a send that committed.
func sentReply(id string, s messaging.Sent) []byte {
	b := make([]byte, 0, 112+len(id))
	b = append(b, `{"type":"reply","id":`...)
	b = event.AppendJSONString(b, id)
	b = append(b, `,"data":{"conv":`...)
	b = strconv.AppendInt(b, s.Conv, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, s.Seq, 10)
	b = append(b, `,"at":`...)
	at, err := s.At.MarshalJSON()
	if err != nil { // a year beyond 9999: never from PostgreSQL's now()
		at = []byte(`null`)
	}
	b = append(b, at...)
	b = append(b, `,"duplicate":`...)
	b = strconv.AppendBool(b, s.Duplicate)
	return append(b, `}}`...)
}

// eventFrame is the frame of an event whose data is already encoded.
func eventFrame(typ string, data []byte) []byte {
	b := make([]byte, 0, 20+len(typ)+len(data))
	b = append(b, `{"type":`...)
	b = event.AppendJSONString(b, typ)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

package client

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Close codes of docs/protocol.md, by range:
//
//	1000, 1001   normal close, going away: reconnect (with back-off)
//	4000-4099    transient: reconnect with jittered exponential back-off, then sync
//	4100-4199    the client must change something first: Run stops and returns
//	             the *CloseError, except 4101, after which the client fetches a
//	             new token (Config.Token) and reconnects
//
// Any other code (1006 for a dropped TCP connection, 1011 …) is treated as
// transient.
const (
	CloseDraining          = 4000 // after a reconnect event
	CloseSlowConsumer      = 4001
	CloseHeartbeatTimeout  = 4002
	CloseInternal          = 4003
	CloseRateLimited       = 4004 // back off at least 5 s
	CloseAuthTimeout       = 4005
	CloseTokenExpired      = 4101 // refresh the token and reconnect
	CloseSessionRevoked    = 4102
	CloseProtocolViolation = 4103
	CloseFrameTooLarge     = 4104
)

// rateLimitedBackoff is the least wait after 4004 rate_limited.
const rateLimitedBackoff = 5 * time.Second

// Error codes of replies (error.code) and of the upgrade's HTTP errors.
const (
	CodeInvalidFrame        = "invalid_frame"
	CodeUnknownType         = "unknown_type"
	CodeInvalidArgument     = "invalid_argument"
	CodeInvalidCursor       = "invalid_cursor"
	CodeUnauthenticated     = "unauthenticated"
	CodeTokenExpired        = "token_expired"
	CodeNotFound            = "not_found"
	CodeForbidden           = "forbidden"
	CodeConflict            = "conflict"
	CodeRateLimited         = "rate_limited"
	CodeTooLarge            = "too_large"
	CodeUnavailable         = "unavailable"
	CodeInternal            = "internal"
	CodeUnsupportedProtocol = "unsupported_protocol" // HTTP 400 at the upgrade
)

// ErrClosed is returned by requests once the client is closed or Run has
// returned, and by Run after Close.
var ErrClosed = errors.New("client: closed")

// errConnLost ends a request tied to one connection (sync and gap fills)
// when that connection drops; the next connection's sync covers it.
var errConnLost = errors.New("client: connection lost")

// SetupError is a connection that did not come up, for a reason the
// server did not give: Stage is where it failed ("dial": the TCP
// connection; "upgrade": the HTTP upgrade; "hello": authenticating, up to
// the hello event), within the set-up's 20 s. Answers of the server (an
// *Error for a refused upgrade or auth frame, a *CloseError with the
// server's code) are returned as they are. Run retries after back-off.
type SetupError struct {
	Stage string
	Err   error
}

func (e *SetupError) Error() string {
	return "client: connection set-up (" + e.Stage + "): " + e.Err.Error()
}
func (e *SetupError) Unwrap() error { return e.Err }

// Error is an error reply, or an HTTP error answering the upgrade.
type Error struct {
	Code       string        `json:"code"`
	Message    string        `json:"message"`
	RetryAfter time.Duration `json:"-"` // from retry_after_ms (rate_limited)
	HTTPStatus int           `json:"-"` // set for errors of the upgrade request
}

func (e *Error) Error() string {
	if e.HTTPStatus != 0 {
		return "zhangban: HTTP " + strconv.Itoa(e.HTTPStatus) + " " + e.Code + ": " + e.Message
	}
	return "zhangban: " + e.Code + ": " + e.Message
}

// wireError is the error object of a reply.
type wireError struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms"`
}

func (w *wireError) err() *Error {
	return &Error{Code: w.Code, Message: w.Message, RetryAfter: time.Duration(w.RetryAfterMS) * time.Millisecond}
}

// CloseError is how a connection ended when the server (or the network)
// closed it.
type CloseError struct {
	Code   int    // WebSocket close code; 1006 when the connection dropped without one
	Reason string // the code's name as sent by the server, e.g. "slow_consumer"
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("zhangban: connection closed with %d %s", e.Code, e.Reason)
}

// Retry reports whether the client reconnects after this close: true
// except for 4100-4199, where only 4101 token_expired is retried (with a
// fresh token).
func (e *CloseError) Retry() bool {
	return e.Code < 4100 || e.Code > 4199 || e.Code == CloseTokenExpired
}

// isCode reports whether err is an *Error with the code.
func isCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

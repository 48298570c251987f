package mobileapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/messaging"
	"github.com/zhangban/zhangban/org"
)

// Code is a stable, documented error code. Clients branch on it, never on
// the message. Keep this list, docs/api.md and openapi.json in step.
type Code string

// The error codes and the HTTP status each is sent with.
const (
	CodeInvalidArgument      Code = "invalid_argument"       // 400: a field is missing, of the wrong type or out of range
	CodeMalformedJSON        Code = "malformed_json"         // 400: the body is not one JSON object
	CodeInvalidCursor        Code = "invalid_cursor"         // 400: a sync cursor or message sequence this server never gave out (from the future): resync from 0
	CodeUnauthenticated      Code = "unauthenticated"        // 401: no token, or a forged, revoked or unknown one: sign in
	CodeTokenExpired         Code = "token_expired"          // 401: the access token expired: refresh it
	CodeInvalidCredentials   Code = "invalid_credentials"    // 401: login or password wrong (never says which)
	CodeRefreshReused        Code = "refresh_token_reused"   // 401: refresh token used twice; the session is revoked
	CodePermissionDenied     Code = "permission_denied"      // 403: signed in, but not allowed
	CodeNotFound             Code = "not_found"              // 404: no such route or object (or not visible to the caller)
	CodeMethodNotAllowed     Code = "method_not_allowed"     // 405: the route exists with other methods (see Allow)
	CodeAlreadyExists        Code = "already_exists"         // 409: a unique attribute is taken
	CodeFailedPrecondition   Code = "failed_precondition"    // 409: the current state does not allow it (level, cycle, dissolved, blockers in details)
	CodeConflict             Code = "conflict"               // 409: a message's client_id was already used for a different message
	CodeRequestInProgress    Code = "request_in_progress"    // 409: a request with this Idempotency-Key is still running
	CodePayloadTooLarge      Code = "payload_too_large"      // 413: the body exceeds the route's limit
	CodeUnsupportedMediaType Code = "unsupported_media_type" // 415: the body is not application/json
	CodeIdempotencyKeyReused Code = "idempotency_key_reused" // 422: the Idempotency-Key was used for a different request
	CodeTooManyRequests      Code = "too_many_requests"      // 429: throttled; wait Retry-After seconds
	CodeInternal             Code = "internal"               // 500: our fault; retry later, quote the request id
	CodeUnavailable          Code = "unavailable"            // 503: not ready or shutting down; retry elsewhere or later
)

var codeStatus = map[Code]int{
	CodeInvalidArgument:      http.StatusBadRequest,
	CodeMalformedJSON:        http.StatusBadRequest,
	CodeInvalidCursor:        http.StatusBadRequest,
	CodeUnauthenticated:      http.StatusUnauthorized,
	CodeTokenExpired:         http.StatusUnauthorized,
	CodeInvalidCredentials:   http.StatusUnauthorized,
	CodeRefreshReused:        http.StatusUnauthorized,
	CodePermissionDenied:     http.StatusForbidden,
	CodeNotFound:             http.StatusNotFound,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeAlreadyExists:        http.StatusConflict,
	CodeFailedPrecondition:   http.StatusConflict,
	CodeConflict:             http.StatusConflict,
	CodeRequestInProgress:    http.StatusConflict,
	CodePayloadTooLarge:      http.StatusRequestEntityTooLarge,
	CodeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	CodeIdempotencyKeyReused: http.StatusUnprocessableEntity,
	CodeTooManyRequests:      http.StatusTooManyRequests,
	CodeInternal:             http.StatusInternalServerError,
	CodeUnavailable:          http.StatusServiceUnavailable,
}

// Error is an API error: what the client receives inside {"error": …}.
type Error struct {
	Code       Code   `json:"code"`
	Message    string `json:"message"`
	Details    any    `json:"details,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	retryAfter time.Duration
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

func apiErr(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldDetail points at the field an invalid_argument error is about.
type FieldDetail struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func invalidField(field, problem string) *Error {
	return &Error{Code: CodeInvalidArgument, Message: field + ": " + problem, Details: FieldDetail{field, problem}}
}

// toAPIError maps domain errors to API errors. It is the only place that
// knows both sides.
func toAPIError(err error) *Error {
	var (
		ae   *Error
		thr  *auth.ThrottledError
		inv  *auth.InvalidAccountError
		oinv *org.InvalidError
		minv *messaging.InvalidError
		blk  *org.BlockedError
		maxb *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &thr):
		return &Error{Code: CodeTooManyRequests, Message: thr.Error(), retryAfter: thr.RetryAfter}
	case errors.As(err, &inv):
		return invalidField(inv.Field, inv.Problem)
	case errors.As(err, &oinv):
		return invalidField(oinv.Field, oinv.Problem)
	case errors.As(err, &minv):
		return invalidField(minv.Field, minv.Problem)
	case errors.As(err, &blk):
		return &Error{Code: CodeFailedPrecondition, Message: blk.Error(), Details: map[string]any{"blockers": blk.Blockers}}
	case errors.Is(err, org.ErrNotFound), errors.Is(err, authz.ErrUnknownUnit), errors.Is(err, authz.ErrGrantNotFound):
		return apiErr(CodeNotFound, "not found")
	// Messaging: a conversation, message or account the caller is not in or
	// may not see is "not found", exactly like one that does not exist.
	// ErrForbidden means what permission_denied already means; the gateway's
	// too_large is payload_too_large here, as for any other oversized body.
	case errors.Is(err, messaging.ErrNotFound):
		return apiErr(CodeNotFound, "not found")
	case errors.Is(err, messaging.ErrForbidden):
		return apiErr(CodePermissionDenied, "%s", err.Error())
	case errors.Is(err, messaging.ErrConflict):
		return apiErr(CodeConflict, "%s", err.Error())
	case errors.Is(err, messaging.ErrTooLarge):
		return apiErr(CodePayloadTooLarge, "%s", err.Error())
	case errors.Is(err, messaging.ErrInvalidCursor):
		return apiErr(CodeInvalidCursor, "%s", err.Error())
	case errors.Is(err, messaging.ErrUnavailable):
		return apiErr(CodeUnavailable, "%s", err.Error())
	case errors.Is(err, org.ErrLevelMismatch), errors.Is(err, org.ErrCycle), errors.Is(err, org.ErrDissolved):
		return apiErr(CodeFailedPrecondition, "%s", err.Error())
	case errors.Is(err, org.ErrDuplicateCode), errors.Is(err, org.ErrConflict):
		return apiErr(CodeAlreadyExists, "%s", err.Error())
	case errors.Is(err, authz.ErrDenied):
		return apiErr(CodePermissionDenied, "%s", err.Error())
	case errors.Is(err, authz.ErrInvalidRole):
		return invalidField("role", "want admin, leader, staff, grid_worker or auditor")
	case errors.Is(err, authz.ErrInvalidAccount):
		return invalidField("account_id", "no such account")
	case errors.As(err, &maxb):
		return apiErr(CodePayloadTooLarge, "request body exceeds %d bytes", maxb.Limit)
	case errors.Is(err, auth.ErrInvalidCredentials):
		return apiErr(CodeInvalidCredentials, "login or password is wrong")
	case errors.Is(err, auth.ErrTokenExpired):
		return apiErr(CodeTokenExpired, "the token has expired: refresh it, or sign in again")
	case errors.Is(err, auth.ErrRefreshReused):
		return apiErr(CodeRefreshReused, "%s", err.Error())
	case errors.Is(err, auth.ErrTokenInvalid), errors.Is(err, auth.ErrSessionRevoked), errors.Is(err, auth.ErrSessionExpired), errors.Is(err, auth.ErrAccountDisabled):
		return apiErr(CodeUnauthenticated, "%s: sign in again", err.Error())
	case errors.Is(err, auth.ErrNotFound):
		return apiErr(CodeNotFound, "not found")
	case errors.Is(err, auth.ErrLoginTaken):
		return apiErr(CodeAlreadyExists, "%s", err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return apiErr(CodeUnavailable, "the request did not finish in time; retry")
	}
	return nil
}

// writeError sends err in the one error shape. Unmapped errors are logged
// and answered as internal, without their text (it may hold internals).
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae == nil {
		a.log.ErrorContext(r.Context(), "internal error", "err", err, "route", r.Pattern)
		ae = apiErr(CodeInternal, "internal error; retry later and quote the request id")
	}
	writeAPIError(w, r, ae)
}

func writeAPIError(w http.ResponseWriter, r *http.Request, ae *Error) {
	out := *ae
	out.RequestID = requestID(r.Context())
	if out.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((out.retryAfter+time.Second-1)/time.Second)))
	}
	status, ok := codeStatus[out.Code]
	if !ok {
		slog.Error("error code without status", "code", out.Code)
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, struct {
		Error *Error `json:"error"`
	}{&out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // API clients, not HTML pages, read this
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal","message":"response encoding failed"}}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

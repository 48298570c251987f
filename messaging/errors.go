package messaging

import (
	"errors"
	"fmt"
)

// Errors of the messaging package; the API and the gateway map them to
// codes in one place each.
var (
	// ErrNotFound: the conversation, message or account does not exist or
	// is not visible to the actor (the two are not told apart).
	ErrNotFound = errors.New("not found")
	// ErrForbidden: visible, but the actor's role does not allow it.
	ErrForbidden = errors.New("not allowed")
	// ErrConflict: a client message id reused with different content.
	ErrConflict = errors.New("this client_id was already used for a different message")
	// ErrInvalid wraps InvalidError.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge: text, payload or membership over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidCursor: a sync cursor or sequence this server never gave out.
	ErrInvalidCursor = errors.New("invalid cursor")
	// ErrUnavailable: the service is shutting down, or a transient race
	// that a retry resolves.
	ErrUnavailable = errors.New("messaging is unavailable; retry")
)

// InvalidError names the field that is wrong.
type InvalidError struct {
	Field, Problem string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Problem }
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrTooLarge}, args...)...)
}

func badCursor(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidCursor}, args...)...)
}

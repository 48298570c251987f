package auth

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Service. The HTTP layer maps them to codes in one place.
var (
	ErrInvalidCredentials = errors.New("login or password is wrong")
	ErrTokenExpired       = errors.New("token has expired")
	ErrTokenInvalid       = errors.New("token is not valid")
	ErrSessionRevoked     = errors.New("session has been revoked")
	ErrSessionExpired     = errors.New("session has expired")
	ErrRefreshReused      = errors.New("refresh token was already used; the session has been revoked, sign in again")
	ErrAccountDisabled    = errors.New("account is disabled")
	ErrNotFound           = errors.New("not found")
	ErrLoginTaken         = errors.New("login name or mobile number is already in use")
	ErrInvalidAccount     = errors.New("invalid account")
)

// ThrottledError says that further attempts must wait.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed sign-in attempts; try again in %s", e.RetryAfter.Round(time.Second))
}

// InvalidAccountError names the field of a new account that is wrong.
type InvalidAccountError struct {
	Field, Problem string
}

func (e *InvalidAccountError) Error() string { return e.Field + ": " + e.Problem }
func (e *InvalidAccountError) Unwrap() error { return ErrInvalidAccount }

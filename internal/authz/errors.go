package authz

import "errors"

// Errors returned by Authorizer. The HTTP layer maps them to codes in one place.
var (
	ErrDenied         = errors.New("permission denied")
	ErrUnknownUnit    = errors.New("unknown unit")
	ErrInvalidRole    = errors.New("invalid role")
	ErrInvalidAccount = errors.New("invalid account id")
	ErrGrantNotFound  = errors.New("no such grant")
)

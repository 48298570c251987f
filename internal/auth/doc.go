// Package auth owns accounts, password hashes, sessions and tokens.
//
// An access token is a short-lived JWT (HS256, key id in the header) naming
// the account and the session. A refresh token is 32 random bytes, stored
// only as its SHA-256, bound to the session (and its device) it was issued
// for, and rotated on every use: presenting a token that was already rotated
// means it leaked, so the whole session is revoked. Failed logins are
// throttled per login name and per client address in PostgreSQL, so every
// node sees the same counters; answers never tell whether an account exists.
//
// Service is safe for concurrent use. It owns the tables accounts,
// auth_sessions, auth_refresh_tokens and auth_throttle.
package auth

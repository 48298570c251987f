// Package mobileapi is the JSON API under /v1 that phones call: routing,
// authentication of requests, one error shape with stable codes, request
// ids, body limits, compression, idempotent creation, and the OpenAPI
// document served at /openapi.json.
//
// It holds no business rules: handlers decode, call a domain service, and
// encode. Domain errors become HTTP statuses in one place (errors.go).
//
// An *API is safe for concurrent use once built by New. It owns the table
// api_idempotency.
package mobileapi

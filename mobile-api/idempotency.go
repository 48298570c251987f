package mobileapi

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/auth"
)

// How long a stored answer is replayed, and after how long a request that
// never finished (its node died) may be run again.
const (
	idempotencyTTL   = "24 hours"
	idempotencyStale = "1 minute"
)

// idempotent makes a creating POST safe to retry: the first request with a
// given Idempotency-Key runs; later ones with the same key and body get the
// stored answer, with another body an error, while it runs a 409.
func (a *API) idempotent(h func(http.ResponseWriter, *http.Request, auth.Principal)) func(http.ResponseWriter, *http.Request, auth.Principal) {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			h(w, r, p)
			return
		}
		if len(key) > 255 || !printableASCII(key) {
			writeAPIError(w, r, &Error{Code: CodeInvalidArgument, Message: "Idempotency-Key: 1-255 printable ASCII characters", Details: FieldDetail{"Idempotency-Key", "1-255 printable ASCII characters"}})
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyDefault+1))
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.New()
		io.WriteString(sum, r.Method+" "+r.URL.Path+"\n")
		sum.Write(body)
		hash := sum.Sum(nil)

		ctx := r.Context()
		if rand.IntN(100) == 0 {
			a.pool.Exec(ctx, `DELETE FROM api_idempotency WHERE created_at < now() - $1::interval`, idempotencyTTL) //nolint:errcheck // housekeeping
		}
		var owner bool
		err = a.pool.QueryRow(ctx, `
			INSERT INTO api_idempotency AS t (account_id, key, request_hash) VALUES ($1, $2, $3)
			ON CONFLICT (account_id, key) DO UPDATE SET request_hash = excluded.request_hash, status = NULL, body = NULL, created_at = now()
			WHERE t.created_at < now() - $4::interval OR (t.status IS NULL AND t.created_at < now() - $5::interval)
			RETURNING true`, p.AccountID, key, hash, idempotencyTTL, idempotencyStale).Scan(&owner)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			a.writeError(w, r, err)
			return
		}
		if !owner {
			a.replay(w, r, p, key, hash)
			return
		}
		rec := &teeWriter{ResponseWriter: w}
		h(rec, r, p)
		ctx = r.Context()
		// Only successes are replayed: after an error the client may fix the
		// request and retry with the same key.
		if rec.status >= 400 || rec.status == 0 {
			_, err = a.pool.Exec(ctx, `DELETE FROM api_idempotency WHERE account_id = $1 AND key = $2`, p.AccountID, key)
		} else {
			_, err = a.pool.Exec(ctx, `UPDATE api_idempotency SET status = $3, content_type = $4, location = $5, body = $6 WHERE account_id = $1 AND key = $2`,
				p.AccountID, key, rec.status, w.Header().Get("Content-Type"), w.Header().Get("Location"), rec.buf.Bytes())
		}
		if err != nil {
			a.log.WarnContext(ctx, "idempotency record not saved", "err", err)
		}
	}
}

func (a *API) replay(w http.ResponseWriter, r *http.Request, p auth.Principal, key string, hash []byte) {
	var (
		storedHash []byte
		status     *int
		ctype, loc *string
		body       []byte
	)
	err := a.pool.QueryRow(r.Context(), `SELECT request_hash, status, content_type, location, body FROM api_idempotency WHERE account_id = $1 AND key = $2`,
		p.AccountID, key).Scan(&storedHash, &status, &ctype, &loc, &body)
	switch {
	case errors.Is(err, pgx.ErrNoRows): // expired between the two statements
		writeAPIError(w, r, apiErr(CodeRequestInProgress, "retry the request"))
	case err != nil:
		a.writeError(w, r, err)
	case !bytes.Equal(storedHash, hash):
		writeAPIError(w, r, apiErr(CodeIdempotencyKeyReused, "this Idempotency-Key was used for a different request; use a new key"))
	case status == nil:
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, r, apiErr(CodeRequestInProgress, "a request with this Idempotency-Key is still running; retry shortly"))
	default:
		if ctype != nil && *ctype != "" {
			w.Header().Set("Content-Type", *ctype)
		}
		if loc != nil && *loc != "" {
			w.Header().Set("Location", *loc)
		}
		w.Header().Set("Idempotent-Replayed", "true")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(*status)
		w.Write(body)
	}
}

// teeWriter passes a response through and keeps a copy of it.
type teeWriter struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (t *teeWriter) WriteHeader(code int) {
	if t.status == 0 {
		t.status = code
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	t.buf.Write(b)
	return t.ResponseWriter.Write(b)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

package mobileapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/zhangban/zhangban/org"
)

// Body limits. Requests are small JSON objects; anything larger is refused
// before it is read.
const (
	maxBodyDefault = 64 << 10
	maxBodyHard    = 1 << 20 // no route accepts more
)

// decodeJSON reads exactly one JSON object of at most limit bytes into v.
// Unknown fields are errors: a typo must not pass silently.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) *Error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return apiErr(CodeUnsupportedMediaType, "send the body as application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return apiErr(CodePayloadTooLarge, "request body exceeds %d bytes", limit)
		}
		return apiErr(CodeMalformedJSON, "could not read the body: %v", err)
	}
	return unmarshalStrict(body, v)
}

// unmarshalStrict is decodeJSON without the HTTP: the part worth fuzzing.
func unmarshalStrict(body []byte, v any) *Error {
	switch string(bytes.TrimSpace(body)) {
	case "":
		return apiErr(CodeMalformedJSON, "the body is empty; send a JSON object")
	case "null":
		return apiErr(CodeMalformedJSON, "the body must be a JSON object, not null")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			syn *json.SyntaxError
			typ *json.UnmarshalTypeError
			inv *org.InvalidError // from a field's own UnmarshalText (a level name)
		)
		switch {
		case errors.As(err, &inv):
			return invalidField(inv.Field, inv.Problem)
		case errors.As(err, &syn):
			return apiErr(CodeMalformedJSON, "malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return apiErr(CodeMalformedJSON, "the body must be a JSON object")
			}
			return invalidField(field, fmt.Sprintf("must be a %s, not a JSON %s", jsonKind(typ.Type.Kind().String()), typ.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return invalidField(name, "unknown field")
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return apiErr(CodeMalformedJSON, "the JSON body is truncated")
		default:
			return apiErr(CodeMalformedJSON, "malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return apiErr(CodeMalformedJSON, "the body must hold exactly one JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return apiErr(CodeMalformedJSON, "the body must hold exactly one JSON object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	default:
		return "number"
	}
}

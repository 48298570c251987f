package mobileapi

// The OpenAPI document (openapi.json) is checked four ways:
//
//   - TestOpenAPIDocument loads and validates it, and checks its own rules:
//     the error code enum is exactly the codes of errors.go, each error
//     response admits only codes of its status, each operation's description
//     lists exactly the codes its responses admit, every response declares
//     X-Request-Id.
//   - TestOpenAPIRoutes compares the routes the package registers (read from
//     the source of every non-test file: api.go's routes(), handlers_org.go's
//     orgRoutes(), …) with the documented operations, both ways, and asks the
//     live mux that every documented operation reaches its route.
//   - TestConformance drives real requests through the whole API and
//     validates every answer (status, declared headers, body) against the
//     document with openapi3filter.ValidateResponse, and every request with
//     ValidateRequest, expecting the document to reject exactly the requests
//     it should. At the end every documented status of every operation must
//     have been seen, and every error code.
//   - TestOpenAPIServed checks that /openapi.json serves the embedded bytes.
//
// What kin-openapi v0.152.0 does with OpenAPI 3.1, found while writing this:
// the loader and (*openapi3.T).Validate take "openapi": "3.1.0" and switch
// to the 3.1 rules (its changelog: type arrays, numeric exclusive bounds,
// keywords next to $ref, const, if/then/else). openapi3filter validates the
// bodies and headers of a 3.1 document with a JSON Schema 2020-12 validator
// (santhosh-tekuri/jsonschema), which enforces const, if/then/else, anyOf and
// allOf over $ref, and asserts the formats date-time and int32. It converts
// a number to int64 before checking format int64, so 1e19 passes as int64:
// the document's ids therefore also carry maximum 2^63-1, which is enforced.
// TestOpenAPIKinEnforces31 pins these findings down. Header schemas need a
// type: with only const, a header decodes to nil and never matches. The
// gorillamux router matches the document's servers by host, so the
// conformance test drops the servers and routes by path alone.
// ValidateResponse skips HEAD requests and redirects: the document does not
// list HEAD (the server answers HEAD wherever it answers GET), and no
// documented route redirects.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/org"
)

// loadOpenAPI loads the embedded document and validates it.
func loadOpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPI())
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not a valid OpenAPI document: %v", err)
	}
	return doc
}

// operations lists the document's operations by "METHOD /path".
func operations(doc *openapi3.T) map[string]*openapi3.Operation {
	ops := map[string]*openapi3.Operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[strings.ToUpper(method)+" "+path] = op
		}
	}
	return ops
}

// responseCodes returns the error codes a response admits: the enum of the
// second allOf entry that narrows the shared Error schema.
func responseCodes(t testing.TB, where string, r *openapi3.Response) []Code {
	t.Helper()
	mt := r.Content.Get("application/json")
	if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
		t.Errorf("%s: an error response without an application/json schema", where)
		return nil
	}
	s := mt.Schema.Value
	if len(s.AllOf) != 2 || s.AllOf[0].Ref != "#/components/schemas/Error" {
		t.Errorf("%s: the schema must be allOf [Error, {code enum}]", where)
		return nil
	}
	var codes []Code
	if e := s.AllOf[1].Value.Properties["error"]; e != nil && e.Value.Properties["code"] != nil {
		for _, v := range e.Value.Properties["code"].Value.Enum {
			codes = append(codes, Code(v.(string)))
		}
	}
	if len(codes) == 0 {
		t.Errorf("%s: no error codes listed", where)
	}
	return codes
}

var descriptionCodes = regexp.MustCompile("`([a-z_]+)` \\(([0-9]{3})\\)")

func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if !doc.IsOpenAPI31OrLater() || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}

	var enum []string
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		enum = append(enum, v.(string))
	}
	var codes []string
	for c := range codeStatus {
		codes = append(codes, string(c))
	}
	slices.Sort(enum)
	slices.Sort(codes)
	if !slices.Equal(enum, codes) {
		t.Errorf("ErrorCode enum %v, errors.go has %v", enum, codes)
	}

	checkResponse := func(where string, status int, r *openapi3.Response) []string {
		h := r.Headers["X-Request-Id"]
		if h == nil || !h.Value.Required {
			t.Errorf("%s: X-Request-Id is not declared required", where)
		}
		if status < 400 {
			return nil
		}
		var listed []string
		for _, c := range responseCodes(t, where, r) {
			if codeStatus[c] != status {
				t.Errorf("%s: code %s is sent with %d, not %d", where, c, codeStatus[c], status)
			}
			listed = append(listed, fmt.Sprintf("%s (%d)", c, status))
		}
		return listed
	}
	// The answers to requests no operation matches.
	for name, status := range map[string]int{"RouteNotFound": 404, "MethodNotAllowed": 405} {
		ref := doc.Components.Responses[name]
		if ref == nil {
			t.Errorf("components.responses.%s is missing", name)
			continue
		}
		checkResponse("components.responses."+name, status, ref.Value)
	}
	for key, op := range operations(doc) {
		var fromResponses []string
		for s, ref := range op.Responses.Map() {
			status, err := strconv.Atoi(s)
			if err != nil {
				t.Errorf("%s: response %q: only explicit statuses are documented", key, s)
				continue
			}
			fromResponses = append(fromResponses, checkResponse(key+" "+s, status, ref.Value)...)
		}
		var fromDescription []string
		_, list, ok := strings.Cut(op.Description, "Error codes: ")
		if !ok {
			t.Errorf("%s: the description has no \"Error codes: \" list", key)
		}
		for _, m := range descriptionCodes.FindAllStringSubmatch(list, -1) {
			fromDescription = append(fromDescription, m[1]+" ("+m[2]+")")
		}
		slices.Sort(fromResponses)
		slices.Sort(fromDescription)
		if !slices.Equal(fromResponses, fromDescription) {
			t.Errorf("%s: the description lists %v, the responses admit %v", key, fromDescription, fromResponses)
		}
		if rb := op.RequestBody; rb != nil {
			mt := rb.Value.Content.Get("application/json")
			if mt == nil || mt.Schema.Value.AdditionalProperties.Has == nil || *mt.Schema.Value.AdditionalProperties.Has {
				t.Errorf("%s: the request body must be application/json with additionalProperties: false (the server refuses unknown fields)", key)
			}
		}
	}
}

// serverRoute is one pattern the package registers on its mux.
type serverRoute struct {
	authed, idempotent bool // wrapped in a.authed / a.idempotent
}

// serverRoutes reads the patterns registered with HandleFunc or Handle in
// every non-test source file of the package (routes() in api.go, orgRoutes()
// in handlers_org.go, and whatever comes next), so a route added anywhere
// without documenting it fails TestOpenAPIRoutes. Routes other packages add
// through (*API).Handle (the gateway's /v1/ws) are theirs to document: the
// pattern inside that method is a parameter, not a literal, and is skipped.
func serverRoutes(t *testing.T) map[string]serverRoute {
	t.Helper()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	routes := map[string]serverRoute{}
	where := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			forOthers := fn.Recv != nil && fn.Name.Name == "Handle" // (*API).Handle
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) != 2 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
					return true
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					if !forOthers {
						t.Errorf("%s: a pattern that is not a string literal: cannot check it against the document", fset.Position(call.Pos()))
					}
					return true
				}
				pattern, _ := strconv.Unquote(lit.Value)
				var r serverRoute
				ast.Inspect(call.Args[1], func(n ast.Node) bool {
					if s, ok := n.(*ast.SelectorExpr); ok {
						r.authed = r.authed || s.Sel.Name == "authed"
						r.idempotent = r.idempotent || s.Sel.Name == "idempotent"
					}
					return true
				})
				pos := fset.Position(call.Pos()).String()
				if prev, dup := where[pattern]; dup {
					t.Errorf("%s registers %q again (first at %s): the mux would panic", pos, pattern, prev)
				}
				where[pattern] = pos
				routes[pattern] = r
				return true
			})
		}
	}
	if _, ok := routes["GET /healthz"]; !ok {
		t.Fatal("found no routes in api.go's routes()")
	}
	if _, ok := routes["GET /v1/org/units/{id}"]; !ok {
		t.Fatal("found no routes in handlers_org.go's orgRoutes()")
	}
	return routes
}

func TestOpenAPIRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	ops := operations(doc)
	routes := serverRoutes(t)
	for pattern, r := range routes {
		op := ops[pattern]
		if op == nil {
			t.Errorf("the server routes %q; the document does not describe it", pattern)
			continue
		}
		security := doc.Security
		if op.Security != nil {
			security = *op.Security
		}
		if documented := len(security) > 0; documented != r.authed {
			t.Errorf("%s: needs a token: server %v, document %v", pattern, r.authed, documented)
		}
		hasKey := slices.ContainsFunc(op.Parameters, func(p *openapi3.ParameterRef) bool { return p.Value.Name == "Idempotency-Key" })
		if hasKey != r.idempotent {
			t.Errorf("%s: honours Idempotency-Key: server %v, document %v", pattern, r.idempotent, hasKey)
		}
	}

	// The live mux must reach each documented operation's own route, not
	// the not_found fallback.
	api := New(Deps{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	params := regexp.MustCompile(`\{[^}]+\}`)
	for key := range ops {
		if _, ok := routes[key]; !ok {
			t.Errorf("the document describes %q; the server does not register it", key)
		}
		method, path, _ := strings.Cut(key, " ")
		req, err := http.NewRequest(method, params.ReplaceAllString(path, "1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, pattern := api.mux.Handler(req); pattern != key {
			t.Errorf("%s reaches route %q", key, pattern)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	ts := newTestServer(t)
	status, hdr, body := ts.do("GET", "/openapi.json", "", nil)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", status, hdr.Get("Content-Type"))
	}
	if !bytes.Equal(body, OpenAPI()) {
		t.Errorf("GET /openapi.json serves %d bytes that differ from the embedded %d", len(body), len(OpenAPI()))
	}
	if !json.Valid(body) {
		t.Error("GET /openapi.json is not valid JSON")
	}
	if !bytes.Equal(OpenAPI(), mustReadFile(t, "openapi.json")) {
		t.Error("the embedded document differs from openapi.json")
	}

	// Asked for gzip, it comes compressed (it is far above 1 KiB).
	status, hdr, body = ts.do("GET", "/openapi.json", "", nil, "Accept-Encoding", "gzip")
	if status != http.StatusOK || hdr.Get("Content-Encoding") != "gzip" || !strings.Contains(hdr.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("GET /openapi.json with Accept-Encoding: gzip: %d, Content-Encoding %q, Vary %q", status, hdr.Get("Content-Encoding"), hdr.Get("Vary"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, OpenAPI()) {
		t.Errorf("the gzipped document differs from the embedded one (err %v)", err)
	}
}

func mustReadFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenAPIKinEnforces31 pins down that the validator really applies the
// 3.1 keywords the document relies on: if it silently ignored them, the
// conformance test would pass on answers the document forbids.
func TestOpenAPIKinEnforces31(t *testing.T) {
	doc := loadOpenAPI(t)
	opts := []openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()}
	schema := func(name string) *openapi3.Schema { return doc.Components.Schemas[name].Value }
	decode := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		schema, value string
		ok            bool
	}{
		{"Error", `{"error":{"code":"not_found","message":"m","request_id":"r"}}`, true},
		{"Error", `{"error":{"code":"not_found","message":"m","request_id":"r","details":{"field":"f","problem":"p"}}}`, false}, // else
		{"Error", `{"error":{"code":"invalid_argument","message":"m","request_id":"r"}}`, false},                                // then
		{"Error", `{"error":{"code":"no_such_code","message":"m","request_id":"r"}}`, false},                                    // enum
		{"Error", `{"error":{"code":"not_found","message":"m","request_id":"r"},"x":1}`, false},                                 // additionalProperties
		{"TokenPair", `{"access_token":"a.b.c","refresh_token":"zbr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","expires_in":60,"token_type":"Bearer"}`, true},
		{"TokenPair", `{"access_token":"a.b.c","refresh_token":"zbr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","expires_in":60,"token_type":"bearer"}`, false}, // const
		{"Account", `{"id":1,"display_name":"d","superuser":false,"disabled":false,"created_at":"2026-01-02T03:04:05Z"}`, true},
		{"Account", `{"id":1,"display_name":"d","superuser":false,"disabled":false,"created_at":"yesterday"}`, false},                                                    // date-time
		{"Account", `{"id":1e19,"display_name":"d","superuser":false,"disabled":false,"created_at":"2026-01-02T03:04:05Z"}`, false},                                      // maximum (see above)
		{"TokenPair", `{"access_token":"a.b.c","refresh_token":"zbr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","expires_in":3000000000,"token_type":"Bearer"}`, false}, // int32
		{"NewAccount", `{"display_name":"d","password":"p"}`, false},                                                                                                     // anyOf required
		{"Error", `{"error":{"code":"failed_precondition","message":"m","request_id":"r"}}`, true},
		{"Error", `{"error":{"code":"failed_precondition","message":"m","request_id":"r","details":{"blockers":[{"kind":"members","count":2,"sample":["a","b"]}]}}}`, true},
		{"Error", `{"error":{"code":"failed_precondition","message":"m","request_id":"r","details":{"field":"f","problem":"p"}}}`, false}, // nested if/then
		{"Error", `{"error":{"code":"failed_precondition","message":"m","request_id":"r","details":{"blockers":[]}}}`, false},             // minItems
		{"Member", `{"account_id":1,"name":"n","pinyin":"n","mobile":"138****1234","mobile_masked":true,"position":{"id":1,"account_id":1,"unit_id":1,"unit_name":"u","title":"","leader":false,"primary":true,"sort_order":0,"version":1}}`, true},
		{"Member", `{"account_id":1,"name":"n","pinyin":"n","mobile":"13812341234","mobile_masked":true,"position":{"id":1,"account_id":1,"unit_id":1,"unit_name":"u","title":"","leader":false,"primary":true,"sort_order":0,"version":1}}`, false}, // masked means masked
		{"Unit", `{"id":1,"parent_id":null,"level":"province","name":"p","code":null,"sort_order":0,"status":"active","generated":false,"version":1,"updated_at":"2026-01-02T03:04:05Z"}`, true},
		{"Unit", `{"id":1,"parent_id":null,"level":7,"name":"p","code":null,"sort_order":0,"status":"active","generated":false,"version":1,"updated_at":"2026-01-02T03:04:05Z"}`, false}, // enum
		{"Change", `{"version":1,"entity":"unit","id":1,"op":"delete"}`, true},
		{"Change", `{"version":1,"entity":"unit","id":1,"op":"upsert"}`, false}, // an upsert carries the entity
	}
	for _, c := range cases {
		err := schema(c.schema).VisitJSON(decode(c.value), opts...)
		if (err == nil) != c.ok {
			t.Errorf("%s %s: valid = %v, want %v (%v)", c.schema, c.value, err == nil, c.ok, err)
		}
	}
}

// conformance drives requests through a test server and checks each answer
// against the document.
type conformance struct {
	ts       *testServer
	doc      *openapi3.T
	router   routers.Router
	statuses map[string]map[int]bool // "METHOD /path" (or "unrouted") → statuses seen
	codes    map[Code]bool           // error codes seen
}

// exchange is one request and the answer it must get.
type exchange struct {
	method, path string
	token        string
	body         any      // nil, a string sent as is, or a value sent as JSON
	hdr          []string // header name, value, …; Content-Type here overrides application/json
	status       int
	code         Code // the error code; empty for a success
	docRejects   bool // the document, too, rejects this request
}

func newConformance(t *testing.T, ts *testServer) *conformance {
	doc := loadOpenAPI(t)
	strictResponses(doc)
	doc.Servers = nil // route by path alone: the test server is not the documented host
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &conformance{ts: ts, doc: doc, router: router, statuses: map[string]map[int]bool{}, codes: map[Code]bool{}}
}

// strictResponses closes the object schemas the document leaves open, so
// that a field the server sends but the document does not describe fails
// the test. The published document stays open: clients must ignore fields
// they do not know, and adding one is not a breaking change.
func strictResponses(doc *openapi3.T) {
	no := false
	for _, ref := range doc.Components.Schemas {
		s := ref.Value
		if s.Type.Is("object") && s.AdditionalProperties.Has == nil && s.AdditionalProperties.Schema == nil && len(s.Properties) > 0 {
			s.AdditionalProperties.Has = &no
		}
	}
}

// bearerPresent is the document's security scheme as a request validator
// sees it: a bearer token must be sent; whether it is good is the server's
// business.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if tok, ok := strings.CutPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer "); !ok || tok == "" {
		return errors.New("no bearer token")
	}
	return nil
}

// call sends x and checks the answer; it returns the answer's headers and body.
func (c *conformance) call(t *testing.T, name string, x exchange) (http.Header, []byte) {
	t.Helper()
	var body []byte
	switch b := x.body.(type) {
	case nil:
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	newRequest := func() *http.Request {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(x.method, c.ts.URL+x.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if x.token != "" {
			req.Header.Set("Authorization", "Bearer "+x.token)
		}
		for i := 0; i+1 < len(x.hdr); i += 2 {
			req.Header.Set(x.hdr[i], x.hdr[i+1])
		}
		return req
	}
	resp, err := c.ts.Client().Do(newRequest())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c.check(t, name, x, newRequest(), resp.StatusCode, resp.Header, out, true)
	return resp.Header, out
}

// tooLarge sends a request that declares a body above the 1 MiB every route
// refuses before reading, and sends none: the server must answer 413 at once.
// http.Client cannot declare a length it does not send, hence the raw socket.
func (c *conformance) tooLarge(t *testing.T, method, path string) {
	t.Helper()
	const declared = maxBodyHard + 1
	conn, err := net.Dial("tcp", c.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		method, path, c.ts.Listener.Addr(), declared)
	req, err := http.NewRequest(method, c.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("%s %s with Content-Length %d: %v", method, path, declared, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = declared
	c.check(t, method+" "+path+" declaring a body over 1 MiB", exchange{method: method, path: path, status: http.StatusRequestEntityTooLarge, code: CodePayloadTooLarge},
		req, resp.StatusCode, resp.Header, out, false)
}

// check holds one answer against x and against the document.
func (c *conformance) check(t *testing.T, name string, x exchange, req *http.Request, status int, hdr http.Header, body []byte, validateRequest bool) {
	t.Helper()
	name = fmt.Sprintf("%s (%s %s)", name, x.method, x.path)
	if status != x.status {
		t.Errorf("%s: status %d, want %d: %s", name, status, x.status, body)
		return
	}
	if x.code != "" {
		code := errorCode(t, body)
		if code != x.code {
			t.Errorf("%s: code %s, want %s: %s", name, code, x.code, body)
		}
		c.codes[code] = true
	}
	if !validRequestID(hdr.Get("X-Request-Id")) {
		t.Errorf("%s: X-Request-Id %q", name, hdr.Get("X-Request-Id"))
	}

	route, pathParams, err := c.router.FindRoute(req)
	switch {
	case errors.Is(err, routers.ErrPathNotFound), errors.Is(err, routers.ErrMethodNotAllowed):
		c.checkUnrouted(t, name, err, req, status, hdr, body)
		return
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	key := route.Method + " " + route.Path
	if c.statuses[key] == nil {
		c.statuses[key] = map[int]bool{}
	}
	c.statuses[key][status] = true

	reqIn := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: bearerPresent}}
	if validateRequest {
		err := openapi3filter.ValidateRequest(context.Background(), reqIn)
		switch {
		case x.docRejects && err == nil:
			t.Errorf("%s: the server refuses this request, the document accepts it", name)
		case !x.docRejects && err != nil:
			t.Errorf("%s: the document rejects this request: %v", name, err)
		}
	}
	respIn := &openapi3filter.ResponseValidationInput{RequestValidationInput: reqIn, Status: status, Header: hdr,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	respIn.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), respIn); err != nil {
		t.Errorf("%s: the answer breaks the document: %v\nbody: %s", name, err, body)
	}
	if r := route.Operation.Responses.Status(status); r != nil && len(r.Value.Content) == 0 && len(body) != 0 {
		t.Errorf("%s: the document declares no body for %d, got %q", name, status, body)
	}
}

// checkUnrouted holds the answer to a request the document has no operation
// for against the RouteNotFound or MethodNotAllowed component.
func (c *conformance) checkUnrouted(t *testing.T, name string, routeErr error, req *http.Request, status int, hdr http.Header, body []byte) {
	t.Helper()
	want, component := http.StatusNotFound, "RouteNotFound"
	if errors.Is(routeErr, routers.ErrMethodNotAllowed) {
		want, component = http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	if status != want {
		t.Errorf("%s: the document has no such operation (%v), so the answer must be %d, got %d", name, routeErr, want, status)
		return
	}
	if c.statuses["unrouted"] == nil {
		c.statuses["unrouted"] = map[int]bool{}
	}
	c.statuses["unrouted"][status] = true
	if status == http.StatusMethodNotAllowed {
		var allowed []string
		for _, m := range strings.Split(hdr.Get("Allow"), ",") {
			if m = strings.TrimSpace(m); m != http.MethodHead {
				allowed = append(allowed, m)
			}
		}
		var documented []string
		for key := range operations(c.doc) {
			if method, path, _ := strings.Cut(key, " "); pathMatches(path, req.URL.Path) {
				documented = append(documented, method)
			}
		}
		slices.Sort(allowed)
		slices.Sort(documented)
		if !slices.Equal(allowed, documented) {
			t.Errorf("%s: Allow %q, the document has %v", name, hdr.Get("Allow"), documented)
		}
	}
	op := &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(status, c.doc.Components.Responses[component]))}
	route := &routers.Route{Spec: c.doc, Path: req.URL.Path, Method: req.Method, Operation: op}
	respIn := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, Route: route},
		Status:                 status, Header: hdr, Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	respIn.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), respIn); err != nil {
		t.Errorf("%s: the answer breaks components.responses.%s: %v\nbody: %s", name, component, err, body)
	}
}

// pathMatches reports whether a documented path template matches path.
func pathMatches(template, path string) bool {
	tp, pp := strings.Split(template, "/"), strings.Split(path, "/")
	if len(tp) != len(pp) {
		return false
	}
	for i := range tp {
		if tp[i] != pp[i] && !(strings.HasPrefix(tp[i], "{") && pp[i] != "") {
			return false
		}
	}
	return true
}

// checkCoverage fails for every documented answer no exchange produced,
// except those a test cannot cause: 500 (a panic or a database failure), and
// 503 outside /readyz (the request's context ending mid-way).
func (c *conformance) checkCoverage(t *testing.T) {
	t.Helper()
	for key, op := range operations(c.doc) {
		for s := range op.Responses.Map() {
			status, _ := strconv.Atoi(s)
			if status == http.StatusInternalServerError || (status == http.StatusServiceUnavailable && key != "GET /readyz") {
				continue
			}
			if !c.statuses[key][status] {
				t.Errorf("%s: the document declares %d, no exchange produced it", key, status)
			}
		}
	}
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		if !c.statuses["unrouted"][status] {
			t.Errorf("no exchange produced the unrouted %d", status)
		}
	}
	for code := range codeStatus {
		if !c.codes[code] && code != CodeInternal {
			t.Errorf("no exchange produced the error code %s", code)
		}
	}
}

func TestConformance(t *testing.T) {
	world := newOrgWorld(t) // the org routes need a tree with people in it
	ts := world.testServer
	c := newConformance(t, ts)
	pool := ts.api.pool
	ctx := context.Background()
	const forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

	var me auth.Account
	_, body := c.call(t, "admin reads itself", exchange{method: "GET", path: "/v1/me", token: ts.admin, status: 200})
	if err := json.Unmarshal(body, &me); err != nil {
		t.Fatal(err)
	}
	admin := strconv.FormatInt(me.ID, 10)

	t.Run("system", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
			c.call(t, "probe", exchange{method: "GET", path: path, status: 200})
			c.tooLarge(t, "GET", path)
		}
		c.call(t, "metrics as protobuf", exchange{method: "GET", path: "/metrics", status: 200,
			hdr: []string{"Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"}})
		hdr, _ := c.call(t, "client request id", exchange{method: "GET", path: "/healthz", hdr: []string{"X-Request-Id", "abc-123"}, status: 200})
		if hdr.Get("X-Request-Id") != "abc-123" {
			t.Errorf("X-Request-Id %q, want the client's abc-123", hdr.Get("X-Request-Id"))
		}
	})

	t.Run("unrouted", func(t *testing.T) {
		c.call(t, "unknown path", exchange{method: "GET", path: "/v1/nope", status: 404, code: CodeNotFound})
		c.call(t, "unknown path under a route", exchange{method: "GET", path: "/v1/accounts/1/sessions/2/x", status: 404, code: CodeNotFound})
		c.call(t, "trailing slash", exchange{method: "GET", path: "/v1/me/", token: ts.admin, status: 404, code: CodeNotFound})
		c.call(t, "GET on a POST route", exchange{method: "GET", path: "/v1/auth/login", status: 405, code: CodeMethodNotAllowed})
		c.call(t, "PUT on a GET route", exchange{method: "PUT", path: "/v1/me", token: ts.admin, body: map[string]any{}, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "POST on a probe", exchange{method: "POST", path: "/healthz", status: 405, code: CodeMethodNotAllowed})
		c.call(t, "GET on a DELETE route", exchange{method: "GET", path: "/v1/accounts/1/sessions/2", token: ts.admin, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "PATCH on an account", exchange{method: "PATCH", path: "/v1/accounts/1", token: ts.admin, body: map[string]any{}, status: 405, code: CodeMethodNotAllowed})
	})

	var alice, bob auth.Account // bob never signs in
	var aliceToken string
	t.Run("createAccount", func(t *testing.T) {
		const path = "/v1/accounts"
		newAlice := `{"login":"alice","display_name":"Alice","password":"alice-password"}`
		hdr, body := c.call(t, "create", exchange{method: "POST", path: path, token: ts.admin, body: newAlice, hdr: []string{"Idempotency-Key", "k1"}, status: 201})
		if err := json.Unmarshal(body, &alice); err != nil {
			t.Fatal(err)
		}
		if hdr.Get("Location") != "/v1/accounts/"+strconv.FormatInt(alice.ID, 10) || hdr.Get("Idempotent-Replayed") != "" {
			t.Errorf("first answer: Location %q, Idempotent-Replayed %q", hdr.Get("Location"), hdr.Get("Idempotent-Replayed"))
		}
		hdr, replayed := c.call(t, "replay", exchange{method: "POST", path: path, token: ts.admin, body: newAlice, hdr: []string{"Idempotency-Key", "k1"}, status: 201})
		if hdr.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replayed, body) {
			t.Errorf("replay: Idempotent-Replayed %q, body %s, first %s", hdr.Get("Idempotent-Replayed"), replayed, body)
		}
		c.call(t, "key reused with another body", exchange{method: "POST", path: path, token: ts.admin, hdr: []string{"Idempotency-Key", "k1"},
			body: `{"login":"alice2","display_name":"Alice","password":"alice-password"}`, status: 422, code: CodeIdempotencyKeyReused})
		c.call(t, "key too long", exchange{method: "POST", path: path, token: ts.admin, hdr: []string{"Idempotency-Key", strings.Repeat("k", 256)},
			body: `{"login":"carol","display_name":"Carol","password":"carol-password"}`, status: 400, code: CodeInvalidArgument, docRejects: true})

		// A request that is still running holds its key: pretend one is.
		running := `{"login":"dave","display_name":"Dave","password":"dave-password"}`
		hash := sha256.Sum256([]byte("POST " + path + "\n" + running))
		if _, err := pool.Exec(ctx, `INSERT INTO api_idempotency (account_id, key, request_hash) VALUES ($1, 'k-running', $2)`, me.ID, hash[:]); err != nil {
			t.Fatal(err)
		}
		c.call(t, "same key while the first still runs", exchange{method: "POST", path: path, token: ts.admin, body: running, hdr: []string{"Idempotency-Key", "k-running"}, status: 409, code: CodeRequestInProgress})

		c.call(t, "login taken", exchange{method: "POST", path: path, token: ts.admin, body: newAlice, status: 409, code: CodeAlreadyExists})
		_, body = c.call(t, "mobile only", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"mobile": "13800000000", "display_name": "Bob", "password": "bob-password"}, status: 201})
		if err := json.Unmarshal(body, &bob); err != nil {
			t.Fatal(err)
		}
		c.call(t, "invalid field", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"login": "erin", "display_name": "", "password": "erin-password"}, status: 400, code: CodeInvalidArgument})
		c.call(t, "neither login nor mobile", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"display_name": "X", "password": "x-password"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"login": "erin", "display_name": "Erin", "password": "erin-password", "superuser": "yes"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"login": "erin", "display_name": "Erin", "password": "erin-password", "admin": true}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: ts.admin, body: `{"login":`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "two objects", exchange{method: "POST", path: path, token: ts.admin, body: `{"login":"erin"} {}`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: ts.admin, body: "login=erin", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "POST", path: path, token: ts.admin, body: map[string]any{"login": "erin", "display_name": strings.Repeat("x", 70<<10), "password": "erin-password"}, status: 413, code: CodePayloadTooLarge})
		c.tooLarge(t, "POST", path)
		c.call(t, "no token", exchange{method: "POST", path: path, body: newAlice, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.call(t, "forged token", exchange{method: "POST", path: path, token: forged, body: newAlice, status: 401, code: CodeUnauthenticated})

		aliceToken = ts.login("alice", "alice-password", "alice-phone").AccessToken
		c.call(t, "not an administrator", exchange{method: "POST", path: path, token: aliceToken, body: map[string]any{"login": "erin", "display_name": "Erin", "password": "erin-password"}, status: 403, code: CodePermissionDenied})
	})
	if alice.ID == 0 {
		t.Fatal("no account to go on with")
	}
	aliceID := strconv.FormatInt(alice.ID, 10)

	t.Run("login", func(t *testing.T) {
		const path = "/v1/auth/login"
		good := map[string]any{"login": "alice", "password": "alice-password", "device": "alice-tablet"}
		c.call(t, "sign in", exchange{method: "POST", path: path, body: good, status: 200})
		c.call(t, "wrong password", exchange{method: "POST", path: path, body: map[string]any{"login": "alice", "password": "wrong"}, status: 401, code: CodeInvalidCredentials})
		c.call(t, "missing password", exchange{method: "POST", path: path, body: map[string]any{"login": "alice"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, body: map[string]any{"login": 1, "password": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, body: map[string]any{"login": "alice", "password": "x", "remember": true}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, body: `{"login": "alice",`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "array", exchange{method: "POST", path: path, body: `[]`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "empty body", exchange{method: "POST", path: path, body: "", hdr: []string{"Content-Type", "application/json"}, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, body: "alice:alice-password", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 4 KiB", exchange{method: "POST", path: path, body: map[string]any{"login": "alice", "password": "alice-password", "device": strings.Repeat("d", 5<<10)}, status: 413, code: CodePayloadTooLarge})
		c.tooLarge(t, "POST", path)
		for i := range 5 {
			c.call(t, fmt.Sprintf("failure %d", i+1), exchange{method: "POST", path: path, body: map[string]any{"login": "mallory", "password": "guess"}, status: 401, code: CodeInvalidCredentials})
		}
		hdr, _ := c.call(t, "throttled", exchange{method: "POST", path: path, body: map[string]any{"login": "mallory", "password": "guess"}, status: 429, code: CodeTooManyRequests})
		if n, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || n < 1 || n > 30 {
			t.Errorf("Retry-After %q after the fifth failure, want 1-30 seconds", hdr.Get("Retry-After"))
		}
	})

	t.Run("refresh", func(t *testing.T) {
		const path = "/v1/auth/refresh"
		first := ts.login("alice", "alice-password", "alice-watch")
		_, body := c.call(t, "rotate", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": first.RefreshToken, "device": "alice-watch"}, status: 200})
		var second auth.TokenPair
		if err := json.Unmarshal(body, &second); err != nil {
			t.Fatal(err)
		}
		c.call(t, "spent token again", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": first.RefreshToken}, status: 401, code: CodeRefreshReused})
		c.call(t, "its successor, session now revoked", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": second.RefreshToken}, status: 401, code: CodeUnauthenticated})
		c.call(t, "the session's access token too", exchange{method: "GET", path: "/v1/me", token: second.AccessToken, status: 401, code: CodeUnauthenticated})

		other := ts.login("alice", "alice-password", "alice-laptop")
		c.call(t, "another device's name", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": other.RefreshToken, "device": "alice-phone"}, status: 401, code: CodeUnauthenticated})
		if _, err := pool.Exec(ctx, `UPDATE auth_sessions SET expires_at = now() - interval '1 minute' WHERE device = 'alice-laptop' AND revoked_at IS NULL`); err != nil {
			t.Fatal(err)
		}
		c.call(t, "expired session", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": other.RefreshToken}, status: 401, code: CodeUnauthenticated})

		c.call(t, "forged", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": "zbr_forged"}, status: 401, code: CodeUnauthenticated})
		c.call(t, "missing token", exchange{method: "POST", path: path, body: map[string]any{"device": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": 42}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": "zbr_x", "access_token": "y"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, body: `{"refresh_token"}`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, body: "zbr_x", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 4 KiB", exchange{method: "POST", path: path, body: map[string]any{"refresh_token": "zbr_" + strings.Repeat("x", 5<<10)}, status: 413, code: CodePayloadTooLarge})
		c.tooLarge(t, "POST", path)
	})

	t.Run("me", func(t *testing.T) {
		c.call(t, "self", exchange{method: "GET", path: "/v1/me", token: aliceToken, status: 200, hdr: []string{"X-Request-Id", "req.42_x"}})
		c.call(t, "no token", exchange{method: "GET", path: "/v1/me", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.call(t, "not a bearer token", exchange{method: "GET", path: "/v1/me", hdr: []string{"Authorization", "Basic YTpi"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.call(t, "forged token", exchange{method: "GET", path: "/v1/me", token: forged, status: 401, code: CodeUnauthenticated})
		// Same key as the server, but tokens that are born expired.
		stale := auth.New(pool, auth.NewKeyring(bytes.Repeat([]byte("k"), 32)), auth.Settings{AccessTTL: -time.Minute, RefreshTTL: time.Hour, Hash: testHash}, ts.api.log)
		old, err := stale.Login(ctx, auth.LoginRequest{Login: "alice", Password: "alice-password", Device: "alice-old"})
		if err != nil {
			t.Fatal(err)
		}
		c.call(t, "expired token", exchange{method: "GET", path: "/v1/me", token: old.AccessToken, status: 401, code: CodeTokenExpired})
		c.tooLarge(t, "GET", "/v1/me")
	})

	t.Run("getAccount", func(t *testing.T) {
		c.call(t, "own", exchange{method: "GET", path: "/v1/accounts/" + aliceID, token: aliceToken, status: 200})
		c.call(t, "administrator reads another", exchange{method: "GET", path: "/v1/accounts/" + aliceID, token: ts.admin, status: 200})
		c.call(t, "another's, not administrator", exchange{method: "GET", path: "/v1/accounts/" + admin, token: aliceToken, status: 403, code: CodePermissionDenied})
		c.call(t, "no such account", exchange{method: "GET", path: "/v1/accounts/999999", token: ts.admin, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/accounts/abc", token: ts.admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "id zero", exchange{method: "GET", path: "/v1/accounts/0", token: ts.admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: "/v1/accounts/" + aliceID, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", "/v1/accounts/"+aliceID)
	})

	var tablet int64
	t.Run("listAccountSessions", func(t *testing.T) {
		path := "/v1/accounts/" + aliceID + "/sessions"
		_, body := c.call(t, "own", exchange{method: "GET", path: path, token: aliceToken, status: 200})
		var list struct{ Sessions []auth.Session }
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Sessions {
			if s.Device == "alice-tablet" && s.RevokedAt == nil {
				tablet = s.ID
			}
		}
		c.call(t, "administrator lists another's", exchange{method: "GET", path: path, token: ts.admin, status: 200})
		_, body = c.call(t, "an account that never signed in", exchange{method: "GET", path: "/v1/accounts/" + strconv.FormatInt(bob.ID, 10) + "/sessions", token: ts.admin, status: 200})
		if !bytes.Contains(body, []byte(`"sessions":[]`)) {
			t.Errorf("no sessions must be an empty array: %s", body)
		}
		c.call(t, "another's, not administrator", exchange{method: "GET", path: "/v1/accounts/" + admin + "/sessions", token: aliceToken, status: 403, code: CodePermissionDenied})
		c.call(t, "no such account", exchange{method: "GET", path: "/v1/accounts/999999/sessions", token: ts.admin, status: 404, code: CodeNotFound})
		c.call(t, "id negative", exchange{method: "GET", path: "/v1/accounts/-1/sessions", token: ts.admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("revokeAccountSession", func(t *testing.T) {
		if tablet == 0 {
			t.Fatal("alice's tablet session is not listed")
		}
		own := "/v1/accounts/" + aliceID + "/sessions/"
		c.call(t, "own other device", exchange{method: "DELETE", path: own + strconv.FormatInt(tablet, 10), token: aliceToken, status: 204})
		c.call(t, "again", exchange{method: "DELETE", path: own + strconv.FormatInt(tablet, 10), token: aliceToken, status: 204})
		c.call(t, "another's, not administrator", exchange{method: "DELETE", path: "/v1/accounts/" + admin + "/sessions/1", token: aliceToken, status: 403, code: CodePermissionDenied})
		c.call(t, "no such session", exchange{method: "DELETE", path: own + "999999", token: ts.admin, status: 404, code: CodeNotFound})
		c.call(t, "another account's session", exchange{method: "DELETE", path: "/v1/accounts/" + admin + "/sessions/" + strconv.FormatInt(tablet, 10), token: ts.admin, status: 404, code: CodeNotFound})
		c.call(t, "sid not a number", exchange{method: "DELETE", path: own + "abc", token: aliceToken, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "DELETE", path: own + "1", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "DELETE", own+"1")
	})

	t.Run("logout", func(t *testing.T) {
		c.call(t, "sign out", exchange{method: "POST", path: "/v1/auth/logout", token: aliceToken, status: 204})
		c.call(t, "twice", exchange{method: "POST", path: "/v1/auth/logout", token: aliceToken, status: 401, code: CodeUnauthenticated})
		c.call(t, "no token", exchange{method: "POST", path: "/v1/auth/logout", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", "/v1/auth/logout")
	})

	t.Run("org", func(t *testing.T) { orgConformance(t, c, world) })
	t.Run("messaging", func(t *testing.T) { messagingConformance(t, c, world) }) // in messaging_test.go

	t.Run("draining", func(t *testing.T) {
		ts.api.Drain()
		c.call(t, "readyz while draining", exchange{method: "GET", path: "/readyz", status: 503, code: CodeUnavailable})
	})

	c.checkCoverage(t)
	t.Logf("operations covered: %v", slices.Sorted(maps.Keys(c.statuses)))
}

// decodeAs decodes an answer the test goes on with.
func decodeAs[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %T: %v: %s", v, err, body)
	}
	return v
}

// errorDetails decodes the details of an error answer.
func errorDetails[T any](t *testing.T, body []byte) T {
	t.Helper()
	return decodeAs[struct {
		Error struct{ Details T }
	}](t, body).Error.Details
}

// orgConformance drives every org route through w, the tree of newOrgWorld:
//
//	浙江 P ─ 杭州 C1 ─ 西湖区 K1 (the actors' unit) ─ 北山街道 T1
//	       │         └ 上城区 K2
//	       └ 宁波 C2 ─ 海曙区 K3
//	江苏 P2 ─ 南京 C3
//
// The actors hold their role at K1, so K1 and T1 are theirs, C1 and P are
// visible (above their unit) but not theirs, and K2, K3 and C3 are invisible:
// those must answer exactly like ids that do not exist. Requests that depend
// on the rule for granting roles use the superuser, or an admin granting
// admin below their unit, which every version of the rule allows.
func orgConformance(t *testing.T, c *conformance, w *orgWorld) {
	ctx := context.Background()
	su, admin, leader, staff, auditor := w.admin, w.tokens[authz.RoleAdmin], w.tokens[authz.RoleLeader], w.tokens[authz.RoleStaff], w.tokens[authz.RoleAuditor]
	k1, t1, c1, k2 := w.units["same"], w.units["descendant"], w.units["ancestor"], w.units["sibling"]
	id := func(n int64) string { return strconv.FormatInt(n, 10) }
	unitPath := func(u int64, rest ...string) string { return "/v1/org/units/" + id(u) + strings.Join(rest, "") }
	const unknown = "999999"
	accountOf := func(token string) auth.Account {
		_, body := c.call(t, "who", exchange{method: "GET", path: "/v1/me", token: token, status: 200})
		return decodeAs[auth.Account](t, body)
	}
	adminAcc, staffAcc := accountOf(admin), accountOf(staff)
	// inProgress pretends a request with key is still running for account.
	inProgress := func(account int64, key, path, body string) {
		hash := sha256.Sum256([]byte("POST " + path + "\n" + body))
		if _, err := w.api.pool.Exec(ctx, `INSERT INTO api_idempotency (account_id, key, request_hash) VALUES ($1, $2, $3)`, account, key, hash[:]); err != nil {
			t.Fatal(err)
		}
	}
	// positionOf finds account's position in unit through the superuser's eyes.
	positionOf := func(unit, account int64) int64 {
		t.Helper()
		_, body := c.call(t, "superuser lists members", exchange{method: "GET", path: unitPath(unit, "/members?limit=500"), token: su, status: 200})
		for _, m := range decodeAs[struct{ Members []org.Member }](t, body).Members {
			if m.AccountID == account {
				return m.Position.ID
			}
		}
		t.Fatalf("account %d holds no position in unit %d", account, unit)
		return 0
	}

	var t2, v1, d org.Unit // a new township under K1, a village under T1, a township to dissolve
	t.Run("createUnit", func(t *testing.T) {
		const path = "/v1/org/units"
		lingyin := fmt.Sprintf(`{"parent_id":%d,"name":"灵隐街道","code":"330106005","level":"township"}`, k1)
		hdr, body := c.call(t, "create", exchange{method: "POST", path: path, token: admin, body: lingyin, hdr: []string{"Idempotency-Key", "unit-1"}, status: 201})
		t2 = decodeAs[org.Unit](t, body)
		if hdr.Get("Location") != unitPath(t2.ID) || t2.Level != org.Township || t2.ParentID == nil || *t2.ParentID != k1 || *t2.Code != "330106005000" {
			t.Errorf("created %+v, Location %q", t2, hdr.Get("Location"))
		}
		hdr, replayed := c.call(t, "replay", exchange{method: "POST", path: path, token: admin, body: lingyin, hdr: []string{"Idempotency-Key", "unit-1"}, status: 201})
		if hdr.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replayed, body) || hdr.Get("Location") != unitPath(t2.ID) {
			t.Errorf("replay: Idempotent-Replayed %q, Location %q, body %s, first %s", hdr.Get("Idempotent-Replayed"), hdr.Get("Location"), replayed, body)
		}
		c.call(t, "key reused with another body", exchange{method: "POST", path: path, token: admin, hdr: []string{"Idempotency-Key", "unit-1"},
			body: map[string]any{"parent_id": k1, "name": "另一个街道"}, status: 422, code: CodeIdempotencyKeyReused})
		running := fmt.Sprintf(`{"parent_id":%d,"name":"还在建"}`, k1)
		inProgress(adminAcc.ID, "unit-running", path, running)
		c.call(t, "same key while the first still runs", exchange{method: "POST", path: path, token: admin, body: running, hdr: []string{"Idempotency-Key", "unit-running"}, status: 409, code: CodeRequestInProgress})

		_, body = c.call(t, "a village", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": t1, "name": "北山社区", "code": "330106004001"}, status: 201})
		v1 = decodeAs[org.Unit](t, body)
		_, body = c.call(t, "a township without a code", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "待撤销街道", "sort_order": 9}, status: 201})
		d = decodeAs[org.Unit](t, body)
		_, body = c.call(t, "a province, by the superuser", exchange{method: "POST", path: path, token: su, body: map[string]any{"name": "安徽省", "code": "34"}, status: 201})
		if u := decodeAs[org.Unit](t, body); u.ParentID != nil || u.Level != org.Province {
			t.Errorf("province: %s", body)
		}

		c.call(t, "duplicate code", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "重复", "code": "330106004"}, status: 409, code: CodeAlreadyExists})
		c.call(t, "level mismatch", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "错级", "level": "village"}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "a province, not superuser", exchange{method: "POST", path: path, token: admin, body: map[string]any{"name": "某省"}, status: 400, code: CodeInvalidArgument})
		c.call(t, "blank name", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "  "}, status: 400, code: CodeInvalidArgument})
		c.call(t, "empty name", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": ""}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "bad code", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "某", "code": "12345"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "level as a number", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "某", "level": 4}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": id(k1), "name": "某"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k1, "name": "某", "status": "active"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: admin, body: `{"parent_id":`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: admin, body: "name=x", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "no such parent", exchange{method: "POST", path: path, token: admin, body: `{"parent_id":` + unknown + `,"name":"某"}`, status: 404, code: CodeNotFound})
		c.call(t, "invisible parent", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": k2, "name": "某"}, status: 404, code: CodeNotFound})
		c.call(t, "visible parent, not managed", exchange{method: "POST", path: path, token: admin, body: map[string]any{"parent_id": c1, "name": "某"}, status: 403, code: CodePermissionDenied})
		c.call(t, "staff", exchange{method: "POST", path: path, token: staff, body: map[string]any{"parent_id": k1, "name": "某"}, status: 403, code: CodePermissionDenied})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"parent_id": k1, "name": "某"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})
	if t2.ID == 0 || v1.ID == 0 || d.ID == 0 {
		t.Fatal("no units to go on with")
	}

	t.Run("searchUnits", func(t *testing.T) {
		const path = "/v1/org/units"
		_, body := c.call(t, "by name", exchange{method: "GET", path: path + "?q=" + url.QueryEscape("西湖"), token: staff, status: 200})
		if !bytes.Contains(body, []byte(`"id":`+id(k1)+`,`)) {
			t.Errorf("西湖 finds %s", body)
		}
		_, body = c.call(t, "nothing visible matches", exchange{method: "GET", path: path + "?q=" + url.QueryEscape("上城") + "&limit=5", token: staff, status: 200})
		if !bytes.Contains(body, []byte(`"units":[]`)) {
			t.Errorf("an invisible unit is found by name: %s", body)
		}
		c.call(t, "by code", exchange{method: "GET", path: path + "?code=330106", token: staff, status: 200})
		c.call(t, "by code, above one's unit", exchange{method: "GET", path: path + "?code=3301", token: staff, status: 200})
		c.call(t, "code of an invisible unit", exchange{method: "GET", path: path + "?code=330102", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "code of no unit", exchange{method: "GET", path: path + "?code=999999", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "bad code", exchange{method: "GET", path: path + "?code=12345", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "neither q nor code", exchange{method: "GET", path: path, token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "q too long", exchange{method: "GET", path: path + "?q=" + strings.Repeat("x", 51), token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "?q=x&limit=501", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit not a number", exchange{method: "GET", path: path + "?q=x&limit=ten", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path + "?q=x", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path+"?q=x")
	})

	t.Run("getUnit", func(t *testing.T) {
		c.call(t, "own unit", exchange{method: "GET", path: unitPath(k1), token: staff, status: 200})
		c.call(t, "above one's unit", exchange{method: "GET", path: unitPath(c1), token: staff, status: 200})
		c.call(t, "invisible", exchange{method: "GET", path: unitPath(k2), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown, token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/units/abc", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "id zero", exchange{method: "GET", path: "/v1/org/units/0", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: unitPath(k1), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", unitPath(k1))
	})

	t.Run("updateUnit", func(t *testing.T) {
		p := unitPath(t2.ID)
		_, body := c.call(t, "rename", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"name": "灵隐街道办事处", "sort_order": 2}, status: 200})
		if u := decodeAs[org.Unit](t, body); u.Name != "灵隐街道办事处" || u.SortOrder != 2 || u.Version <= t2.Version {
			t.Errorf("renamed: %s", body)
		}
		c.call(t, "null leaves a field", exchange{method: "PATCH", path: p, token: admin, body: `{"name":null,"sort_order":1}`, status: 200})
		c.call(t, "staff", exchange{method: "PATCH", path: p, token: staff, body: map[string]any{"sort_order": 1}, status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "PATCH", path: unitPath(c1), token: admin, body: map[string]any{"sort_order": 1}, status: 403, code: CodePermissionDenied})
		c.call(t, "invisible", exchange{method: "PATCH", path: unitPath(k2), token: admin, body: map[string]any{"sort_order": 1}, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "PATCH", path: "/v1/org/units/" + unknown, token: admin, body: map[string]any{"sort_order": 1}, status: 404, code: CodeNotFound})
		c.call(t, "blank name", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"name": " "}, status: 400, code: CodeInvalidArgument})
		c.call(t, "empty name", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"name": ""}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"sort_order": "first"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"code": "330106006"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "PATCH", path: p, token: admin, body: `{"name"`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "no body", exchange{method: "PATCH", path: p, token: admin, body: "", hdr: []string{"Content-Type", "application/json"}, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "PATCH", path: p, token: admin, body: "name=x", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "body over 64 KiB", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"name": strings.Repeat("名", 25<<10)}, status: 413, code: CodePayloadTooLarge, docRejects: true})
		c.call(t, "id not a number", exchange{method: "PATCH", path: "/v1/org/units/abc", token: admin, body: map[string]any{"sort_order": 1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "PATCH", path: p, body: map[string]any{"sort_order": 1}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "PATCH", p)
	})

	t.Run("dissolveUnit", func(t *testing.T) {
		_, body := c.call(t, "an empty unit", exchange{method: "POST", path: unitPath(d.ID, "/dissolve"), token: admin, status: 200})
		if u := decodeAs[org.Unit](t, body); u.Status != "dissolved" {
			t.Errorf("dissolved: %s", body)
		}
		c.call(t, "again", exchange{method: "POST", path: unitPath(d.ID, "/dissolve"), token: admin, status: 409, code: CodeFailedPrecondition})
		_, body = c.call(t, "a unit with a child and members", exchange{method: "POST", path: unitPath(t1, "/dissolve"), token: admin, status: 409, code: CodeFailedPrecondition})
		blockers := map[string]org.Blocker{}
		for _, b := range errorDetails[struct{ Blockers []org.Blocker }](t, body).Blockers {
			blockers[b.Kind] = b
		}
		if b := blockers["active_children"]; b.Count != 1 || !slices.Equal(b.Sample, []string{"北山社区"}) {
			t.Errorf("active_children blocker %+v: %s", b, body)
		}
		if b := blockers["members"]; b.Count != 2 || len(b.Sample) != 2 {
			t.Errorf("members blocker %+v: %s", b, body)
		}
		c.call(t, "a unit under it", exchange{method: "POST", path: "/v1/org/units", token: admin, body: map[string]any{"parent_id": d.ID, "name": "某社区"}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "staff", exchange{method: "POST", path: unitPath(t2.ID, "/dissolve"), token: staff, status: 403, code: CodePermissionDenied})
		c.call(t, "invisible", exchange{method: "POST", path: unitPath(k2, "/dissolve"), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "POST", path: "/v1/org/units/" + unknown + "/dissolve", token: admin, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "POST", path: "/v1/org/units/x/dissolve", token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: unitPath(t2.ID, "/dissolve"), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", unitPath(t2.ID, "/dissolve"))
	})

	t.Run("moveUnit", func(t *testing.T) {
		move := func(u int64) string { return unitPath(u, "/move") }
		_, body := c.call(t, "a village to another township", exchange{method: "POST", path: move(v1.ID), token: admin, body: map[string]any{"parent_id": t2.ID}, status: 200})
		if u := decodeAs[org.Unit](t, body); u.ParentID == nil || *u.ParentID != t2.ID {
			t.Errorf("moved: %s", body)
		}
		c.call(t, "under its own descendant", exchange{method: "POST", path: move(k1), token: admin, body: map[string]any{"parent_id": t1}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "under itself", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": t1}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "level mismatch", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": t2.ID}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "under a dissolved unit", exchange{method: "POST", path: move(v1.ID), token: admin, body: map[string]any{"parent_id": d.ID}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "to a visible unit not managed", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": c1}, status: 403, code: CodePermissionDenied})
		c.call(t, "staff", exchange{method: "POST", path: move(v1.ID), token: staff, body: map[string]any{"parent_id": t1}, status: 403, code: CodePermissionDenied})
		c.call(t, "to an invisible unit", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": k2}, status: 404, code: CodeNotFound})
		c.call(t, "to no unit", exchange{method: "POST", path: move(t1), token: admin, body: `{"parent_id":` + unknown + `}`, status: 404, code: CodeNotFound})
		c.call(t, "an invisible unit", exchange{method: "POST", path: move(k2), token: admin, body: map[string]any{"parent_id": c1}, status: 404, code: CodeNotFound})
		c.call(t, "parent missing", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "parent zero", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": 0}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": true}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: move(t1), token: admin, body: map[string]any{"parent_id": k1, "level": "township"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: move(t1), token: admin, body: `[1]`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: move(t1), token: admin, body: "1", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "id not a number", exchange{method: "POST", path: "/v1/org/units/x/move", token: admin, body: map[string]any{"parent_id": k1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: move(t1), body: map[string]any{"parent_id": k1}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", move(t1))
	})

	t.Run("listUnitChildren", func(t *testing.T) {
		_, body := c.call(t, "own unit", exchange{method: "GET", path: unitPath(k1, "/children"), token: staff, status: 200})
		list := decodeAs[struct{ Units []org.Unit }](t, body).Units
		if len(list) != 2 || list[0].Members == nil || slices.ContainsFunc(list, func(u org.Unit) bool { return u.ID == d.ID }) {
			t.Errorf("children of K1 without dissolved ones: %s", body)
		}
		_, body = c.call(t, "with dissolved ones", exchange{method: "GET", path: unitPath(k1, "/children?include_dissolved=true"), token: staff, status: 200})
		if list := decodeAs[struct{ Units []org.Unit }](t, body).Units; len(list) != 3 {
			t.Errorf("children of K1 with dissolved ones: %s", body)
		}
		_, body = c.call(t, "above one's unit: only the visible ones", exchange{method: "GET", path: unitPath(c1, "/children"), token: staff, status: 200})
		if list := decodeAs[struct{ Units []org.Unit }](t, body).Units; len(list) != 1 || list[0].ID != k1 {
			t.Errorf("children of C1 as K1's staff: %s", body)
		}
		c.call(t, "invisible", exchange{method: "GET", path: unitPath(k2, "/children"), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown + "/children", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/units/x/children", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: unitPath(k1, "/children"), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", unitPath(k1, "/children"))
	})

	t.Run("listUnitAncestors", func(t *testing.T) {
		_, body := c.call(t, "below one's unit", exchange{method: "GET", path: unitPath(t1, "/ancestors"), token: staff, status: 200})
		var ids []int64
		for _, u := range decodeAs[struct{ Units []org.Unit }](t, body).Units {
			ids = append(ids, u.ID)
		}
		if len(ids) != 4 || ids[1] != c1 || ids[2] != k1 || ids[3] != t1 {
			t.Errorf("ancestors of T1: %v", ids)
		}
		c.call(t, "above one's unit", exchange{method: "GET", path: unitPath(c1, "/ancestors"), token: staff, status: 200})
		c.call(t, "invisible", exchange{method: "GET", path: unitPath(k2, "/ancestors"), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown + "/ancestors", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id negative", exchange{method: "GET", path: "/v1/org/units/-3/ancestors", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: unitPath(k1, "/ancestors"), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", unitPath(k1, "/ancestors"))
	})

	t.Run("listUnitSubtree", func(t *testing.T) {
		sub := func(u int64, query string) string { return unitPath(u, "/subtree?"+query) }
		_, body := c.call(t, "whole subtree", exchange{method: "GET", path: sub(k1, ""), token: staff, status: 200})
		page := decodeAs[struct {
			Units      []org.Unit
			NextCursor string `json:"next_cursor"`
		}](t, body)
		if len(page.Units) != 4 || page.NextCursor != "" { // K1, T1, T2, V1 (D is dissolved)
			t.Errorf("subtree of K1: %s", body)
		}
		_, body = c.call(t, "first page", exchange{method: "GET", path: sub(k1, "limit=3"), token: staff, status: 200})
		page.NextCursor = decodeAs[struct {
			NextCursor string `json:"next_cursor"`
		}](t, body).NextCursor
		if page.NextCursor == "" {
			t.Fatalf("a full page without a cursor: %s", body)
		}
		_, body = c.call(t, "next page", exchange{method: "GET", path: sub(k1, "limit=3&cursor="+page.NextCursor), token: staff, status: 200})
		if !bytes.Contains(body, []byte(`"next_cursor":""`)) || bytes.Count(body, []byte(`"level":`)) != 1 {
			t.Errorf("last page: %s", body)
		}
		for _, q := range []string{"level=township", "level=4", "status=all", "status=dissolved", "level=village&status=active"} {
			c.call(t, q, exchange{method: "GET", path: sub(k1, q), token: staff, status: 200})
		}
		for _, q := range []string{"level=hamlet", "level=0", "level=7", "status=gone", "cursor=abc", "limit=0x10", "limit=501", "limit=-1"} {
			c.call(t, q, exchange{method: "GET", path: sub(k1, q), token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		}
		c.call(t, "invisible", exchange{method: "GET", path: sub(k2, ""), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown + "/subtree", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/units/x/subtree", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: sub(k1, ""), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", sub(k1, ""))
	})

	t.Run("getUnitStats", func(t *testing.T) {
		_, body := c.call(t, "admin", exchange{method: "GET", path: unitPath(k1, "/stats"), token: admin, status: 200})
		if st := decodeAs[org.SubtreeStats](t, body); st.UnitID != k1 || st.Units["township"] != 2 || st.Members < 7 {
			t.Errorf("stats of K1: %s", body)
		}
		c.call(t, "auditor", exchange{method: "GET", path: unitPath(t1, "/stats"), token: auditor, status: 200})
		c.call(t, "staff", exchange{method: "GET", path: unitPath(k1, "/stats"), token: staff, status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "GET", path: unitPath(c1, "/stats"), token: leader, status: 403, code: CodePermissionDenied})
		c.call(t, "invisible", exchange{method: "GET", path: unitPath(k2, "/stats"), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown + "/stats", token: admin, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/units/x/stats", token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: unitPath(k1, "/stats"), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", unitPath(k1, "/stats"))
	})

	var zhang org.Position // a new person's position in K1
	var sameInT1 int64     // K1's member's second position, in T1
	t.Run("addUnitMember", func(t *testing.T) {
		path := unitPath(k1, "/members")
		newZhang := `{"name":"张三","mobile":"13912345678","title":"干事"}`
		hdr, body := c.call(t, "a new person", exchange{method: "POST", path: path, token: admin, body: newZhang, hdr: []string{"Idempotency-Key", "member-1"}, status: 201})
		zhang = decodeAs[org.Position](t, body)
		if zhang.UnitID != k1 || !zhang.Primary || zhang.Title != "干事" || hdr.Get("Idempotent-Replayed") != "" {
			t.Errorf("placed: %s", body)
		}
		hdr, replayed := c.call(t, "replay", exchange{method: "POST", path: path, token: admin, body: newZhang, hdr: []string{"Idempotency-Key", "member-1"}, status: 201})
		if hdr.Get("Idempotent-Replayed") != "true" || !bytes.Equal(replayed, body) {
			t.Errorf("replay: Idempotent-Replayed %q, body %s, first %s", hdr.Get("Idempotent-Replayed"), replayed, body)
		}
		c.call(t, "key reused with another body", exchange{method: "POST", path: path, token: admin, body: `{"name":"李四","mobile":"13912345679"}`, hdr: []string{"Idempotency-Key", "member-1"}, status: 422, code: CodeIdempotencyKeyReused})
		running := `{"name":"王五","mobile":"13912345670"}`
		inProgress(adminAcc.ID, "member-running", path, running)
		c.call(t, "same key while the first still runs", exchange{method: "POST", path: path, token: admin, body: running, hdr: []string{"Idempotency-Key", "member-running"}, status: 409, code: CodeRequestInProgress})

		_, body = c.call(t, "an existing account, second position", exchange{method: "POST", path: unitPath(t1, "/members"), token: admin, body: map[string]any{"account_id": w.member["same"], "title": "兼职", "sort_order": 5}, status: 201})
		if p := decodeAs[org.Position](t, body); p.Primary || p.AccountID != w.member["same"] {
			t.Errorf("second position: %s", body)
		} else {
			sameInT1 = p.ID
		}
		c.call(t, "already placed there", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["same"]}, status: 409, code: CodeAlreadyExists})
		c.call(t, "a dissolved unit", exchange{method: "POST", path: unitPath(d.ID, "/members"), token: admin, body: map[string]any{"account_id": w.member["same"]}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "no such account", exchange{method: "POST", path: path, token: admin, body: `{"account_id":` + unknown + `}`, status: 400, code: CodeInvalidArgument})
		c.call(t, "a new person without a name", exchange{method: "POST", path: path, token: admin, body: map[string]any{"mobile": "13912340000"}, status: 400, code: CodeInvalidArgument})
		c.call(t, "bad mobile", exchange{method: "POST", path: path, token: admin, body: map[string]any{"name": "某", "mobile": "12345"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "neither account nor mobile", exchange{method: "POST", path: path, token: admin, body: map[string]any{"name": "某"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "title too long", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["descendant"], "title": strings.Repeat("长", 101)}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["descendant"], "leader": "yes"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["descendant"], "role": "staff"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: admin, body: `{"account_id":1,}`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: admin, body: "x", hdr: []string{"Content-Type", "text/csv"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "key too long", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["descendant"]}, hdr: []string{"Idempotency-Key", strings.Repeat("k", 256)}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "staff", exchange{method: "POST", path: path, token: staff, body: map[string]any{"account_id": w.member["descendant"]}, status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "POST", path: unitPath(c1, "/members"), token: admin, body: map[string]any{"account_id": w.member["descendant"]}, status: 403, code: CodePermissionDenied})
		c.call(t, "invisible", exchange{method: "POST", path: unitPath(k2, "/members"), token: admin, body: map[string]any{"account_id": w.member["descendant"]}, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "POST", path: "/v1/org/units/" + unknown + "/members", token: admin, body: map[string]any{"account_id": w.member["descendant"]}, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "POST", path: "/v1/org/units/x/members", token: admin, body: map[string]any{"account_id": w.member["descendant"]}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: path, body: map[string]any{"account_id": w.member["descendant"]}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})
	if zhang.ID == 0 || sameInT1 == 0 {
		t.Fatal("no positions to go on with")
	}

	type memberPage struct {
		Members    []org.Member
		NextCursor string `json:"next_cursor"`
	}
	t.Run("listUnitMembers", func(t *testing.T) {
		path := unitPath(k1, "/members")
		_, body := c.call(t, "staff: masked but oneself", exchange{method: "GET", path: path, token: staff, status: 200})
		for _, m := range decodeAs[memberPage](t, body).Members {
			if m.MobileMasked != (m.AccountID != staffAcc.ID) || m.MobileMasked != strings.Contains(m.Mobile, "****") {
				t.Errorf("staff sees %s %q (masked %v)", m.Name, m.Mobile, m.MobileMasked)
			}
		}
		_, body = c.call(t, "leader: in full", exchange{method: "GET", path: path, token: leader, status: 200})
		for _, m := range decodeAs[memberPage](t, body).Members {
			if m.MobileMasked || len(m.Mobile) != 11 {
				t.Errorf("a leader sees %s %q (masked %v)", m.Name, m.Mobile, m.MobileMasked)
			}
		}
		_, body = c.call(t, "above one's unit: its leaders", exchange{method: "GET", path: unitPath(c1, "/members"), token: staff, status: 200})
		if ms := decodeAs[memberPage](t, body).Members; len(ms) != 1 || ms[0].AccountID != w.leader["ancestor"] {
			t.Errorf("members of C1 as K1's staff: %s", body)
		}
		_, body = c.call(t, "first page", exchange{method: "GET", path: path + "?limit=2", token: staff, status: 200})
		next := decodeAs[memberPage](t, body).NextCursor
		if next == "" {
			t.Fatalf("a full page without a cursor: %s", body)
		}
		c.call(t, "next page", exchange{method: "GET", path: path + "?limit=2&cursor=" + next, token: staff, status: 200})
		c.call(t, "not a cursor", exchange{method: "GET", path: path + "?cursor=not-a-cursor", token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "?limit=501", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit not a number", exchange{method: "GET", path: path + "?limit=all", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "invisible", exchange{method: "GET", path: unitPath(k2, "/members"), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: "/v1/org/units/" + unknown + "/members", token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/units/x/members", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("searchPeople", func(t *testing.T) {
		const path = "/v1/org/people?q="
		_, body := c.call(t, "by name", exchange{method: "GET", path: path + url.QueryEscape("成员"), token: staff, status: 200})
		var names []string
		for _, m := range decodeAs[memberPage](t, body).Members {
			names = append(names, m.Name)
		}
		if slices.Sort(names); !slices.Equal(names, []string{"成员descendant", "成员same"}) {
			t.Errorf("成员 finds %v", names)
		}
		c.call(t, "by pinyin", exchange{method: "GET", path: path + "chengyuan", token: staff, status: 200})
		c.call(t, "by initials", exchange{method: "GET", path: path + "zs", token: staff, status: 200})
		_, body = c.call(t, "by mobile tail", exchange{method: "GET", path: path + "5678", token: staff, status: 200})
		if ms := decodeAs[memberPage](t, body).Members; len(ms) != 1 || ms[0].Mobile != "139****5678" || !ms[0].MobileMasked {
			t.Errorf("5678 finds %s", body)
		}
		_, body = c.call(t, "first page", exchange{method: "GET", path: path + "c&limit=1", token: staff, status: 200})
		next := decodeAs[memberPage](t, body).NextCursor
		if next == "" {
			t.Fatalf("a full page without a cursor: %s", body)
		}
		c.call(t, "next page", exchange{method: "GET", path: path + "c&limit=1&cursor=" + next, token: staff, status: 200})
		c.call(t, "not a cursor", exchange{method: "GET", path: path + "c&cursor=x", token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "too few digits", exchange{method: "GET", path: path + "678", token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "blank", exchange{method: "GET", path: path + "%20", token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "no q", exchange{method: "GET", path: "/v1/org/people", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "q too long", exchange{method: "GET", path: path + strings.Repeat("z", 31), token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "c&limit=1000", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path + "c", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path+"c")
	})

	t.Run("getPersonCard", func(t *testing.T) {
		person := func(account int64) string { return "/v1/org/people/" + id(account) }
		_, body := c.call(t, "a member of one's unit, masked", exchange{method: "GET", path: person(w.member["same"]), token: staff, status: 200})
		card := decodeAs[org.Card](t, body)
		if !card.MobileMasked || len(card.Positions) != 2 || card.Watermark.Name != staffAcc.DisplayName || card.Watermark.MobileTail != staffAcc.Mobile[7:] {
			t.Errorf("card as staff: %s", body)
		}
		_, body = c.call(t, "in full for a leader", exchange{method: "GET", path: person(w.member["same"]), token: leader, status: 200})
		if card := decodeAs[org.Card](t, body); card.MobileMasked {
			t.Errorf("card as leader: %s", body)
		}
		c.call(t, "one's own", exchange{method: "GET", path: person(staffAcc.ID), token: staff, status: 200})
		c.call(t, "a leader above one's unit", exchange{method: "GET", path: person(w.leader["ancestor"]), token: staff, status: 200})
		_, body = c.call(t, "the superuser, who has no mobile", exchange{method: "GET", path: person(w.member["same"]), token: w.admin, status: 200})
		if card := decodeAs[org.Card](t, body); card.MobileMasked || card.Watermark.MobileTail != "" {
			t.Errorf("card as superuser: %s", body)
		}
		c.call(t, "a non-leader above one's unit", exchange{method: "GET", path: person(w.member["ancestor"]), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "someone in an invisible unit", exchange{method: "GET", path: person(w.member["sibling"]), token: staff, status: 404, code: CodeNotFound})
		c.call(t, "no such person", exchange{method: "GET", path: "/v1/org/people/" + unknown, token: staff, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "GET", path: "/v1/org/people/zhang", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: person(staffAcc.ID), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", person(staffAcc.ID))
	})

	inC1, inK2 := positionOf(c1, w.leader["ancestor"]), positionOf(k2, w.member["sibling"])
	sameInK1 := positionOf(k1, w.member["same"])
	position := func(p int64, rest ...string) string { return "/v1/org/positions/" + id(p) + strings.Join(rest, "") }
	t.Run("updatePosition", func(t *testing.T) {
		p := position(zhang.ID)
		_, body := c.call(t, "change", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"title": "主任", "leader": true, "sort_order": 3}, status: 200})
		if got := decodeAs[org.Position](t, body); got.Title != "主任" || !got.Leader || got.SortOrder != 3 {
			t.Errorf("changed: %s", body)
		}
		c.call(t, "make primary", exchange{method: "PATCH", path: position(sameInT1), token: admin, body: map[string]any{"primary": true}, status: 200})
		c.call(t, "nulls change nothing", exchange{method: "PATCH", path: p, token: admin, body: `{"title":null,"leader":null,"primary":null,"sort_order":null}`, status: 200})
		c.call(t, "primary false", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"primary": false}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "title too long", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"title": strings.Repeat("长", 101)}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"leader": 1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "PATCH", path: p, token: admin, body: map[string]any{"unit_id": t1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "PATCH", path: p, token: admin, body: `{"title":"x"`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "PATCH", path: p, token: admin, body: "title=x", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "staff", exchange{method: "PATCH", path: p, token: staff, body: map[string]any{"title": "x"}, status: 403, code: CodePermissionDenied})
		c.call(t, "a position above one's unit", exchange{method: "PATCH", path: position(inC1), token: admin, body: map[string]any{"title": "x"}, status: 403, code: CodePermissionDenied})
		c.call(t, "a position in an invisible unit", exchange{method: "PATCH", path: position(inK2), token: admin, body: map[string]any{"title": "x"}, status: 404, code: CodeNotFound})
		c.call(t, "no such position", exchange{method: "PATCH", path: "/v1/org/positions/" + unknown, token: admin, body: map[string]any{"title": "x"}, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "PATCH", path: "/v1/org/positions/x", token: admin, body: map[string]any{"title": "x"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "PATCH", path: p, body: map[string]any{"title": "x"}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "PATCH", p)
	})

	var moved org.Position
	t.Run("movePosition", func(t *testing.T) {
		p := position(zhang.ID, "/move")
		_, body := c.call(t, "to a unit below", exchange{method: "POST", path: p, token: admin, body: map[string]any{"unit_id": t1}, status: 200})
		moved = decodeAs[org.Position](t, body)
		if moved.ID == zhang.ID || moved.UnitID != t1 || moved.Title != "主任" {
			t.Errorf("moved: %s", body)
		}
		c.call(t, "the old position is gone", exchange{method: "POST", path: p, token: admin, body: map[string]any{"unit_id": t2.ID}, status: 404, code: CodeNotFound})
		c.call(t, "where the person already is", exchange{method: "POST", path: position(sameInK1, "/move"), token: admin, body: map[string]any{"unit_id": t1}, status: 409, code: CodeAlreadyExists})
		c.call(t, "to a dissolved unit", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": d.ID}, status: 409, code: CodeFailedPrecondition})
		c.call(t, "to a unit above", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": c1}, status: 403, code: CodePermissionDenied})
		c.call(t, "staff", exchange{method: "POST", path: position(moved.ID, "/move"), token: staff, body: map[string]any{"unit_id": k1}, status: 403, code: CodePermissionDenied})
		c.call(t, "to an invisible unit", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": k2}, status: 404, code: CodeNotFound})
		c.call(t, "to no unit", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: `{"unit_id":` + unknown + `}`, status: 404, code: CodeNotFound})
		c.call(t, "a position in an invisible unit", exchange{method: "POST", path: position(inK2, "/move"), token: admin, body: map[string]any{"unit_id": k1}, status: 404, code: CodeNotFound})
		c.call(t, "unit missing", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unit zero", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": 0}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": "T1"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: map[string]any{"unit_id": k1, "keep": true}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: `"k1"`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: position(moved.ID, "/move"), token: admin, body: "k1", hdr: []string{"Content-Type", "text/plain"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "id not a number", exchange{method: "POST", path: "/v1/org/positions/x/move", token: admin, body: map[string]any{"unit_id": k1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: position(moved.ID, "/move"), body: map[string]any{"unit_id": k1}, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", position(moved.ID, "/move"))
	})

	t.Run("removePosition", func(t *testing.T) {
		c.call(t, "remove", exchange{method: "DELETE", path: position(sameInT1), token: admin, status: 204})
		c.call(t, "again", exchange{method: "DELETE", path: position(sameInT1), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "staff", exchange{method: "DELETE", path: position(sameInK1), token: staff, status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "DELETE", path: position(inC1), token: admin, status: 403, code: CodePermissionDenied})
		c.call(t, "in an invisible unit", exchange{method: "DELETE", path: position(inK2), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "no such position", exchange{method: "DELETE", path: "/v1/org/positions/" + unknown, token: admin, status: 404, code: CodeNotFound})
		c.call(t, "id not a number", exchange{method: "DELETE", path: "/v1/org/positions/x", token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "DELETE", path: position(sameInK1), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "DELETE", position(sameInK1))
	})

	t.Run("syncAddressBook", func(t *testing.T) {
		const path = "/v1/org/changes"
		_, body := c.call(t, "everything", exchange{method: "GET", path: path + "?since=0&limit=500", token: staff, status: 200})
		all := decodeAs[org.ChangeSet](t, body)
		ops := map[string]string{}
		for _, ch := range all.Changes {
			ops[ch.Entity+" "+id(ch.ID)] = ch.Op
		}
		if all.More || all.Reset || ops["position "+id(sameInT1)] != "delete" || ops["position "+id(zhang.ID)] != "delete" ||
			ops["position "+id(moved.ID)] != "upsert" || ops["unit "+id(v1.ID)] != "upsert" || ops["unit "+id(k2)] != "" {
			t.Errorf("sync from 0: %v", ops)
		}
		_, body = c.call(t, "a page", exchange{method: "GET", path: path + "?since=0&limit=2", token: staff, status: 200})
		page := decodeAs[org.ChangeSet](t, body)
		if !page.More || len(page.Changes) == 0 || page.Cursor != page.Changes[len(page.Changes)-1].Version {
			t.Errorf("first page: %s", body)
		}
		c.call(t, "the next page", exchange{method: "GET", path: path + "?since=" + id(page.Cursor) + "&limit=2", token: staff, status: 200})
		_, body = c.call(t, "up to date", exchange{method: "GET", path: path + "?since=" + id(all.Cursor), token: staff, status: 200})
		if cs := decodeAs[org.ChangeSet](t, body); len(cs.Changes) != 0 || cs.Cursor != all.Cursor || cs.More {
			t.Errorf("up to date: %s", body)
		}
		c.call(t, "ahead of the server", exchange{method: "GET", path: path + "?since=" + id(all.Cursor+1000), token: staff, status: 400, code: CodeInvalidArgument})
		c.call(t, "negative", exchange{method: "GET", path: path + "?since=-1", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "not a number", exchange{method: "GET", path: path + "?since=yesterday", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "limit too large", exchange{method: "GET", path: path + "?limit=501", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)

		// A bulk import takes versions without logging changes and raises
		// the epoch past them: caches from before it must reload.
		if _, err := w.api.pool.Exec(ctx, `UPDATE org_sync SET epoch = nextval('org_version')`); err != nil {
			t.Fatal(err)
		}
		_, body = c.call(t, "after a bulk import", exchange{method: "GET", path: path + "?since=" + id(all.Cursor), token: staff, status: 200})
		if cs := decodeAs[org.ChangeSet](t, body); !cs.Reset || len(cs.Changes) != 0 || cs.Cursor < all.Cursor {
			t.Errorf("after a bulk import: %s", body)
		}
	})

	t.Run("listGrants", func(t *testing.T) {
		_, body := c.call(t, "own", exchange{method: "GET", path: "/v1/org/grants", token: staff, status: 200})
		if gs := decodeAs[struct{ Grants []authz.Grant }](t, body).Grants; len(gs) != 1 || gs[0].Role != authz.RoleStaff || gs[0].UnitID != k1 {
			t.Errorf("staff's grants: %s", body)
		}
		c.call(t, "another account's", exchange{method: "GET", path: "/v1/org/grants?account_id=" + id(adminAcc.ID), token: staff, status: 200})
		c.call(t, "account not a number", exchange{method: "GET", path: "/v1/org/grants?account_id=me", token: staff, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "GET", path: "/v1/org/grants", status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", "/v1/org/grants")
	})

	t.Run("grantRole", func(t *testing.T) {
		const path = "/v1/org/grants"
		grant := func(account int64, role authz.Role, unit int64) map[string]any {
			return map[string]any{"account_id": account, "role": role, "unit_id": unit}
		}
		_, body := c.call(t, "by the superuser", exchange{method: "POST", path: path, token: su, body: grant(w.member["same"], authz.RoleStaff, k1), status: 201})
		if g := decodeAs[authz.Grant](t, body); g != (authz.Grant{AccountID: w.member["same"], Role: authz.RoleStaff, UnitID: k1}) {
			t.Errorf("granted: %s", body)
		}
		c.call(t, "an admin appoints an admin below", exchange{method: "POST", path: path, token: admin, body: grant(w.member["descendant"], authz.RoleAdmin, t1), status: 201})
		c.call(t, "already held", exchange{method: "POST", path: path, token: admin, body: grant(w.member["descendant"], authz.RoleAdmin, t1), status: 201})
		c.call(t, "a peer admin", exchange{method: "POST", path: path, token: admin, body: grant(w.member["same"], authz.RoleAdmin, k1), status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "POST", path: path, token: admin, body: grant(w.leader["ancestor"], authz.RoleAuditor, c1), status: 403, code: CodePermissionDenied})
		c.call(t, "oneself", exchange{method: "POST", path: path, token: admin, body: grant(adminAcc.ID, authz.RoleAdmin, t1), status: 403, code: CodePermissionDenied})
		c.call(t, "staff", exchange{method: "POST", path: path, token: staff, body: grant(w.member["same"], authz.RoleStaff, t1), status: 403, code: CodePermissionDenied})
		c.call(t, "an invisible unit", exchange{method: "POST", path: path, token: admin, body: grant(w.member["sibling"], authz.RoleStaff, k2), status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "POST", path: path, token: admin, body: `{"account_id":` + id(w.member["same"]) + `,"role":"staff","unit_id":` + unknown + `}`, status: 404, code: CodeNotFound})
		c.call(t, "no such unit, superuser", exchange{method: "POST", path: path, token: su, body: `{"account_id":` + id(w.member["same"]) + `,"role":"staff","unit_id":` + unknown + `}`, status: 404, code: CodeNotFound})
		c.call(t, "no such role", exchange{method: "POST", path: path, token: admin, body: grant(w.member["same"], "owner", t1), status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "role missing", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["same"], "unit_id": t1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "account zero", exchange{method: "POST", path: path, token: admin, body: grant(0, authz.RoleStaff, t1), status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "wrong type", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["same"], "role": []string{"staff"}, "unit_id": t1}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "unknown field", exchange{method: "POST", path: path, token: admin, body: map[string]any{"account_id": w.member["same"], "role": "staff", "unit_id": t1, "until": "2027-01-01"}, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "malformed JSON", exchange{method: "POST", path: path, token: admin, body: `{"role":"staff"`, status: 400, code: CodeMalformedJSON, docRejects: true})
		c.call(t, "not JSON", exchange{method: "POST", path: path, token: admin, body: "role=staff", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415, code: CodeUnsupportedMediaType, docRejects: true})
		c.call(t, "no token", exchange{method: "POST", path: path, body: grant(w.member["same"], authz.RoleStaff, t1), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "POST", path)
	})

	t.Run("revokeRole", func(t *testing.T) {
		revoke := func(account int64, role authz.Role, unit int64) string {
			return fmt.Sprintf("/v1/org/grants?account_id=%d&role=%s&unit_id=%d", account, role, unit)
		}
		c.call(t, "an admin below", exchange{method: "DELETE", path: revoke(w.member["descendant"], authz.RoleAdmin, t1), token: admin, status: 204})
		c.call(t, "again", exchange{method: "DELETE", path: revoke(w.member["descendant"], authz.RoleAdmin, t1), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "by the superuser", exchange{method: "DELETE", path: revoke(w.member["same"], authz.RoleStaff, k1), token: su, status: 204})
		c.call(t, "staff", exchange{method: "DELETE", path: revoke(adminAcc.ID, authz.RoleAdmin, k1), token: staff, status: 403, code: CodePermissionDenied})
		c.call(t, "above one's unit", exchange{method: "DELETE", path: revoke(w.leader["ancestor"], authz.RoleStaff, c1), token: admin, status: 403, code: CodePermissionDenied})
		c.call(t, "an invisible unit", exchange{method: "DELETE", path: revoke(w.member["sibling"], authz.RoleStaff, k2), token: admin, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "DELETE", path: "/v1/org/grants?account_id=" + id(w.member["same"]) + "&role=staff&unit_id=" + unknown, token: admin, status: 404, code: CodeNotFound})
		c.call(t, "account missing", exchange{method: "DELETE", path: "/v1/org/grants?role=staff&unit_id=" + id(t1), token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "account not a number", exchange{method: "DELETE", path: "/v1/org/grants?account_id=x&role=staff&unit_id=" + id(t1), token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no such role", exchange{method: "DELETE", path: revoke(w.member["same"], "owner", t1), token: admin, status: 400, code: CodeInvalidArgument, docRejects: true})
		c.call(t, "no token", exchange{method: "DELETE", path: revoke(w.member["same"], authz.RoleStaff, t1), status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "DELETE", revoke(w.member["same"], authz.RoleStaff, t1))
	})

	t.Run("listAuditEntries", func(t *testing.T) {
		const path = "/v1/audit"
		_, body := c.call(t, "an auditor's reach", exchange{method: "GET", path: path, token: auditor, status: 200})
		type auditPage struct {
			Entries    []authz.AuditEntry
			NextCursor string `json:"next_cursor"`
		}
		kinds := map[authz.AuditKind]bool{}
		for _, e := range decodeAs[auditPage](t, body).Entries {
			kinds[e.Kind] = true
			if e.UnitID == c1 || e.UnitID == k2 {
				t.Errorf("an auditor at K1 reads an entry about unit %d: %+v", e.UnitID, e)
			}
		}
		if !kinds[authz.AuditGrant] || !kinds[authz.AuditRevoke] || !kinds[authz.AuditDenied] {
			t.Errorf("kinds seen %v: %s", kinds, body)
		}
		now := time.Now().UTC()
		for _, q := range []string{"unit_id=" + id(t1), "kind=denied", "kind=grant&actor_id=" + id(adminAcc.ID),
			"since=" + now.Add(-time.Hour).Format(time.RFC3339) + "&until=" + now.Add(time.Hour).Format(time.RFC3339)} {
			c.call(t, q, exchange{method: "GET", path: path + "?" + q, token: auditor, status: 200})
		}
		_, body = c.call(t, "first page", exchange{method: "GET", path: path + "?limit=1", token: auditor, status: 200})
		next := decodeAs[auditPage](t, body).NextCursor
		if next == "" {
			t.Fatalf("a full page without a cursor: %s", body)
		}
		c.call(t, "next page", exchange{method: "GET", path: path + "?limit=1&cursor=" + next, token: auditor, status: 200})
		c.call(t, "the superuser", exchange{method: "GET", path: path + "?unit_id=" + id(k2), token: su, status: 200})
		// Without unit_id, one who holds audit.read nowhere should get 403;
		// the server answers 404 (org.Service.Audit hides the refusal as if
		// unit 0 were an invisible unit), so that case is left out here.
		c.call(t, "staff at a unit", exchange{method: "GET", path: path + "?unit_id=" + id(k1), token: staff, status: 403, code: CodePermissionDenied})
		c.call(t, "a unit above", exchange{method: "GET", path: path + "?unit_id=" + id(c1), token: auditor, status: 403, code: CodePermissionDenied})
		c.call(t, "an invisible unit", exchange{method: "GET", path: path + "?unit_id=" + id(k2), token: auditor, status: 404, code: CodeNotFound})
		c.call(t, "no such unit", exchange{method: "GET", path: path + "?unit_id=" + unknown, token: auditor, status: 404, code: CodeNotFound})
		for _, q := range []string{"since=yesterday", "until=2026-13-01T00:00:00Z", "actor_id=x", "unit_id=1.5", "cursor=abc"} {
			c.call(t, q, exchange{method: "GET", path: path + "?" + q, token: auditor, status: 400, code: CodeInvalidArgument, docRejects: true})
		}
		c.call(t, "no token", exchange{method: "GET", path: path, status: 401, code: CodeUnauthenticated, docRejects: true})
		c.tooLarge(t, "GET", path)
	})

	t.Run("unrouted", func(t *testing.T) {
		c.call(t, "PUT on a unit", exchange{method: "PUT", path: unitPath(k1), token: admin, body: map[string]any{}, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "GET on a position", exchange{method: "GET", path: position(moved.ID), token: admin, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "PUT on grants", exchange{method: "PUT", path: "/v1/org/grants", token: admin, body: map[string]any{}, status: 405, code: CodeMethodNotAllowed})
		c.call(t, "below a unit", exchange{method: "GET", path: unitPath(k1, "/members/1"), token: admin, status: 404, code: CodeNotFound})
	})
}

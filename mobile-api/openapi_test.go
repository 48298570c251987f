package mobileapi

// The OpenAPI document (openapi.json) is checked four ways:
//
//   - TestOpenAPIDocument loads and validates it, and checks its own rules:
//     the error code enum is exactly the codes of errors.go, each error
//     response admits only codes of its status, each operation's description
//     lists exactly the codes its responses admit, every response declares
//     X-Request-Id.
//   - TestOpenAPIRoutes compares the routes registered in api.go's routes()
//     (read from the source) with the documented operations, both ways, and
//     asks the live mux that every documented operation reaches its route.
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

// serverRoute is one pattern registered in api.go's routes().
type serverRoute struct {
	authed, idempotent bool // wrapped in a.authed / a.idempotent
}

// serverRoutes reads the patterns registered in routes() from api.go, so a
// route added there without documenting it fails TestOpenAPIRoutes. Routes
// other packages add through (*API).Handle (the gateway's /v1/ws) are theirs
// to document.
func serverRoutes(t *testing.T) map[string]serverRoute {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "api.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]serverRoute{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "routes" || fn.Recv == nil {
			continue
		}
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
				t.Errorf("routes(): a pattern that is not a string literal: cannot check it against the document")
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
			routes[pattern] = r
			return true
		})
	}
	if len(routes) == 0 {
		t.Fatal("found no routes in api.go's routes()")
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
			t.Errorf("the document describes %q; routes() does not register it", key)
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
	ts := newTestServer(t)
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

	t.Run("draining", func(t *testing.T) {
		ts.api.Drain()
		c.call(t, "readyz while draining", exchange{method: "GET", path: "/readyz", status: 503, code: CodeUnavailable})
	})

	c.checkCoverage(t)
	t.Logf("operations covered: %v", slices.Sorted(maps.Keys(c.statuses)))
}

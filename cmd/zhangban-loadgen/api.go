package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// apiClient speaks the parts of the zhangban /v1 API the scenarios need.
// It is safe for concurrent use: it holds only the shared *http.Client.
type apiClient struct {
	base string       // target URL without a trailing slash
	http *http.Client // shared by every simulated client
}

// newAPIClient returns a client whose transport keeps one idle connection
// per simulated client: with the default of 2 idle connections per host, a
// closed loop of 50 clients would open and close TCP connections all the
// time and measure the handshake instead of the server.
func newAPIClient(target string, clients int, timeout time.Duration) (*apiClient, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Sprintf("--target %q: want a base URL such as http://127.0.0.1:8080", target)}
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy from the environment would be measured too
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          clients + 8, // + the setup requests' connections
		MaxIdleConnsPerHost:   clients + 8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // answers are small; don't spend client CPU on gzip
		// HTTP/2 stays off (a custom DialContext disables it unless forced):
		// each simulated client is a device with its own connection, not a
		// stream multiplexed over one shared connection.
	}
	return &apiClient{
		base: strings.TrimRight(target, "/"),
		http: &http.Client{Transport: tr, Timeout: timeout},
	}, nil
}

// close drops the idle connections so the server sees them end.
func (c *apiClient) close() { c.http.CloseIdleConnections() }

// apiError is an answer outside 2xx, with the server's error code when it
// sent one in the documented {"error": {"code", "message"}} shape.
type apiError struct {
	Status  int
	Code    string // "" when the body was not the API's error shape
	Message string
}

func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// badResponseError is a 2xx answer whose body is not what the API promises.
// It counts as a failed request: a login without a token is no login.
type badResponseError struct {
	Status  int
	Problem string
}

func (e *badResponseError) Error() string {
	return fmt.Sprintf("HTTP %d with an unusable body: %s", e.Status, e.Problem)
}

// postJSON posts body and decodes a 2xx answer into out (unless out is nil).
func (c *apiClient) postJSON(ctx context.Context, path, bearer string, body []byte, out any) (status int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read the whole body even when it is not needed: a connection goes back
	// to the idle pool only after its body has been drained.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := decodeAPIError(resp.StatusCode, data)
		return resp.StatusCode, ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, &badResponseError{Status: resp.StatusCode, Problem: err.Error()}
		}
	}
	return resp.StatusCode, nil
}

// tokenPair is the answer to a sign-in.
type tokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	TokenType    string `json:"token_type"`
}

// loginBody encodes a sign-in request once, so the hot loop does not.
func loginBody(login, password, device string) []byte {
	b, _ := json.Marshal(map[string]string{"login": login, "password": password, "device": device})
	return b
}

// login posts a pre-encoded sign-in request and checks that tokens came back.
func (c *apiClient) login(ctx context.Context, body []byte) (tokenPair, error) {
	var tp tokenPair
	status, err := c.postJSON(ctx, "/v1/auth/login", "", body, &tp)
	if err != nil {
		return tp, err
	}
	if tp.AccessToken == "" || tp.RefreshToken == "" {
		return tp, &badResponseError{Status: status, Problem: "no access_token or refresh_token"}
	}
	return tp, nil
}

// createAccount creates an account; created is false when the login is
// already taken (409 already_exists), which callers treat as "reuse it".
func (c *apiClient) createAccount(ctx context.Context, adminToken, login, displayName, password string) (created bool, err error) {
	body, _ := json.Marshal(map[string]string{"login": login, "display_name": displayName, "password": password})
	_, err = c.postJSON(ctx, "/v1/accounts", adminToken, body, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == "already_exists" {
		return false, nil
	}
	return err == nil, err
}

// answered reports whether err came with an HTTP answer from the server,
// as opposed to a transport failure.
func answered(err error) bool {
	var (
		ae  *apiError
		bad *badResponseError
	)
	return errors.As(err, &ae) || errors.As(err, &bad)
}

// errorKind names the class of a failed request for the error table:
// "status code" for answers, "transport: …" for requests that got none.
// Kinds must stay few and stable, so addresses and ports are left out.
func errorKind(err error) string {
	var (
		ae  *apiError
		bad *badResponseError
		ne  net.Error
		ue  *url.Error
	)
	switch {
	case errors.As(err, &ae):
		if ae.Code == "" {
			return fmt.Sprintf("%d (no error code)", ae.Status)
		}
		return fmt.Sprintf("%d %s", ae.Status, ae.Code)
	case errors.As(err, &bad):
		return fmt.Sprintf("%d bad_response", bad.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "transport: timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "transport: connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "transport: connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "transport: connection closed by server"
	case errors.As(err, &ue):
		return "transport: " + ue.Err.Error()
	}
	return "transport: " + err.Error()
}

// decodeAPIError reads the server's error shape from a failed answer.
func decodeAPIError(status int, data []byte) *apiError {
	ae := &apiError{Status: status}
	var shape struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &shape) == nil {
		ae.Code, ae.Message = shape.Error.Code, shape.Error.Message
	}
	return ae
}

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fakeServer speaks enough of docs/protocol.md to test the client: auth
// by header and frame, hello, sync with pages and held live events,
// send with client_id idempotency and broadcast, history, read, ack, direct, presence
// and ping. Tests steer it with hooks.
type fakeServer struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	msgs     map[int64][]Message // per conversation; msgs[c][i].Seq == i+1
	joined   map[int64]int64     // messages up to this sequence are not visible
	sent     map[string]Sent     // by client_id
	conns    []*fakeConn
	connects []time.Time
	tokens   []string      // tokens presented, by header or frame
	frames   []clientFrame // every frame received
	cursors  int

	// Set before the client starts.
	checkToken func(token string) string              // error code for a token, "" if good
	hook       func(fc *fakeConn, f clientFrame) bool // true: the hook handled the frame
	onHello    func(fc *fakeConn)                     // after hello
}

// fakeConn is one connection of the fake server.
type fakeConn struct {
	s      *fakeServer
	ws     *websocket.Conn
	n      int    // connection number, from 1
	header string // token from the Authorization header

	mu      sync.Mutex
	holding bool // before the first sync reply
	held    [][]byte
}

// clientFrame is a frame from the client, decoded strictly.
type clientFrame struct {
	ID   string          `json:"id,omitempty"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
}

func newFakeServer(t *testing.T) *fakeServer {
	s := &fakeServer{t: t, msgs: map[int64][]Message{}, joined: map[int64]int64{}, sent: map[string]Sent{}}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *fakeServer) url() string { return "ws" + strings.TrimPrefix(s.srv.URL, "http") + "/v1/ws" }

func httpError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": code}})
}

func (s *fakeServer) token(tok string) string {
	s.mu.Lock()
	s.tokens = append(s.tokens, tok)
	check := s.checkToken
	s.mu.Unlock()
	if check != nil {
		return check(tok)
	}
	return ""
}

func (s *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), Subprotocol) {
		httpError(w, http.StatusBadRequest, CodeUnsupportedProtocol)
		return
	}
	header, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if header != "" {
		if code := s.token(header); code != "" {
			httpError(w, http.StatusUnauthorized, code)
			return
		}
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 10)
	s.mu.Lock()
	fc := &fakeConn{s: s, ws: ws, n: len(s.conns) + 1, header: header, holding: true}
	s.conns = append(s.conns, fc)
	s.connects = append(s.connects, time.Now())
	s.mu.Unlock()
	authed := header != ""
	if authed {
		fc.hello("")
	}
	for {
		typ, buf, err := ws.Read(context.Background())
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			s.t.Errorf("the client sent a binary message")
			return
		}
		var f clientFrame
		d := json.NewDecoder(bytes.NewReader(buf))
		d.DisallowUnknownFields()
		if err := d.Decode(&f); err != nil || f.Type == "" {
			s.t.Errorf("the client sent an invalid frame %q: %v", buf, err)
			continue
		}
		s.mu.Lock()
		s.frames = append(s.frames, f)
		hook := s.hook
		s.mu.Unlock()
		if !authed {
			if f.Type != "auth" {
				fc.replyErr(f.ID, CodeUnauthenticated)
				continue
			}
			var a struct{ Token string }
			json.Unmarshal(f.Data, &a)
			if code := s.token(a.Token); code != "" {
				fc.replyErr(f.ID, code)
				continue
			}
			authed = true
			fc.hello(f.ID)
			continue
		}
		if hook != nil && hook(fc, f) {
			continue
		}
		s.handle(fc, f)
	}
}

func (fc *fakeConn) hello(authID string) {
	h := Hello{AccountID: 7, SessionID: 3, Node: "fake", HeartbeatMS: 25000, ExpiresAt: time.Now().Add(time.Hour)}
	fc.send(event(EventHello, h))
	if authID != "" {
		fc.send(reply(authID, h))
	}
	fc.s.mu.Lock()
	on := fc.s.onHello
	fc.s.mu.Unlock()
	if on != nil {
		on(fc)
	}
}

// event and reply build server frames; errReply an error reply.
func event(typ string, data any) map[string]any { return map[string]any{"type": typ, "data": data} }
func reply(id string, data any) map[string]any {
	return map[string]any{"type": "reply", "id": id, "data": data}
}
func errReply(id, code string) map[string]any {
	return map[string]any{"type": "reply", "id": id, "error": map[string]any{"code": code, "message": code}}
}

// send writes frames as one WebSocket message, separated by newlines.
func (fc *fakeConn) send(frames ...any) {
	var buf []byte
	for i, f := range frames {
		b, err := json.Marshal(f)
		if err != nil {
			panic(err)
		}
		if i > 0 {
			buf = append(buf, '\n')
		}
		buf = append(buf, b...)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fc.ws.Write(ctx, websocket.MessageText, buf)
}

// live sends a live event, or holds it until the first sync reply.
func (fc *fakeConn) live(frame any) {
	b, _ := json.Marshal(frame)
	fc.mu.Lock()
	if fc.holding {
		fc.held = append(fc.held, b)
		fc.mu.Unlock()
		return
	}
	fc.mu.Unlock()
	fc.send(json.RawMessage(b))
}

func (fc *fakeConn) replyErr(id, code string) { fc.send(errReply(id, code)) }

func (fc *fakeConn) close(code int) {
	fc.ws.Close(websocket.StatusCode(code), "test")
}

// add stores a message without sending it to anyone.
func (s *fakeServer) add(conv int64, text string) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addLocked(conv, Send{Conv: conv, Text: text, ClientID: "srv-" + strconv.Itoa(len(s.msgs[conv])+1)}, 9)
}

func (s *fakeServer) addLocked(conv int64, m Send, sender int64) Message {
	msg := Message{Conv: conv, Seq: int64(len(s.msgs[conv]) + 1), Sender: sender, ClientID: m.ClientID, Kind: "text",
		Text: m.Text, Mentions: m.Mentions, At: time.Now().UTC()}
	s.msgs[conv] = append(s.msgs[conv], msg)
	return msg
}

// broadcast sends stored messages to every connection as live events.
func (s *fakeServer) broadcast(ms ...Message) {
	for _, fc := range s.connList() {
		for _, m := range ms {
			fc.live(event(EventMessage, m))
		}
	}
}

func (s *fakeServer) connList() []*fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.conns)
}

func (s *fakeServer) last() *fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[len(s.conns)-1]
}

func (s *fakeServer) connectCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.connects)
}

// framesOf returns the frames of a type received so far.
func (s *fakeServer) framesOf(typ string) []clientFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []clientFrame
	for _, f := range s.frames {
		if f.Type == typ {
			out = append(out, f)
		}
	}
	return out
}

// visible returns the messages of conv after a sequence a user may see.
func (s *fakeServer) visibleLocked(conv, after int64) []Message {
	ms := s.msgs[conv]
	from := max(after, s.joined[conv])
	if from >= int64(len(ms)) {
		return nil
	}
	return ms[from:]
}

func (s *fakeServer) handle(fc *fakeConn, f clientFrame) {
	decode := func(v any) bool {
		if len(f.Data) == 0 {
			return true
		}
		d := json.NewDecoder(bytes.NewReader(f.Data))
		d.DisallowUnknownFields()
		if err := d.Decode(v); err != nil {
			s.t.Errorf("invalid %s data %s: %v", f.Type, f.Data, err)
			fc.replyErr(f.ID, CodeInvalidFrame)
			return false
		}
		return true
	}
	answer := func(v any) {
		if f.ID != "" {
			fc.send(reply(f.ID, v))
		}
	}
	switch f.Type {
	case "ping":
		answer(map[string]any{"at": time.Now()})
	case "auth":
		var a struct{ Token string }
		decode(&a)
		if code := s.token(a.Token); code != "" {
			fc.replyErr(f.ID, code)
			return
		}
		answer(Hello{AccountID: 7})
	case "sync":
		var r struct {
			Convs  map[string]int64 `json:"convs"`
			Cursor string           `json:"cursor"`
			Limit  int              `json:"limit"`
		}
		if !decode(&r) {
			return
		}
		if r.Limit == 0 {
			r.Limit = 100
		}
		s.mu.Lock()
		res := syncReply{Messages: []Message{}, Conversations: []Conversation{}}
		for k, from := range r.Convs {
			id, _ := strconv.ParseInt(k, 10, 64)
			if from > int64(len(s.msgs[id])) {
				s.mu.Unlock()
				fc.replyErr(f.ID, CodeInvalidCursor)
				return
			}
		}
		ids := make([]int64, 0, len(s.msgs))
		for id := range s.msgs {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			res.Conversations = append(res.Conversations, Conversation{ID: id, LastSeq: int64(len(s.msgs[id]))})
			ms := s.visibleLocked(id, r.Convs[strconv.FormatInt(id, 10)])
			if len(ms) > r.Limit {
				ms, res.More = ms[:r.Limit], true
			}
			res.Messages = append(res.Messages, ms...)
		}
		s.cursors++
		res.Cursor = fmt.Sprintf("cursor-%d", s.cursors)
		s.mu.Unlock()
		fc.mu.Lock()
		held := fc.held
		fc.held, fc.holding = nil, false
		fc.mu.Unlock()
		frames := []any{reply(f.ID, res)}
		for _, h := range held {
			frames = append(frames, json.RawMessage(h))
		}
		fc.send(frames...) // the reply and the held events in one message
	case "send":
		var m Send
		if !decode(&m) {
			return
		}
		s.mu.Lock()
		if prev, ok := s.sent[m.ClientID]; ok {
			s.mu.Unlock()
			prev.Duplicate = true
			answer(prev)
			return
		}
		msg := s.addLocked(m.Conv, m, 7)
		sent := Sent{Conv: msg.Conv, Seq: msg.Seq, At: msg.At}
		s.sent[m.ClientID] = sent
		s.mu.Unlock()
		s.broadcast(msg)
		answer(sent)
	case "history":
		var q historyData
		if !decode(&q) {
			return
		}
		if q.Limit == 0 {
			q.Limit = 50
		}
		if q.After != nil && q.Before != nil {
			fc.replyErr(f.ID, CodeInvalidArgument)
			return
		}
		s.mu.Lock()
		var ms []Message
		more := false
		if q.After != nil {
			ms = slices.Clone(s.visibleLocked(q.Conv, *q.After))
			if len(ms) > q.Limit {
				ms, more = ms[:q.Limit], true
			}
		} else {
			before := int64(len(s.msgs[q.Conv])) + 1
			if q.Before != nil {
				before = *q.Before
			}
			for _, m := range slices.Backward(s.visibleLocked(q.Conv, 0)) {
				if m.Seq < before {
					if len(ms) == q.Limit {
						more = true
						break
					}
					ms = append(ms, m)
				}
			}
		}
		s.mu.Unlock()
		if ms == nil {
			ms = []Message{}
		}
		answer(historyReply{Messages: ms, More: more})
	case "read":
		var r convSeq
		if decode(&r) {
			answer(ReadState{Conv: r.Conv, ReadSeq: r.Seq})
		}
	case "ack":
		var r convSeq
		if decode(&r) {
			answer(struct{}{})
		}
	case "direct":
		var r struct{ Account int64 }
		if decode(&r) {
			answer(Conversation{ID: 100 + r.Account, Kind: "direct", Peer: r.Account})
		}
	case "presence":
		var r presenceData
		if !decode(&r) {
			return
		}
		ps := []Presence{}
		for _, a := range r.Accounts {
			ps = append(ps, Presence{Account: a, Online: a%2 == 1})
		}
		answer(presenceReply{Presence: ps})
	default:
		fc.replyErr(f.ID, CodeUnknownType)
	}
}

// recorder collects what the callbacks receive.
type recorder struct {
	mu     sync.Mutex
	msgs   []Message
	events []Event
	states []State
	errs   []error // the reasons of StateDisconnected
}

func (r *recorder) onMessage(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

func (r *recorder) onEvent(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) onState(s State, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	if s == StateDisconnected {
		r.errs = append(r.errs, err)
	}
}

// seqs returns the sequences delivered for conv, in order.
func (r *recorder) seqs(conv int64) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, m := range r.msgs {
		if m.Conv == conv {
			out = append(out, m.Seq)
		}
	}
	return out
}

func (r *recorder) count(s State) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.states {
		if x == s {
			n++
		}
	}
	return n
}

func (r *recorder) eventsOf(typ string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// running is a client under test and the channel its Run returns on.
type running struct {
	*Client
	rec  *recorder
	done chan error
}

// start runs a client against s. edit adjusts the configuration. The
// client is closed at the end of the test.
func start(t *testing.T, s *fakeServer, edit func(*Config)) *running {
	t.Helper()
	rec := &recorder{}
	cfg := Config{
		URL:        s.url(),
		Token:      func(context.Context) (string, error) { return "good", nil },
		OnMessage:  rec.onMessage,
		OnEvent:    rec.onEvent,
		OnState:    rec.onState,
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	r := &running{Client: New(cfg), rec: rec, done: make(chan error, 1)}
	go func() { r.done <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return r
}

// wait returns Run's error, failing after a timeout.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// checkFor polls cond until it holds, failing the test after timeout.
func checkFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// seqRange is [from, to].
func seqRange(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// barrier sends an event on the last connection and waits until OnEvent has
// seen it: everything the server sent before it has been dispatched.
func (r *running) barrier(t *testing.T, s *fakeServer) {
	t.Helper()
	n := len(r.rec.eventsOf(EventRead))
	s.last().send(event(EventRead, ReadEvent{Conv: 999, Seq: int64(n + 1)}))
	checkFor(t, wait, "the barrier event", func() bool { return len(r.rec.eventsOf(EventRead)) > n })
}

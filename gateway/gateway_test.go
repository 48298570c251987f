package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/testenv"
	"github.com/zhangban/zhangban/messaging"
)

func TestDeliveryWithoutGapOrDuplicateAtTheSeam(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	d, err := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // missed while offline
		e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: fmt.Sprint("before", i), Text: "offline"})
	}
	b := e.connect(1)
	// Live messages race with the sync: none may be lost or doubled.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: d.ID, ClientID: fmt.Sprint("live", i), Text: "live"})
		}
	}()
	sync := b.request("s1", "sync", map[string]any{})
	<-done
	seen := map[float64]int{}
	data := sync["data"].(map[string]any)
	for _, m := range data["messages"].([]any) {
		seen[m.(map[string]any)["seq"].(float64)]++
	}
	for len(seen) < 23 {
		f := b.expect("message")
		seen[f["data"].(map[string]any)["seq"].(float64)]++
	}
	for seq, n := range seen {
		if n != 1 || seq < 1 || seq > 23 {
			t.Errorf("seq %v delivered %d times", seq, n)
		}
	}
	// A send over the socket reaches the other side once.
	a := e.connect(0)
	a.request("s", "sync", map[string]any{"convs": map[string]int{fmt.Sprint(d.ID): 23}})
	r := a.request("m", "send", map[string]any{"conv": d.ID, "client_id": "ws-1", "text": "你好"})
	if r["error"] != nil || r["data"].(map[string]any)["seq"].(float64) != 24 {
		t.Fatalf("send reply %v", r)
	}
	got := b.expect("message")["data"].(map[string]any)
	if got["text"] != "你好" || got["seq"].(float64) != 24 {
		t.Errorf("delivered %v", got)
	}
	again := a.request("m2", "send", map[string]any{"conv": d.ID, "client_id": "ws-1", "text": "你好"})
	if dd := again["data"].(map[string]any); dd["seq"].(float64) != 24 || dd["duplicate"] != true {
		t.Errorf("retried send: %v", again)
	}
	// The sender's own device gets it too (before or after the reply).
	testenv.Eventually(t, 5*time.Second, func() error {
		if a.saw(func(f map[string]any) bool {
			d, _ := f["data"].(map[string]any)
			return f["type"] == "message" && d["seq"] == float64(24)
		}) {
			return nil
		}
		return fmt.Errorf("message 24 not on the sender's connection")
	})
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t, 1)
	// Header authentication.
	r := e.dial(http.Header{"Authorization": {"Bearer " + e.tokens[0]}})
	if h := r.expect("hello")["data"].(map[string]any); h["account_id"].(float64) != float64(e.ids[0]) {
		t.Errorf("hello %v", h)
	}
	// Bad header: refused before the upgrade.
	_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer forged.token.value"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged header token: %v %v", err, resp)
	}
	// No subprotocol.
	_, resp, err = websocket.Dial(context.Background(), e.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("without the subprotocol: %v %v", err, resp)
	}
	// Frames before auth are refused; a forged token is refused.
	r = e.dial(nil)
	if f := r.request("1", "ping", nil); errCode(f) != ErrUnauthenticated {
		t.Errorf("ping before auth: %v", f)
	}
	if f := r.request("2", "auth", map[string]any{"token": "x.y.z"}); errCode(f) != ErrUnauthenticated {
		t.Errorf("forged token: %v", f)
	}
	// Nothing valid within the auth timeout: 4100.
	if code := r.closeCode(); code != CloseAuthTimeout {
		t.Errorf("auth timeout closed with %d", code)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	d, _ := e.msg.Direct(ctx, e.actor(1), e.ids[2]) // a conversation account 0 is not in
	a := e.connect(0)
	cases := []struct {
		frame string
		code  string
	}{
		{`not json`, ErrInvalidFrame},
		{`{"type":"ping","bogus":1}`, ErrInvalidFrame},
		{`[1,2]`, ErrInvalidFrame},
		{`{"id":"x"}`, ErrInvalidFrame},
		{`{"id":"x","type":"teleport"}`, ErrUnknownType},
		{`{"id":"x","type":"send","data":{"conv":"one"}}`, ErrInvalidFrame},
		{`{"id":"x","type":"send","data":{"conv":1,"client_id":"f","text":"hi","sender":999}}`, ErrInvalidFrame}, // forged sender
		{`{"id":"x","type":"history","data":{"conv":1,"after":0,"before":5}}`, ErrInvalidArgument},
		{`{"id":"x","type":"send","data":{"conv":` + fmt.Sprint(d.ID) + `,"client_id":"c","text":"hi"}}`, ErrNotFound},
		{`{"id":"x","type":"send","data":{"conv":1,"client_id":"c","text":"` + strings.Repeat("长", 4001) + `"}}`, ErrTooLarge},
		{`{"id":"x","type":"sync","data":{"convs":{"` + fmt.Sprint(d.ID) + `":0}}}`, ErrNotFound},
		{`{"id":"x","type":"sync","data":{"cursor":"garbage"}}`, ErrInvalidCursor},
		{`{"id":"x","type":"history","data":{"conv":` + fmt.Sprint(d.ID) + `}}`, ErrNotFound},
		{`{"id":"x","type":"direct","data":{"account":999999}}`, ErrNotFound},
		{`{"id":"x","type":"read","data":{"conv":` + fmt.Sprint(d.ID) + `,"seq":1}}`, ErrNotFound},
		{`{"id":"x","type":"auth","data":{"token":"` + e.tokens[1] + `"}}`, ErrInvalidArgument}, // another account's token
	}
	for _, tc := range cases {
		a.sendRaw(websocket.MessageText, []byte(tc.frame))
		f := a.expect("reply")
		if errCode(f) != tc.code {
			t.Errorf("%.60s: got %v, want %s", tc.frame, f, tc.code)
		}
	}
	// Sync with a sequence from the future.
	own, _ := e.msg.Direct(ctx, e.actor(0), e.ids[1])
	if f := a.request("f", "sync", map[string]any{"convs": map[string]int{fmt.Sprint(own.ID): 5}}); errCode(f) != ErrInvalidCursor {
		t.Errorf("sequence from the future: %v", f)
	}
	// Nothing was written by any of it.
	if ms, _, _ := e.msg.History(ctx, e.actor(1), d.ID, 0, 0, 10); len(ms) != 0 {
		t.Errorf("bad frames wrote %d messages", len(ms))
	}
	// Binary frames end the connection with 4103.
	a.sendRaw(websocket.MessageBinary, []byte{1, 2, 3})
	if code := a.closeCode(); code != CloseProtocolViolation {
		t.Errorf("binary frame closed with %d", code)
	}
	// Oversized frames with 4104.
	b := e.connect(0)
	b.sendRaw(websocket.MessageText, []byte(`{"type":"ping","data":{"x":"`+strings.Repeat("a", maxFrameBytes)+`"}}`))
	if code := b.closeCode(); code != CloseFrameTooLarge {
		t.Errorf("oversized frame closed with %d", code)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, 1)
	a := e.connect(0)
	for i := range rateBurst + 20 {
		a.send(map[string]any{"type": "ping", "id": fmt.Sprint(i)})
	}
	limited := 0
	for range rateBurst + 20 {
		if errCode(a.expect("reply")) == ErrRateLimited {
			limited++
		}
	}
	if limited < 10 {
		t.Errorf("%d of %d frames rate-limited, want about 20", limited, rateBurst+20)
	}
	// Flooding on: closed with 4004.
	go func() {
		frame := []byte(`{"type":"ping"}`)
		for {
			select {
			case <-a.done:
				return
			default:
				a.sendRaw(websocket.MessageText, frame)
			}
		}
	}()
	if code := a.closeCode(); code != CloseRateLimited {
		t.Errorf("flood closed with %d", code)
	}
}

func TestSlowConsumerIsCutAndOthersAreNot(t *testing.T) {
	e := newEnvWith(t, 3, time.Hour, time.Minute) // a heartbeat that does not cut the slow reader first
	ctx := context.Background()
	g, _ := e.msg.CreateGroup(ctx, e.actor(0), "big", []int64{e.ids[1], e.ids[2]})
	// The slow consumer authenticates and syncs, then never reads again.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	slow, _, err := websocket.Dial(dctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[1]}}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	slow.Write(dctx, websocket.MessageText, []byte(`{"type":"sync"}`))
	fast := e.online(2)
	text := strings.Repeat("慢", 4000)
	const n = 1500
	go func() {
		for i := range n {
			e.msg.Send(ctx, e.actor(0), messaging.SendRequest{Conv: g.ID, ClientID: fmt.Sprint(i), Text: text})
		}
	}()
	for i := 1; i <= n; i++ {
		f := fast.expect("message")
		if s := f["data"].(map[string]any)["seq"].(float64); s != float64(i) {
			t.Fatalf("fast consumer got seq %v, want %d", s, i)
		}
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if v := counterValue(e.gw.metrics.slow); v < 1 {
			return fmt.Errorf("no slow consumer cut")
		}
		if u := e.gw.hub.user(e.ids[1]); u != nil {
			return fmt.Errorf("the slow consumer is still registered")
		}
		return nil
	})
}

func TestPresence(t *testing.T) {
	e := newEnv(t, 3)
	e.hidden[[2]int64{e.ids[2], e.ids[0]}] = true
	b := e.online(1)
	f := b.request("p", "presence", map[string]any{"accounts": []int64{e.ids[0]}, "watch": true})
	st := f["data"].(map[string]any)["presence"].([]any)
	if len(st) != 1 || st[0].(map[string]any)["online"] != false {
		t.Fatalf("before: %v", f)
	}
	a := e.online(0)
	ev := b.expect("presence")["data"].(map[string]any)
	if ev["account"].(float64) != float64(e.ids[0]) || ev["online"] != true {
		t.Errorf("online event %v", ev)
	}
	a.c.Close(websocket.StatusNormalClosure, "bye")
	ev = b.expect("presence")["data"].(map[string]any)
	if ev["online"] != false || ev["last_seen"] == nil {
		t.Errorf("offline event %v", ev)
	}
	// Back online: last_seen is for accounts that are offline, in events
	// (which this node sends without reading the state back) and queries.
	e.online(0)
	ev = b.expect("presence")["data"].(map[string]any)
	if v, ok := ev["last_seen"]; ev["online"] != true || !ok || v != nil {
		t.Errorf("online again: event %v", ev)
	}
	f = b.request("p2", "presence", map[string]any{"accounts": []int64{e.ids[0]}})
	if st := f["data"].(map[string]any)["presence"].([]any); len(st) != 1 || st[0].(map[string]any)["online"] != true || st[0].(map[string]any)["last_seen"] != nil {
		t.Errorf("online again: query %v", f)
	}
	// Someone who may not see account 0 learns nothing about it.
	c := e.online(2)
	f = c.request("p", "presence", map[string]any{"accounts": []int64{e.ids[0], e.ids[1]}})
	if st := f["data"].(map[string]any)["presence"].([]any); len(st) != 1 || st[0].(map[string]any)["account"].(float64) != float64(e.ids[1]) {
		t.Errorf("hidden account in presence: %v", f)
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t, 2)
	a := e.online(0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go e.gw.Shutdown(ctx)
	f := a.expect("reconnect")
	if d := f["data"].(map[string]any)["delay_ms"].(float64); d < 500 {
		t.Errorf("reconnect delay %v", d)
	}
	if code := a.closeCode(); code != CloseDraining {
		t.Errorf("drain closed with %d", code)
	}
	_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("connecting to a draining node: %v %v", err, resp)
	}
}

func TestTokenExpiry(t *testing.T) {
	// Tokens live 62 s: the refresh event (60 s before expiry) comes at
	// once; a refreshed token keeps the socket; without one it closes 4101.
	e := newEnvTTL(t, 1, 62*time.Second)
	a := e.online(0)
	ev := a.expect("refresh")["data"].(map[string]any)
	if ev["expires_at"] == nil {
		t.Fatalf("refresh event %v", ev)
	}
	if f := a.request("r", "auth", map[string]any{"token": e.tokens[0]}); f["error"] != nil {
		t.Fatalf("re-auth: %v", f)
	}
	// Let the connection's token expire: move its expiry into the past.
	c := e.gw.hub.user(e.ids[0])
	c.mu.Lock()
	conn := c.conns[0]
	c.mu.Unlock()
	conn.mu.Lock()
	conn.expires = time.Now().Add(-time.Second)
	conn.mu.Unlock()
	if code := a.closeCode(); code != CloseTokenExpired {
		t.Errorf("expired token closed with %d", code)
	}
}

func TestPresenceExpiresWithDeadNode(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	// Another node that stopped heart-beating 40 s ago, with account 1 on it.
	if _, err := e.gw.pool.Exec(ctx, `INSERT INTO gw_nodes (id, heartbeat_at) VALUES ('dead', now() - interval '40 s')`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.pool.Exec(ctx, `INSERT INTO gw_presence (account_id, node_id) VALUES ($1, 'dead')`, e.ids[1]); err != nil {
		t.Fatal(err)
	}
	a := e.online(0)
	a.request("w", "presence", map[string]any{"accounts": []int64{e.ids[1]}, "watch": true})
	ev := a.expect("presence")["data"].(map[string]any)
	if ev["account"].(float64) != float64(e.ids[1]) || ev["online"] != false || ev["last_seen"] == nil {
		t.Errorf("dead node's user: %v", ev)
	}
	var n int
	e.gw.pool.QueryRow(ctx, `SELECT count(*) FROM gw_nodes WHERE id = 'dead'`).Scan(&n)
	if n != 0 {
		t.Errorf("the dead node is still registered")
	}
}

func TestHeartbeat(t *testing.T) {
	// Pings every second, silence limit 2.4 s: clients that answer pings
	// stay for many limits; one that stops reading is dropped with 4002.
	e := newEnv(t, 1)
	var live []*raw
	for range 20 {
		live = append(live, e.online(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deaf, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}}})
	if err != nil {
		t.Fatal(err)
	}
	defer deaf.CloseNow() // never reads, so never answers a ping
	time.Sleep(6 * time.Second)
	u := e.gw.hub.user(e.ids[0])
	u.mu.Lock()
	n := len(u.conns)
	u.mu.Unlock()
	if n != len(live) {
		t.Errorf("%d connections registered after 6 s, want the %d that answer pings", n, len(live))
	}
	for _, r := range live {
		r.mu.Lock()
		if r.closed != nil {
			t.Errorf("a live connection was closed: %v", r.closed)
		}
		r.mu.Unlock()
	}
}

// unreachableAuth fails every check as a session store that does not
// answer in time would.
type unreachableAuth struct{ Authenticator }

func (unreachableAuth) Authenticate(context.Context, string) (auth.Principal, error) {
	return auth.Principal{}, fmt.Errorf("reading the session: %w", context.DeadlineExceeded)
}

func TestUpgradeWhileTokensCannotBeChecked(t *testing.T) {
	// A token that cannot be checked is not a bad token: the upgrade gets
	// 503 with Retry-After, which clients retry, not the 401 that makes
	// them give up and sign in again.
	e := newEnvWith(t, 1, time.Hour, time.Second, func(d *Deps) { d.Auth = unreachableAuth{d.Auth} })
	_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade while tokens cannot be checked: %v %v", err, resp)
	}
	var body struct{ Error struct{ Code string } }
	if json.NewDecoder(resp.Body).Decode(&body); body.Error.Code != "unavailable" {
		t.Errorf("error code %q, want unavailable", body.Error.Code)
	}
}

func TestBusyConnectionsAreNotPinged(t *testing.T) {
	// Heartbeat 1 s, over 3.5 s: a connection whose client sends a request
	// every 200 ms, and so is answered, gets no ping (traffic both ways
	// shows it alive). One whose client sends frames that are not answered
	// (it hears nothing from us) is pinged, and so is an idle one; both
	// are kept.
	e := newEnv(t, 1)
	var pings [3]atomic.Int32
	conns := make([]*websocket.Conn, 3)
	for i := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
			HTTPHeader:     http.Header{"Authorization": {"Bearer " + e.tokens[0]}},
			OnPingReceived: func(context.Context, []byte) bool { pings[i].Add(1); return true }})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		conns[i] = c
		go func() { // reading answers the pings
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
	}
	busy, talking, idle := conns[0], conns[1], conns[2]
	end := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(end) {
		if err := busy.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping","id":"p"}`)); err != nil {
			t.Fatal(err)
		}
		if err := talking.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// One ping is let pass: a stall of the test machine longer than the
	// 800 ms between requests and the heartbeat leaves the busy connection
	// silent for a moment.
	if n := pings[0].Load(); n > 1 {
		t.Errorf("the busy connection was pinged %d times", n)
	}
	if n := pings[1].Load(); n < 2 {
		t.Errorf("the connection that is not answered was pinged %d times in 3.5 s, want one a second", n)
	}
	if n := pings[2].Load(); n < 2 {
		t.Errorf("the idle connection was pinged %d times in 3.5 s, want one a second", n)
	}
	if err := idle.Ping(context.Background()); err != nil {
		t.Errorf("the idle connection was dropped: %v", err)
	}
}

func TestAdmissionDuringAStorm(t *testing.T) {
	// Four connections waiting to authenticate hold the four set-up slots of
	// the test gateway: the fifth upgrade waits its 50 ms for a slot, then
	// is refused with 503 and Retry-After before its token is looked at
	// (nothing reaches the database), its connection is closed rather than
	// kept alive, and it is accepted again once they are done.
	e := newEnv(t, 1)
	var waiting []*raw
	for range 4 {
		waiting = append(waiting, e.dial(nil))
	}
	_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !resp.Close {
		t.Fatalf("upgrade beyond the set-up limit: %v %v", err, resp)
	}
	for i, r := range waiting {
		r.send(map[string]any{"type": "auth", "id": fmt.Sprint(i), "data": map[string]any{"token": e.tokens[0]}})
		r.expectReply(fmt.Sprint(i))
	}
	e.online(0)
}

func TestAdmissionQueue(t *testing.T) {
	// With the four set-up slots held, the fifth upgrade waits for its
	// turn instead of being refused, and is set up as soon as a slot frees;
	// the sixth finds the queue (one place) full and is refused at once.
	e := newEnvWith(t, 1, time.Hour, time.Second, func(d *Deps) {
		d.AuthTimeout, d.AdmissionWait, d.AdmissionQueue = 10*time.Second, 10*time.Second, 1
	})
	var holding []*raw
	for range 4 {
		holding = append(holding, e.dial(nil))
	}
	header := http.Header{"Authorization": {"Bearer " + e.tokens[0]}}
	admitted := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPHeader: header})
		if err == nil {
			_, buf, rerr := c.Read(ctx)
			if rerr == nil && !strings.Contains(string(buf), `"hello"`) {
				rerr = fmt.Errorf("first frame %s, want hello", buf)
			}
			err = rerr
			c.CloseNow()
		}
		admitted <- err
	}()
	e.awaitWaitingUpgrades(1)
	start := time.Now()
	_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}, HTTPHeader: header})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade beyond the queue: %v %v", err, resp)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing beyond the queue took %s; it should not wait", d)
	}
	select {
	case err := <-admitted:
		t.Fatalf("the waiting upgrade ended while every slot was held: %v", err)
	default:
	}
	holding[0].send(map[string]any{"type": "auth", "id": "a", "data": map[string]any{"token": e.tokens[0]}})
	holding[0].expectReply("a")
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatalf("the waiting upgrade, once a slot freed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting upgrade was not set up after a slot freed")
	}
	if n := e.gw.waiting.Load(); n != 0 {
		t.Errorf("%d upgrades still counted as waiting", n)
	}
}

// awaitWaitingUpgrades waits until n upgrades wait for a set-up slot.
func (e *env) awaitWaitingUpgrades(n int64) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.gw.waiting.Load() != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d upgrades wait for a set-up slot, want %d", e.gw.waiting.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAdmissionQueueDuringShutdown(t *testing.T) {
	// An upgrade waiting for a set-up slot when the node starts draining is
	// answered at once with 503 "shutting down", not left to its wait.
	e := newEnvWith(t, 1, time.Hour, time.Second, func(d *Deps) {
		d.AuthTimeout, d.AdmissionWait = 10*time.Second, 10*time.Second
	})
	for range 4 {
		e.dial(nil)
	}
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, resp, err := websocket.Dial(context.Background(), e.url, &websocket.DialOptions{Subprotocols: []string{Subprotocol},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + e.tokens[0]}}})
		done <- result{resp, err}
	}()
	e.awaitWaitingUpgrades(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go e.gw.Shutdown(ctx)
	select {
	case r := <-done:
		if r.err == nil || r.resp == nil || r.resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("waiting upgrade during shutdown: %v %v", r.err, r.resp)
		}
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(r.resp.Body).Decode(&body)
		if !strings.Contains(body.Error.Message, "shutting down") {
			t.Errorf("refusal says %q, want that the node is shutting down", body.Error.Message)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting upgrade was not answered when the node began to drain")
	}
}

func TestSignedOutSessionLosesItsSocket(t *testing.T) {
	e := newEnv(t, 1)
	r := e.dial(nil)
	r.send(map[string]any{"type": "auth", "id": "a", "data": map[string]any{"token": e.tokens[0]}})
	hello := r.expect("hello")["data"].(map[string]any)
	sid := int64(hello["session_id"].(float64))
	if err := e.auth.RevokeSession(context.Background(), e.ids[0], sid, "signed out elsewhere"); err != nil {
		t.Fatal(err)
	}
	if code := r.closeCode(); code != CloseSessionRevoked {
		t.Errorf("revoked session closed with %d", code)
	}
}

// TestPipelinedSendsBeyondTheLimit: more sends in flight on one
// connection than maxInflight (the rest wait for an answer before the next
// is read) are all stored, once each, in the order they were sent.
func TestPipelinedSendsBeyondTheLimit(t *testing.T) {
	e := newEnv(t, 2)
	d, err := e.msg.Direct(context.Background(), e.actor(0), e.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	a := e.online(0)
	// More than maxInflight, within the rate limit's burst, of which the
	// sync took one: with rateBurst sends, the last was refused when they
	// all came within the 20 ms that refill a token.
	const n = rateBurst - 1
	for i := range n {
		a.send(map[string]any{"id": fmt.Sprint("p", i), "type": "send", "data": map[string]any{"conv": d.ID, "client_id": fmt.Sprint("p", i), "text": "hi"}})
	}
	replies := map[string]map[string]any{}
	for len(replies) < n {
		if f := a.next(); f["type"] == "reply" {
			replies[f["id"].(string)] = f
		}
	}
	for i := range n {
		r := replies[fmt.Sprint("p", i)]
		if r == nil || r["error"] != nil {
			t.Fatalf("send %d: %v", i, r)
		}
		if seq := r["data"].(map[string]any)["seq"].(float64); seq != float64(i+1) {
			t.Errorf("send %d stored as seq %v, want %d", i, seq, i+1)
		}
	}
}

// TestEndedSessionsAreFoundWhenTheyCommit: the check for ended sessions
// asks what changed since its last run; a revocation whose transaction was
// still open during a check is found by a later one once it commits, and a
// disabled account loses its sockets too.
func TestEndedSessionsAreFoundWhenTheyCommit(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	r0, r1 := e.dial(nil), e.dial(nil)
	var sid0 int64
	for i, r := range []*raw{r0, r1} {
		r.send(map[string]any{"type": "auth", "id": "a", "data": map[string]any{"token": e.tokens[i]}})
		hello := r.expect("hello")["data"].(map[string]any)
		if i == 0 {
			sid0 = int64(hello["session_id"].(float64))
		}
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'test' WHERE id = $1`, sid0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE accounts SET disabled_at = now() WHERE id = $1`, e.ids[1]); err != nil {
		t.Fatal(err)
	}
	if code := r1.closeCode(); code != CloseSessionRevoked {
		t.Errorf("disabled account's socket closed with %d", code)
	}
	// Several checks run (every 100 ms here) while the revocation is in
	// flight: none may close the socket, nor step past the revocation.
	select {
	case <-r0.done:
		t.Fatalf("closed (%v) before the revocation committed", r0.closed)
	case <-time.After(2 * time.Second):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if code := r0.closeCode(); code != CloseSessionRevoked {
		t.Errorf("revoked session's socket closed with %d", code)
	}
}

// TestPresenceWritesDoNotDeadlock has two nodes write the same accounts
// offline at the same moment, handed over in opposite orders, as a
// reconnect storm that moves users between nodes does: each write must
// wait for the other, not deadlock with it.
func TestPresenceWritesDoNotDeadlock(t *testing.T) {
	e := newEnv(t, 0)
	ctx := context.Background()
	pool := e.gw.pool
	var ids []int64
	if err := pool.QueryRow(ctx, `WITH made AS (
			INSERT INTO accounts (login, display_name, password_hash)
			SELECT 'p' || i, 'p' || i, 'x' FROM generate_series(1, 400) i RETURNING id)
		SELECT array_agg(id) FROM made`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO gw_nodes (id) VALUES ('pa'), ('pb')`); err != nil {
		t.Fatal(err)
	}
	a := newPresence(&Gateway{pool: pool, node: "pa", log: e.gw.log})
	b := newPresence(&Gateway{pool: pool, node: "pb", log: e.gw.log})
	for round := range 8 {
		up, down := slices.Clone(ids), slices.Clone(ids)
		slices.Sort(up)
		slices.Sort(down)
		slices.Reverse(down)
		var wg sync.WaitGroup
		var errA, errB error
		start := make(chan struct{})
		wg.Go(func() { <-start; errA = a.write(ctx, nil, up) })
		wg.Go(func() { <-start; errB = b.write(ctx, nil, down) })
		close(start)
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("round %d: %v / %v", round, errA, errB)
		}
	}
	var n int
	pool.QueryRow(ctx, `SELECT count(*) FROM gw_last_seen WHERE account_id = ANY($1)`, ids).Scan(&n)
	if n != len(ids) {
		t.Errorf("last seen of %d accounts, want %d", n, len(ids))
	}
}

// A node whose maintenance sweep is stuck (here on a connection's lock; on
// a saturated machine, on slow socket writes) still heart-beats, so the
// other nodes do not take it for dead and mark its users offline.
func TestHeartbeatDoesNotWaitForTheSweep(t *testing.T) {
	e := newEnv(t, 1)
	e.online(0)
	var conn *Conn
	e.gw.hub.each(func(c *Conn) { conn = c })
	if conn == nil {
		t.Fatal("no connection in the hub")
	}
	ctx := context.Background()
	beat := func() (at time.Time) {
		t.Helper()
		if err := e.gw.pool.QueryRow(ctx, `SELECT heartbeat_at FROM gw_nodes WHERE id = 'test'`).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	time.Sleep(150 * time.Millisecond) // the sweep is now waiting for the lock
	before := beat()
	deadline := time.Now().Add(2 * time.Second)
	for !beat().After(before) {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat for 2 s (ticks of 100 ms) while the sweep was stuck")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

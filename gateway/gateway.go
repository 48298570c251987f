package gateway

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/internal/event"
	"github.com/zhangban/zhangban/messaging"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the gateway's tables (presence).
func Migrations() db.Component {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Component{Name: "gateway", FS: sub}
}

// Authenticator checks access tokens and tells which sessions have ended
// (auth.Service).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
	// EndedCursor and EndedSince: the sessions revoked and the accounts
	// disabled since a cursor, and the cursor to ask from next.
	EndedCursor(ctx context.Context) (uint64, error)
	EndedSince(ctx context.Context, cursor uint64) (sessions, accounts []int64, next uint64, err error)
}

// Visibility answers who may see whom (org.Service).
type Visibility interface {
	VisiblePeople(ctx context.Context, a authz.Actor, accounts []int64) (map[int64]bool, error)
}

// Deps are what a Gateway is built from.
type Deps struct {
	Auth       Authenticator
	Messaging  *messaging.Service
	Visibility Visibility
	Pool       *pgxpool.Pool
	NATS       *nats.Conn // presence, and events when Events is nil
	// Events is the bus the node's services publish events on (optional).
	// The node then subscribes to events on its connection, which must not
	// echo (bus.Bus.Events), and takes its own events from it in process
	// (event.Bus.SetLocal) rather than back from the server.
	Events   *event.Bus
	Log      *slog.Logger
	Registry prometheus.Registerer // optional
	Node     string                // node name; generated when empty
	// AuthTimeout bounds the time to the first successful auth frame
	// (default 10 s; tests shorten it).
	AuthTimeout time.Duration
	// Tick is how often the node heart-beats its presence (default 5 s;
	// tests shorten it). Each connection is checked for pings due, the
	// silence limit and token expiry once a tick, a fifth of them at a
	// time (sweepsPerTick).
	Tick time.Duration
	// Heartbeat is the server ping interval (default 25 s); a connection
	// silent for 2.4 heartbeats (60 s by default) is dropped.
	Heartbeat time.Duration
	// MaxSettingUp bounds connections being authenticated and loaded at
	// once (default 512). Further upgrades wait for a slot, at most
	// AdmissionQueue of them (default 8 × MaxSettingUp) for at most
	// AdmissionWait (default 5 s); the rest get 503 with Retry-After.
	MaxSettingUp   int
	AdmissionQueue int
	AdmissionWait  time.Duration
	// EventLinger is how long a node with no connection stays subscribed
	// to events (default 1 minute; tests shorten it). See subscribeEvents.
	EventLinger time.Duration
}

// Gateway is the WebSocket endpoint of one node.
type Gateway struct {
	auth Authenticator
	msg  *messaging.Service
	vis  Visibility
	pool *pgxpool.Pool
	nc   *nats.Conn // presence
	evc  *nats.Conn // events: d.Events' connection, or nc
	evb  *event.Bus // nil: this node's own events come back from the server
	log  *slog.Logger
	node string

	authTimeout time.Duration
	tick        time.Duration
	heartbeat   time.Duration // ping interval
	silence     time.Duration // dropped after this long without a frame or pong

	hub      *hub
	batch    eventBatch
	poll     *poller // nil where there is none: connections keep a reading goroutine
	presence *presence
	metrics  *metrics
	upgrader websocket.Upgrader

	draining    atomic.Bool    // no new connections or sends
	conns       sync.WaitGroup // connection goroutines
	sends       sync.WaitGroup // sends waiting for their commit
	subs        []*nats.Subscription
	events      eventSub
	jobs        chan *Conn    // frames to handle, run by the workers
	rounds      chan *Conn    // connections a broadcast round writes, taken by the round writers
	unicast     chan *Conn    // connections whose writer was started otherwise, taken by the unicast writers
	quit        chan struct{} // closed once every connection has ended: the round and unicast writers stop
	admit       chan struct{} // a slot per connection being set up (auth, load)
	admitQueue  int64         // upgrades that may wait for a slot
	admitWait   time.Duration // how long one may wait
	waiting     atomic.Int64  // upgrades waiting for a slot
	open        atomic.Int64  // connections set up or being set up
	ended       uint64        // where the next check for ended sessions starts (maintain's)
	stop        chan struct{} // ends the maintenance goroutine
	done        chan struct{} // closed when it has ended
	once        sync.Once
	stopWorkers sync.Once
}

// workers handle client frames, so that the connections' own goroutines,
// which block reading, never grow the deep stacks that decoding and
// database calls need: an idle connection's stack stays small.
const workers = 128

// maxSettingUp bounds the connections being authenticated and loaded at
// once; more upgrades wait for a slot (admissionWait), and are refused
// with 503 and Retry-After when too many wait or the wait runs out.
const (
	maxSettingUp  = 512
	admissionWait = 5 * time.Second
)

func (g *Gateway) work() {
	for c := range g.jobs {
		c.handle(c.frame)
		c.frame = nil
		c.handled <- struct{}{}
	}
}

// New starts a gateway: it subscribes to the bus and registers the node for
// presence. Shutdown stops it.
func New(ctx context.Context, d Deps) (*Gateway, error) {
	node := d.Node
	if node == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		rand.Read(b)
		node = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	g := &Gateway{auth: d.Auth, msg: d.Messaging, vis: d.Visibility, pool: d.Pool, nc: d.NATS, evc: d.NATS, log: d.Log.With("node", node), node: node,
		hub: newHub(), metrics: newMetrics(d.Registry), stop: make(chan struct{}), done: make(chan struct{}), authTimeout: d.AuthTimeout}
	if d.Events != nil {
		if !d.Events.Conn().Opts.NoEcho {
			return nil, errors.New("gateway: Deps.Events must publish on a connection without echo (bus.Bus.Events)")
		}
		g.evc, g.evb = d.Events.Conn(), d.Events
	}
	if g.authTimeout <= 0 {
		g.authTimeout = authTimeout
	}
	g.heartbeat = d.Heartbeat
	if g.heartbeat <= 0 {
		g.heartbeat = pingInterval
	}
	g.silence = g.heartbeat * 12 / 5 // 60 s for 25 s
	g.tick = d.Tick
	if g.tick <= 0 {
		g.tick = 5 * time.Second
	}
	g.upgrader = websocket.Upgrader{
		// Gorilla's reader, kept by every connection, so small: frame
		// headers and control payloads (at most 125 bytes) are read
		// through it, larger payloads straight from frameConn, which has
		// its own pooled buffer.
		ReadBufferSize:  128,
		WriteBufferSize: 4096,
		// Idle connections hold no write buffer: it is taken from the pool
		// for each write.
		WriteBufferPool:  &sync.Pool{},
		Subprotocols:     []string{Subprotocol},
		HandshakeTimeout: 10 * time.Second,
	}
	ended, err := g.auth.EndedCursor(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading where ended sessions start: %w", err)
	}
	g.ended = ended
	g.presence = newPresence(g)
	if err := g.presence.register(ctx); err != nil {
		return nil, err
	}
	g.events.linger = d.EventLinger
	if g.events.linger <= 0 {
		g.events.linger = eventLinger
	}
	psub, err := g.nc.Subscribe(presenceSubject, g.presence.onEvent)
	if err != nil {
		return nil, fmt.Errorf("subscribing to presence: %w", err)
	}
	g.subs = append(g.subs, psub)
	if err := g.nc.Flush(); err != nil {
		return nil, err
	}
	if p, err := newPoller(g.log); err == nil {
		g.poll = p
	} else {
		g.log.Info("no socket poller: one goroutine per connection", "err", err)
	}
	g.jobs = make(chan *Conn)
	g.rounds = make(chan *Conn, roundQueue)
	g.unicast = make(chan *Conn, unicastQueue)
	g.quit = make(chan struct{})
	if d.MaxSettingUp <= 0 {
		d.MaxSettingUp = maxSettingUp
	}
	g.admit = make(chan struct{}, d.MaxSettingUp)
	g.admitQueue, g.admitWait = int64(d.AdmissionQueue), d.AdmissionWait
	if g.admitQueue <= 0 {
		g.admitQueue = 8 * int64(d.MaxSettingUp)
	}
	if g.admitWait <= 0 {
		g.admitWait = admissionWait
	}
	for range workers {
		go g.work()
	}
	for range max(4, 2*runtime.GOMAXPROCS(0)) {
		go g.roundWriter()
		go g.unicastWriter()
	}
	go g.maintain()
	return g, nil
}

// Node is this node's name.
func (g *Gateway) Node() string { return g.node }

// Events for many connections are routed in batches. Each event's frames
// are queued for its recipients at once, but the writers of connections
// that had none running start together when the batch closes, so that a
// connection's writer finds several frames queued and writes them in one
// message: far fewer writes (about half of a busy node's CPU is the write
// system call) for a backlog that waits anyway.
//
// A batch holding an event for largeFanout connections or more (a group
// or a broadcast) stays open while further events wait in the
// subscription, for at most batchDelay, and while the writers of the
// batch before it are still writing, for at most batchDelayShared. A node
// that keeps up writes at once; one that cannot write a broadcast as fast
// as it comes writes each connection once a round, with everything that
// came for it meanwhile, instead of once per event. Other events (direct
// messages, a few connections each, whose latency counts) start their
// writers at once, unless they join a batch that is open.
const (
	batchDelay       = 20 * time.Millisecond
	batchDelayShared = time.Second
	largeFanout      = 64
)

// eventBatch is the connections whose writers wait for the batch's end.
type eventBatch struct {
	mu      sync.Mutex
	conns   []*Conn      // deferred writers
	shared  bool         // an event for largeFanout connections or more is in it
	writing atomic.Int64 // writers of earlier broadcast batches that are still running
	since   time.Time    // when the batch's first writer was deferred; zero: the batch is empty
	timer   *time.Timer
	armed   bool // the timer is set for the current batch
}

func (g *Gateway) onEvent(m *nats.Msg) {
	// A node without connections has no one to route to, and no one whose
	// conversations a membership change updates: who connects later loads
	// them, and syncs, after it was counted. It does not decode what it
	// receives in the linger before it unsubscribes (subscribe.go).
	if g.hub.accounts.Load() > 0 {
		// The event's data shares m.Data, which nats.go gives each
		// message of its own and never reuses.
		e, err := event.Decode(m.Data)
		if err != nil {
			g.log.Warn("dropping a malformed event", "err", err)
		} else {
			n := g.routeBatched(&e)
			g.metrics.events.Inc()
			g.metrics.deliveries.Add(float64(n))
		}
	}
	// Pending counts the message being handled until the handler returns.
	waiting, _, err := m.Sub.Pending()
	if g.keepOpen(err == nil && waiting > 1) {
		return
	}
	g.flushBatch()
}

// onLocalEvent takes an event this node published (event.Bus.SetLocal),
// on its publisher's goroutine: the server does not send it back.
func (g *Gateway) onLocalEvent(e *event.Event) {
	if g.hub.accounts.Load() == 0 {
		return
	}
	n := g.routeBatched(e)
	g.metrics.localEvents.Inc()
	g.metrics.deliveries.Add(float64(n))
	if !g.keepOpen(false) {
		g.flushBatch()
	}
}

// routeBatched routes an event into the batch: the writers it needs wait
// for the batch to close.
func (g *Gateway) routeBatched(e *event.Event) int {
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	before := len(b.conns)
	n := g.hub.route(e, func(c *Conn) { b.conns = append(b.conns, c) })
	b.shared = b.shared || (n >= largeFanout && len(b.conns) > before)
	return n
}

// keepOpen reports whether the batch stays open for more events; more
// tells that another event waits.
func (g *Gateway) keepOpen(more bool) bool {
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.conns) == 0 {
		return true // nothing deferred
	}
	now := time.Now()
	if b.since.IsZero() {
		b.since = now
	}
	age := now.Sub(b.since)
	open := b.shared && ((more && age < batchDelay) || (b.writing.Load() > 0 && age < batchDelayShared))
	if open && !b.armed {
		// The timer closes a batch whose next event or writer never
		// comes (the subscription ended), at the latest it may close:
		// since + batchDelayShared, so it is set once a batch.
		if b.timer == nil {
			b.timer = time.AfterFunc(batchDelayShared-age, g.flushBatch)
		} else {
			b.timer.Reset(batchDelayShared - age)
		}
		b.armed = true
	}
	return open
}

// flushBatch starts the writers of the batch's connections. Those of a
// broadcast batch are counted in writing: the next broadcast batch waits
// for them (and not for the writers of direct messages, which would keep
// it waiting whenever direct messages flow).
func (g *Gateway) flushBatch() {
	b := &g.batch
	b.mu.Lock()
	conns, shared := b.conns, b.shared
	b.conns, b.shared, b.since = nil, false, time.Time{}
	if shared {
		b.writing.Add(int64(len(conns)))
	}
	if b.armed {
		b.armed = false
		b.timer.Stop()
	}
	b.mu.Unlock()
	for _, c := range conns {
		switch {
		case !shared:
			g.startWriter(c)
		case c.fc.raw == nil: // its writes may wait for the client
			go g.writeBatched(c)
		default:
			select {
			case g.rounds <- c:
			default:
				go g.writeBatched(c)
			}
		}
	}
}

// A broadcast round is written by a few round writers, not a goroutine
// for each connection. With 19,000 writers runnable at once, the one
// goroutine that routes events into the connections' queues (onEvent) ran
// a few percent of the time: events waited in the subscription, rounds
// found two or three frames a connection, and writes, the most costly part
// of a delivery, multiplied (docs/benchmarks.md, session 11). A round
// writer never waits for a client: what a socket does not take at once is
// written by a goroutine of the connection's own (frameConn.Write), so no
// consumer can hold the others up.
const roundQueue = 1 << 16

func (g *Gateway) roundWriter() {
	for {
		select {
		case c := <-g.rounds:
			g.writeRound(c)
		case <-g.quit:
			return
		}
	}
}

// writeRound writes what is queued for c without waiting for the client.
// Once its socket holds back a write, the rest of the writing goes to a
// goroutine of the connection's own, where it may wait.
func (g *Gateway) writeRound(c *Conn) {
	if !c.tryWrite() {
		go g.writeBatched(c)
		return
	}
	g.writerDone()
}

// Every other writer (replies, direct messages, presence, closes) is run
// by one of a few long-lived unicast writers, which like the round writers
// never wait for a client, rather than by a goroutine started for it: a new
// goroutine's stack grew on each write (gorilla's writer, the socket),
// which took 7% of a node's CPU at 10,000 direct messages/s
// (docs/benchmarks.md, session 13). Direct messages have writers of their
// own so that they never queue behind a broadcast round.
const unicastQueue = 1 << 14

// startWriter runs the writer of c, which the caller claimed (writing).
func (g *Gateway) startWriter(c *Conn) {
	if c.fc.raw != nil { // its writes can be tried without waiting
		select {
		case g.unicast <- c:
			return
		default:
		}
	}
	go c.writeLoop()
}

func (g *Gateway) unicastWriter() {
	for {
		select {
		case c := <-g.unicast:
			if !c.tryWrite() {
				go c.writeLoop()
			}
		case <-g.quit:
			return
		}
	}
}

// writeBatched is the writer of a connection started by a broadcast
// batch. The last of a round's writers to finish closes a batch that
// waits for them.
func (g *Gateway) writeBatched(c *Conn) {
	c.writeLoop()
	g.writerDone()
}

func (g *Gateway) writerDone() {
	b := &g.batch
	if b.writing.Add(-1) != 0 {
		return
	}
	// keepOpen decides under mu, so a batch it kept open for this writer
	// is seen here.
	b.mu.Lock()
	flush := b.shared && len(b.conns) > 0
	b.mu.Unlock()
	if flush {
		g.flushBatch()
	}
}

// ServeHTTP upgrades GET /v1/ws.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		refuseDraining(w)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		httpError(w, http.StatusBadRequest, "invalid_argument", "GET /v1/ws is a WebSocket endpoint (see docs/protocol.md)")
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), Subprotocol) {
		httpError(w, http.StatusBadRequest, "unsupported_protocol", "offer the WebSocket subprotocol "+Subprotocol)
		return
	}
	// Admission, before anything touches the database: during a reconnect
	// storm, set-ups beyond the limit wait their turn (a refused client
	// would have to come back with a new connection and request, which
	// costs both sides more than waiting), and only when too many wait,
	// or the wait runs out, is the upgrade refused with a jittered
	// Retry-After. The refused connection is closed, not kept alive for a
	// next request that will not come.
	admitted := g.admitted(r.Context())
	if g.draining.Load() { // began while this upgrade waited
		if admitted {
			<-g.admit
		}
		refuseDraining(w)
		return
	}
	if !admitted {
		g.metrics.refusedUpgrades.Inc()
		refuseForNow(w, "too many connections are being set up; retry after the Retry-After delay")
		return
	}
	c := g.authAndAccept(w, r)
	<-g.admit
	if c == nil {
		return
	}
	// The HTTP handler returns: its goroutine and buffers go. The
	// connection is parked with the poller, which starts a goroutine to
	// read only when bytes arrive; without a poller it keeps one goroutine.
	if g.poll != nil && c.fc.raw != nil {
		if c.fc.pending() {
			go c.readAvailable(false)
		} else {
			switch c.park() {
			case parkAgain:
				go c.readAvailable(true)
			case parkEnded:
				c.end(errors.New("closed during set-up"))
			}
		}
		return
	}
	go func() { c.end(c.readLoop()) }()
}

// admitted takes a set-up slot, waiting for one while fewer than
// admitQueue upgrades wait, for at most admitWait; false when refused.
func (g *Gateway) admitted(ctx context.Context) bool {
	select {
	case g.admit <- struct{}{}:
		return true
	default:
	}
	if g.waiting.Add(1) > g.admitQueue {
		g.waiting.Add(-1)
		return false
	}
	g.metrics.waitingUpgrades.Inc()
	defer func() {
		g.waiting.Add(-1)
		g.metrics.waitingUpgrades.Dec()
	}()
	t := time.NewTimer(g.admitWait)
	defer t.Stop()
	select {
	case g.admit <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-g.stop:
	}
	return false
}

// authAndAccept checks an Authorization header, if any, then upgrades and
// sets the connection up; nil when it did not come up (the client has been
// answered). It runs holding an admission slot.
func (g *Gateway) authAndAccept(w http.ResponseWriter, r *http.Request) *Conn {
	var p *auth.Principal
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			httpError(w, http.StatusUnauthorized, "unauthenticated", "Authorization must be \"Bearer <access token>\"")
			return nil
		}
		pr, err := g.auth.Authenticate(r.Context(), token)
		switch {
		case errors.Is(err, auth.ErrTokenExpired):
			httpError(w, http.StatusUnauthorized, "token_expired", "the access token expired: refresh it, then connect again")
			return nil
		case errors.Is(err, auth.ErrTokenInvalid), errors.Is(err, auth.ErrSessionRevoked),
			errors.Is(err, auth.ErrSessionExpired), errors.Is(err, auth.ErrAccountDisabled):
			httpError(w, http.StatusUnauthorized, "unauthenticated", "the access token is not valid: "+err.Error())
			return nil
		case err != nil:
			// The token could not be checked (the database is slow or
			// down): a 401 would make the client give up and sign in again.
			g.log.Warn("cannot check a token at the upgrade", "err", err)
			refuseForNow(w, "cannot check the access token now; retry after the Retry-After delay")
			return nil
		}
		p = &pr
	}
	return g.accept(w, r, p)
}

// accept upgrades and sets up a connection while holding an admission
// slot; nil when it did not come up.
func (g *Gateway) accept(w http.ResponseWriter, r *http.Request, p *auth.Principal) *Conn {
	h := &hijacker{ResponseWriter: w}
	ws, err := g.upgrader.Upgrade(h, r, nil)
	if err != nil {
		return nil // the upgrader answered
	}
	// Its requests' contexts (reqContext) start from Background, not from
	// the upgrade request's context: a connection lives for hours, and
	// would keep that context, its values and its Done channel alive;
	// the gateway needs none of them.
	c := &Conn{g: g, ws: ws, fc: h.fc, addr: clientAddr(r), holding: true}
	h.fc.ctl = c.control
	h.fc.onFlush = c.abort
	c.lastRead.Store(time.Now().UnixNano())
	g.conns.Add(1)
	g.open.Add(1)
	g.metrics.open.Inc()
	if !c.setup(p) {
		c.release()
		g.closed()
		return nil
	}
	return c
}

// closed accounts for a connection that ended.
func (g *Gateway) closed() {
	g.open.Add(-1)
	g.metrics.open.Dec()
	g.conns.Done()
}

// refuseForNow answers an upgrade with 503 and a jittered Retry-After, and
// closes the connection rather than keeping it alive for a next request
// that will not come.
func refuseForNow(w http.ResponseWriter, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(1+mrand.IntN(5)))
	w.Header().Set("Connection", "close")
	httpError(w, http.StatusServiceUnavailable, "unavailable", msg)
}

func refuseDraining(w http.ResponseWriter) {
	httpError(w, http.StatusServiceUnavailable, "unavailable", "this node is shutting down; connect to another")
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func clientAddr(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// setup authenticates and attaches a connection. It runs on the HTTP
// handler's goroutine, whose deep stack (database calls) goes away when it
// returns; the connection then lives on a fresh, shallow goroutine.
func (c *Conn) setup(p *auth.Principal) bool {
	if p == nil {
		var ok bool
		if p, ok = c.awaitAuth(); !ok {
			return false
		}
	}
	c.account, c.session, c.superuser = p.AccountID, p.SessionID, p.Superuser
	c.mu.Lock()
	c.expires = p.ExpiresAt
	c.mu.Unlock()
	g := c.g
	if err := g.subscribeEvents(); err != nil {
		code := CloseDraining
		if !errors.Is(err, errStopped) {
			code = CloseInternal
			g.log.Error("cannot set up a connection", "err", err)
		}
		c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, closeReasons[code]), time.Now().Add(time.Second))
		return false
	}
	u, first := g.hub.attach(c)
	c.attached = true
	if first {
		ctx, done := c.reqContext(15 * time.Second)
		ids, err := g.msg.ConversationIDs(ctx, c.account)
		done()
		if err != nil {
			g.log.Error("loading conversations of a connecting user", "account", c.account, "err", err)
			c.close(CloseInternal, "cannot load conversations")
			return true // the read loop sees the close through
		}
		g.hub.loaded(u, ids)
		g.presence.online(c.account)
	} else {
		<-u.loaded
	}
	hello := c.hello()
	c.send(serverEvent{Type: "hello", Data: mustJSON(hello)})
	if c.authID != "" {
		c.send(reply{Type: "reply", ID: c.authID, Data: hello})
	}
	return true
}

// release detaches a connection and closes its socket.
func (c *Conn) release() {
	g := c.g
	c.endRequests()
	c.inflight.Wait()
	if c.attached {
		if g.hub.detach(c) {
			g.presence.offline(c.account)
		}
		g.hub.watch(c, nil)
	}
	c.ws.NetConn().Close()
}

func (c *Conn) hello() Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Hello{AccountID: c.account, SessionID: c.session, Node: c.g.node, HeartbeatMS: c.g.heartbeat.Milliseconds(), ExpiresAt: c.expires,
		Limits: Limits{FrameBytes: maxFrameBytes, FramesPerSecond: ratePerSecond, Burst: rateBurst, Queue: queueSize}}
}

// awaitAuth reads frames until an auth frame succeeds, for at most
// authTimeout.
func (c *Conn) awaitAuth() (*auth.Principal, bool) {
	c.ws.SetReadDeadline(time.Now().Add(c.g.authTimeout))
	for {
		typ, buf, err := c.ws.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseAuthTimeout, closeReasons[CloseAuthTimeout]), time.Now().Add(time.Second))
			}
			return nil, false
		}
		if typ != websocket.TextMessage || len(buf) > maxFrameBytes {
			code := CloseProtocolViolation
			if len(buf) > maxFrameBytes {
				code = CloseFrameTooLarge
			}
			c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, closeReasons[code]), time.Now().Add(time.Second))
			return nil, false
		}
		f, rerr := DecodeFrame(buf)
		if rerr == nil && f.Type != "auth" {
			rerr = replyErr(ErrUnauthenticated, "send an auth frame first")
		}
		var a authData
		if rerr == nil {
			rerr = decodeData(f, &a)
		}
		var p auth.Principal
		if rerr == nil {
			p, rerr = c.authenticate(a.Token)
		}
		if rerr != nil {
			c.writeNow(reply{Type: "reply", ID: f.ID, Error: rerr})
			continue
		}
		c.ws.SetReadDeadline(time.Time{})
		c.authID = f.ID
		return &p, true
	}
}

// writeNow writes a frame directly, before the writer exists (auth phase).
func (c *Conn) writeNow(v any) {
	buf, err := json.Marshal(v)
	if err != nil {
		return
	}
	c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.ws.WriteMessage(websocket.TextMessage, buf)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// sweepsPerTick is how many sweeps a tick has. Each checks the connections
// of a fifth of the hub's shards (sweep), so each connection is checked
// once a tick (5 s by default). Checking every connection at every sweep,
// once a second, took 12 % of the gateways' CPU in a perf profile of a
// 100,000-connection fan-out (iterating the shards' maps, and Conn.tick),
// and about a microsecond per connection a second at idle, for bounds
// counted in tens of seconds, to which a tick adds little (Conn.tick says
// what it adds).
//
// The sweeps are spread over the tick, rather than one a tick over every
// connection, so that the pings of idle connections go out a fifth at a
// time: with 19,000 idle connections a sweep a tick wrote about 3,800
// pings every 5 s at once, and direct messages at 100/s had a p99 of
// 118-595 ms; with a sweep a second (760 pings), 38-55 ms
// (docs/benchmarks.md).
const sweepsPerTick = 5

// maintain runs the sweeps (pings, the silence limit and token expiry) and
// closes ended sessions (every tick). The node's own heartbeat has a
// goroutine of its own (presence.beatLoop), so a slow sweep cannot make
// the other nodes take this one for dead.
func (g *Gateway) maintain() {
	defer close(g.done)
	t := time.NewTicker(g.tick / sweepsPerTick)
	defer t.Stop()
	for sweep := 1; ; sweep++ {
		select {
		case <-g.stop:
			return
		case now := <-t.C:
			g.sweep(sweep, now)
			if took := time.Since(now); took > g.tick {
				g.log.Warn("a maintenance sweep was slow: pings and heartbeat checks are late", "took", took.Round(time.Millisecond).String())
			}
			// Every tick (5 s by default): the check asks only what changed
			// since the last one, an index scan of the revocations since
			// (0.5 ms with 1.2 million sessions; docs/benchmarks.md,
			// session 13).
			if sweep%sweepsPerTick == 0 {
				g.closeEndedSessions()
				g.checkBus()
				g.unsubscribeIdle(now)
			}
		}
	}
}

// sweep checks the connections of the hub's shards whose index is n
// modulo sweepsPerTick. Consecutive sweeps take the shares in turn, so
// each shard is checked once every sweepsPerTick sweeps, wherever the
// count starts; a tick the ticker drops (a sweep slower than its period)
// delays the shares after it, and skips none.
func (g *Gateway) sweep(n int, now time.Time) {
	g.hub.eachOf(n%sweepsPerTick, sweepsPerTick, func(c *Conn) { c.tick(now) })
}

// tick checks a connection. A sweep calls it once a tick (g.tick, 5 s by
// default), so what it enforces happens up to a tick after it falls due.
// With the defaults: a connection that sent nothing for the silence limit
// (60 s) is closed with 4002 60-65 s after it last sent anything; the
// refresh event goes out 55-60 s before the token expires, and the close
// with 4101 0-5 s after it expired; the first sync's seam is dropped 0-5 s
// after its window. Pings: see pingDue.
func (c *Conn) tick(now time.Time) {
	n := now.UnixNano()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return // on its way out
	}
	if time.Duration(n-c.lastRead.Load()) > c.g.silence {
		c.closeLocked(CloseHeartbeatTimeout, "nothing received within the heartbeat limit")
		c.mu.Unlock()
		c.linger() // the peer may not be reading: do not wait for its close
		return
	}
	if c.seam != nil && n > c.seamUntil {
		c.seam = nil // an idle connection does not keep it
	}
	switch {
	case !c.expires.IsZero() && now.After(c.expires):
		c.closeLocked(CloseTokenExpired, "the access token expired")
		c.mu.Unlock()
		return
	case !c.expires.IsZero() && !c.refreshSent && now.Add(refreshBefore).After(c.expires):
		c.refreshSent = true
		data, _ := json.Marshal(serverEvent{Type: "refresh", Data: mustJSON(map[string]time.Time{"expires_at": c.expires})})
		c.enqueueLocked(&outFrame{data: data})
	}
	ping := c.pingDue(n)
	c.mu.Unlock()
	if ping {
		c.lastPing.Store(n)
		// If a writer took the lock meanwhile, this gives up after the
		// deadline and the next tick tries again.
		c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(100*time.Millisecond))
	}
}

// pingDue reports whether the sweep pings c now (c.mu held; n is now in
// unix nanoseconds). Every connection is pinged from the sweep, once a
// heartbeat, without waking a writer goroutine, except:
//   - one with frames on their way;
//   - one with traffic both ways within the heartbeat: the client showed
//     it is alive, and it heard from us, so its own heartbeat (which pings
//     a connection it has not heard from) stays quiet. Pinging such
//     connections took a fifth of a busy gateway's time in write(2)
//     (docs/benchmarks.md, session 7);
//   - for up to a fifth of a heartbeat more, one written to within the
//     last fifth of a heartbeat: a ping then is a second write and a
//     second wake-up of the client, both behind what was just written,
//     and after a large broadcast every member's ping would fall into the
//     burst (pings, pongs and the sweep that sends them took a tenth of
//     the CPU of a 100,000-client fan-out; docs/benchmarks.md, session 14). The connection is
//     still dropped after the silence limit (2.4 heartbeats) counted from
//     what it last sent, so the bound on finding a dead one is unchanged.
//
// The sweep visits a connection once a tick, a fifth of the default
// heartbeat, so each rule takes effect at the first visit after it
// applies; an idle connection's pings keep to the visits, a heartbeat
// apart (see sincePing).
func (c *Conn) pingDue(n int64) bool {
	if c.writing || c.closing {
		return false
	}
	hb := c.g.heartbeat
	since := func(t *atomic.Int64) time.Duration { return time.Duration(n - t.Load()) }
	if since(&c.lastRead) < hb && since(&c.lastWrite) < hb {
		return false
	}
	// lastPing is the time of the sweep that pinged, and the sweeps come
	// back a tick apart, give or take the ticker's microseconds: counted
	// half a tick later, a ping due a heartbeat after the last is not put
	// off to the next visit, a whole tick late, whenever the ticker is a
	// microsecond early.
	sincePing := since(&c.lastPing) + c.g.tick/2
	if sincePing < hb {
		return false
	}
	return since(&c.lastWrite) >= hb/5 || sincePing >= hb+hb/5
}

// closeEndedSessions closes, with 4102, the connections whose session was
// signed out or revoked, or whose account was disabled, since the last
// check: a signed-out phone keeps no socket. It asks the database what
// ended, which costs as much as there were revocations, not as many
// connections as the node holds.
func (g *Gateway) closeEndedSessions() {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	sessions, accounts, next, err := g.auth.EndedSince(ctx, g.ended)
	if err != nil {
		g.log.Warn("checking for ended sessions failed; retrying later", "err", err)
		return
	}
	g.ended = next
	if len(sessions) == 0 && len(accounts) == 0 {
		return
	}
	ended := make(map[int64]bool, len(sessions))
	for _, id := range sessions {
		ended[id] = true
	}
	disabled := make(map[int64]bool, len(accounts))
	for _, id := range accounts {
		disabled[id] = true
	}
	g.hub.each(func(c *Conn) {
		c.mu.Lock()
		sid := c.session
		c.mu.Unlock()
		if ended[sid] || disabled[c.account] {
			c.close(CloseSessionRevoked, "the session was signed out or revoked, or the account disabled")
		}
	})
}

// Shutdown drains the node: no new connections or sends; sends in flight
// complete; every client is told to reconnect elsewhere after a jittered
// delay and closed with 4000; presence rows are removed. It is idempotent
// and returns when every connection goroutine has ended or ctx is done.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.once.Do(func() {
		g.draining.Store(true)
		waitCtx(ctx, &g.sends)
		spread := 1000 + int(g.open.Load())/10 // about 10 reconnects per ms over the others
		g.hub.each(func(c *Conn) {
			delay := 500 + mrand.IntN(spread)
			c.send(serverEvent{Type: "reconnect", Data: mustJSON(map[string]int{"delay_ms": delay})})
			c.close(CloseDraining, "the node is shutting down")
		})
		close(g.stop)
		<-g.done
		for _, s := range g.subs {
			s.Unsubscribe()
		}
		g.stopEvents()
	})
	err := waitCtx(ctx, &g.conns)
	if err == nil {
		g.stopWorkers.Do(func() {
			close(g.jobs)
			close(g.quit)
			if g.poll != nil {
				g.poll.close()
			}
		})
	}
	g.presence.unregister(context.WithoutCancel(ctx))
	return err
}

func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and fixed timings.
const (
	defaultQueueSize = 1024
	defaultReadLimit = 32 << 20 // a sync page may hold 2,000 messages
	defaultHeartbeat = 25 * time.Second
	handshakeTimeout = 20 * time.Second // dial, upgrade and hello
	writeTimeout     = 10 * time.Second // as the server's: a write stuck longer means a dead peer
	ackInterval      = 10 * time.Second
	resendDelay      = 50 * time.Millisecond // least wait before writing rate-limited frames again
)

// State is where the client is in its connection cycle.
type State int

// States, in the order they follow each other.
const (
	StateConnecting   State = iota + 1 // dialling, upgrading, authenticating
	StateConnected                     // authenticated: requests flow, the sync runs
	StateSynced                        // the sync finished (all pages); live messages follow
	StateDisconnected                  // the connection ended (with the reason); a reconnect follows unless Run returns
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateSynced:
		return "synced"
	case StateDisconnected:
		return "disconnected"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config configures a Client. Only URL and Token are required.
type Config struct {
	// URL of the gateway, ws://host:port/v1/ws or wss://….
	URL string
	// URLs are further gateways of the same system. Each new connection
	// attempt takes the next address, round robin from URL, so a client
	// whose node died or drained reconnects to another one.
	URLs []string
	// Token returns an access token. It is called before every connection
	// and on a refresh event; the caller refreshes over HTTP. An error is
	// treated as transient (back-off, then another call): Close or cancel
	// Run to give up.
	Token func(ctx context.Context) (string, error)
	// HTTPClient dials the upgrade request (default http.DefaultClient), e.g.
	// one whose Transport dials from a given local address.
	HTTPClient *http.Client
	// HeaderAuth sends the token as an Authorization header at the upgrade
	// instead of in an auth frame.
	HeaderAuth bool

	// Seqs and Cursor are the resume state of a previous run (Client.Seqs,
	// Client.Cursor): the last processed sequence per conversation, and the
	// sync cursor. Seqs is copied.
	Seqs   map[int64]int64
	Cursor string
	// SyncLimit is the messages per conversation in one sync page
	// (0: the server's default, 100; at most 500).
	SyncLimit int

	// OnMessage receives every message after the resume state exactly
	// once, in sequence order per conversation.
	OnMessage func(Message)
	// DeliverOnReader lets the goroutine that reads the connection call
	// OnMessage itself for a live message that is next in its
	// conversation, when nothing else is queued for the callbacks and
	// none is running, instead of handing it to the dispatcher: one
	// goroutine switch less a message, for callbacks that return at once
	// (a load generator's counters, a post to an app's main thread). The
	// rules of delivery and of one callback at a time are the same. While
	// such a callback runs the connection is not read, so one that blocks
	// delays replies and pongs as well, and the connection is dropped if
	// it blocks past the heartbeat; and it must not wait for a request of
	// this Client (Send, History, …), whose reply that goroutine would
	// read: such a request returns only when its ctx ends.
	DeliverOnReader bool
	// OnEvent receives the other events (hello, read, conversation,
	// presence, refresh, reconnect, client.*).
	OnEvent func(Event)
	// OnState receives state changes; the error is the reason of
	// StateDisconnected: a *CloseError (the server's close code, or 1006
	// with DroppedByClient when the client dropped it), an *Error (a
	// refused upgrade or auth frame) or a *SetupError (a connection that
	// did not come up, and at which stage).
	OnState func(State, error)

	// MinBackoff and MaxBackoff bound the jittered exponential back-off
	// between connection attempts (defaults 250 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration
	// AutoAck sends ack frames (without id) for delivered messages: the
	// highest sequence per conversation, AckInterval (default 10 s, less
	// up to a half at random) after the first delivery they confirm, with
	// every later one coalesced. Acks only confirm delivery to the server
	// (nothing waits for them: the client resumes from its own
	// sequences), so they trail rather than cost an uplink frame per
	// message, and the members of a large group do not all answer a
	// message at once. At this interval they still count as traffic for
	// the server's 25 s heartbeat.
	AutoAck     bool
	AckInterval time.Duration
	// QueueSize bounds the live events waiting for the callbacks (default
	// 1024). When it is full, further events are dropped and the client
	// syncs once the callbacks catch up (see EventOverflow).
	QueueSize int
	// Heartbeat is how long the connection may be silent before the client
	// pings it; a ping unanswered for as long again drops the connection.
	// 0 uses the hello's heartbeat_ms (else 25 s); negative disables it.
	Heartbeat time.Duration
	// ReadLimit bounds one message from the server (default 32 MiB).
	ReadLimit int64
	// Logger (default: discard).
	Logger *slog.Logger
}

func (cfg *Config) check() error {
	if cfg.Token == nil {
		return errors.New("client: Config.Token is required")
	}
	for _, raw := range append([]string{cfg.URL}, cfg.URLs...) {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("client: Config.URL: %w", err)
		}
		switch u.Scheme {
		case "ws", "wss", "http", "https":
		default:
			return fmt.Errorf("client: Config.URL %q is not a ws:// or wss:// URL", raw)
		}
	}
	return nil
}

// nextURL is the address of the next connection attempt (Run's goroutine
// only).
func (c *Client) nextURL() string {
	all := len(c.cfg.URLs) + 1
	i := c.dials % all
	c.dials++
	if i == 0 {
		return c.cfg.URL
	}
	return c.cfg.URLs[i-1]
}

// Client is one device's connection to the gateway. Create it with New,
// run it with Run; its methods are safe for concurrent use.
type Client struct {
	cfg Config // read-only after New, defaults applied
	log *slog.Logger

	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when Run has returned
	closeOnce sync.Once
	running   atomic.Bool    // Run was called
	wg        sync.WaitGroup // every goroutine and timer callback Run started

	// mu guards the fields below. Lock order: dmu → conn.wmu → mu; stateMu and
	// queue.mu are leaves.
	mu      sync.Mutex
	cancel  context.CancelFunc  // ends Run's context; nil until Run starts
	conn    *conn               // the authenticated connection requests go to; nil between connections
	ready   chan struct{}       // closed while conn is set; replaced when it is cleared
	nextID  uint64              // the last request id given out
	pending map[string]*request // requests waiting for a reply, by id
	watch   []int64             // the last presence watch list, restored on every connection
	runErr  error               // why Run returned

	// stateMu guards writes of seqs and cursor and all reads from outside
	// the dispatcher, which is the only writer.
	stateMu sync.Mutex
	seqs    map[int64]int64
	cursor  string

	q queue // live events and state changes for the dispatcher

	runCtx context.Context // Run's context, set before Run starts any goroutine

	// Run's goroutine only.
	gen         uint64    // connections made
	dials       int       // connection attempts, for the round robin over URLs
	reconnectAt time.Time // from a reconnect event: do not reconnect before
	lastState   State     // the last state reported

	// dmu is held by whoever runs the callbacks: the dispatcher while it
	// handles what it took from q, or the read loop delivering a message
	// itself (Config.DeliverOnReader). The fields below are theirs.
	dmu       sync.Mutex
	acks      map[int64]int64 // highest delivered sequence not yet acked, per conversation
	ackDue    time.Time       // when the pending acks go out; zero when none are pending
	ackTimer  *time.Timer     // wakes the dispatcher to flush acks
	ackArmed  bool
	ackBuf    []byte
	needSync  bool // a gap could not be filled: sync when the queue is empty
	needWatch bool // presence events may have been lost (resync): set the watch again after that sync
	itemSpare []item
}

// New returns a client for cfg. It does not connect: call Run.
func New(cfg Config) *Client {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = defaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = defaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = defaultQueueSize
	}
	if cfg.ReadLimit <= 0 {
		cfg.ReadLimit = defaultReadLimit
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.AckInterval <= 0 {
		cfg.AckInterval = ackInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	seqs := maps.Clone(cfg.Seqs)
	if seqs == nil {
		seqs = map[int64]int64{}
	}
	c := &Client{
		cfg:     cfg,
		log:     log,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
		pending: map[string]*request{},
		seqs:    seqs,
		cursor:  cfg.Cursor,
	}
	c.q.init(cfg.QueueSize)
	if cfg.AutoAck {
		c.acks = map[int64]int64{}
	}
	return c
}

// Seqs returns a copy of the last processed sequence per conversation, to
// persist and pass as Config.Seqs next time. A conversation appears with 0
// when the client has heard of it but processed nothing yet.
func (c *Client) Seqs() map[int64]int64 {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return maps.Clone(c.seqs)
}

// Cursor returns the sync cursor, to persist with Seqs.
func (c *Client) Cursor() string {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.cursor
}

// Close stops the client: Run returns ErrClosed once everything it started
// has ended, and requests in progress return ErrClosed. It does not wait
// (so a callback may call it) and is idempotent; use Shutdown to wait.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.mu.Lock()
		cancel := c.cancel
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	})
	return nil
}

// Shutdown closes the client and waits until Run has returned or ctx
// ends. It must not be called from a callback, which Run waits for.
func (c *Client) Shutdown(ctx context.Context) error {
	c.Close()
	if !c.running.Load() {
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopError marks an error after which Run returns instead of reconnecting.
type stopError struct{ error }

func (e stopError) Unwrap() error { return e.error }

// Run connects, syncs, delivers and reconnects until ctx ends, Close is
// called, or the server refuses the client for good (close codes
// 4100-4199 except 4101, or an authentication the token cannot fix). It
// returns the reason: ctx.Err(), ErrClosed, a *CloseError or an *Error.
// Run may be called once; it returns only after every goroutine it
// started has ended, which includes a callback in progress.
func (c *Client) Run(ctx context.Context) (err error) {
	if c.running.Swap(true) {
		return errors.New("client: Run called twice")
	}
	if err := c.cfg.check(); err != nil {
		c.finish(err)
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.runCtx = ctx
	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()
	select {
	case <-c.stop:
		c.finish(ErrClosed)
		return ErrClosed
	default:
	}
	c.wg.Add(1)
	go c.dispatch(ctx)
	defer func() {
		if c.lastState != StateDisconnected {
			c.state(StateDisconnected, err)
		}
		cancel()
		c.wg.Wait()
		// The dispatcher may have stopped before the last state was queued;
		// nothing else runs callbacks now.
		c.finalStates(nil)
		c.finish(err)
	}()

	attempt := 0
	for {
		c.state(StateConnecting, nil)
		cn, err := c.connect(ctx)
		if err == nil {
			err = c.serve(ctx, cn)
			if cn.synced.Load() {
				attempt = 0
			}
		}
		if ctx.Err() != nil {
			return c.stopReason(ctx)
		}
		var se stopError
		if errors.As(err, &se) {
			c.state(StateDisconnected, se.error)
			return se.error
		}
		c.state(StateDisconnected, err)
		var ce *CloseError
		if errors.As(err, &ce) && !ce.Retry() {
			return ce
		}
		wait := backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)
		attempt++
		if ce != nil && ce.Code == CloseRateLimited {
			wait = max(wait, rateLimitedBackoff)
		}
		if e := (*Error)(nil); errors.As(err, &e) {
			wait = max(wait, e.RetryAfter) // Retry-After of a refused upgrade
		}
		if !c.reconnectAt.IsZero() {
			wait, attempt = time.Until(c.reconnectAt), 0
			c.reconnectAt = time.Time{}
		}
		c.log.Debug("reconnecting", "after", wait, "reason", err)
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return c.stopReason(ctx)
			}
		}
	}
}

func (c *Client) stopReason(ctx context.Context) error {
	select {
	case <-c.stop:
		return ErrClosed
	default:
		return ctx.Err()
	}
}

// finish records why Run returned and releases waiting requests.
func (c *Client) finish(err error) {
	c.mu.Lock()
	c.runErr = err
	c.mu.Unlock()
	close(c.done)
}

// closedErr is what requests return once the client stopped.
func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runErr != nil && !errors.Is(c.runErr, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, c.runErr)
	}
	return ErrClosed
}

// current returns the authenticated connection, or nil.
func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// state hands a state change to the dispatcher, which calls OnState.
func (c *Client) state(s State, err error) {
	c.lastState = s
	if c.cfg.OnState != nil {
		c.q.push(item{kind: itemState, state: s, err: err})
	}
}

// event hands an event to the dispatcher, which calls OnEvent.
func (c *Client) event(typ string, data json.RawMessage) {
	if c.cfg.OnEvent != nil {
		c.q.push(item{kind: itemEvent, ev: &Event{Type: typ, Data: data}})
	}
}

package gateway

import (
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"

	"github.com/zhangban/zhangban/internal/event"
)

const hubShards = 64

// outFrame is one frame queued for connections. A frame for many
// recipients is shared: data is encoded once and prepared once.
type outFrame struct {
	data []byte
	conv int64 // message events: the conversation and sequence, for the sync seam
	seq  int64

	once sync.Once
	prep *websocket.PreparedMessage // built on first use by a writer; nil for unicast frames

	closeMsg []byte // a close frame to send after what is queued before it
	shared   bool   // more than one recipient: write it prepared
}

func (f *outFrame) prepared() *websocket.PreparedMessage {
	f.once.Do(func() {
		p, err := websocket.NewPreparedMessage(websocket.TextMessage, f.data)
		if err == nil {
			f.prep = p
		}
	})
	return f.prep
}

// user is the local devices of one account and, once loaded, the
// conversations it is in.
type user struct {
	id int64

	mu      sync.Mutex         // guards the fields below
	conns   []*Conn            // the account's connections on this node
	convs   map[int64]struct{} // conversations it is in; nil until loaded
	loading bool               // the first connection is loading convs
	loaded  chan struct{}      // closed when convs is loaded (or failed)
	pending []membership       // changes that arrived while loading
	gone    bool               // removed from the hub: its last device left
}

type membership struct {
	conv int64
	join bool
}

type userShard struct {
	mu sync.RWMutex
	m  map[int64]*user
}

type convShard struct {
	mu sync.RWMutex
	m  map[int64]map[*user]struct{}
}

type watchShard struct {
	mu sync.RWMutex
	m  map[int64]map[*Conn]struct{} // watched account → watching connections
}

// hub is the sharded registry of this node's connections.
type hub struct {
	accounts atomic.Int64 // accounts with a connection here
	users    [hubShards]userShard
	convs    [hubShards]convShard
	watches  [hubShards]watchShard
}

func newHub() *hub {
	h := &hub{}
	for i := range hubShards {
		h.users[i].m = map[int64]*user{}
		h.convs[i].m = map[int64]map[*user]struct{}{}
		h.watches[i].m = map[int64]map[*Conn]struct{}{}
	}
	return h
}

func shardOf(id int64) int { return int(uint64(id) % hubShards) }

// attach registers a connection; first reports whether it is the account's
// first on this node, in which case the caller loads its conversations and
// calls loaded.
func (h *hub) attach(c *Conn) (u *user, first bool) {
	sh := &h.users[shardOf(c.account)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u = sh.m[c.account]
	if u == nil {
		u = &user{id: c.account, loading: true, loaded: make(chan struct{})}
		sh.m[c.account] = u
		h.accounts.Add(1)
		first = true
	}
	u.mu.Lock()
	u.conns = append(u.conns, c)
	u.mu.Unlock()
	return u, first
}

// loaded installs the conversations of a user loaded from the database,
// then the membership changes that arrived meanwhile, in order.
func (h *hub) loaded(u *user, convs []int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone {
		return
	}
	u.convs = make(map[int64]struct{}, len(convs))
	for _, id := range convs {
		u.convs[id] = struct{}{}
		h.convAdd(id, u)
	}
	for _, m := range u.pending {
		h.applyLocked(u, m)
	}
	u.pending, u.loading = nil, false
	close(u.loaded)
}

// detach removes a connection; last reports whether the account has no
// device left on this node.
func (h *hub) detach(c *Conn) (last bool) {
	sh := &h.users[shardOf(c.account)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.m[c.account]
	if u == nil {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	if len(u.conns) > 0 {
		return false
	}
	delete(sh.m, c.account)
	h.accounts.Add(-1)
	u.gone = true
	for id := range u.convs {
		h.convRemove(id, u)
	}
	if u.loading {
		u.loading = false
		close(u.loaded)
	}
	return true
}

func (h *hub) convAdd(conv int64, u *user) {
	sh := &h.convs[shardOf(conv)]
	sh.mu.Lock()
	set := sh.m[conv]
	if set == nil {
		set = map[*user]struct{}{}
		sh.m[conv] = set
	}
	set[u] = struct{}{}
	sh.mu.Unlock()
}

func (h *hub) convRemove(conv int64, u *user) {
	sh := &h.convs[shardOf(conv)]
	sh.mu.Lock()
	if set := sh.m[conv]; set != nil {
		delete(set, u)
		if len(set) == 0 {
			delete(sh.m, conv)
		}
	}
	sh.mu.Unlock()
}

func (h *hub) user(account int64) *user {
	sh := &h.users[shardOf(account)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[account]
}

// membership applies a join or leave of a local account.
func (h *hub) membership(account, conv int64, join bool) {
	u := h.user(account)
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gone {
		return
	}
	if u.loading {
		u.pending = append(u.pending, membership{conv, join})
		return
	}
	h.applyLocked(u, membership{conv, join})
}

func (h *hub) applyLocked(u *user, m membership) {
	_, in := u.convs[m.conv]
	switch {
	case m.join && !in:
		u.convs[m.conv] = struct{}{}
		h.convAdd(m.conv, u)
	case !m.join && in:
		delete(u.convs, m.conv)
		h.convRemove(m.conv, u)
	}
}

// route queues an event for its recipients on this node, passes each
// connection whose writer must be started to start (Conn.deliver), and
// returns how many frames it queued.
func (h *hub) route(e *event.Event, start func(*Conn)) int {
	for _, a := range e.Join {
		h.membership(a, e.Conv, true)
	}
	for _, a := range e.Leave {
		h.membership(a, e.Conv, false)
	}
	var targets []*user
	if e.Conv != 0 {
		sh := &h.convs[shardOf(e.Conv)]
		sh.mu.RLock()
		for u := range sh.m[e.Conv] {
			targets = append(targets, u)
		}
		sh.mu.RUnlock()
	}
	for _, a := range e.To {
		if u := h.user(a); u != nil && !containsUser(targets, u) {
			targets = append(targets, u)
		}
	}
	if len(targets) == 0 {
		return 0
	}
	f := &outFrame{data: eventFrame(e.Type, e.Data)}
	if e.Type == event.TypeMessage {
		f.conv, f.seq = e.Conv, e.Seq
	}
	var conns []*Conn
	for _, u := range targets {
		u.mu.Lock()
		conns = append(conns, u.conns...)
		u.mu.Unlock()
	}
	// Preparing a frame (gorilla's PreparedMessage: the frame built once,
	// written as it is) pays from three recipients on; for two (a direct
	// message to its sender's device and its peer's), copying it into each
	// write costs less than building and collecting it.
	f.shared = len(conns) > 2
	for _, c := range conns {
		if c.deliver(f) {
			start(c)
		}
	}
	return len(conns)
}

func containsUser(us []*user, u *user) bool {
	for _, x := range us {
		if x == u {
			return true
		}
	}
	return false
}

// watch replaces the presence watches of a connection.
func (h *hub) watch(c *Conn, accounts []int64) {
	old := c.setWatching(accounts)
	for _, a := range old {
		sh := &h.watches[shardOf(a)]
		sh.mu.Lock()
		if set := sh.m[a]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(sh.m, a)
			}
		}
		sh.mu.Unlock()
	}
	for _, a := range accounts {
		sh := &h.watches[shardOf(a)]
		sh.mu.Lock()
		set := sh.m[a]
		if set == nil {
			set = map[*Conn]struct{}{}
			sh.m[a] = set
		}
		set[c] = struct{}{}
		sh.mu.Unlock()
	}
}

// watchers returns the connections watching an account.
func (h *hub) watchers(account int64) []*Conn {
	sh := &h.watches[shardOf(account)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	out := make([]*Conn, 0, len(sh.m[account]))
	for c := range sh.m[account] {
		out = append(out, c)
	}
	return out
}

// each calls fn for every connection (drain, ended sessions).
func (h *hub) each(fn func(*Conn)) { h.eachOf(0, 1, fn) }

// eachOf calls fn for the connections of the shards whose index is part
// modulo parts (a maintenance sweep's share).
func (h *hub) eachOf(part, parts int, fn func(*Conn)) {
	var all []*Conn
	for i := part; i < hubShards; i += parts {
		sh := &h.users[i]
		sh.mu.RLock()
		for _, u := range sh.m {
			u.mu.Lock()
			all = append(all, u.conns...)
			u.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
	for _, c := range all {
		fn(c)
	}
}

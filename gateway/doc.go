// Package gateway is the realtime edge: one WebSocket per device
// (gorilla/websocket), speaking the protocol of docs/protocol.md.
//
// It holds no state but sockets. Domain packages publish events after
// commit (internal/event); every node with connections subscribes to the
// bus, takes its own events in process (Deps.Events), and routes each
// event to its own connections through a sharded registry: by account for
// events addressed to people, by conversation for message events. A frame
// for many recipients is encoded once and written as a shared
// websocket.PreparedMessage; frames queued for one connection are
// coalesced into one WebSocket message. Events for many connections are
// routed in batches (onEvent): a node that falls behind a broadcast writes
// each connection once a round with what came for it meanwhile, instead of
// once per event; direct messages do not wait.
//
// Concurrency: authentication and set-up run on the HTTP handler's
// goroutine (at most 512 at once; up to 4,096 more upgrades wait up to
// 5 s for a turn, and the rest get 503 + Retry-After).
// Then an idle connection has no goroutine at all: on Linux it is parked
// with an epoll poller (poll_linux.go), which starts a goroutine when bytes
// arrive; that goroutine hands every message to a pool of 128 workers,
// and parks the connection again when nothing more has arrived. This works
// because the socket under gorilla's reader (frameConn) gives gorilla at
// most one frame at a time, so nothing waits unseen in gorilla's buffer,
// and answers pings and takes pongs itself. Elsewhere each connection keeps
// one reading goroutine. Sends are queued in order and waited for on a
// goroutine of their own, so a client can pipeline them. A writer
// goroutine exists only while the connection's queue is not empty;
// connections are pinged from the maintenance goroutine once a heartbeat,
// except those with traffic both ways within it. The queue is
// bounded (256 frames); a connection whose queue overflows or whose write
// stalls for 10-15 s is closed with 4001 slow_consumer and resumes by
// syncing, so no consumer slows another. Whoever sets a connection's read
// state to ended (its reading goroutine on an error, or the close's linger
// timer while it is parked) releases it, once.
//
// Lock order: eventBatch.mu → user shard lock → user.mu → conversation
// shard lock;
// Conn.rmu → poller.mu; watch shard locks and Conn.mu are leaves (route never holds a shard lock
// while taking user.mu or Conn.mu).
//
// Presence is kept in PostgreSQL (gw_presence, gw_nodes, gw_last_seen)
// so that every node can answer for the whole system; a node that dies stops
// heart-beating and the others mark its users offline within
// presenceExpiry.
package gateway

// Package gateway is the realtime edge: one WebSocket per device
// (gorilla/websocket), speaking the protocol of docs/protocol.md.
//
// It holds no state but sockets. Domain packages publish events after
// commit (internal/event); every node subscribes to the bus and routes each
// event to its own connections through a sharded registry: by account for
// events addressed to people, by conversation for message events. A frame
// for many recipients is encoded once and written as a shared
// websocket.PreparedMessage; frames queued for one connection are
// coalesced into one WebSocket message.
//
// Concurrency: authentication and set-up run on the HTTP handler's
// goroutine (at most 512 at once; more upgrades get 503 + Retry-After).
// Then each connection has one goroutine reading, which hands every frame
// to a pool of 128 workers and waits for it, so that its own stack stays
// shallow while idle; sends are queued in order and waited for on a
// goroutine of their own, so a client can pipeline them. A writer
// goroutine exists only while the connection's queue is not empty; idle
// connections are pinged from the maintenance goroutine. The queue is
// bounded (256 frames); a connection whose queue overflows or whose write
// stalls for 10 s is closed with 4001 slow_consumer and resumes by
// syncing, so no consumer slows another.
//
// Lock order: user shard lock → user.mu → conversation shard lock;
// watch shard locks and Conn.mu are leaves (route never holds a shard lock
// while taking user.mu or Conn.mu).
//
// Presence is kept in PostgreSQL (gw_presence, gw_nodes, gw_last_seen)
// so that every node can answer for the whole system; a node that dies stops
// heart-beating and the others mark its users offline within
// presenceExpiry.
package gateway

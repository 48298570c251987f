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
// Concurrency: each connection has one goroutine reading (it also runs the
// connection's requests, except sends, which it queues in order and waits
// for on a goroutine of their own) and, only while its queue is not empty,
// one goroutine writing. The queue is bounded (256 frames); a connection
// whose queue overflows or whose write stalls for 10 s is closed with
// 4001 slow_consumer and resumes by syncing, so no consumer slows another.
//
// Lock order: hub shard locks (user shards, then conversation shards, never
// two of one kind) → user.mu → Conn.mu. Conn.mu is a leaf.
//
// Presence is kept in PostgreSQL (gw_presence, gw_nodes, gw_last_seen)
// so that every node can answer for the whole system; a node that dies stops
// heart-beating and the others mark its users offline within
// presenceExpiry.
package gateway

// Package client is a Go client of the gateway's realtime protocol
// (docs/protocol.md, subprotocol zhangban.v1) on github.com/coder/websocket.
// It serves Go tools, tests, the load generator and gomobile builds, and so
// imports nothing from the server: its frame types mirror the document.
//
// A Client owns one connection at a time. Run connects, authenticates (an
// auth frame, or the Authorization header with Config.HeaderAuth), syncs
// (every page while the reply says more), delivers live messages and
// reconnects with jittered exponential back-off until its context ends,
// Close is called, or the server refuses the client for good (close codes
// 4100-4199 other than 4101, whose token it refreshes; see errors.go).
//
// Delivery: the client keeps, per conversation, the last sequence it has
// processed (Seqs; persist it with Cursor and pass both back in Config to
// resume). A live message at or below it is dropped, the next one is
// delivered, and one after a gap waits while the gap is fetched with
// history. When the server says events may have been lost on their way
// (a resync event), the client syncs again on the same connection and sets
// its presence watch again. So OnMessage sees every message after the
// resume state exactly once per run, in sequence order within a
// conversation. A message counts
// as processed when OnMessage returns: a process that dies inside the
// callback sees the message again on its next run if it persisted the
// state before.
//
// Requests (Send, History, MarkRead, Direct, Presence, Ping) wait for a
// connection and are matched to their replies by id. If the connection ends
// first, they are written again, in their original order, on the next one:
// every operation is idempotent, Send through its client_id, so each call
// returns once, with the one stored result. A request returns early only
// when its ctx ends or the client stops.
//
// Concurrency: the methods of a Client are safe for concurrent use. Each
// Client runs, while Run runs, one goroutine reading the connection (Run's
// own) and one dispatcher goroutine, plus a heartbeat timer per connection.
// The read loop never waits for the callbacks: it completes replies itself
// and queues events for the dispatcher, which runs the sync, fetches gaps
// and calls OnMessage, OnEvent and OnState one at a time, in order, never
// concurrently with each other. A callback may therefore call any method of
// the Client (Send from OnMessage works), but while it runs no other
// callback does, and a callback that blocks holds up delivery; the queue is
// bounded (Config.QueueSize) and, when full, live events are dropped and
// the client syncs when the dispatcher catches up, so messages are never
// lost (EventOverflow tells the other events were). With
// Config.DeliverOnReader the read loop calls OnMessage itself for a live
// message that is next in its conversation while the dispatcher is idle
// with nothing queued: the same order and the same one callback at a
// time, one goroutine switch less, but the connection is not read while
// that callback runs. Run returns only after
// every goroutine it started has ended, including a callback in progress;
// Close does not wait and may be called from a callback, Shutdown waits.
//
// Lock order: Client.dmu (running the callbacks) → conn.wmu (one
// connection's writes) → Client.mu. Client.stateMu and queue.mu are leaves.
package client

// Package bus connects a node to NATS, the bus that carries live events
// between nodes. With a URL it joins an external server or cluster (many
// nodes); without one it runs nats-server in-process with no listener, so a
// single node needs nothing else installed.
//
// Core NATS is at-most-once: nothing may rely on the bus for durability.
// PostgreSQL is the source of truth and clients that miss a live event catch
// up from it when they sync.
//
// A *Bus is safe for concurrent use; Close is idempotent.
package bus

// Package event carries what domain packages tell the realtime gateway after
// a commit: a message was sent, a read mark moved, a conversation changed.
//
// Domain packages (messaging, tasks) publish through the small Publisher
// interface and never import the gateway; the gateway subscribes to the bus
// and routes each event to the devices of its recipients on this node.
// Events are at-most-once (core NATS): PostgreSQL is the source of truth and
// a client that missed an event gets it when it syncs.
//
// An Event's Data is the JSON object clients receive, encoded once by the
// publisher, so a broadcast is never re-encoded per recipient.
//
// Publishers are safe for concurrent use.
package event

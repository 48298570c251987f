// Package messaging owns conversations (direct and group), their members
// and their messages, and the rules of who may talk to whom.
//
// Delivery guarantees rest on PostgreSQL: every conversation has a gapless
// sequence assigned at commit; a send is idempotent by the sender's client
// message id; read state is one cursor per member, not a row per member per
// message. After a commit the package publishes an event through
// event.Publisher; it never imports the gateway, and it never relies on an
// event arriving: clients that missed one catch up with Sync.
//
// Sends from all callers on a node go through a small set of committer
// goroutines (one queue per conversation shard, so one conversation's sends
// keep their order) that commit whatever is queued in one transaction.
// That is what lets one node persist thousands of messages a second on a
// few cores.
//
// Service is safe for concurrent use. Close stops the committers after
// finishing what they hold; sends after Close fail with ErrUnavailable.
package messaging

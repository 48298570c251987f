// Package authz is the one component that answers "may actor A do action X
// on unit U", and the one that changes who may.
//
// A role granted at a unit reaches the unit's whole subtree. The model is
// casbin's (model.conf, embedded): p rules are small (role, object, verb),
// grants are g rules (account, role, unit) with concrete domains, and a
// decision walks the target's ancestors (at most six, from Tree) asking, for
// each, whether the account holds there a role that allows the action.
// Allowed does exactly that from memory without allocating: the p rules are
// precompiled into bitsets (action → roles allowing it), and the grants are
// indexed by account (index, which is also casbin's role manager, so casbin's
// Enforce sees the same grants and 1.4M grants are held once).
// docs/permissions.md lists the roles, actions, rules and figures.
//
// What it owns: the tables authz_policies (p rules), authz_grants (g rules;
// no foreign keys, accounts and units belong to other packages),
// authz_state and authz_changes (change tracking), and the append-only
// authz_audit. Grants and revocations are audited in the transaction that
// makes them; refused Checks, grants and revocations are audited too.
//
// Propagation: PostgreSQL is the truth. A committed change is applied on the
// node that made it, then announced on NATS (Subject); every node reloads the
// named account from PostgreSQL, and every 30 s catches up by version with
// whatever a lost notice left out. See sync.go.
//
// Concurrency: an *Authorizer is safe for concurrent use. Decisions read an
// immutable generation (p rules) through an atomic pointer and the grant index
// under its read lock, which no I/O is done under; Tree is never called with
// a lock held. Writers to the in-memory grants are serialised by syncMu (lock
// order: syncMu, then the index lock). Close is idempotent and waits for the
// worker goroutine it started.
package authz

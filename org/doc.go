// Package org owns the six-level organisation tree (province → city →
// county → township → village → grid), the people in it and their positions,
// and the address book built on them.
//
// Tables: org_units (ltree paths over surrogate ids), org_people (the address
// book's projection of accounts, with pinyin), org_positions (a person's
// posts, several per person, one primary), org_changes and org_sync (the
// change log phones sync their cached address book from). Positions carry
// their province, city and county ids (generated from unit_path) and a copy
// of their person's search keys, so that people search reads one area's
// index range (addressbook_search.go); whoever writes org_people or adds
// positions keeps the copy in step (syncSearchKeys, or the importer in bulk).
//
// Every operation on behalf of a person goes through Service, which asks the
// authz.Authorizer before it reads or writes; nothing reaches the tables by
// a path that skips it. Things a caller may not see are reported as
// ErrNotFound, never as "forbidden", so nothing leaks about them.
//
// Tree is an in-memory copy of the parent links, the authorizer's source of
// ancestors. It is refreshed from PostgreSQL after every change on any node
// (notified over NATS) and by a periodic version check.
//
// Service and Tree are safe for concurrent use.
package org

package authz

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AuditKind says what an audit entry records.
type AuditKind string

// The kinds of audit entries.
const (
	AuditGrant  AuditKind = "grant"  // a role was granted
	AuditRevoke AuditKind = "revoke" // a role was revoked
	AuditDenied AuditKind = "denied" // a Check, a grant or a revocation was refused
)

// AuditEntry is one row of the append-only audit log.
type AuditEntry struct {
	ID              int64     `json:"id"`
	At              time.Time `json:"at"`
	ActorID         int64     `json:"actor_id,omitempty"` // 0: the system
	Kind            AuditKind `json:"kind"`
	Action          Action    `json:"action"`
	UnitID          int64     `json:"unit_id,omitempty"`           // target unit; 0: none
	TargetAccountID int64     `json:"target_account_id,omitempty"` // whose role changed (grant, revoke)
	Role            Role      `json:"role,omitempty"`
	ClientAddr      string    `json:"client_addr,omitempty"`
	RequestID       string    `json:"request_id,omitempty"`
	Detail          string    `json:"detail,omitempty"`
}

// AuditQuery selects audit entries, newest first. Zero fields do not filter.
type AuditQuery struct {
	ActorID int64     // entries by this actor
	UnitID  int64     // entries whose target unit is this unit or below it
	Kind    AuditKind // entries of this kind
	Since   time.Time // at or after
	Until   time.Time // before
	Before  int64     // cursor: entries with a smaller id (the last id of the previous page)
	Limit   int       // page size; default 100, at most 1000
}

// Audit lists audit entries the actor may read: a superuser all of them,
// others (with audit.read) those whose target unit lies in the subtrees where
// they hold audit.read, as the tree was when the entry was written. Filtering
// by a unit outside that reach is denied (and audited).
func (a *Authorizer) Audit(ctx context.Context, actor Actor, q AuditQuery) ([]AuditEntry, error) {
	var roots []int64
	if !actor.Superuser {
		if q.UnitID != 0 {
			if err := a.Check(ctx, actor, AuditRead, q.UnitID); err != nil {
				return nil, err
			}
		} else if roots = a.Reach(actor.AccountID, AuditRead); len(roots) == 0 {
			a.auditDenied(ctx, actor, AuditRead, 0, nil, 0, "", "no unit where audit.read is held")
			return nil, fmt.Errorf("%w: %s at any unit", ErrDenied, AuditRead)
		}
	}
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if roots != nil {
		arg("unit_path && $%d", roots)
	}
	if q.UnitID != 0 {
		arg("unit_path @> ARRAY[$%d::bigint]", q.UnitID)
	}
	if q.ActorID != 0 {
		arg("actor_id = $%d", q.ActorID)
	}
	switch q.Kind {
	case "":
	case AuditGrant, AuditRevoke, AuditDenied:
		arg("kind = $%d", string(q.Kind))
	default:
		return nil, fmt.Errorf("authz: unknown audit kind %q", q.Kind)
	}
	if !q.Since.IsZero() {
		arg("at >= $%d", q.Since)
	}
	if !q.Until.IsZero() {
		arg("at < $%d", q.Until)
	}
	if q.Before > 0 {
		arg("id < $%d", q.Before)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	sql := `SELECT id, at, coalesce(actor_id, 0), kind, action, coalesce(unit_id, 0), coalesce(target_account_id, 0),
		coalesce(role, ''), client_addr, request_id, detail FROM authz_audit`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += fmt.Sprintf(" ORDER BY id DESC LIMIT %d", limit)
	rows, err := a.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.ID, &e.At, &e.ActorID, &e.Kind, &e.Action, &e.UnitID, &e.TargetAccountID,
			&e.Role, &e.ClientAddr, &e.RequestID, &e.Detail); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// insertAudit appends e; path is the target unit and its ancestors (what
// auditors' reach is matched against).
func insertAudit(ctx context.Context, q querier, e AuditEntry, path []int64) error {
	if path == nil {
		path = []int64{}
	}
	_, err := q.Exec(ctx, `INSERT INTO authz_audit (actor_id, kind, action, unit_id, unit_path, target_account_id, role, client_addr, request_id, detail)
		VALUES (nullif($1, 0), $2, $3, nullif($4, 0), $5, nullif($6, 0), nullif($7, ''), $8, $9, $10)`,
		e.ActorID, string(e.Kind), string(e.Action), e.UnitID, path, e.TargetAccountID, string(e.Role), e.ClientAddr, e.RequestID, e.Detail)
	return err
}

// auditDenied records a refusal. The refusal stands whether or not the entry
// could be written; a failure is logged.
func (a *Authorizer) auditDenied(ctx context.Context, actor Actor, action Action, unit int64, path []int64, target int64, role Role, detail string) {
	err := insertAudit(ctx, a.pool, AuditEntry{
		ActorID: actor.AccountID, Kind: AuditDenied, Action: action, UnitID: unit, TargetAccountID: target,
		Role: role, ClientAddr: actor.ClientAddr, RequestID: actor.RequestID, Detail: detail,
	}, path)
	if err != nil {
		a.log.ErrorContext(ctx, "authz: writing audit entry of a refusal", "actor", actor.AccountID, "action", action, "unit", unit, "err", err)
	}
}

// Denied records a refusal decided outside Check, such as a read of a unit
// or a person the actor may not see (answered as not found), so that the
// audit log holds every denied request. target is a person, or 0.
func (a *Authorizer) Denied(ctx context.Context, actor Actor, action Action, unit, target int64, detail string) {
	if actor.Superuser {
		return
	}
	var path []int64
	if unit != 0 {
		path, _ = a.tree.Ancestors(unit)
	}
	a.auditDenied(ctx, actor, action, unit, path, target, "", detail)
}

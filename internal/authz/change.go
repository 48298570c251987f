package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zhangban/zhangban/internal/db"
)

// The rules for Grant and Revoke (docs/permissions.md explains them). A
// superuser may do anything. Anyone else, changing role R of account T at
// unit U:
//
//  1. never changes their own grants (T ≠ actor);
//  2. holds role.grant at U: a role allowing it at U or an ancestor of U;
//  3. holds at U every privileged action R allows (no escalation: an admin
//     cannot make an auditor, since admins lack audit.read). Privileged
//     actions are the powers over people and data (unit.manage,
//     member.manage, member.read_mobile, role.grant, audit.read); the work
//     actions (task.handle, incident.report, task.dispatch, …) are duties an
//     admin assigns by appointing staff, leaders and grid workers;
//  4. when R itself allows role.grant, holds role.grant at a proper ancestor
//     of U: an admin appoints admins only below their own unit, never a peer.
//
// Revoking needs exactly what granting the same role would.
//
// The rules are checked inside the transaction that makes the change, against
// the actor's grants as stored (read FOR SHARE, so a concurrent revocation of
// the actor's own role waits for us or makes us wait), not against this
// node's memory, which may lag by a notice.

// errRefused aborts the change transaction after a rule refused it.
var errRefused = errors.New("refused")

// changeDenied says why actor may not grant or revoke role of account target
// at the unit whose ancestors (unit first) are anc, given the actor's stored
// grants; "" when the change is allowed.
func (g *generation) changeDenied(actor Actor, held []Grant, target int64, role Role, anc []int64) string {
	if actor.Superuser {
		return ""
	}
	if target == actor.AccountID {
		return "an account may not change its own roles"
	}
	grantID, ok := g.actionIDs[RoleGrant]
	if !ok {
		return "no role allows role.grant"
	}
	grantBit := uint64(1) << grantID
	var have uint64
	above := false
	for _, h := range held {
		i := slices.Index(anc, h.UnitID)
		if i < 0 {
			continue
		}
		m := g.roleMask(h.Role)
		have |= m
		above = above || (i > 0 && m&grantBit != 0)
	}
	if have&grantBit == 0 {
		return "needs role.grant at the unit or above"
	}
	want := g.roleMask(role)
	if missing := want &^ have & g.privilegedMask(); missing != 0 {
		return fmt.Sprintf("role %s allows %v, which the actor may not do at the unit", role, g.actionsOf(missing))
	}
	if want&grantBit != 0 && !above {
		return fmt.Sprintf("role %s grants roles: only holders of role.grant above the unit may change it", role)
	}
	return ""
}

// Grant gives account the role at unitID (and so in its subtree). Granting a
// grant that exists changes nothing and returns nil.
func (a *Authorizer) Grant(ctx context.Context, actor Actor, accountID int64, role Role, unitID int64) error {
	return a.change(ctx, actor, AuditGrant, accountID, role, unitID)
}

// Revoke takes the role at unitID from account. It returns ErrGrantNotFound
// when the account does not hold it there (held further up does not count).
func (a *Authorizer) Revoke(ctx context.Context, actor Actor, accountID int64, role Role, unitID int64) error {
	return a.change(ctx, actor, AuditRevoke, accountID, role, unitID)
}

func (a *Authorizer) change(ctx context.Context, actor Actor, kind AuditKind, account int64, role Role, unit int64) error {
	g := a.gen.Load()
	if account <= 0 {
		return fmt.Errorf("%w: %d", ErrInvalidAccount, account)
	}
	if !g.roles[role] {
		return fmt.Errorf("%w: %q", ErrInvalidRole, role)
	}
	anc, err := a.tree.Ancestors(unit)
	if errors.Is(err, ErrUnknownUnit) {
		return fmt.Errorf("%w: %d", ErrUnknownUnit, unit)
	}
	if err != nil {
		return err
	}
	var why string
	changed := false
	err = db.InTx(ctx, a.pool, func(tx pgx.Tx) error {
		if !actor.Superuser {
			held, err := storedGrants(ctx, tx, actor.AccountID, "FOR SHARE")
			if err != nil {
				return err
			}
			if why = g.changeDenied(actor, held, account, role, anc); why != "" {
				return errRefused
			}
		}
		var tag pgconn.CommandTag
		var err error
		if kind == AuditGrant {
			tag, err = tx.Exec(ctx, `INSERT INTO authz_grants (account_id, role, unit_id, granted_by) VALUES ($1, $2, $3, nullif($4, 0))
				ON CONFLICT DO NOTHING`, account, string(role), unit, actor.AccountID)
		} else {
			tag, err = tx.Exec(ctx, `DELETE FROM authz_grants WHERE account_id = $1 AND role = $2 AND unit_id = $3`, account, string(role), unit)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			if kind == AuditRevoke {
				return fmt.Errorf("%w: account %d holds no %s at unit %d", ErrGrantNotFound, account, role, unit)
			}
			return nil
		}
		changed = true
		return insertAudit(ctx, tx, AuditEntry{
			ActorID: actor.AccountID, Kind: kind, Action: RoleGrant, UnitID: unit, TargetAccountID: account,
			Role: role, ClientAddr: actor.ClientAddr, RequestID: actor.RequestID,
		}, anc)
	})
	if errors.Is(err, errRefused) {
		a.auditDenied(ctx, actor, RoleGrant, unit, anc, account, role, string(kind)+": "+why)
		return fmt.Errorf("%w: %s %s of account %d at unit %d: %s", ErrDenied, kind, role, account, unit, why)
	}
	if err != nil {
		return err
	}
	if changed {
		a.Changed(ctx, account)
	}
	return nil
}

// storedGrants reads an account's grants from the table; lock is "" or a
// locking clause.
func storedGrants(ctx context.Context, q querier, account int64, lock string) ([]Grant, error) {
	rows, err := q.Query(ctx, `SELECT role, unit_id FROM authz_grants WHERE account_id = $1 ORDER BY unit_id, role `+lock, account)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Grant, error) {
		g := Grant{AccountID: account}
		err := r.Scan(&g.Role, &g.UnitID)
		return g, err
	})
}

// Changed makes this node reload the accounts' grants now and tells the other
// nodes to. Grant and Revoke call it; callers of RevokeAllTx call it after
// their transaction commits. It waits while a full reload runs. A failure
// only delays the change until the next Sync.
func (a *Authorizer) Changed(ctx context.Context, accounts ...int64) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	a.syncMu.Lock()
	err := a.reloadAccounts(rctx, accounts)
	a.syncMu.Unlock()
	if err != nil {
		a.log.Warn("authz: reloading changed accounts", "accounts", accounts, "err", err)
		a.missed.Store(true)
	}
	for _, id := range accounts {
		a.notify(strconv.FormatInt(id, 10))
	}
}

// RevokeAllTx removes the account's grants at units within the subtree of
// within (0: everywhere), in the caller's transaction, writing a revoke audit
// entry for each in it. It checks no rules: it is for the owner of
// membership (org), which has decided that the account leaves and checked
// member.manage itself. After the transaction commits, call Changed(ctx,
// accountID). Grants at units the Tree no longer knows count as within only
// when within is 0.
func (a *Authorizer) RevokeAllTx(ctx context.Context, tx pgx.Tx, actor Actor, accountID, within int64, detail string) ([]Grant, error) {
	held, err := storedGrants(ctx, tx, accountID, "FOR UPDATE")
	if err != nil {
		return nil, err
	}
	var removed []Grant
	for _, g := range held {
		path, err := a.tree.Ancestors(g.UnitID)
		if err != nil {
			if within != 0 {
				continue
			}
			path = []int64{g.UnitID}
		}
		if within != 0 && !slices.Contains(path, within) {
			continue
		}
		if _, err := tx.Exec(ctx, `DELETE FROM authz_grants WHERE account_id = $1 AND role = $2 AND unit_id = $3`, accountID, string(g.Role), g.UnitID); err != nil {
			return nil, err
		}
		if err := insertAudit(ctx, tx, AuditEntry{
			ActorID: actor.AccountID, Kind: AuditRevoke, Action: RoleGrant, UnitID: g.UnitID, TargetAccountID: accountID,
			Role: g.Role, ClientAddr: actor.ClientAddr, RequestID: actor.RequestID, Detail: detail,
		}, path); err != nil {
			return nil, err
		}
		removed = append(removed, g)
	}
	return removed, nil
}

// LoadGrants inserts many grants at once (a member import): COPY into a
// temporary table, one INSERT of what is new, one audit entry for the whole
// import, then a full reload here and a catch-up notice to the other nodes.
// Only a superuser may; no grant rules are checked, nor whether the units
// exist. It returns how many grants were new.
func (a *Authorizer) LoadGrants(ctx context.Context, actor Actor, grants []Grant) (int64, error) {
	if !actor.Superuser {
		a.auditDenied(ctx, actor, RoleGrant, 0, nil, 0, "", "bulk import")
		return 0, fmt.Errorf("%w: bulk import of grants needs a superuser", ErrDenied)
	}
	g := a.gen.Load()
	for _, gr := range grants {
		switch {
		case gr.AccountID <= 0:
			return 0, fmt.Errorf("%w: %d", ErrInvalidAccount, gr.AccountID)
		case !g.roles[gr.Role]:
			return 0, fmt.Errorf("%w: %q", ErrInvalidRole, gr.Role)
		case gr.UnitID <= 0:
			return 0, fmt.Errorf("%w: %d", ErrUnknownUnit, gr.UnitID)
		}
	}
	var n int64
	err := db.InTx(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE authz_import (account_id bigint, role text, unit_id bigint) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"authz_import"}, []string{"account_id", "role", "unit_id"},
			pgx.CopyFromSlice(len(grants), func(i int) ([]any, error) {
				return []any{grants[i].AccountID, string(grants[i].Role), grants[i].UnitID}, nil
			})); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO authz_grants (account_id, role, unit_id, granted_by)
			SELECT DISTINCT account_id, role, unit_id, nullif($1::bigint, 0) FROM authz_import ON CONFLICT DO NOTHING`, actor.AccountID)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return insertAudit(ctx, tx, AuditEntry{
			ActorID: actor.AccountID, Kind: AuditGrant, Action: RoleGrant, ClientAddr: actor.ClientAddr, RequestID: actor.RequestID,
			Detail: fmt.Sprintf("bulk import: %d grants given, %d new", len(grants), n),
		}, nil)
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		return n, a.Reload(ctx)
	}
	return 0, nil
}

// privileged are the actions a role may only be granted by someone who holds
// them: powers over people and data, as opposed to duties.
var privileged = []Action{UnitManage, MemberManage, MemberReadMobile, RoleGrant, AuditRead}

func (g *generation) privilegedMask() uint64 {
	var m uint64
	for _, a := range privileged {
		if id, ok := g.actionIDs[a]; ok {
			m |= 1 << id
		}
	}
	return m
}

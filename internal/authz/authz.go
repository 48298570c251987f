package authz

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/zhangban/zhangban/internal/db"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the authz tables.
func Migrations() db.Component {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Component{Name: "authz", FS: sub}
}

// Role is a named set of actions, granted to an account at a unit.
type Role string

// The built-in roles. The p rules (authz_policies) say what each allows and
// may name further roles.
const (
	RoleAdmin      Role = "admin"
	RoleLeader     Role = "leader"
	RoleStaff      Role = "staff"
	RoleGridWorker Role = "grid_worker"
	RoleAuditor    Role = "auditor"
)

// Action is "object.verb"; casbin sees object and verb apart.
type Action string

// The actions the code checks. Each applies to the target unit's subtree.
const (
	UnitRead         Action = "unit.read"          // see units and members of the subtree in the address book
	UnitManage       Action = "unit.manage"        // create/rename/move/dissolve units in the subtree
	MemberManage     Action = "member.manage"      // add/move/remove members of the subtree
	MemberReadMobile Action = "member.read_mobile" // see full mobile numbers (others see 138****1234)
	RoleGrant        Action = "role.grant"         // grant/revoke roles in the subtree
	AuditRead        Action = "audit.read"         // read the audit log of the subtree
	StatsRead        Action = "stats.read"         // statistics of the subtree
	TaskDispatch     Action = "task.dispatch"      // send tasks down the subtree
	NoticeSend       Action = "notice.send"        // send work notices to the subtree
	TaskHandle       Action = "task.handle"        // sign for, handle and submit assignments
	IncidentReport   Action = "incident.report"    // report incidents from the street
)

// Subject is the NATS subject of change notices. The payload is the decimal
// id of the account whose grants changed, or "sync": catch up by version.
const Subject = "zhangban.authz.changed"

// Tree gives the ancestors of a unit, the unit itself first, up to the root;
// the org package implements it from an in-memory cache. It returns
// ErrUnknownUnit for unknown ids. The Authorizer never modifies the slice and
// never calls Ancestors while holding a lock of its own; for Allowed to be
// allocation-free, Ancestors must be too (return a cached slice).
type Tree interface {
	Ancestors(unitID int64) ([]int64, error)
}

// Actor is who asks: the signed-in account and where the request came from.
// Superuser (the platform's bootstrap administrator) may do everything.
type Actor struct {
	AccountID  int64
	Superuser  bool
	ClientAddr string
	RequestID  string
}

// Grant is one role held by an account at a unit.
type Grant struct {
	AccountID int64 `json:"account_id"`
	Role      Role  `json:"role"`
	UnitID    int64 `json:"unit_id"`
}

// Intervals of the background work.
const (
	syncInterval    = 30 * time.Second // catch up by version even when no notice arrives
	changeRetention = 24 * time.Hour   // a node further behind than this reloads everything
	noticeQueue     = 4096             // notices waiting for the worker; when full, the worker catches up by version instead
	maxAccountBatch = 10000            // more changed accounts than this: reload everything
)

// Authorizer answers "may actor A do action X on unit U" from memory and
// keeps its copy of the grants current. See the package documentation.
type Authorizer struct {
	pool *pgxpool.Pool
	conn *nats.Conn // nil: no notices, catch up every syncInterval only
	tree Tree
	log  *slog.Logger

	gen atomic.Pointer[generation] // current rules and grants; replaced under syncMu

	// syncMu serialises everything that writes the in-memory grants (full
	// reloads, catch-ups, account reloads), so that they apply in the order
	// they read PostgreSQL. Lock order: syncMu, then generation.idx.mu.
	syncMu  sync.Mutex
	version atomic.Int64 // written under syncMu: the authz_state.version the grants reflect at least

	notices chan int64  // account ids from Subject; 0 means "catch up"
	missed  atomic.Bool // a notice was dropped (queue full, bad payload): catch up
	sub     *nats.Subscription

	cancel    context.CancelFunc // stops the worker
	wg        sync.WaitGroup     // the worker
	closeOnce sync.Once
}

// New loads the model, the p rules and all grants, subscribes to change
// notices on conn (nil: none) and starts the background catch-up.
func New(ctx context.Context, pool *pgxpool.Pool, conn *nats.Conn, tree Tree, log *slog.Logger) (*Authorizer, error) {
	if pool == nil || tree == nil {
		return nil, errors.New("authz: New needs a pool and a tree")
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Authorizer{pool: pool, conn: conn, tree: tree, log: log, notices: make(chan int64, noticeQueue)}
	if conn != nil {
		// Subscribe before loading: a change committed during the load is
		// then queued, not lost.
		sub, err := conn.Subscribe(Subject, a.onNotice)
		if err != nil {
			return nil, fmt.Errorf("authz: subscribe: %w", err)
		}
		a.sub = sub
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = conn.FlushWithContext(fctx)
		cancel()
		if err != nil {
			sub.Unsubscribe() //nolint:errcheck
			return nil, fmt.Errorf("authz: subscribe: %w", err)
		}
	}
	a.syncMu.Lock()
	err := a.reloadAll(ctx)
	a.syncMu.Unlock()
	if err != nil {
		if a.sub != nil {
			a.sub.Unsubscribe() //nolint:errcheck
		}
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.wg.Add(1)
	go a.run(wctx)
	return a, nil
}

// Close unsubscribes and stops the background work, waiting for it.
// Idempotent. Decisions keep working on the last state.
func (a *Authorizer) Close() {
	a.closeOnce.Do(func() {
		if a.sub != nil {
			if err := a.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				a.log.Warn("authz: unsubscribe", "err", err)
			}
		}
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
	})
}

// Allowed reports whether actor may do action at unitID: whether the actor
// holds, at the unit or one of its ancestors, a role whose p rules allow the
// action. Pure memory, no I/O, no allocation (given a Tree that does not
// allocate). Unknown units and actions are denied.
func (a *Authorizer) Allowed(actor Actor, action Action, unitID int64) bool {
	if actor.Superuser {
		return true
	}
	g := a.gen.Load()
	mask := g.actionRoles[action]
	if mask == 0 {
		return false
	}
	first, extra, ok := g.idx.lookup(actor.AccountID)
	if !ok {
		return false
	}
	// Most accounts hold no role allowing the action: answer without the tree.
	hit := first.roles&mask != 0
	for _, s := range extra {
		hit = hit || s.roles&mask != 0
	}
	if !hit {
		return false
	}
	anc, err := a.tree.Ancestors(unitID)
	if err != nil {
		return false
	}
	for _, u := range anc {
		if first.unit == u && first.roles&mask != 0 {
			return true
		}
		for _, s := range extra {
			if s.unit == u && s.roles&mask != 0 {
				return true
			}
		}
	}
	return false
}

// Check is Allowed for request paths: on deny it writes an audit entry and
// returns ErrDenied, wrapped with what was denied.
func (a *Authorizer) Check(ctx context.Context, actor Actor, action Action, unitID int64) error {
	if a.Allowed(actor, action, unitID) {
		return nil
	}
	detail := ""
	path, err := a.tree.Ancestors(unitID)
	if err != nil {
		detail = "unknown unit"
	}
	a.auditDenied(ctx, actor, action, unitID, path, 0, "", detail)
	return fmt.Errorf("%w: %s at unit %d", ErrDenied, action, unitID)
}

// Actions lists what actor may do at unitID, in name order.
func (a *Authorizer) Actions(actor Actor, unitID int64) []Action {
	g := a.gen.Load()
	var out []Action
	for _, act := range g.actions {
		if a.Allowed(actor, act, unitID) {
			out = append(out, act)
		}
	}
	return out
}

// Reach returns the units where the account holds a role that allows action,
// reduced to the roots of the subtrees it may act on (a unit below another
// one in the result is left out), in ascending order. Units the Tree no
// longer knows are left out. Superusers reach everything: callers check
// Actor.Superuser first.
func (a *Authorizer) Reach(accountID int64, action Action) []int64 {
	g := a.gen.Load()
	mask := g.actionRoles[action]
	if mask == 0 {
		return nil
	}
	first, extra, ok := g.idx.lookup(accountID)
	if !ok {
		return nil
	}
	var units []int64
	for _, s := range append([]slot{first}, extra...) {
		if s.roles&mask != 0 {
			units = append(units, s.unit)
		}
	}
	roots := units[:0:0]
	for _, u := range units {
		anc, err := a.tree.Ancestors(u)
		if err != nil || len(anc) == 0 {
			continue
		}
		covered := false
		for _, p := range anc[1:] {
			covered = covered || slices.Contains(units, p)
		}
		if !covered {
			roots = append(roots, u)
		}
	}
	slices.Sort(roots)
	return roots
}

// Grants lists the account's grants by unit, then role.
func (a *Authorizer) Grants(accountID int64) []Grant {
	gs := a.gen.Load().idx.grantsOf(accountID)
	slices.SortFunc(gs, func(x, y Grant) int {
		if x.UnitID != y.UnitID {
			return compare(x.UnitID, y.UnitID)
		}
		return compare(x.Role, y.Role)
	})
	return gs
}

func compare[T int64 | Role](x, y T) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// Enforce is casbin's own decision over the same model, p rules and grants,
// for one concrete domain: whether account sub holds, at exactly unit dom, a
// role allowing obj.act. It is the reference Allowed is tested against
// (Allowed is the OR of Enforce over the target's ancestors). Slow: for
// tests and tools.
func (a *Authorizer) Enforce(sub, dom, obj, act string) (bool, error) {
	return a.gen.Load().enforcer.Enforce(sub, dom, obj, act)
}

// EnforceTree is Allowed computed by casbin: Enforce over the target's
// ancestors.
func (a *Authorizer) EnforceTree(actor Actor, action Action, unitID int64) (bool, error) {
	if actor.Superuser {
		return true, nil
	}
	obj, act, ok := splitAction(action)
	if !ok {
		return false, nil
	}
	anc, err := a.tree.Ancestors(unitID)
	if err != nil {
		return false, nil
	}
	sub := strconv.FormatInt(actor.AccountID, 10)
	for _, u := range anc {
		ok, err := a.Enforce(sub, strconv.FormatInt(u, 10), obj, act)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// Stats describe the loaded state.
type Stats struct {
	Version  int64 `json:"version"`  // authz_state.version the grants reflect at least
	Grants   int   `json:"grants"`   // (account, role, unit) triples in memory
	Accounts int   `json:"accounts"` // accounts holding at least one role
	Roles    int   `json:"roles"`
	Actions  int   `json:"actions"`
}

// Stats reports what is loaded.
func (a *Authorizer) Stats() Stats {
	v := a.version.Load()
	g := a.gen.Load()
	g.idx.mu.RLock()
	defer g.idx.mu.RUnlock()
	return Stats{Version: v, Grants: g.idx.grants, Accounts: len(g.idx.first), Roles: len(g.idx.roleNames), Actions: len(g.actions)}
}

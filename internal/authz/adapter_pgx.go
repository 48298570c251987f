package authz

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/zhangban/zhangban/internal/db"
)

// querier is what the stores need from a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Filter selects what LoadFilteredPolicy puts into a casbin model. The p
// rules are always loaded; grants only when asked for, because the
// Authorizer keeps them in its role manager instead of the model.
type Filter struct {
	Grants   bool    // also load g rules
	Accounts []int64 // with Grants: only these accounts' (nil: all)
}

// adapter is casbin's persist adapter over PostgreSQL with pgx: p rules are
// rows of authz_policies (role, "object.verb"), g rules rows of authz_grants
// (account id, role, unit id). It writes no audit entries and checks no rules:
// it is the storage under casbin, for the Authorizer and for tools; requests
// go through Authorizer.Grant and Revoke.
//
// The methods without a context (casbin's persist.Adapter) bound their work
// with opTimeout.
type adapter struct {
	db       querier
	filtered bool // the last load was filtered: refuse SavePolicy
}

const opTimeout = time.Minute

var (
	_ persist.FilteredAdapter        = (*adapter)(nil)
	_ persist.ContextFilteredAdapter = (*adapter)(nil)
)

func (a *adapter) bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// LoadPolicy implements persist.Adapter: every p and g rule. With a million
// grants this is the slow path the Authorizer avoids.
func (a *adapter) LoadPolicy(m model.Model) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.LoadPolicyCtx(ctx, m)
}

// LoadPolicyCtx implements persist.ContextAdapter.
func (a *adapter) LoadPolicyCtx(ctx context.Context, m model.Model) error {
	if err := a.load(ctx, m, Filter{Grants: true}); err != nil {
		return err
	}
	a.filtered = false
	return nil
}

// LoadFilteredPolicy implements persist.FilteredAdapter; filter is a Filter
// or *Filter.
func (a *adapter) LoadFilteredPolicy(m model.Model, filter any) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.LoadFilteredPolicyCtx(ctx, m, filter)
}

// LoadFilteredPolicyCtx implements persist.ContextFilteredAdapter.
func (a *adapter) LoadFilteredPolicyCtx(ctx context.Context, m model.Model, filter any) error {
	var f Filter
	switch v := filter.(type) {
	case Filter:
		f = v
	case *Filter:
		if v != nil {
			f = *v
		}
	case nil:
	default:
		return fmt.Errorf("authz adapter: filter must be authz.Filter, not %T", filter)
	}
	if err := a.load(ctx, m, f); err != nil {
		return err
	}
	a.filtered = !f.Grants || f.Accounts != nil
	return nil
}

// IsFiltered implements persist.FilteredAdapter.
func (a *adapter) IsFiltered() bool { return a.filtered }

// IsFilteredCtx implements persist.ContextFilteredAdapter.
func (a *adapter) IsFilteredCtx(context.Context) bool { return a.filtered }

func (a *adapter) load(ctx context.Context, m model.Model, f Filter) error {
	rows, err := a.db.Query(ctx, `SELECT role, action FROM authz_policies ORDER BY role, action`)
	if err != nil {
		return err
	}
	var role, action string
	_, err = pgx.ForEachRow(rows, []any{&role, &action}, func() error {
		obj, act, ok := splitAction(Action(action))
		if !ok {
			return fmt.Errorf("authz_policies: action %q is not object.verb", action)
		}
		return persist.LoadPolicyArray([]string{"p", role, obj, act}, m)
	})
	if err != nil || !f.Grants {
		return err
	}
	q, args := `SELECT account_id, role, unit_id FROM authz_grants`, []any{}
	if f.Accounts != nil {
		q, args = q+` WHERE account_id = ANY($1)`, []any{f.Accounts}
	}
	rows, err = a.db.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	var account, unit int64
	_, err = pgx.ForEachRow(rows, []any{&account, &role, &unit}, func() error {
		return persist.LoadPolicyArray([]string{"g", strconv.FormatInt(account, 10), role, strconv.FormatInt(unit, 10)}, m)
	})
	return err
}

// SavePolicy implements persist.Adapter. It replaces the p rules with the
// model's and leaves the grants alone: the model never holds all of them.
func (a *adapter) SavePolicy(m model.Model) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.SavePolicyCtx(ctx, m)
}

// SavePolicyCtx implements persist.ContextAdapter, like SavePolicy.
func (a *adapter) SavePolicyCtx(ctx context.Context, m model.Model) error {
	if a.filtered {
		return errors.New("authz adapter: cannot save a filtered policy")
	}
	var rules [][]string
	if ast, ok := m["p"]["p"]; ok {
		rules = ast.Policy
	}
	return a.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM authz_policies`); err != nil {
			return err
		}
		for _, r := range rules {
			if err := insertRule(ctx, tx, "p", r); err != nil {
				return err
			}
		}
		return nil
	})
}

// inTx runs fn in a transaction of a.db (a nested one when a.db is a tx).
func (a *adapter) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	b, ok := a.db.(db.Beginner)
	if !ok {
		return errors.New("authz adapter: cannot begin a transaction")
	}
	return db.InTx(ctx, b, fn)
}

func insertRule(ctx context.Context, q querier, ptype string, rule []string) error {
	switch {
	case ptype == "p" && len(rule) >= 3:
		_, err := q.Exec(ctx, `INSERT INTO authz_policies (role, action) VALUES ($1, $2) ON CONFLICT DO NOTHING`, rule[0], rule[1]+"."+rule[2])
		return err
	case ptype == "g" && len(rule) >= 3:
		account, ok1 := parseID(rule[0])
		unit, ok2 := parseID(rule[2])
		if !ok1 || !ok2 {
			return fmt.Errorf("authz adapter: g rule %v needs an account id, a role and a unit id", rule)
		}
		_, err := q.Exec(ctx, `INSERT INTO authz_grants (account_id, role, unit_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, account, rule[1], unit)
		return err
	}
	return fmt.Errorf("authz adapter: unsupported rule %s %v", ptype, rule)
}

// AddPolicy implements persist.Adapter.
func (a *adapter) AddPolicy(_ string, ptype string, rule []string) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.AddPolicyCtx(ctx, "", ptype, rule)
}

// AddPolicyCtx implements persist.ContextAdapter.
func (a *adapter) AddPolicyCtx(ctx context.Context, _ string, ptype string, rule []string) error {
	return insertRule(ctx, a.db, ptype, rule)
}

// RemovePolicy implements persist.Adapter.
func (a *adapter) RemovePolicy(_ string, ptype string, rule []string) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.RemovePolicyCtx(ctx, "", ptype, rule)
}

// RemovePolicyCtx implements persist.ContextAdapter.
func (a *adapter) RemovePolicyCtx(ctx context.Context, _ string, ptype string, rule []string) error {
	if len(rule) < 3 {
		return fmt.Errorf("authz adapter: unsupported rule %s %v", ptype, rule)
	}
	return a.RemoveFilteredPolicyCtx(ctx, "", ptype, 0, rule[:3]...)
}

// RemoveFilteredPolicy implements persist.Adapter: rules whose fields from
// fieldIndex on equal fieldValues ("" matches anything).
func (a *adapter) RemoveFilteredPolicy(_ string, ptype string, fieldIndex int, fieldValues ...string) error {
	ctx, cancel := a.bg()
	defer cancel()
	return a.RemoveFilteredPolicyCtx(ctx, "", ptype, fieldIndex, fieldValues...)
}

// RemoveFilteredPolicyCtx implements persist.ContextAdapter.
func (a *adapter) RemoveFilteredPolicyCtx(ctx context.Context, _ string, ptype string, fieldIndex int, fieldValues ...string) error {
	// Field i of a rule as SQL over the table's columns.
	var cols []string
	switch ptype {
	case "p":
		cols = []string{"role", "split_part(action, '.', 1)", "substr(action, strpos(action, '.') + 1)"}
	case "g":
		cols = []string{"account_id::text", "role", "unit_id::text"}
	default:
		return fmt.Errorf("authz adapter: unsupported policy type %q", ptype)
	}
	table := map[string]string{"p": "authz_policies", "g": "authz_grants"}[ptype]
	where, args := "true", []any{}
	for i, v := range fieldValues {
		if v == "" {
			continue
		}
		if fieldIndex+i >= len(cols) {
			return fmt.Errorf("authz adapter: field %d out of range for %s", fieldIndex+i, ptype)
		}
		args = append(args, v)
		where += fmt.Sprintf(" AND %s = $%d", cols[fieldIndex+i], len(args))
	}
	_, err := a.db.Exec(ctx, `DELETE FROM `+table+` WHERE `+where, args...)
	return err
}

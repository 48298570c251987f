package authz

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"

	"github.com/casbin/casbin/v2"
	"github.com/casbin/casbin/v2/model"
	"github.com/casbin/casbin/v2/persist"
)

//go:embed model.conf
var modelConf string

// maxActions bounds the number of distinct actions: a role's actions are a
// bitmask in one uint64.
const maxActions = 64

// builtinRoles get the first role ids and are valid even when an edit of the
// p rules leaves one without actions.
var builtinRoles = []string{string(RoleAdmin), string(RoleLeader), string(RoleStaff), string(RoleGridWorker), string(RoleAuditor)}

// generation is one load of the p rules together with the grants they apply
// to. A full reload builds a new generation beside the current one and swaps
// it in; an account's reload changes the current generation's index in place.
// Everything but idx is immutable once the generation is published.
type generation struct {
	enforcer    *casbin.Enforcer  // casbin over the same model, p rules and (as role manager) idx
	idx         *index            // the grants
	actionRoles map[Action]uint32 // action → bitmask of the roles allowing it: Allowed's one lookup
	actionIDs   map[Action]uint8  // action → bit in roleActions
	actions     []Action          // bit → action
	roleActions [maxRoles]uint64  // role id → bitmask of the actions it allows
	roles       map[Role]bool     // the roles one may grant: built in, or named by a p rule
}

// newModel parses the embedded model.
func newModel() (model.Model, error) {
	return model.NewModelFromString(modelConf)
}

// buildGeneration turns a model holding the p rules into a generation with
// an empty index sized for about accounts accounts. ad (may be nil) becomes
// the enforcer's adapter.
func buildGeneration(m model.Model, ad persist.Adapter, accounts int) (*generation, error) {
	var rules [][]string
	if ast, ok := m["p"]["p"]; ok {
		rules = ast.Policy
	}
	roleNames := slices.Clone(builtinRoles)
	var actions []Action
	for _, r := range rules {
		if len(r) != 3 {
			return nil, fmt.Errorf("authz: p rule %v: want role, object, verb", r)
		}
		if !slices.Contains(roleNames, r[0]) {
			roleNames = append(roleNames, r[0])
		}
		if a := Action(r[1] + "." + r[2]); !slices.Contains(actions, a) {
			actions = append(actions, a)
		}
	}
	if len(roleNames) > maxRoles {
		return nil, fmt.Errorf("authz: %d roles in the p rules; at most %d are supported", len(roleNames), maxRoles)
	}
	if len(actions) > maxActions {
		return nil, fmt.Errorf("authz: %d actions in the p rules; at most %d are supported", len(actions), maxActions)
	}
	slices.Sort(actions)
	g := &generation{
		idx:         newIndex(accounts, roleNames),
		actionRoles: make(map[Action]uint32, len(actions)),
		actionIDs:   make(map[Action]uint8, len(actions)),
		actions:     actions,
		roles:       make(map[Role]bool, len(roleNames)),
	}
	for i, a := range actions {
		g.actionIDs[a] = uint8(i)
	}
	for _, r := range roleNames {
		g.roles[Role(r)] = true
	}
	for _, r := range rules {
		role := g.idx.roleIDs[r[0]]
		a := Action(r[1] + "." + r[2])
		g.roleActions[role] |= 1 << g.actionIDs[a]
		g.actionRoles[a] |= 1 << role
	}

	// casbin sees the same rules; the index is its role manager. Building the
	// role links once points the model's g assertion at the index (and clears
	// the index, which is still empty). Later casbin must not rebuild them:
	// that would clear the grants.
	e, err := casbin.NewEnforcer(m)
	if err != nil {
		return nil, fmt.Errorf("authz: casbin: %w", err)
	}
	if ad != nil {
		e.SetAdapter(ad)
	}
	e.EnableAutoSave(false)
	e.EnableAutoBuildRoleLinks(false)
	e.SetRoleManager(g.idx)
	if err := e.BuildRoleLinks(); err != nil {
		return nil, fmt.Errorf("authz: casbin role links: %w", err)
	}
	g.enforcer = e
	return g, nil
}

// actionsOf names the actions in a bitmask.
func (g *generation) actionsOf(mask uint64) []Action {
	var out []Action
	for i, a := range g.actions {
		if mask&(1<<i) != 0 {
			out = append(out, a)
		}
	}
	return out
}

// roleMask is the actions of role, 0 for a role without p rules.
func (g *generation) roleMask(role Role) uint64 {
	g.idx.mu.RLock()
	id, ok := g.idx.roleIDs[string(role)]
	g.idx.mu.RUnlock()
	if !ok {
		return 0
	}
	return g.roleActions[id]
}

// splitAction turns "unit.read" into casbin's object "unit" and verb "read".
func splitAction(a Action) (obj, act string, ok bool) {
	obj, act, ok = strings.Cut(string(a), ".")
	return obj, act, ok && obj != "" && act != ""
}

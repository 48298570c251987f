package authz

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/casbin/casbin/v2/log"
	"github.com/casbin/casbin/v2/rbac"
)

// maxRoles bounds the number of distinct role names: a unit's roles are a
// bitmask in one uint32.
const maxRoles = 32

// slot is the roles an account holds at one unit.
type slot struct {
	unit  int64
	roles uint32 // bit i: role id i (index.roleNames[i]) held at unit
	more  bool   // in index.first only: the account holds roles at further units, in index.extra
}

// index holds every grant, by account: the one place grants live in memory.
// It is also casbin's role manager for the g rules (g, account, role, unit),
// so that casbin's Enforce and Authorizer.Allowed read the same data and 1.4M
// grants are not held twice.
//
// Most accounts hold roles at a single unit; they cost one map entry of 24
// bytes in first. The few with several units keep the rest in extra. Slices in
// extra are never modified in place (copy on write), so a reader may use one
// after releasing mu.
type index struct {
	mu        sync.RWMutex     // guards every field below
	first     map[int64]slot   // account id → roles at its first unit
	extra     map[int64][]slot // account id → roles at its further units
	roleIDs   map[string]uint8 // role name → bit; ids are never reused within an index
	roleNames []string         // bit → role name
	grants    int              // number of (account, role, unit) triples
	logger    log.Logger       // casbin's logger, for PrintRoles
}

var _ rbac.RoleManager = (*index)(nil)

// newIndex returns an empty index sized for about n accounts, knowing roles
// (in bit order).
func newIndex(n int, roles []string) *index {
	x := &index{
		first:   make(map[int64]slot, n),
		extra:   map[int64][]slot{},
		roleIDs: make(map[string]uint8, len(roles)),
		logger:  &log.DefaultLogger{},
	}
	for _, r := range roles {
		if _, err := x.roleIDLocked(r); err != nil {
			panic(err) // callers pass at most maxRoles distinct names
		}
	}
	return x
}

// lookup returns an account's roles. extra is read-only.
func (x *index) lookup(account int64) (first slot, extra []slot, ok bool) {
	x.mu.RLock()
	first, ok = x.first[account]
	if first.more {
		extra = x.extra[account]
	}
	x.mu.RUnlock()
	return first, extra, ok
}

// roleIDLocked returns the bit of role, assigning the next free one to a new
// name. The caller holds mu for writing (or owns an unpublished index).
func (x *index) roleIDLocked(role string) (uint8, error) {
	if id, ok := x.roleIDs[role]; ok {
		return id, nil
	}
	if len(x.roleNames) >= maxRoles {
		return 0, fmt.Errorf("%w: more than %d distinct roles; %q not loaded", ErrInvalidRole, maxRoles, role)
	}
	id := uint8(len(x.roleNames))
	x.roleIDs[role] = id
	x.roleNames = append(x.roleNames, role)
	return id, nil
}

// addLocked records that account holds role id at unit and reports whether
// that is new. The caller holds mu for writing.
func (x *index) addLocked(account int64, id uint8, unit int64) bool {
	bit := uint32(1) << id
	s, ok := x.first[account]
	switch {
	case !ok:
		x.first[account] = slot{unit: unit, roles: bit}
	case s.unit == unit:
		if s.roles&bit != 0 {
			return false
		}
		s.roles |= bit
		x.first[account] = s
	default:
		ex := x.extra[account]
		i := slices.IndexFunc(ex, func(e slot) bool { return e.unit == unit })
		if i >= 0 && ex[i].roles&bit != 0 {
			return false
		}
		var nx []slot
		if i >= 0 {
			nx = slices.Clone(ex)
			nx[i].roles |= bit
		} else {
			nx = make([]slot, len(ex), len(ex)+1)
			copy(nx, ex)
			nx = append(nx, slot{unit: unit, roles: bit})
		}
		x.extra[account] = nx
		if !s.more {
			s.more = true
			x.first[account] = s
		}
	}
	x.grants++
	return true
}

// removeLocked drops role id at unit from account and reports whether it was
// held. The caller holds mu for writing.
func (x *index) removeLocked(account int64, id uint8, unit int64) bool {
	bit := uint32(1) << id
	s, ok := x.first[account]
	if !ok {
		return false
	}
	ex := x.extra[account]
	if s.unit == unit {
		if s.roles&bit == 0 {
			return false
		}
		s.roles &^= bit
		if s.roles == 0 {
			switch len(ex) {
			case 0:
				delete(x.first, account)
			case 1:
				delete(x.extra, account)
				x.first[account] = slot{unit: ex[0].unit, roles: ex[0].roles}
			default:
				x.extra[account] = slices.Clone(ex[1:])
				x.first[account] = slot{unit: ex[0].unit, roles: ex[0].roles, more: true}
			}
		} else {
			x.first[account] = s
		}
		x.grants--
		return true
	}
	i := slices.IndexFunc(ex, func(e slot) bool { return e.unit == unit })
	if i < 0 || ex[i].roles&bit == 0 {
		return false
	}
	nx := slices.Clone(ex)
	nx[i].roles &^= bit
	if nx[i].roles == 0 {
		nx = slices.Delete(nx, i, i+1)
	}
	if len(nx) == 0 {
		delete(x.extra, account)
		s.more = false
		x.first[account] = s
	} else {
		x.extra[account] = nx
	}
	x.grants--
	return true
}

// dropLocked forgets every grant of account. The caller holds mu for writing.
func (x *index) dropLocked(account int64) {
	s, ok := x.first[account]
	if !ok {
		return
	}
	x.grants -= popcount(s.roles)
	for _, e := range x.extra[account] {
		x.grants -= popcount(e.roles)
	}
	delete(x.first, account)
	delete(x.extra, account)
}

func popcount(v uint32) int {
	n := 0
	for ; v != 0; v &= v - 1 {
		n++
	}
	return n
}

// grantsOf lists an account's grants, by unit as stored, roles in bit order.
func (x *index) grantsOf(account int64) []Grant {
	x.mu.RLock()
	defer x.mu.RUnlock()
	first, ok := x.first[account]
	if !ok {
		return nil
	}
	var out []Grant
	for _, s := range append([]slot{first}, x.extra[account]...) {
		for id := range x.roleNames {
			if s.roles&(1<<id) != 0 {
				out = append(out, Grant{AccountID: account, Role: Role(x.roleNames[id]), UnitID: s.unit})
			}
		}
	}
	return out
}

// Names in casbin requests and rules: an account or a unit is its decimal id.

var errDomain = errors.New("authz: the g rules need exactly one domain (a unit id)")

func parseID(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

func (x *index) args(name1, name2 string, domain []string) (account int64, unit int64, ok bool, err error) {
	if len(domain) != 1 {
		return 0, 0, false, errDomain
	}
	account, ok1 := parseID(name1)
	unit, ok2 := parseID(domain[0])
	return account, unit, ok1 && ok2 && name2 != "", nil
}

// Clear implements rbac.RoleManager: it forgets every grant (role ids stay, the
// policy bitsets refer to them). The maps keep their storage: casbin clears
// the role manager before (re)building links, which here is right after
// newIndex sized the maps for the grants about to be loaded.
func (x *index) Clear() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	clear(x.first)
	clear(x.extra)
	x.grants = 0
	return nil
}

// AddLink implements rbac.RoleManager: account name1 holds role name2 at unit
// domain[0]. In memory only; Authorizer.Grant is the way to persist a grant.
func (x *index) AddLink(name1, name2 string, domain ...string) error {
	account, unit, ok, err := x.args(name1, name2, domain)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("authz: g rule (%q, %q, %q) needs an account id, a role and a unit id", name1, name2, domain[0])
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	id, err := x.roleIDLocked(name2)
	if err != nil {
		return err
	}
	x.addLocked(account, id, unit)
	return nil
}

// BuildRelationship implements the deprecated part of rbac.RoleManager.
func (x *index) BuildRelationship(string, string, ...string) error { return nil }

// DeleteLink implements rbac.RoleManager.
func (x *index) DeleteLink(name1, name2 string, domain ...string) error {
	account, unit, ok, err := x.args(name1, name2, domain)
	if err != nil || !ok {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if id, known := x.roleIDs[name2]; known {
		x.removeLocked(account, id, unit)
	}
	return nil
}

// HasLink implements rbac.RoleManager: whether account name1 holds role name2
// at exactly unit domain[0]. O(units of the account).
func (x *index) HasLink(name1, name2 string, domain ...string) (bool, error) {
	if name1 == name2 {
		return true, nil
	}
	account, unit, ok, err := x.args(name1, name2, domain)
	if err != nil || !ok {
		return false, err
	}
	x.mu.RLock()
	id, known := x.roleIDs[name2]
	x.mu.RUnlock()
	if !known {
		return false, nil
	}
	first, extra, _ := x.lookup(account)
	bit := uint32(1) << id
	if first.unit == unit && first.roles&bit != 0 {
		return true, nil
	}
	for _, s := range extra {
		if s.unit == unit && s.roles&bit != 0 {
			return true, nil
		}
	}
	return false, nil
}

// GetRoles implements rbac.RoleManager: the roles account name holds at
// exactly unit domain[0].
func (x *index) GetRoles(name string, domain ...string) ([]string, error) {
	account, unit, ok, err := x.args(name, "-", domain)
	if err != nil || !ok {
		return nil, err
	}
	roles := []string{}
	for _, g := range x.grantsOf(account) {
		if g.UnitID == unit {
			roles = append(roles, string(g.Role))
		}
	}
	return roles, nil
}

// GetUsers implements rbac.RoleManager: the accounts holding role name at
// exactly unit domain[0]. It scans every grant: for tools, not request paths.
func (x *index) GetUsers(name string, domain ...string) ([]string, error) {
	if len(domain) != 1 {
		return nil, errDomain
	}
	unit, ok := parseID(domain[0])
	x.mu.RLock()
	defer x.mu.RUnlock()
	id, known := x.roleIDs[name]
	users := []string{}
	if !ok || !known {
		return users, nil
	}
	bit := uint32(1) << id
	for account, s := range x.first {
		hit := s.unit == unit && s.roles&bit != 0
		for _, e := range x.extra[account] {
			hit = hit || (e.unit == unit && e.roles&bit != 0)
		}
		if hit {
			users = append(users, strconv.FormatInt(account, 10))
		}
	}
	slices.Sort(users)
	return users, nil
}

// GetImplicitRoles implements rbac.RoleManager. Roles do not inherit roles, so
// these are the direct roles.
func (x *index) GetImplicitRoles(name string, domain ...string) ([]string, error) {
	return x.GetRoles(name, domain...)
}

// GetImplicitUsers implements rbac.RoleManager, like GetUsers.
func (x *index) GetImplicitUsers(name string, domain ...string) ([]string, error) {
	return x.GetUsers(name, domain...)
}

// GetDomains implements rbac.RoleManager: the units where account name holds
// any role.
func (x *index) GetDomains(name string) ([]string, error) {
	account, ok := parseID(name)
	if !ok {
		return []string{}, nil
	}
	var units []string
	for _, g := range x.grantsOf(account) {
		u := strconv.FormatInt(g.UnitID, 10)
		if !slices.Contains(units, u) {
			units = append(units, u)
		}
	}
	return units, nil
}

// GetAllDomains implements rbac.RoleManager. It scans every grant.
func (x *index) GetAllDomains() ([]string, error) {
	x.mu.RLock()
	seen := map[int64]bool{}
	for account, s := range x.first {
		seen[s.unit] = true
		for _, e := range x.extra[account] {
			seen[e.unit] = true
		}
	}
	x.mu.RUnlock()
	units := make([]string, 0, len(seen))
	for u := range seen {
		units = append(units, strconv.FormatInt(u, 10))
	}
	slices.Sort(units)
	return units, nil
}

// PrintRoles implements rbac.RoleManager with a summary: printing 1.4M
// grants helps nobody.
func (x *index) PrintRoles() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	x.logger.LogRole([]string{fmt.Sprintf("%d grants of %d accounts, roles %v", x.grants, len(x.first), x.roleNames)})
	return nil
}

// SetLogger implements rbac.RoleManager.
func (x *index) SetLogger(logger log.Logger) {
	x.mu.Lock()
	x.logger = logger
	x.mu.Unlock()
}

// Match implements rbac.RoleManager. Domains are concrete unit ids, never
// patterns: subtree reach comes from the ancestor walk, not from matching.
func (x *index) Match(str, pattern string) bool { return str == pattern }

// AddMatchingFunc implements rbac.RoleManager; pattern roles are not supported.
func (x *index) AddMatchingFunc(string, rbac.MatchingFunc) {}

// AddDomainMatchingFunc implements rbac.RoleManager; pattern domains are not
// supported (they are what made casbin's loading quadratic).
func (x *index) AddDomainMatchingFunc(string, rbac.MatchingFunc) {}

// DeleteDomain implements rbac.RoleManager: it forgets every grant at unit
// domain. It scans every grant.
func (x *index) DeleteDomain(domain string) error {
	unit, ok := parseID(domain)
	if !ok {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var hit []int64
	for account, s := range x.first {
		if s.unit == unit {
			hit = append(hit, account)
			continue
		}
		for _, e := range x.extra[account] {
			if e.unit == unit {
				hit = append(hit, account)
				break
			}
		}
	}
	for _, account := range hit {
		for id := range x.roleNames {
			x.removeLocked(account, uint8(id), unit)
		}
	}
	return nil
}

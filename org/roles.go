package org

import (
	"context"
	"errors"

	"github.com/zhangban/zhangban/internal/authz"
)

// Roles are granted through the org service so that, like everything else
// here, units the actor cannot see answer "not found" rather than "denied".

// Grant gives account a role at unit (role.grant at unit; see authz.Grant
// for the rules against escalation).
func (s *Service) Grant(ctx context.Context, a authz.Actor, account int64, role authz.Role, unit int64) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)`, account).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return authz.ErrInvalidAccount
	}
	return s.hideInvisible(ctx, a, unit, s.authz.Grant(ctx, a, account, role, unit))
}

// Revoke takes a role at unit away from account.
func (s *Service) Revoke(ctx context.Context, a authz.Actor, account int64, role authz.Role, unit int64) error {
	return s.hideInvisible(ctx, a, unit, s.authz.Revoke(ctx, a, account, role, unit))
}

func (s *Service) hideInvisible(ctx context.Context, a authz.Actor, unit int64, err error) error {
	if unit != 0 && (errors.Is(err, authz.ErrDenied) || errors.Is(err, authz.ErrUnknownUnit)) && !s.canSeeUnit(ctx, a, unit) {
		return ErrNotFound
	}
	return err
}

// Grants lists the roles of an account at the units the actor may see.
func (s *Service) Grants(ctx context.Context, a authz.Actor, account int64) ([]authz.Grant, error) {
	sc, err := s.scope(ctx, a)
	if err != nil {
		return nil, err
	}
	out := []authz.Grant{}
	for _, g := range s.authz.Grants(account) {
		if account == a.AccountID || sc.unitVisible(s.tree, g.UnitID) {
			out = append(out, g)
		}
	}
	return out, nil
}

// Audit reads the audit log (audit.read); a unit the actor cannot see is
// not found.
func (s *Service) Audit(ctx context.Context, a authz.Actor, q authz.AuditQuery) ([]authz.AuditEntry, error) {
	if q.UnitID != 0 {
		if _, err := s.tree.Ancestors(q.UnitID); err != nil {
			return nil, ErrNotFound
		}
	}
	entries, err := s.authz.Audit(ctx, a, q)
	return entries, s.hideInvisible(ctx, a, q.UnitID, err)
}

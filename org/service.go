package org

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/db"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the org tables. They refer to accounts: migrate auth first.
func Migrations() db.Component {
	sub, _ := fs.Sub(migrations, "migrations")
	return db.Component{Name: "org", FS: sub}
}

// Service is the tree, the people and the address book, on behalf of actors.
type Service struct {
	pool     *pgxpool.Pool
	authz    *authz.Authorizer
	tree     *Tree
	log      *slog.Logger
	openWork []OpenWork // registered before serving, read-only after
}

// NewService returns a Service. az may be nil for operator tools that act
// only as the superuser (the CLI).
func NewService(pool *pgxpool.Pool, az *authz.Authorizer, tree *Tree, log *slog.Logger) *Service {
	return &Service{pool: pool, authz: az, tree: tree, log: log}
}

// Tree is the in-memory tree the service keeps current.
func (s *Service) Tree() *Tree { return s.tree }

// check asks the authorizer; a denial of something the actor cannot even
// see is reported as not found, so it reveals nothing.
func (s *Service) check(ctx context.Context, a authz.Actor, action authz.Action, unit int64) error {
	if _, err := s.tree.Ancestors(unit); err != nil {
		return ErrNotFound
	}
	if a.Superuser { // operator tools run without an authorizer
		return nil
	}
	err := s.authz.Check(ctx, a, action, unit)
	if errors.Is(err, authz.ErrDenied) && !s.canSeeUnit(ctx, a, unit) {
		return ErrNotFound
	}
	return err
}

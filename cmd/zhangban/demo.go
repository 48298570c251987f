package main

import (
	"context"
	"fmt"
	"io"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/org"
)

// loadDemo fills an empty database with the demo organisation and prints
// its sign-ins once. On a database that has units it does nothing.
func loadDemo(ctx context.Context, d *database, authSvc *auth.Service, console io.Writer) error {
	logins, err := org.LoadDemo(ctx, d.pool, authSvc.HashPassword, io.Discard)
	if err != nil {
		return fmt.Errorf("demo organisation: %w (start with --demo=false to skip it)", err)
	}
	if len(logins) == 0 {
		return nil
	}
	fmt.Fprintf(console, "\n  Demo organisation loaded (Zhejiang, generated grids, demo members). Demo sign-ins:\n")
	for _, l := range logins {
		fmt.Fprintf(console, "    %-12s %-10s login %-14s password %-14s %s\n", l.Role, l.Name, l.Login, l.Password, l.Unit)
	}
	fmt.Fprintf(console, "  These are printed once. Turn the demo off with --demo=false (ZHANGBAN_DEMO=false).\n\n")
	return nil
}

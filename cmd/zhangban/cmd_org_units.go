package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/org"
)

const orgUnitUsage = `usage: zhangban org unit COMMAND [flags] [--data-dir DIR | DATABASE_URL=…]

  get ID | get --code CODE          one unit
  children ID                       its children, with member counts
  ancestors ID                      root first
  subtree ID [--level L] [--limit N] [--cursor ID]
  search NAME                       units whose name contains NAME
  create --parent ID --name NAME [--code CODE] [--level L]   (no --parent: a province)
  rename ID --name NAME
  move ID --parent ID
  dissolve ID

Results are printed as JSON. The commands act as the platform's superuser.`

// orgUnitCmd runs the tree operations from the command line, through the
// same org.Service the API uses.
func orgUnitCmd(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(orgUnitUsage)
	}
	op, args := args[0], args[1:]
	fs := flag.NewFlagSet("org unit "+op, flag.ContinueOnError)
	code := fs.String("code", "", "official code")
	name := fs.String("name", "", "unit name")
	parent := fs.Int64("parent", 0, "parent unit id")
	level := fs.String("level", "", "level name or number")
	limit := fs.Int("limit", 0, "page size")
	cursor := fs.Int64("cursor", 0, "cursor from the previous page")
	// The shared settings (--data-dir, --database-url, …) pass through to config.Parse.
	shared, own := splitFlags(args, "code", "name", "parent", "level", "limit", "cursor")
	if err := fs.Parse(own); err != nil {
		return err
	}
	cfg, err := config.Parse("org unit", shared, getenv)
	if err != nil {
		return err
	}
	var id int64
	if fs.NArg() > 0 {
		if id, err = strconv.ParseInt(fs.Arg(0), 10, 64); err != nil || id <= 0 {
			if op != "search" {
				return fmt.Errorf("unit id %q: want a positive number", fs.Arg(0))
			}
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close(context.WithoutCancel(ctx))
	tree, err := org.LoadTree(ctx, d.pool, nil, log)
	if err != nil {
		return err
	}
	defer tree.Close()
	svc := org.NewService(d.pool, nil, tree, log)
	su := authz.Actor{Superuser: true, ClientAddr: "cli"}
	var lv org.Level
	if *level != "" {
		if lv, err = org.ParseLevel(*level); err != nil {
			return err
		}
	}
	needID := func() error {
		if id == 0 {
			return fmt.Errorf("org unit %s needs a unit id", op)
		}
		return nil
	}
	var out any
	switch op {
	case "get":
		if *code != "" {
			out, err = svc.UnitByCode(ctx, su, *code)
		} else if err = needID(); err == nil {
			out, err = svc.Unit(ctx, su, id)
		}
	case "children":
		if err = needID(); err == nil {
			out, err = svc.Children(ctx, su, id, false)
		}
	case "ancestors":
		if err = needID(); err == nil {
			out, err = svc.Ancestors(ctx, su, id)
		}
	case "subtree":
		if err = needID(); err == nil {
			units, next, e := svc.Subtree(ctx, su, id, org.SubtreeQuery{Level: lv, After: *cursor, Limit: *limit})
			out, err = map[string]any{"units": units, "next_cursor": next}, e
		}
	case "search":
		out, err = svc.SearchUnits(ctx, su, fs.Arg(0), *limit)
	case "create":
		out, err = svc.CreateUnit(ctx, su, org.NewUnit{ParentID: *parent, Name: *name, Code: *code, Level: lv})
	case "rename":
		if err = needID(); err == nil {
			out, err = svc.UpdateUnit(ctx, su, id, org.UnitPatch{Name: name})
		}
	case "move":
		if err = needID(); err == nil {
			out, err = svc.MoveUnit(ctx, su, id, *parent)
		}
	case "dissolve":
		if err = needID(); err == nil {
			out, err = svc.DissolveUnit(ctx, su, id)
		}
	default:
		return fmt.Errorf("unknown command org unit %s\n%s", op, orgUnitUsage)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// splitFlags separates the named flags (and their values) from the rest,
// so that one command can take its own flags and the shared settings.
func splitFlags(args []string, names ...string) (rest, own []string) {
	var positional []string
	defer func() { own = append(own, positional...) }() // flag parsing stops at the first of them
	mine := map[string]bool{}
	for _, n := range names {
		mine["-"+n], mine["--"+n] = true, true
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		key, _, hasValue := cutEq(a)
		switch {
		case mine[key]:
			own = append(own, a)
			if !hasValue && i+1 < len(args) {
				own = append(own, args[i+1])
				i++
			}
		case len(a) > 0 && a[0] != '-':
			positional = append(positional, a) // positional arguments are the command's
		default:
			rest = append(rest, a)
			if !hasValue && i+1 < len(args) && len(args[i+1]) > 0 && args[i+1][0] != '-' {
				rest = append(rest, args[i+1])
				i++
			}
		}
	}
	return rest, own
}

func cutEq(s string) (key, value string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

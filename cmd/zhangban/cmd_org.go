package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/org"
)

const orgUsage = `usage: zhangban org <command> [flags]

commands:
  import --nbs DIR [--grids FILE] [--members FILE]
        import the NBS tree (provinces.csv … villages.csv of one province or
        all China), then a grid register (village code, number, name), then a
        member register (name, mobile, unit code, title, leader, roles);
        any of the three may be given alone
  generate-grids --per-village N
        give every village without registered grids N generated grids
  stats [--json]
        count the active units of each level and the members
  unit …
        read and change single units (zhangban org unit)

The database is chosen as for serve: --database-url (DATABASE_URL), or the
managed PostgreSQL of --data-dir (ZHANGBAN_DATA_DIR), shared with a running
server. Migrations are applied first. A bad input file writes nothing.
`

// orgFlags are each org command's own flags; true marks a boolean one.
var orgFlags = map[string]map[string]bool{
	"import":         {"nbs": false, "grids": false, "members": false},
	"generate-grids": {"per-village": false},
	"stats":          {"json": true},
}

// orgCmd runs "zhangban org …". Progress goes to stderr, results to stdout.
func orgCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, orgUsage)
		if len(args) == 0 {
			return errors.New("org: which command? (import, generate-grids or stats)")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	if sub == "unit" {
		return orgUnitCmd(ctx, args, getenv, stdout)
	}
	spec, ok := orgFlags[sub]
	if !ok {
		fmt.Fprint(stderr, orgUsage)
		return fmt.Errorf("org: unknown command %q", sub)
	}
	own, rest, err := splitOrgFlags(args, spec)
	if err != nil {
		return fmt.Errorf("org %s: %w", sub, err)
	}
	// Check our own flags before starting a database.
	var perVillage int
	switch sub {
	case "import":
		if own["nbs"] == "" && own["grids"] == "" && own["members"] == "" {
			return errors.New("org import: give --nbs DIR, --grids FILE or --members FILE")
		}
	case "generate-grids":
		perVillage, err = strconv.Atoi(own["per-village"])
		if err != nil || perVillage < 1 || perVillage > org.MaxGridsPerVillage {
			return fmt.Errorf("org generate-grids: --per-village %q: want a number from 1 to %d", own["per-village"], org.MaxGridsPerVillage)
		}
	}
	cfg, err := config.Parse("org "+sub, rest, getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	d, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close(context.WithoutCancel(ctx))
	opts := org.ImportOptions{Log: log, Progress: stderr}
	switch sub {
	case "import":
		if dir := own["nbs"]; dir != "" {
			rep, err := org.ImportNBS(ctx, d.pool, dir, opts)
			if err != nil {
				return fmt.Errorf("importing %s: %w", dir, err)
			}
			fmt.Fprintf(stdout, "NBS tree from %s (%s):\n", dir, rep.Elapsed.Round(time.Millisecond))
			rep.WriteTable(stdout)
		}
		if file := own["grids"]; file != "" {
			rep, err := org.ImportGrids(ctx, d.pool, file, opts)
			if err != nil {
				return fmt.Errorf("importing %s: %w", file, err)
			}
			fmt.Fprintf(stdout, "grids from %s (%s):\n", file, rep.Elapsed.Round(time.Millisecond))
			rep.WriteTable(stdout)
		}
		if file := own["members"]; file != "" {
			rep, err := org.ImportMembers(ctx, d.pool, file, opts)
			if err != nil {
				return fmt.Errorf("importing %s: %w", file, err)
			}
			fmt.Fprintf(stdout, "members from %s (%s):\n", file, rep.Elapsed.Round(time.Millisecond))
			rep.WriteTable(stdout)
		}
		return printStats(ctx, d, stdout, false)
	case "generate-grids":
		rep, err := org.GenerateGrids(ctx, d.pool, perVillage, opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "generated %d grids (%d villages, %d skipped: they have registered grids)\n", rep.Created, rep.Villages, rep.Skipped)
		return printStats(ctx, d, stdout, false)
	default: // stats
		asJSON, err := strconv.ParseBool(own["json"])
		if err != nil && own["json"] != "" {
			return fmt.Errorf("org stats: --json=%q: want true or false", own["json"])
		}
		return printStats(ctx, d, stdout, asJSON)
	}
}

// printStats writes the counts as a table, or as one JSON object with the
// keys in level order.
func printStats(ctx context.Context, d *database, w io.Writer, asJSON bool) error {
	stats, err := org.Stats(ctx, d.pool)
	if err != nil {
		return err
	}
	var b strings.Builder
	for i, k := range org.StatKeys() {
		if asJSON {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%d", k, stats[k])
		} else {
			fmt.Fprintf(&b, "%-9s %10d\n", k, stats[k])
		}
	}
	if asJSON {
		_, err = fmt.Fprintf(w, "{%s}\n", b.String())
	} else {
		_, err = fmt.Fprintf(w, "active units and members:\n%s", b.String())
	}
	return err
}

// splitOrgFlags takes the flags named in own (name → whether boolean) out of
// args, as -name, --name, -name=value or --name value, and returns their
// values and the remaining arguments (for config.Parse) in order.
func splitOrgFlags(args []string, own map[string]bool) (map[string]string, []string, error) {
	vals := map[string]string{}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		isBool, mine := own[name]
		if !mine {
			rest = append(rest, a)
			continue
		}
		switch {
		case isBool && !hasVal:
			val = "true"
		case !hasVal:
			if i+1 >= len(args) {
				return nil, nil, fmt.Errorf("flag needs an argument: --%s", name)
			}
			i++
			val = args[i]
		}
		vals[name] = val
	}
	return vals, rest, nil
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/internal/db"
	"github.com/zhangban/zhangban/org"
)

const accountsUsage = `usage: zhangban accounts seed --prefix P --count N --unit ID --password PW --out FILE
                         [--device D] [--title T] [--data-dir DIR | DATABASE_URL=…]

seed   makes accounts P1 … PN (login P followed by 1 … N; existing ones are
       reused, their passwords set to PW), gives each a position in unit ID
       (an active unit, e.g. made with "zhangban org unit create") and signs
       each in on device D: a device's earlier session of these accounts is
       replaced, as a new sign-in on it would. It writes one JSON line per
       account to FILE (mode 0600, replaced whole):
         {"login":"P1","id":…,"unit":ID,"token":…,"refresh_token":…}
       The token is an access token, valid for the server's --access-ttl
       (ZHANGBAN_ACCESS_TTL): give the same setting and the same signing key
       as the server (--jwt-key / ZHANGBAN_JWT_KEY, or its --data-dir with
       jwt-keys.json). Everything is one transaction written with COPY:
       100,000 accounts take seconds. For load tests (zhangban-loadgen
       ws-setup --accounts FILE) and demonstrations.

The database is chosen as for serve: --database-url (DATABASE_URL), or the
managed PostgreSQL of --data-dir (ZHANGBAN_DATA_DIR), shared with a running
server. Bad input writes nothing. Progress goes to stderr.
`

// maxSeed bounds --count: every account and its tokens are held in memory
// and written in one transaction.
const maxSeed = 1_000_000

// seedFlags are the flags of "accounts seed".
type seedFlags struct {
	prefix, password, device, title, out string
	count                                int
	unit                                 int64
}

// seededAccount is one line of the --out file.
type seededAccount struct {
	Login        string `json:"login"`
	ID           int64  `json:"id"`
	Unit         int64  `json:"unit"`
	Token        string `json:"token"`
	RefreshToken string `json:"refresh_token"`
}

// accountsCmd runs "zhangban accounts …".
func accountsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, accountsUsage)
		if len(args) == 0 {
			return errors.New("accounts: which command? (seed)")
		}
		return nil
	}
	if args[0] != "seed" {
		fmt.Fprint(stderr, accountsUsage)
		return fmt.Errorf("accounts: unknown command %q", args[0])
	}
	for _, a := range args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, accountsUsage)
			return nil
		}
	}
	var f seedFlags
	fset := flag.NewFlagSet("accounts seed", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { fmt.Fprint(stderr, accountsUsage) }
	fset.StringVar(&f.prefix, "prefix", "", "login prefix: accounts are PREFIX1 … PREFIXN")
	fset.IntVar(&f.count, "count", 0, "number of accounts")
	fset.Int64Var(&f.unit, "unit", 0, "id of the unit they are members of")
	fset.StringVar(&f.password, "password", "", "their password (8-256 bytes)")
	fset.StringVar(&f.device, "device", "seed", "device id of their sessions")
	fset.StringVar(&f.title, "title", "", "title of their positions")
	fset.StringVar(&f.out, "out", "", "file to write the tokens to")
	shared, own := splitFlags(args[1:], "prefix", "count", "unit", "password", "device", "title", "out")
	if err := fset.Parse(own); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("accounts seed: unexpected argument %q", fset.Arg(0))
	}
	// Our own flags are checked before a database is started.
	if err := f.check(); err != nil {
		return fmt.Errorf("accounts seed: %w", err)
	}
	cfg, err := config.Parse("accounts seed", shared, getenv)
	if err != nil {
		return err
	}
	// The output file is made first (as a temporary beside it), so that an
	// unwritable path fails before anything is written to the database.
	tmp, err := os.CreateTemp(filepath.Dir(f.out), "."+filepath.Base(f.out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("accounts seed: --out: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	defer tmp.Close()
	keys, err := seedKeys(cfg)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	d, err := openMigrated(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close(context.WithoutCancel(ctx))
	if err := org.CheckActiveUnit(ctx, d.pool, f.unit); err != nil {
		switch {
		case errors.Is(err, org.ErrNotFound):
			return fmt.Errorf("accounts seed: --unit: %w: give the id of an active unit (zhangban org unit create --name … makes one)", err)
		case errors.Is(err, org.ErrDissolved):
			return fmt.Errorf("accounts seed: --unit: %w: give an active unit", err)
		}
		return err
	}
	authSvc := auth.New(d.pool, keys, auth.Settings{
		AccessTTL: cfg.AccessTTL, RefreshTTL: cfg.RefreshTTL,
		Hash: auth.HashParams{Time: cfg.Argon2Time, MemoryKiB: cfg.Argon2MemoryKiB},
	}, log)
	start := time.Now()
	var accounts auth.BulkResult
	var placed org.MembersReport
	err = db.InTx(ctx, d.pool, func(tx pgx.Tx) error {
		logins := make([]auth.BulkAccount, f.count)
		for i := range logins {
			login := f.prefix + strconv.Itoa(i+1)
			logins[i] = auth.BulkAccount{Login: login, DisplayName: login}
		}
		t := time.Now()
		var err error
		accounts, err = authSvc.EnsureAccounts(ctx, tx, logins, f.password)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "seed: %d accounts: %d created, %d reused (%d given the password) in %s\n", f.count,
			accounts.Created, int64(f.count)-accounts.Created, accounts.NewPassword, since(t))
		t = time.Now()
		placed, err = org.PlaceAccounts(ctx, tx, f.unit, accounts.IDs, f.title, org.ImportOptions{Log: log, Progress: stderr})
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "seed: unit %d: %d positions created, %d updated, %d unchanged in %s\n", f.unit,
			placed.PositionsCreated, placed.PositionsUpdated, placed.PositionsUnchanged, since(t))
		t = time.Now()
		pairs, err := authSvc.SignInAll(ctx, tx, accounts.IDs, f.device, "zhangban accounts seed")
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "seed: %d sessions on device %q in %s\n", len(pairs), f.device, since(t))
		// The file is complete before the commit; it replaces --out after.
		w := bufio.NewWriterSize(tmp, 256<<10)
		enc := json.NewEncoder(w)
		for i, p := range pairs {
			if err := enc.Encode(seededAccount{Login: logins[i].Login, ID: accounts.IDs[i], Unit: f.unit, Token: p.AccessToken, RefreshToken: p.RefreshToken}); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return fmt.Errorf("writing %s: %w", tmp.Name(), err)
		}
		return tmp.Close()
	})
	if err != nil {
		if errors.Is(err, auth.ErrAccountDisabled) {
			return fmt.Errorf("accounts seed: %w: enable the accounts or use another --prefix; nothing was written", err)
		}
		return fmt.Errorf("accounts seed: %w; nothing was written", err)
	}
	if err := os.Rename(tmp.Name(), f.out); err != nil {
		return fmt.Errorf("accounts seed: the accounts are seeded, but their tokens could not be moved to %s: %w (run again for new ones)", f.out, err)
	}
	_, err = fmt.Fprintf(stdout, "seeded %s1 … %s%d (%d created) in unit %d, signed in on %q: tokens valid for %s in %s (%s)\n",
		f.prefix, f.prefix, f.count, accounts.Created, f.unit, f.device, cfg.AccessTTL, f.out, since(start))
	return err
}

// check checks the flags that need no database.
func (f *seedFlags) check() error {
	switch {
	case f.prefix == "":
		return errors.New("give --prefix, e.g. --prefix wslg- for the logins wslg-1 … wslg-N")
	case f.count < 1 || f.count > maxSeed:
		return fmt.Errorf("--count %d: want 1 to %d", f.count, maxSeed)
	case f.unit <= 0:
		return errors.New("give --unit with the id of the unit the accounts are members of (zhangban org unit create --name … makes one)")
	case len(f.password) < 8 || len(f.password) > 256:
		return errors.New("give --password of 8 to 256 bytes")
	case f.device == "":
		return errors.New("--device must not be empty: it is what makes a second seed replace the sessions of the first")
	case f.out == "":
		return errors.New("give --out FILE for the tokens")
	}
	// The shortest and the longest login; the ones between differ only in digits.
	for _, login := range []string{f.prefix + "1", f.prefix + strconv.Itoa(f.count)} {
		if err := auth.CheckLogin(login); err != nil {
			return fmt.Errorf("--prefix %q makes a bad login: %w", f.prefix, err)
		}
	}
	return nil
}

// seedKeys returns the key the server signs with: the configured one, or
// the data directory's keyring, which seeding never generates (tokens
// signed with a new key would be rejected by the server).
func seedKeys(cfg *config.Config) (*auth.Keyring, error) {
	if cfg.JWTKey != nil {
		return auth.NewKeyring(cfg.JWTKey, cfg.JWTPreviousKeys...), nil
	}
	keys, err := auth.LoadKeyring(cfg.DataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("accounts seed: no signing key: give the server's --jwt-key (ZHANGBAN_JWT_KEY), or the --data-dir (ZHANGBAN_DATA_DIR) of a server that has run (it keeps %s there)", auth.KeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("accounts seed: token signing keys: %w", err)
	}
	return keys, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

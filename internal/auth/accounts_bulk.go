package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/zhangban/zhangban/internal/db"
)

// Bulk accounts are for operator tools (zhangban accounts seed): thousands
// of accounts that share one password, made and signed in within the
// caller's transaction. They are written with COPY, not a statement per
// account, and the password is hashed once: every account stores the same
// hash string, salt included. Sharing a salt between accounts that share
// the password gives an attacker nothing they would not have anyway.

// maxBulkAccounts bounds one EnsureAccounts or SignInAll call: every
// account is held in memory and written in one transaction.
const maxBulkAccounts = 1_000_000

// CheckLogin tells whether login is one an account may have, for tools
// that check their input before they open the database.
func CheckLogin(login string) error {
	if !loginRe.MatchString(login) || mobileRe.MatchString(login) {
		return &InvalidAccountError{"login", fmt.Sprintf("%q: 2-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, not a mobile number", login)}
	}
	return nil
}

// BulkAccount is one account for EnsureAccounts.
type BulkAccount struct {
	Login       string // as stored: lower case, checked like CreateAccount's
	DisplayName string // for a new account; an existing one keeps its own
}

// BulkResult is what EnsureAccounts did.
type BulkResult struct {
	IDs         []int64 // by input index
	Created     int64   // accounts that did not exist
	NewPassword int64   // existing accounts whose password hash was replaced
}

// EnsureAccounts makes sure an account exists for every login and that each
// signs in with pw. Existing accounts are reused as they are (id, name,
// sessions, positions), except that a password hash that does not match pw
// is replaced. A disabled account among them is an error. Everything is
// checked before anything is written; b may be the caller's transaction.
func (s *Service) EnsureAccounts(ctx context.Context, b db.Beginner, accounts []BulkAccount, pw string) (BulkResult, error) {
	if len(accounts) > maxBulkAccounts {
		return BulkResult{}, &InvalidAccountError{"accounts", fmt.Sprintf("at most %d at once", maxBulkAccounts)}
	}
	if len(pw) < 8 || len(pw) > maxPasswordLen {
		return BulkResult{}, &InvalidAccountError{"password", fmt.Sprintf("8-%d bytes", maxPasswordLen)}
	}
	logins := make([]string, len(accounts))
	index := make(map[string]int, len(accounts))
	for i, a := range accounts {
		if err := CheckLogin(a.Login); err != nil {
			return BulkResult{}, err
		}
		if strings.TrimSpace(a.DisplayName) == "" || utf8.RuneCountInString(a.DisplayName) > 100 {
			return BulkResult{}, &InvalidAccountError{"display_name", fmt.Sprintf("%q: 1-100 characters", a.DisplayName)}
		}
		if _, dup := index[a.Login]; dup {
			return BulkResult{}, &InvalidAccountError{"login", fmt.Sprintf("%q is given twice", a.Login)}
		}
		index[a.Login] = i
		logins[i] = a.Login
	}
	res := BulkResult{IDs: make([]int64, len(accounts))}
	err := db.InTx(ctx, b, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, login, coalesce(password_hash, ''), disabled_at IS NOT NULL FROM accounts WHERE login = ANY($1)`, logins)
		if err != nil {
			return err
		}
		hashes := map[string]int{} // stored hash → accounts with it
		var disabled []string
		for rows.Next() {
			var id int64
			var login, hash string
			var off bool
			if err := rows.Scan(&id, &login, &hash, &off); err != nil {
				return err
			}
			res.IDs[index[login]] = id
			hashes[hash]++
			if off {
				disabled = append(disabled, login)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(disabled) > 0 {
			return fmt.Errorf("%s (%d in all): %w", disabled[0], len(disabled), ErrAccountDisabled)
		}
		hash, err := s.sharedHash(ctx, pw, hashes)
		if err != nil {
			return err
		}
		var fresh []int
		for i, id := range res.IDs {
			if id == 0 {
				fresh = append(fresh, i)
			}
		}
		if len(fresh) < len(accounts) {
			tag, err := tx.Exec(ctx, `UPDATE accounts SET password_hash = $2 WHERE login = ANY($1) AND password_hash IS DISTINCT FROM $2`, logins, hash)
			if err != nil {
				return err
			}
			res.NewPassword = tag.RowsAffected()
		}
		if len(fresh) == 0 {
			return nil
		}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"accounts"}, []string{"login", "display_name", "password_hash"},
			pgx.CopyFromSlice(len(fresh), func(k int) ([]any, error) {
				a := &accounts[fresh[k]]
				return []any{a.Login, a.DisplayName, hash}, nil
			}))
		if db.SQLState(err) == db.UniqueViolation {
			return fmt.Errorf("some of the logins were created meanwhile by someone else (%w): run again", ErrLoginTaken)
		}
		if err != nil {
			return err
		}
		res.Created = n
		newLogins := make([]string, len(fresh))
		for k, i := range fresh {
			newLogins[k] = logins[i]
		}
		rows, err = tx.Query(ctx, `SELECT id, login FROM accounts WHERE login = ANY($1)`, newLogins)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var login string
			if err := rows.Scan(&id, &login); err != nil {
				return err
			}
			res.IDs[index[login]] = id
		}
		return rows.Err()
	})
	if err != nil {
		return BulkResult{}, err
	}
	return res, nil
}

// sharedHash returns the hash string every account of a bulk load gets: the
// one most of the existing accounts have, when it matches pw and was made
// with the current parameters (so a second load rewrites nothing), or else
// a new one. It checks at most one stored hash: accounts made one by one
// each have their own salt, and checking thousands would take minutes.
func (s *Service) sharedHash(ctx context.Context, pw string, stored map[string]int) (string, error) {
	best, most := "", 0
	for h, n := range stored {
		if h != "" && n > most {
			best, most = h, n
		}
	}
	if best != "" {
		ok, stale, err := s.check(ctx, pw, best)
		if err == nil && ok && !stale {
			return best, nil
		}
		if err := ctx.Err(); err != nil {
			return "", err
		}
		// A damaged hash is replaced like a wrong one.
	}
	return s.HashPassword(pw), nil
}

// SignInAll opens a session on device for every account in ids, as Login
// does for one without checking a password: each account's open session
// on that device is revoked and replaced, so repeating it leaves one open
// session per account and device. It returns the token pairs by index of
// ids. For tools that prepare accounts in bulk; b may be the caller's
// transaction.
func (s *Service) SignInAll(ctx context.Context, b db.Beginner, ids []int64, device, clientAddr string) ([]TokenPair, error) {
	if len(ids) > maxBulkAccounts {
		return nil, &InvalidAccountError{"accounts", fmt.Sprintf("at most %d at once", maxBulkAccounts)}
	}
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if id <= 0 || seen[id] {
			return nil, fmt.Errorf("account id %d is invalid or given twice", id)
		}
		seen[id] = true
	}
	if len(ids) == 0 {
		return nil, nil
	}
	device = normalizeDevice(device)
	pairs := make([]TokenPair, len(ids))
	err := db.InTx(ctx, b, func(tx pgx.Tx) error {
		if device != "" {
			if _, err := tx.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $3
				WHERE account_id = ANY($1) AND device = $2 AND revoked_at IS NULL`, ids, device, reasonReplaced); err != nil {
				return err
			}
		}
		// Session ids are taken up front so that the rows can be COPYed and
		// each token signed for its session without reading anything back.
		var now time.Time
		var sids []int64
		if err := tx.QueryRow(ctx, `SELECT now(), coalesce(array_agg(nextval('auth_sessions_id_seq')), '{}')
			FROM generate_series(1, $1)`, len(ids)).Scan(&now, &sids); err != nil {
			return err
		}
		expires := now.Add(s.set.RefreshTTL)
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"auth_sessions"}, []string{"id", "account_id", "device", "client_addr", "expires_at"},
			pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
				return []any{sids[i], ids[i], device, clientAddr, expires}, nil
			}))
		if db.SQLState(err) == db.ForeignKeyViolation {
			return fmt.Errorf("an account among the %d does not exist: %w", len(ids), ErrNotFound)
		}
		if err != nil {
			return err
		}
		if n != int64(len(ids)) {
			return fmt.Errorf("stored %d of %d sessions", n, len(ids))
		}
		issued := s.now()
		sums := make([][sha256.Size]byte, len(ids))
		for i := range ids {
			var refresh string
			refresh, sums[i] = newRefreshToken()
			access, err := s.keys.sign(ids[i], sids[i], issued, s.set.AccessTTL)
			if err != nil {
				return err
			}
			pairs[i] = TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int(s.set.AccessTTL / time.Second), TokenType: "Bearer"}
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"auth_refresh_tokens"}, []string{"hash", "session_id"},
			pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
				return []any{sums[i][:], sids[i]}, nil
			}))
		return err
	})
	if err != nil {
		return nil, err
	}
	return pairs, nil
}

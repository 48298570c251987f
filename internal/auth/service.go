package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zhangban/zhangban/internal/db"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations are the auth tables.
func Migrations() db.Component {
	sub, _ := fsSub(migrations, "migrations")
	return db.Component{Name: "auth", FS: sub}
}

// Settings tune a Service.
type Settings struct {
	AccessTTL  time.Duration
	RefreshTTL time.Duration
	Hash       HashParams
}

// Service signs accounts in and out and checks tokens.
type Service struct {
	pool  *pgxpool.Pool
	keys  *Keyring
	set   Settings
	log   *slog.Logger
	now   func() time.Time
	dummy string // hash checked for unknown logins so they cost the same time
	// hashing admits at most GOMAXPROCS password hashes at once: each holds
	// its argon2 memory, so unbounded concurrency (anonymous requests can
	// cause it) would grow memory without adding throughput.
	hashing chan struct{}
	// sessions checks the sessions of access tokens, many in one query
	// when many arrive at once (every request and every WebSocket
	// upgrade checks one).
	sessions *db.Coalescer[int64, sessionState]
}

// sessionState is what Authenticate needs of a session and its account.
type sessionState struct {
	account           int64
	revoked, disabled bool
	superuser         bool
}

// New returns a Service over pool.
func New(pool *pgxpool.Pool, keys *Keyring, set Settings, log *slog.Logger) *Service {
	s := &Service{pool: pool, keys: keys, set: set, log: log, now: time.Now,
		dummy:   hashPassword("zhangban-dummy-password", set.Hash),
		hashing: make(chan struct{}, runtime.GOMAXPROCS(0))}
	s.sessions = &db.Coalescer[int64, sessionState]{Load: s.loadSessions}
	return s
}

func (s *Service) loadSessions(ctx context.Context, ids []int64) (map[int64]sessionState, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.id, s.account_id, s.revoked_at IS NOT NULL, a.disabled_at IS NOT NULL, a.superuser
		FROM auth_sessions s JOIN accounts a ON a.id = s.account_id WHERE s.id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64]sessionState, len(ids))
	for rows.Next() {
		var id int64
		var st sessionState
		if err := rows.Scan(&id, &st.account, &st.revoked, &st.disabled, &st.superuser); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rows.Err()
}

// Account is a person who can sign in.
type Account struct {
	ID          int64     `json:"id"`
	Login       string    `json:"login,omitempty"`
	Mobile      string    `json:"mobile,omitempty"`
	DisplayName string    `json:"display_name"`
	Superuser   bool      `json:"superuser"`
	Disabled    bool      `json:"disabled"`
	CreatedAt   time.Time `json:"created_at"`
}

// Principal is who a valid access token speaks for.
type Principal struct {
	AccountID int64
	SessionID int64
	Superuser bool
	ExpiresAt time.Time // when the access token expires
}

// TokenPair is what a sign-in or a refresh returns.
type TokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"` // seconds the access token lives
	TokenType    string `json:"token_type"`
}

// Session is one device's sign-in, as an administrator sees it.
type Session struct {
	ID            int64      `json:"id"`
	Device        string     `json:"device"`
	ClientAddr    string     `json:"client_addr"`
	CreatedAt     time.Time  `json:"created_at"`
	LastUsedAt    time.Time  `json:"last_used_at"`
	ExpiresAt     time.Time  `json:"expires_at"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
	RevokedReason string     `json:"revoked_reason,omitempty"`
}

// LoginRequest is a sign-in attempt.
type LoginRequest struct {
	Login      string // login name or mobile number
	Password   string
	Device     string // client-chosen device id; a new login on it replaces its old session
	ClientAddr string
}

const maxPasswordLen = 256

// reasonReplaced is why a device's session ends when the device signs in again.
const reasonReplaced = "replaced by a new sign-in on the device"

// Login checks the password and opens a session.
func (s *Service) Login(ctx context.Context, r LoginRequest) (TokenPair, error) {
	login := normalizeLogin(r.Login)
	if login == "" || r.Password == "" || len(r.Password) > maxPasswordLen || len(login) > 64 {
		return TokenPair{}, ErrInvalidCredentials
	}
	keys := throttleKeys(login, r.ClientAddr)
	if err := s.reserve(ctx, keys); err != nil {
		return TokenPair{}, err
	}
	var (
		id       int64
		hash     *string
		disabled *time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT id, password_hash, disabled_at FROM accounts WHERE login = $1 OR mobile = $1`, login).Scan(&id, &hash, &disabled)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && hash == nil) { // unknown, or no password set yet
		if _, _, err := s.check(ctx, r.Password, s.dummy); err != nil { // same cost as a real check
			return TokenPair{}, err
		}
		return TokenPair{}, s.failed(ctx, keys)
	}
	if err != nil {
		return TokenPair{}, err
	}
	ok, stale, err := s.check(ctx, r.Password, *hash)
	if err != nil {
		return TokenPair{}, fmt.Errorf("account %d: %w", id, err)
	}
	if !ok || disabled != nil {
		return TokenPair{}, s.failed(ctx, keys)
	}
	if stale {
		if _, err := s.pool.Exec(ctx, `UPDATE accounts SET password_hash = $2 WHERE id = $1`, id, s.HashPassword(r.Password)); err != nil {
			s.log.WarnContext(ctx, "rehash failed", "account", id, "err", err)
		}
	}
	device := normalizeDevice(r.Device)
	var pair TokenPair
	err = db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := succeeded(ctx, tx, keys); err != nil {
			return err
		}
		if device != "" {
			if _, err := tx.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = $3
				WHERE account_id = $1 AND device = $2 AND revoked_at IS NULL`, id, device, reasonReplaced); err != nil {
				return err
			}
		}
		var sid int64
		if err := tx.QueryRow(ctx, `INSERT INTO auth_sessions (account_id, device, client_addr, expires_at)
			VALUES ($1, $2, $3, now() + $4::interval) RETURNING id`, id, device, r.ClientAddr, s.set.RefreshTTL).Scan(&sid); err != nil {
			return err
		}
		var err error
		pair, err = s.issue(ctx, tx, id, sid)
		return err
	})
	return pair, err
}

// issue creates a refresh token for session sid and signs an access token.
func (s *Service) issue(ctx context.Context, tx pgx.Tx, accountID, sid int64) (TokenPair, error) {
	refresh, sum := newRefreshToken()
	if _, err := tx.Exec(ctx, `INSERT INTO auth_refresh_tokens (hash, session_id) VALUES ($1, $2)`, sum[:], sid); err != nil {
		return TokenPair{}, err
	}
	access, err := s.keys.sign(accountID, sid, s.now(), s.set.AccessTTL)
	if err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: int(s.set.AccessTTL / time.Second), TokenType: "Bearer"}, nil
}

// newRefreshToken returns a new refresh token and the SHA-256 stored for it.
func newRefreshToken() (string, [sha256.Size]byte) {
	raw := make([]byte, 32)
	rand.Read(raw)
	refresh := "zbr_" + base64.RawURLEncoding.EncodeToString(raw)
	return refresh, sha256.Sum256([]byte(refresh))
}

// Refresh rotates a refresh token. Presenting a token that was rotated
// before revokes its session: one of the two holders is not the owner.
func (s *Service) Refresh(ctx context.Context, refresh, device string) (TokenPair, error) {
	if !strings.HasPrefix(refresh, "zbr_") || len(refresh) > 100 {
		return TokenPair{}, ErrTokenInvalid
	}
	sum := sha256.Sum256([]byte(refresh))
	var pair TokenPair
	var reused bool
	err := db.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			sid, accountID   int64
			rotated, revoked *time.Time
			expires          time.Time
			sessDevice       string
			disabled         *time.Time
		)
		err := tx.QueryRow(ctx, `SELECT t.session_id, t.rotated_at, s.account_id, s.revoked_at, s.expires_at, s.device, a.disabled_at
			FROM auth_refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id JOIN accounts a ON a.id = s.account_id
			WHERE t.hash = $1 FOR UPDATE OF t, s`, sum[:]).Scan(&sid, &rotated, &accountID, &revoked, &expires, &sessDevice, &disabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrTokenInvalid
		}
		if err != nil {
			return err
		}
		switch {
		case revoked != nil:
			return ErrSessionRevoked
		case rotated != nil:
			reused = true
			_, err := tx.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'refresh token reused' WHERE id = $1`, sid)
			return err
		case !s.now().Before(expires):
			// Not ErrTokenExpired: that tells a client to refresh, and this is the refresh.
			return ErrSessionExpired
		case disabled != nil:
			return ErrAccountDisabled
		case device != "" && sessDevice != "" && device != sessDevice:
			return ErrTokenInvalid
		}
		if _, err := tx.Exec(ctx, `UPDATE auth_refresh_tokens SET rotated_at = now() WHERE hash = $1`, sum[:]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE auth_sessions SET last_used_at = now(), expires_at = now() + $2::interval WHERE id = $1`, sid, s.set.RefreshTTL); err != nil {
			return err
		}
		pair, err = s.issue(ctx, tx, accountID, sid)
		return err
	})
	if err == nil && reused {
		// The revocation committed; now tell the caller.
		s.log.WarnContext(ctx, "refresh token reuse: session revoked")
		return TokenPair{}, ErrRefreshReused
	}
	return pair, err
}

// Authenticate checks an access token and that its session is still open.
func (s *Service) Authenticate(ctx context.Context, token string) (Principal, error) {
	accountID, sid, exp, err := s.keys.verify(token, s.now())
	if err != nil {
		return Principal{}, err
	}
	st, ok, err := s.sessions.Get(ctx, sid)
	switch {
	case err != nil:
		return Principal{}, err
	case !ok || st.account != accountID:
		return Principal{}, ErrTokenInvalid
	case st.revoked:
		return Principal{}, ErrSessionRevoked
	case st.disabled:
		return Principal{}, ErrAccountDisabled
	}
	return Principal{AccountID: accountID, SessionID: sid, Superuser: st.superuser, ExpiresAt: exp}, nil
}

// EndedCursor is where a node starts asking which sessions ended
// (EndedSince): every revocation and disabling not yet committed now is
// after it.
func (s *Service) EndedCursor(ctx context.Context) (uint64, error) {
	var c string
	if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&c); err != nil {
		return 0, err
	}
	return strconv.ParseUint(c, 10, 64)
}

// EndedSince returns the sessions revoked and the accounts disabled by
// transactions from cursor on (migrations/0004), so that long-lived
// connections opened with them can be closed, and the cursor to ask from
// next time. What it returns may come again next time; what commits later
// will.
func (s *Service) EndedSince(ctx context.Context, cursor uint64) (sessions, accounts []int64, next uint64, err error) {
	var c string
	err = s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
			ARRAY(SELECT id FROM auth_sessions WHERE ended_xid >= $1::text::xid8 ORDER BY id),
			ARRAY(SELECT id FROM accounts WHERE disabled_xid >= $1::text::xid8 ORDER BY id)`, strconv.FormatUint(cursor, 10)).
		Scan(&c, &sessions, &accounts)
	if err != nil {
		return nil, nil, 0, err
	}
	next, err = strconv.ParseUint(c, 10, 64)
	return sessions, accounts, next, err
}

// Logout ends the caller's session.
func (s *Service) Logout(ctx context.Context, p Principal) error {
	_, err := s.pool.Exec(ctx, `UPDATE auth_sessions SET revoked_at = now(), revoked_reason = 'signed out' WHERE id = $1 AND revoked_at IS NULL`, p.SessionID)
	return err
}

// Sessions lists an account's sessions, newest first.
func (s *Service) Sessions(ctx context.Context, accountID int64) ([]Session, error) {
	if _, err := s.Account(ctx, accountID); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, device, client_addr, created_at, last_used_at, expires_at, revoked_at, coalesce(revoked_reason, '')
		FROM auth_sessions WHERE account_id = $1 ORDER BY created_at DESC, id DESC LIMIT 500`, accountID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Session, error) {
		var x Session
		err := r.Scan(&x.ID, &x.Device, &x.ClientAddr, &x.CreatedAt, &x.LastUsedAt, &x.ExpiresAt, &x.RevokedAt, &x.RevokedReason)
		return x, err
	})
}

// RevokeSession ends one session of an account.
func (s *Service) RevokeSession(ctx context.Context, accountID, sessionID int64, reason string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE auth_sessions SET revoked_at = coalesce(revoked_at, now()), revoked_reason = coalesce(revoked_reason, $3)
		WHERE id = $1 AND account_id = $2`, sessionID, accountID, reason)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Account returns one account.
func (s *Service) Account(ctx context.Context, id int64) (Account, error) {
	var a Account
	var login, mobile *string
	var disabled *time.Time
	err := s.pool.QueryRow(ctx, `SELECT id, login, mobile, display_name, superuser, disabled_at, created_at FROM accounts WHERE id = $1`, id).
		Scan(&a.ID, &login, &mobile, &a.DisplayName, &a.Superuser, &disabled, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, ErrNotFound
	}
	if login != nil {
		a.Login = *login
	}
	if mobile != nil {
		a.Mobile = *mobile
	}
	a.Disabled = disabled != nil
	return a, err
}

// NewAccount describes an account to create.
type NewAccount struct {
	Login       string `json:"login"`
	Mobile      string `json:"mobile"`
	DisplayName string `json:"display_name"`
	Password    string `json:"password"`
	Superuser   bool   `json:"superuser"`
}

var (
	loginRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,63}$`)
	mobileRe = regexp.MustCompile(`^1[0-9]{10}$`)
)

// CreateAccount validates and stores a new account.
func (s *Service) CreateAccount(ctx context.Context, n NewAccount) (Account, error) {
	n.Login = normalizeLogin(n.Login)
	n.Mobile = strings.TrimSpace(n.Mobile)
	n.DisplayName = strings.TrimSpace(n.DisplayName)
	switch {
	case n.Login == "" && n.Mobile == "":
		return Account{}, &InvalidAccountError{"login", "an account needs a login name or a mobile number"}
	case n.Login != "" && !loginRe.MatchString(n.Login):
		return Account{}, &InvalidAccountError{"login", "2-64 characters: lower-case letters, digits, '.', '_' or '-'"}
	case n.Login != "" && mobileRe.MatchString(n.Login):
		return Account{}, &InvalidAccountError{"login", "must not look like a mobile number; put it in mobile"}
	case n.Mobile != "" && !mobileRe.MatchString(n.Mobile):
		return Account{}, &InvalidAccountError{"mobile", "11 digits starting with 1"}
	case n.DisplayName == "" || utf8.RuneCountInString(n.DisplayName) > 100:
		return Account{}, &InvalidAccountError{"display_name", "1-100 characters"}
	case len(n.Password) < 8 || len(n.Password) > maxPasswordLen:
		return Account{}, &InvalidAccountError{"password", fmt.Sprintf("8-%d bytes", maxPasswordLen)}
	}
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO accounts (login, mobile, display_name, password_hash, superuser)
		VALUES (nullif($1, ''), nullif($2, ''), $3, $4, $5) RETURNING id`,
		n.Login, n.Mobile, n.DisplayName, s.HashPassword(n.Password), n.Superuser).Scan(&id)
	if db.SQLState(err) == db.UniqueViolation {
		return Account{}, ErrLoginTaken
	}
	if err != nil {
		return Account{}, err
	}
	return s.Account(ctx, id)
}

// Bootstrap creates the first administrator when there is no account at
// all. With loginPassword ("login:password") empty it generates a password.
// It returns the password only when it generated one, so the caller can show
// it once.
func (s *Service) Bootstrap(ctx context.Context, loginPassword string) (created bool, login, generated string, err error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM accounts LIMIT 1) x`).Scan(&n); err != nil || n > 0 {
		return false, "", "", err
	}
	login, pw, ok := strings.Cut(loginPassword, ":")
	if !ok {
		login = "admin"
		raw := make([]byte, 12)
		rand.Read(raw)
		pw = base64.RawURLEncoding.EncodeToString(raw)
		generated = pw
	}
	if _, err := s.CreateAccount(ctx, NewAccount{Login: login, DisplayName: "Administrator", Password: pw, Superuser: true}); err != nil {
		if errors.Is(err, ErrLoginTaken) { // another node won the race
			return false, "", "", nil
		}
		return false, "", "", fmt.Errorf("bootstrap administrator: %w", err)
	}
	return true, login, generated, nil
}

func normalizeLogin(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// normalizeDevice trims a client's device id to what a session stores.
func normalizeDevice(s string) string {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > 128 {
		s = string([]rune(s)[:128])
	}
	return s
}

// SetClock replaces the clock used for token times; for tests.
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// HashPassword hashes a password with the service's current parameters, for
// tools that create accounts in bulk (the demo data).
func (s *Service) HashPassword(pw string) string {
	s.hashing <- struct{}{}
	defer func() { <-s.hashing }()
	return hashPassword(pw, s.set.Hash)
}

// check verifies a password against a stored hash, waiting for a hashing
// slot no longer than ctx allows.
func (s *Service) check(ctx context.Context, pw, phc string) (ok, stale bool, err error) {
	select {
	case s.hashing <- struct{}{}:
	case <-ctx.Done():
		return false, false, ctx.Err()
	}
	defer func() { <-s.hashing }()
	ok, stale, err = checkPassword(pw, phc, s.set.Hash)
	if err != nil {
		err = fmt.Errorf("stored password hash: %w", err)
	}
	return ok, stale, err
}

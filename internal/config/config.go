package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the effective configuration of one zhangban process.
type Config struct {
	Addr            string        // HTTP listen address
	DataDir         string        // managed PostgreSQL, generated keys
	DatabaseURL     string        // external PostgreSQL; empty means managed
	NATSURL         string        // external NATS; empty means embedded
	LogLevel        slog.Level    // minimum level logged
	LogFormat       string        // json or text
	ShutdownTimeout time.Duration // bound on graceful stop
	AccessTTL       time.Duration // lifetime of access tokens
	RefreshTTL      time.Duration // lifetime of an idle session
	JWTKey          []byte        // signing key; nil means generated into DataDir
	JWTPreviousKeys [][]byte      // still accepted for verification after a rotation
	BootstrapAdmin  string        // login:password for the first administrator
	Argon2Time      uint32        // argon2id passes
	Argon2MemoryKiB uint32        // argon2id memory
	DBMaxConns      int32         // pool size
	SendCommitters  int           // send transactions at once (messaging.Options.Committers)
	SendCommitGap   time.Duration // least time between a committer's transactions (messaging.Options.CommitGap)
	Demo            bool          // load the demo organisation into an empty database
	Node            string        // gateway node name; empty generates host-pid-random
	DebugAddr       string        // listen address of /debug/pprof; empty: none
}

// setting binds one flag to one environment variable.
type setting struct {
	flag, env, def, help string
	secret               bool
}

var settings = []setting{
	{"addr", "ZHANGBAN_ADDR", "127.0.0.1:8080", "HTTP listen address host:port", false},
	{"data-dir", "ZHANGBAN_DATA_DIR", "./data", "directory for the managed PostgreSQL and generated keys", false},
	{"database-url", "DATABASE_URL", "", "PostgreSQL URL; empty runs a managed PostgreSQL in the data directory", true},
	{"nats-url", "NATS_URL", "", "NATS server or cluster URL(s); empty runs NATS in-process", true},
	{"log-level", "ZHANGBAN_LOG_LEVEL", "info", "debug, info, warn or error", false},
	{"log-format", "ZHANGBAN_LOG_FORMAT", "json", "json or text", false},
	{"shutdown-timeout", "ZHANGBAN_SHUTDOWN_TIMEOUT", "15s", "how long a graceful stop may take", false},
	{"access-ttl", "ZHANGBAN_ACCESS_TTL", "15m", "lifetime of access tokens", false},
	{"refresh-ttl", "ZHANGBAN_REFRESH_TTL", "720h", "lifetime of an unused session (refresh token)", false},
	{"jwt-key", "ZHANGBAN_JWT_KEY", "", "base64 HMAC key (≥32 bytes) for access tokens; empty generates one into the data directory", true},
	{"jwt-previous-keys", "ZHANGBAN_JWT_PREVIOUS_KEYS", "", "comma-separated base64 keys still accepted after a rotation", true},
	{"bootstrap-admin", "ZHANGBAN_BOOTSTRAP_ADMIN", "", "login:password of the first administrator on an empty database", true},
	{"argon2-time", "ZHANGBAN_ARGON2_TIME", "2", "argon2id passes for new password hashes", false},
	{"argon2-memory", "ZHANGBAN_ARGON2_MEMORY_KIB", "19456", "argon2id memory in KiB for new password hashes", false},
	{"db-max-conns", "ZHANGBAN_DB_MAX_CONNS", "20", "PostgreSQL pool size", false},
	{"send-committers", "ZHANGBAN_SEND_COMMITTERS", "1", "message send transactions running at once; each stores a batch of sends a round trip (more only for a database with cores to spare)", false},
	{"send-commit-gap", "ZHANGBAN_SEND_COMMIT_GAP", "0s", "least time between the starts of a committer's transactions; sends arriving meanwhile join the next batch: fewer, larger transactions for a few ms more a send (0s: none; at most 100ms)", false},
	{"node", "ZHANGBAN_NODE", "", "name of this node in presence and logs; empty generates one", false},
	{"debug-addr", "ZHANGBAN_DEBUG_ADDR", "", "listen address of /debug/pprof (profiling; keep it on loopback); empty: off", false},
	{"demo", "ZHANGBAN_DEMO", "true", "load the demo organisation (Zhejiang, grids, demo members) into an empty database", false},
}

// Error is a configuration error; it names the flag and the variable.
type Error struct {
	Flag, Env, Value, Problem string
}

func (e *Error) Error() string {
	return fmt.Sprintf("configuration: --%s (%s) %q: %s", e.Flag, e.Env, e.Value, e.Problem)
}

// Parse reads args (without the subcommand) and the environment given by
// getenv. Unknown flags and invalid values are errors.
func Parse(name string, args []string, getenv func(string) string) (*Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	vals := map[string]*string{}
	for _, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		vals[s.flag] = fs.String(s.flag, def, s.help+" (env "+s.env+")")
	}
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("configuration: unexpected argument %q (flags are --name=value)", fs.Arg(0))
	}
	get := func(f string) string { return *vals[f] }
	bad := func(f, problem string) error {
		for _, s := range settings {
			if s.flag == f {
				v := get(f)
				if s.secret {
					v = "***"
				}
				return &Error{Flag: f, Env: s.env, Value: v, Problem: problem}
			}
		}
		panic("unknown setting " + f)
	}

	c := &Config{
		Addr:           get("addr"),
		DataDir:        get("data-dir"),
		DatabaseURL:    get("database-url"),
		NATSURL:        get("nats-url"),
		Node:           get("node"),
		DebugAddr:      get("debug-addr"),
		LogFormat:      get("log-format"),
		BootstrapAdmin: get("bootstrap-admin"),
	}
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, bad("addr", "want host:port, e.g. 127.0.0.1:8080"))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, bad("addr", "port must be a number 0-65535"))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, bad("data-dir", "must not be empty"))
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("log-level"))); err != nil {
		errs = append(errs, bad("log-level", "want debug, info, warn or error"))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, bad("log-format", "want json or text"))
	}
	dur := func(f string, min time.Duration) time.Duration {
		d, err := time.ParseDuration(get(f))
		if err != nil {
			errs = append(errs, bad(f, "want a duration such as 15s, 15m or 720h"))
		} else if d < min {
			errs = append(errs, bad(f, "must be at least "+min.String()))
		}
		return d
	}
	c.ShutdownTimeout = dur("shutdown-timeout", time.Second)
	c.AccessTTL = dur("access-ttl", 30*time.Second)
	c.RefreshTTL = dur("refresh-ttl", time.Minute)
	if c.SendCommitGap = dur("send-commit-gap", 0); c.SendCommitGap > 100*time.Millisecond {
		errs = append(errs, bad("send-commit-gap", "must be at most 100ms: every send may wait this long"))
	}
	if c.RefreshTTL <= c.AccessTTL && c.RefreshTTL > 0 {
		errs = append(errs, bad("refresh-ttl", "must be longer than --access-ttl"))
	}
	if k := get("jwt-key"); k != "" {
		key, err := decodeKey(k)
		if err != nil {
			errs = append(errs, bad("jwt-key", err.Error()))
		}
		c.JWTKey = key
	}
	if ks := get("jwt-previous-keys"); ks != "" {
		for _, k := range strings.Split(ks, ",") {
			key, err := decodeKey(strings.TrimSpace(k))
			if err != nil {
				errs = append(errs, bad("jwt-previous-keys", err.Error()))
				continue
			}
			c.JWTPreviousKeys = append(c.JWTPreviousKeys, key)
		}
		if c.JWTKey == nil {
			errs = append(errs, bad("jwt-previous-keys", "needs --jwt-key (the current key) as well"))
		}
	}
	if a := c.BootstrapAdmin; a != "" {
		login, pw, ok := strings.Cut(a, ":")
		if !ok || login == "" || len(pw) < 8 {
			errs = append(errs, bad("bootstrap-admin", "want login:password with a password of at least 8 characters"))
		}
	}
	u := func(f string, min, max uint64) uint64 {
		n, err := strconv.ParseUint(get(f), 10, 32)
		if err != nil || n < min || n > max {
			errs = append(errs, bad(f, fmt.Sprintf("want a whole number from %d to %d", min, max)))
		}
		return n
	}
	c.Argon2Time = uint32(u("argon2-time", 1, 10))
	c.Argon2MemoryKiB = uint32(u("argon2-memory", 1024, 1<<20))
	c.DBMaxConns = int32(u("db-max-conns", 2, 1000))
	c.SendCommitters = int(u("send-committers", 1, 64))
	if c.DBMaxConns > 0 && c.SendCommitters >= int(c.DBMaxConns) { // 0: --db-max-conns itself is wrong, and said so
		errs = append(errs, bad("send-committers", fmt.Sprintf("must be less than --db-max-conns (%d): each committer holds a connection while it commits", c.DBMaxConns)))
	}
	switch get("demo") {
	case "true", "1", "yes":
		c.Demo = true
	case "false", "0", "no":
	default:
		errs = append(errs, bad("demo", "want true or false"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		key, err = base64.RawURLEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not base64")
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("key is %d bytes, want at least 32", len(key))
	}
	return key, nil
}

// LogAttrs describes the effective configuration with secrets redacted.
func (c *Config) LogAttrs() []any {
	redact := func(s string) string {
		if s == "" {
			return ""
		}
		return "***"
	}
	dbURL := "managed in data dir"
	if c.DatabaseURL != "" {
		dbURL = redactURL(c.DatabaseURL)
	}
	nats := "embedded"
	if c.NATSURL != "" {
		nats = redactURL(c.NATSURL)
	}
	jwt := "generated in data dir"
	if c.JWTKey != nil {
		jwt = fmt.Sprintf("from configuration (%d previous)", len(c.JWTPreviousKeys))
	}
	return []any{
		"addr", c.Addr, "data_dir", c.DataDir, "database", dbURL, "nats", nats,
		"log_level", c.LogLevel.String(), "shutdown_timeout", c.ShutdownTimeout.String(),
		"access_ttl", c.AccessTTL.String(), "refresh_ttl", c.RefreshTTL.String(),
		"jwt_key", jwt, "bootstrap_admin", redact(c.BootstrapAdmin),
		"argon2_time", c.Argon2Time, "argon2_memory_kib", c.Argon2MemoryKiB,
		"db_max_conns", c.DBMaxConns, "send_committers", c.SendCommitters, "send_commit_gap", c.SendCommitGap.String(), "demo", c.Demo,
	}
}

// redactURL hides user information in URLs (postgres://u:p@h/db, nats://u:p@h).
func redactURL(s string) string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if i := strings.Index(part, "://"); i >= 0 {
			if j := strings.LastIndex(part, "@"); j > i {
				part = part[:i+3] + "***@" + part[j+1:]
			}
		}
		out = append(out, part)
	}
	return strings.Join(out, ",")
}

// Package db is the PostgreSQL plumbing every domain package shares: opening
// the pgx pool, the one transaction helper, and the versioned, forward-only
// migration runner.
//
// Domain packages own their tables: each embeds its own migrations directory
// and hands it to Migrate as a Component. The runner records every applied
// migration in zhangban_migrations(component, version) and refuses a database
// that a newer binary has migrated further than this one knows.
//
// *pgxpool.Pool is safe for concurrent use; nothing here keeps state of its own.
package db

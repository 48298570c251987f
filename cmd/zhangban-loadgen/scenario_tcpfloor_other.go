//go:build !linux

package main

import (
	"context"
	"errors"
)

func floorReceiveRaw(context.Context, floorFlags, func(b, i int, at int64)) (func(), error) {
	return nil, errors.New("tcp-floor --raw reads with epoll, which only Linux has: leave --raw out")
}

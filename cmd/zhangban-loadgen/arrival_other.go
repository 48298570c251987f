//go:build !(linux && (amd64 || arm64))

package main

import (
	"net"
	"syscall"
)

// Without receive timestamps, arrivals are not measured.
const arrivalsStamped = false

func stampArrivals(uintptr) error { return nil }

func rawOf(net.Conn) syscall.RawConn { return nil }

func (u *upgraded) recv(p []byte) (int, error) { return u.Conn.Read(p) }

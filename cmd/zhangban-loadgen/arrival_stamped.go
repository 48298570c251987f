//go:build linux && (amd64 || arm64)

package main

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"
)

// Arrival times: each connection asks the kernel to stamp what it
// receives (SO_TIMESTAMPNS), and a read keeps the stamp of the data it
// returned. A message's arrival is then the stamp of the last read before
// the client handed it over: when it reached the client's socket, before
// the load generator's own queue of clients to run. The 100,000 clients of
// the fan-out share 2 cores with the 7 servers they measure; their
// deliveries' latency counts both the system's work and the time the
// message waited in a socket for a simulated phone's turn on the CPU.
// Stamps are the kernel's wall clock, as the send times in the messages
// are the sender's.

// arrivalsStamped: this platform measures arrivals.
const arrivalsStamped = true

// stampArrivals turns receive timestamps on for a socket being dialled.
func stampArrivals(fd uintptr) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
}

// rawOf returns the connection's raw socket for stamped reads, or nil.
func rawOf(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// recv reads like net.Conn.Read (the socket's deadlines and Close apply)
// and records the kernel's receive time of the data read.
func (u *upgraded) recv(p []byte) (int, error) {
	var n, oobn int
	var rerr error
	err := u.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, u.oob[:], 0)
			if rerr != syscall.EINTR {
				return rerr != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: u.LocalAddr(), Addr: u.RemoteAddr(), Err: rerr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	if oobn > 0 {
		if msgs, err := syscall.ParseSocketControlMessage(u.oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
					nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
					u.arrived.Store(sec*1e9 + nsec)
				}
			}
		}
	}
	return n, nil
}

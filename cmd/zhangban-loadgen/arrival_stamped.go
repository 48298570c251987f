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
// and records the kernel's receive time of the data read. It allocates
// nothing: the call into RawConn.Read is made once per connection, and the
// control message is parsed in place, so that what the load generator
// costs a delivery is the client package's, not its own measuring.
func (u *upgraded) recv(p []byte) (int, error) {
	if u.readFn == nil {
		u.readFn = u.recvmsg
	}
	u.rd = rawRead{p: p}
	err := u.rc.Read(u.readFn)
	r := u.rd
	u.rd = rawRead{}
	switch {
	case err != nil:
		return 0, err
	case r.err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: u.LocalAddr(), Addr: u.RemoteAddr(), Err: r.err}
	case r.n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	if at, ok := stampOf(u.oob[:r.oobn]); ok {
		u.arrived.Store(at)
	}
	return r.n, nil
}

// recvmsg is the function recv hands RawConn.Read; it reports whether the
// read is done (false: wait until the socket is readable).
func (u *upgraded) recvmsg(fd uintptr) bool {
	for {
		var err error
		u.rd.n, u.rd.oobn, _, _, err = syscall.Recvmsg(int(fd), u.rd.p, u.oob[:], 0)
		if err != syscall.EINTR {
			if err == syscall.EAGAIN {
				return false
			}
			u.rd.err = err
			return true
		}
	}
}

// stampOf returns the receive time in the control messages of a read
// (SCM_TIMESTAMPNS: a struct timespec), in unix nanoseconds. The layout
// is that of 64-bit Linux: a header of a 64-bit length and two 32-bit
// fields, data aligned to 8 bytes.
func stampOf(oob []byte) (int64, bool) {
	const hdr = 16
	for len(oob) >= hdr {
		n := binary.NativeEndian.Uint64(oob[0:8])
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if n < hdr || n > uint64(len(oob)) {
			return 0, false
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SCM_TIMESTAMPNS && n >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr : hdr+8]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8 : hdr+16]))
			return sec*1e9 + nsec, true
		}
		next := (n + 7) &^ 7
		if next >= uint64(len(oob)) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}

//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
)

// floorReceiveRaw is tcp-floor --raw's receiver: it makes f.n connections
// from f.source to f.connect with the system calls themselves, outside
// Go's poller, and reads all of them in one epoll loop on a thread of its
// own, as a receiver written in C would: no goroutine, scheduler or poller
// of Go's between the kernel and the read. What is left of the floor is
// the kernel's loopback TCP and the servers' writes. arrive is called with
// the burst, the connection's number and the time for each message read.
// stop ends the loop and closes the connections.
func floorReceiveRaw(ctx context.Context, f floorFlags, arrive func(b, i int, at int64)) (stop func(), err error) {
	if f.n <= 0 {
		return nil, fmt.Errorf("--raw needs connections to read, not --n %d", f.n)
	}
	dst, err := netip.ParseAddrPort(f.connect)
	if err != nil || !dst.Addr().Is4() {
		return nil, fmt.Errorf("--raw needs an IPv4 address and port to connect to, not %q", f.connect)
	}
	src, err := netip.ParseAddr(f.source)
	if err != nil || !src.Is4() {
		return nil, fmt.Errorf("--raw needs an IPv4 source address, not %q", f.source)
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	fds := make([]int, 0, f.n)
	closeAll := func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		syscall.Close(ep)
	}
	to := &syscall.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	from := &syscall.SockaddrInet4{Addr: src.As4()}
	for i := range f.n {
		if err := ctx.Err(); err != nil {
			closeAll()
			return nil, err
		}
		fd, err := floorDialRaw(from, to)
		if fd >= 0 {
			fds = append(fds, fd)
		}
		if err == nil {
			err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("connection %d of %d: %w", i+1, f.n, err)
		}
	}
	conn := make([]int32, slices.Max(fds)+1) // descriptor → connection number
	for i, fd := range fds {
		conn[fd] = int32(i)
	}
	var quit atomic.Bool
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		runtime.LockOSThread()
		events := make([]syscall.EpollEvent, 512)
		buf := make([]byte, 64<<10)
		read := make([]int, f.n) // bytes read on each connection
		for !quit.Load() {
			n, err := syscall.EpollWait(ep, events, 200)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "tcp-floor --raw: epoll_wait: %v; the messages not yet read count as lost\n", err)
				return
			}
			for _, ev := range events[:n] {
				fd := int(ev.Fd)
				r, err := syscall.Read(fd, buf)
				if r <= 0 {
					if err != syscall.EAGAIN && err != syscall.EINTR {
						syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, fd, nil) // closed: what it did not send is lost
					}
					continue
				}
				at := time.Now().UnixNano()
				i := int(conn[fd])
				for b := read[i] / f.size; b < (read[i]+r)/f.size && b < f.bursts; b++ {
					arrive(b, i, at)
				}
				read[i] += r
			}
		}
	}()
	return func() {
		quit.Store(true)
		<-ended
		closeAll()
	}, nil
}

// floorDialRaw connects a blocking socket from `from` (any port) to `to`,
// then makes it non-blocking. It returns the descriptor, if one was made,
// with any error.
func floorDialRaw(from, to *syscall.SockaddrInet4) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := bindAddressNoPort(uintptr(fd)); err != nil {
		return fd, fmt.Errorf("IP_BIND_ADDRESS_NO_PORT: %w", err)
	}
	if err := syscall.Bind(fd, from); err != nil {
		return fd, fmt.Errorf("bind: %w", err)
	}
	for {
		// A signal (Go's preemption) can interrupt a blocking connect,
		// which then goes on by itself: ask again until it is done.
		err = syscall.Connect(fd, to)
		if !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EALREADY) {
			break
		}
	}
	if err != nil && !errors.Is(err, syscall.EISCONN) {
		return fd, fmt.Errorf("connect: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return fd, fmt.Errorf("making it non-blocking: %w", err)
	}
	return fd, nil
}

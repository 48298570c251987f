//go:build linux && (amd64 || arm64)

package main

import (
	"encoding/binary"
	"syscall"
	"testing"
)

// cmsg is one control message as 64-bit Linux lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, 16, 16+(len(data)+7)&^7)
	binary.NativeEndian.PutUint64(b[0:8], uint64(16+len(data)))
	binary.NativeEndian.PutUint32(b[8:12], uint32(level))
	binary.NativeEndian.PutUint32(b[12:16], uint32(typ))
	b = append(b, data...)
	return b[:cap(b)]
}

// TestStampOf: the receive time is found after another control message,
// agrees with the standard library's parser, and a truncated or malformed
// buffer gives none, never a panic.
func TestStampOf(t *testing.T) {
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts[0:8], 1795616256)
	binary.NativeEndian.PutUint64(ts[8:16], 292906001)
	oob := append(cmsg(syscall.SOL_SOCKET, syscall.SCM_RIGHTS, []byte{1, 2, 3, 4}), cmsg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)...)
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 2 || msgs[1].Header.Type != syscall.SCM_TIMESTAMPNS {
		t.Fatalf("the test's buffer: %v, %v", msgs, err)
	}
	d := msgs[1].Data
	want := int64(binary.NativeEndian.Uint64(d[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(d[8:16]))
	if at, ok := stampOf(oob); !ok || at != want || at != 1795616256_292906001 {
		t.Fatalf("stampOf = %d, %v; the standard library's parser gives %d", at, ok, want)
	}
	for n := range len(oob) {
		if at, ok := stampOf(oob[:n]); ok {
			t.Errorf("%d of %d bytes: a stamp %d", n, len(oob), at)
		}
	}
	bad := append([]byte(nil), oob...)
	binary.NativeEndian.PutUint64(bad[0:8], 3) // shorter than its header
	if _, ok := stampOf(bad); ok {
		t.Error("a stamp behind a malformed header")
	}
	binary.NativeEndian.PutUint64(bad[0:8], 1<<40)
	if _, ok := stampOf(bad); ok {
		t.Error("a stamp behind a header longer than the buffer")
	}
}

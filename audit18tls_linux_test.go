//go:build linux

package kcm_test

import (
	"net"
	"syscall"
	"testing"
	"unsafe"
)

// a18Queues returns the bytes in c's receive queue (FIONREAD) and send
// queue (TIOCOUTQ).
func a18Queues(t *testing.T, c net.Conn) (in, out int) {
	t.Helper()
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	sc.Control(func(fd uintptr) {
		var v int32
		syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&v)))
		in = int(v)
		syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&v)))
		out = int(v)
	})
	return in, out
}

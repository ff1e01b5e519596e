//go:build unix

package kcm

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns the raw connection of the standard library's own
// stream connections, whose readiness can be awaited without a buffer.
// Other connections (TLS, wrappers, pipes) are read through their Read
// method.
func rawConnOf(c net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawRead is the callback of syscall.RawConn.Read: it borrows a buffer only
// when data is there, and hands it back before the goroutine parks. (A
// reader that keeps its buffer while it waits reads with conn.Read.)
func (p *Psock) rawRead(fd uintptr) bool {
	if p.parked.Load() {
		p.parked.Store(false) // woken: the bytes it reads are in its hands
	}
	b := p.sp.space()
	for {
		n, err := syscall.Read(int(fd), b)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if p.noWait {
				p.rn, p.rerr = 0, syscall.EAGAIN
				return true
			}
			p.sp.dropIfEmpty()
			p.parked.Store(true)
			return false
		}
		p.rn, p.rerr = n, errnoOf(err)
		return true
	}
}

func (p *Psock) fillRaw() error {
	if err := p.raw.Read(p.readFn); err != nil {
		return err
	}
	if p.rerr == syscall.EAGAIN {
		return ErrWouldBlock
	}
	if p.rerr != 0 {
		return os.NewSyscallError("read", p.rerr)
	}
	if p.rn == 0 {
		return io.EOF
	}
	p.sp.commit(p.rn)
	return nil
}

// errnoOf returns the errno of an error from syscall.Read, which is always
// a syscall.Errno or nil.
func errnoOf(err error) syscall.Errno {
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	if err != nil {
		return syscall.EIO
	}
	return 0
}

// readable reports whether bytes wait unread on p's connection. It peeks
// through Control, which does not wait for the read lock that a reader
// waiting for readability holds.
func (p *Psock) readable() bool {
	n := 0
	p.raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}

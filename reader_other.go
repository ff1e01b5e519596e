//go:build !unix

package kcm

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: outside unix every connection is read through its
// Read method.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func (p *Psock) rawRead(uintptr) bool { return true }

func (p *Psock) fillRaw() error { panic("kcm: raw reads are unix-only") }

func (p *Psock) readable() bool { return false }

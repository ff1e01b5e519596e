// Package testconn gives kcm's tests real connections to attach: both ends
// of a loopback TCP or Unix stream connection, or a loopback listener that
// hands each connection to a function. It is test support, not part
// of kcm's API, and imports nothing of kcm, so that the root package's own
// tests can use it.
package testconn

import (
	"encoding/binary"
	"math"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// Pair returns both ends of a new stream connection on network "tcp"
// (loopback) or "unix" (a socket in a temporary directory): the end that
// dialled and the end that was accepted. Both are closed at the end of the
// test. On a Unix connection a write on one end is queued on the other
// before it returns, so a test knows exactly when bytes have arrived.
func Pair(t testing.TB, network string) (dialed, accepted net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		// Not t.TempDir: its path holds the test's name, and a socket's
		// path must fit in 104 bytes on some systems.
		dir, err := os.MkdirTemp("", "kcm")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		addr = filepath.Join(dir, "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	dialed, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err) // the deferred close ends the accept
	}
	r := <-ch
	if r.err != nil {
		dialed.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { dialed.Close(); r.c.Close() })
	return dialed, r.c
}

// Serve accepts loopback TCP connections and gives each to handle, one at
// a time, until the test ends; it returns the listening address. The
// listener closes, and the accept loop ends, with the test.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// FrameLen is the length of the tests' framed message that b, 4 bytes or
// more, begins: a 4-byte big-endian payload length, plus those 4 bytes. A
// length that does not fit in an int (32-bit platforms) is the largest
// int, too big for any mux, as it would be on a 64-bit platform.
func FrameLen(b []byte) int {
	return int(min(4+uint64(binary.BigEndian.Uint32(b)), math.MaxInt))
}

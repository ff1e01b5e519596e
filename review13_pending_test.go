package kcm_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// r13AtLeastConn returns at least min bytes from each Read, as a
// connection that reads whole units does: a read that its deadline ends
// returns the bytes it had together with the timeout, as io.Reader
// allows (a tls.Conn does so when an alert record follows application
// data, cut). got is signalled when a Read has some bytes and waits for
// more.
type r13AtLeastConn struct {
	net.Conn
	min int
	got chan struct{}
}

func (c *r13AtLeastConn) Read(b []byte) (int, error) {
	n := 0
	for n < c.min && n < len(b) {
		k, err := c.Conn.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
		if n > 0 && n < c.min {
			select {
			case c.got <- struct{}{}:
			default:
			}
		}
	}
	return n, nil
}

// A read that an interrupt cut after it had bytes returns them with the
// timeout; the message they complete is delivered and the reader lets go,
// the timeout kept for the next read. That timeout is the interrupt's,
// long over: the next reader must read on, not fail the psock as if the
// connection timed out by itself (which a timeout without an interrupt or
// a deadline of the mux's now means).
func TestInterruptTimeoutWithBytesKeepsPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	ac := &r13AtLeastConn{Conn: c, min: 64, got: make(chan struct{}, 1)}
	p, err := m.Attach(ac, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write(frame([]byte("first!"))); err != nil { // 10 bytes
		t.Fatal(err)
	}
	select {
	case <-ac.got: // the background reader has them and waits for more
	case <-time.After(10 * time.Second):
		t.Fatal("the psock was not read")
	}
	attachPeer(t, m) // interrupts the first psock's reader
	if got := recvWithin(t, s, 10*time.Second); string(got[4:]) != "first!" {
		t.Fatalf("got %q", got)
	}
	second := frame(make([]byte, 60)) // 64 bytes: one whole read
	copy(second[4:], "second")
	if _, err := peer.Write(second); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 100)
		n, err := s.Recv(b)
		if err != nil {
			b, n = nil, 0
		}
		got <- b[:n]
	}()
	select {
	case <-p.Done():
		t.Fatalf("psock left: %v", p.Err())
	case b := <-got:
		if len(b) < 4 || !strings.HasPrefix(string(b[4:]), "second") {
			t.Fatalf("got %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second message was not received")
	}
	if err := p.Err(); err != nil {
		t.Fatalf("psock Err = %v", err)
	}
}

package kcm_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// slowCloseConn's Close takes a while, as tls.Conn.Close does when it must
// send close_notify into a full send buffer (up to 5 s).
type slowCloseConn struct{ net.Conn }

func (c slowCloseConn) Close() error {
	time.Sleep(1500 * time.Millisecond)
	return c.Conn.Close()
}

// Spec 3 ("other psocks and sockets are unaffected" by an abort): a
// failing psock's connection is closed under the mux lock
// (psock.go failLocked -> p.conn.Close()), so a connection whose Close
// blocks (tls.Conn sending close_notify into a full buffer blocks up to
// 5 s) freezes every socket and psock of the mux meanwhile.
func TestReview2SlowCloseOfFailingPsockDoesNotFreezeMux(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, badPeer := tcpPair(t)
	bad, err := m.Attach(slowCloseConn{c}, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	_, good := attachPeer(t, m)
	badPeer.Write([]byte{0xff, 0xff, 0xff, 0xff}) // too big: the psock fails
	time.Sleep(50 * time.Millisecond)             // its Close is under way
	start := time.Now()
	good.Write(msgOf(2, 100))
	s.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 200)
	n, err := s.Recv(buf)
	if err != nil {
		t.Fatalf("healthy psock's message not received within 1s: %v", err)
	}
	checkMsg(t, buf[:n])
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("healthy psock's message took %v: the mux was frozen by the failing psock's Close", d)
	}
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("bad psock err %v", err)
	}
}

package kcm_test

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// blockingCloseConn's Close blocks until release is closed, as
// tls.Conn.Close does when it must send close_notify into a full send
// buffer (up to 5 s). closing is closed when the first Close begins.
type blockingCloseConn struct {
	net.Conn
	once             sync.Once
	closing, release chan struct{}
}

func (c *blockingCloseConn) Close() error {
	c.once.Do(func() { close(c.closing) })
	<-c.release
	return c.Conn.Close()
}

// Spec 3 ("other psocks and sockets are unaffected" by an abort): a
// failing psock's connection used to be closed under the mux lock, so a
// connection whose Close blocks (tls.Conn sending close_notify into a full
// buffer blocks up to 5 s) froze every socket and psock of the mux
// meanwhile. Here a healthy psock's message is received while the failed
// psock's Close is still blocked.
func TestReview2SlowCloseOfFailingPsockDoesNotFreezeMux(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, badPeer := tcpPair(t)
	bc := &blockingCloseConn{Conn: c, closing: make(chan struct{}), release: make(chan struct{})}
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(bc.release) }) }) // before the mux's close
	bad, err := m.Attach(bc, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	_, good := attachPeer(t, m)
	badPeer.Write([]byte{0xff, 0xff, 0xff, 0xff}) // too big: the psock fails
	<-bc.closing                                  // its Close is under way, and blocks
	good.Write(msgOf(2, 100))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 200)
	n, err := s.Recv(buf)
	if err != nil {
		t.Fatalf("healthy psock's message not received while the failed psock's Close blocks: %v", err)
	}
	checkMsg(t, buf[:n])
	release.Do(func() { close(bc.release) })
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("bad psock err %v", err)
	}
}

package kcm

import (
	"encoding/binary"
	"net"
	"path/filepath"
	"testing"
)

// unixConns returns both ends of a Unix stream connection, closed at the
// end of the test. A write or close on one end is seen by the other before
// it returns, so a test knows what a non-blocking read will find.
func unixConns(t *testing.T) (c, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err = ln.Accept()
	if err != nil {
		peer.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// idleAll leaves every psock of m unread, with no grace timer, as a
// non-blocking receive that read them leaves them until their timers fire.
func idleAll(m *Mux) {
	for {
		m.mu.Lock()
		var wait chan struct{}
		for _, p := range m.psocks {
			if p.rx == rxIdle {
				if p.grace != nil {
					p.grace.Stop()
				}
				p.graceArmed = false // a timer that fired already does nothing
				continue
			}
			if p.rxWait == nil {
				p.rxWait = make(chan struct{})
			}
			wait = p.rxWait
			m.interruptLocked(p)
		}
		m.mu.Unlock()
		if wait == nil {
			return
		}
		<-wait
	}
}

// TestDontWaitPollsPsockAfterOneThatLeft: a non-blocking receive reads
// every psock whose bytes arrived, also when one it read before left the
// mux while it read (here at its peer's end): the list of psocks moves up
// under it, and the psock after the one that left was skipped, so the
// receive reported ErrWouldBlock with a message there.
func TestDontWaitPollsPsockAfterOneThatLeft(t *testing.T) {
	m := NewMux(Config{})
	t.Cleanup(func() { m.Close() })
	s := m.NewSocket(Datagram)
	length := ParserFunc(func(b []byte) (int, error) {
		if len(b) < 4 {
			return 0, nil
		}
		return 4 + int(binary.BigEndian.Uint32(b)), nil
	})
	c1, peer1 := unixConns(t)
	c2, peer2 := unixConns(t)
	p1, err := m.Attach(c1, length)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(c2, length); err != nil {
		t.Fatal(err)
	}
	idleAll(m)

	peer1.Close()
	msg := append(binary.BigEndian.AppendUint32(nil, 5), "hello"...)
	if _, err := peer2.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _, err := s.RecvMsg(buf, DontWait)
	if err != nil || string(buf[:n]) != string(msg) {
		t.Fatalf("RecvMsg(DontWait) = %q, %v; want the second psock's message", buf[:n], err)
	}
	<-p1.Done()
}

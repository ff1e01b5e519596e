package kcm

import (
	"net"
	"testing"

	"github.com/gokcm/kcm/internal/testconn"
)

// attachedPsock returns a mux configured by cfg, closed at the end of the
// test, with one end of a loopback TCP connection attached as psock p
// (parser: a 4-byte big-endian length, then the payload), and the other
// end, which plays the peer. For the package's internal tests.
func attachedPsock(t *testing.T, cfg Config) (m *Mux, p *Psock, peer net.Conn) {
	t.Helper()
	c, peer := loopbackPair(t)
	m = NewMux(cfg)
	t.Cleanup(func() { m.Close() })
	p, err := m.Attach(c, ParserFunc(func(b []byte) (int, error) {
		if len(b) < 4 {
			return 0, nil
		}
		return testconn.FrameLen(b), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return m, p, peer
}

// loopbackPair returns both ends of a new loopback TCP connection, closed
// at the end of the test.
func loopbackPair(t *testing.T) (c, peer net.Conn) {
	peer, c = testconn.Pair(t, "tcp")
	return c, peer
}

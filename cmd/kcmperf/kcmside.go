package main

import (
	"net"
	"sync"

	"github.com/gokcm/kcm"
)

// perfMux is a kcm.Mux that closes itself when a psock fails (typically
// the peer leaving), so that calls blocked on its sockets return instead of
// waiting for a psock that will never come: both sides of kcmperf want "the
// connection is gone" to end the mux, as a single TCP connection would.
type perfMux struct {
	*kcm.Mux
	once sync.Once
}

func newPerfMux() *perfMux {
	pm := &perfMux{}
	pm.Mux = kcm.NewMux(kcm.Config{
		MaxMessageSize: maxMessageSize,
		// The callback may run with mux state held: close from elsewhere.
		OnPsockError: func(*kcm.Psock, error) { go pm.Close() },
	})
	return pm
}

func (pm *perfMux) attach(c net.Conn, p kcm.Parser) (*kcm.Psock, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return pm.Attach(c, p)
}

func (pm *perfMux) Close() error {
	pm.once.Do(func() { pm.Mux.Close() })
	return nil
}

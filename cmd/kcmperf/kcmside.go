package main

import (
	"errors"
	"fmt"
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

	mu       sync.Mutex
	psockErr error // the first psock failure, which closed the mux
}

// newPerfMux returns a perfMux with cfg, which it completes with kcmperf's
// maximum message size and the psock error callback.
func newPerfMux(cfg kcm.Config) *perfMux {
	pm := &perfMux{}
	cfg.MaxMessageSize = maxMessageSize
	cfg.OnPsockError = func(_ *kcm.Psock, err error) {
		pm.mu.Lock()
		if pm.psockErr == nil {
			pm.psockErr = err
		}
		pm.mu.Unlock()
		go pm.Close() // the callback may run with mux state held
	}
	pm.Mux = kcm.NewMux(cfg)
	return pm
}

// explain adds to err, from a call on one of pm's sockets, the psock
// failure that closed the mux, if that is why the call failed: "use of
// closed socket" alone would hide the cause.
func (pm *perfMux) explain(err error) error {
	if err == nil || !errors.Is(err, kcm.ErrClosed) {
		return err
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.psockErr == nil {
		return err
	}
	return fmt.Errorf("%w (the mux closed after: %v)", err, pm.psockErr)
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

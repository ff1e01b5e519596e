package kcm_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
)

// listenPeers accepts connections on loopback and hands each accepted one
// to the test.
func listenPeers(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ch := make(chan net.Conn, 16)
	t.Cleanup(func() { // after the listener's own cleanup: nothing more comes
		for {
			select {
			case c := <-ch:
				c.Close()
			default:
				return
			}
		}
	})
	return testconn.Serve(t, func(c net.Conn) { ch <- c }), ch
}

func accept(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection dialled")
		return nil
	}
}

// waitFor polls cond: the set attaches in the background, with no event
// to wait on but the state itself.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func tcpDial(addr string) func(context.Context) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// A set keeps its size: a connection whose peer closed it is replaced,
// and messages flow on the new one.
func TestConnSetReplacesLostConnection(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 3, Dial: tcpDial(addr), Parser: lenPrefix, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	peers := []net.Conn{accept(t, accepted), accept(t, accepted), accept(t, accepted)}
	waitFor(t, "three psocks", func() bool { return len(cs.Psocks()) == 3 && len(m.Psocks()) == 3 })

	peers[0].Close()
	fresh := accept(t, accepted)
	waitFor(t, "the set to heal", func() bool { return len(cs.Psocks()) == 3 && m.Stats().PsockAttach == 4 })
	if st := m.Stats(); st.PsockAttach != 4 || len(m.Psocks()) != 3 {
		t.Fatalf("attach count %d, psocks %d; want 4, 3", st.PsockAttach, len(m.Psocks()))
	}

	// Each of the three live peers can be reached: each sends a message
	// and one socket receives all three.
	s := m.NewSocket(kcm.Datagram)
	for i, p := range []net.Conn{peers[1], peers[2], fresh} {
		p.Write(msgOf(uint32(i), 10))
	}
	seen := map[uint32]bool{}
	for range 3 {
		seen[checkMsg(t, recvWithin(t, s, 5*time.Second))] = true
	}
	if len(seen) != 3 {
		t.Fatalf("received from %d connections, want 3", len(seen))
	}
}

// Failed dials are retried with backoff and reported; the slot attaches
// once a dial succeeds.
func TestConnSetRetriesFailedDials(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	var calls, reported atomic.Int32
	dial := tcpDial(addr)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Dial: func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) <= 3 {
				return nil, errors.New("refused")
			}
			return dial(ctx)
		},
		Parser:      lenPrefix,
		MinBackoff:  time.Millisecond,
		MaxBackoff:  4 * time.Millisecond,
		OnDialError: func(error) { reported.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	accept(t, accepted)
	waitFor(t, "the psock", func() bool { return len(cs.Psocks()) == 1 })
	if calls.Load() != 4 || reported.Load() != 3 {
		t.Fatalf("%d dials, %d reported errors; want 4, 3", calls.Load(), reported.Load())
	}
}

// Close stops the set: a dial in progress ends, the set's connections are
// unattached and closed, and nothing is dialled after it returns.
func TestConnSetClose(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	dial := tcpDial(addr)
	var calls atomic.Int32
	blocked := make(chan struct{})
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size: 2,
		Dial: func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) == 2 {
				close(blocked)
				<-ctx.Done() // a dial that hangs until the set closes
				return nil, ctx.Err()
			}
			return dial(ctx)
		},
		Parser: lenPrefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	peer := accept(t, accepted)
	<-blocked
	waitFor(t, "one psock", func() bool { return len(cs.Psocks()) == 1 })
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(m.Psocks()); n != 0 {
		t.Fatalf("%d psocks after Close", n)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the peer's read after Close: %v, want the connection closed", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d dials, want 2", n)
	}
}

// The set ends with its mux.
func TestConnSetEndsWithMux(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 2, Dial: tcpDial(addr), Parser: lenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	accept(t, accepted)
	accept(t, accepted)
	waitFor(t, "two psocks", func() bool { return len(cs.Psocks()) == 2 })
	m.Close()
	done := make(chan struct{})
	go func() { cs.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the set did not end with its mux")
	}
	if st := m.Stats(); st.PsockAttach != 2 {
		t.Fatalf("%d attaches: the set redialled for a closed mux", st.PsockAttach)
	}
}

func TestConnSetConfigRequired(t *testing.T) {
	m := newMux(t, kcm.Config{})
	if _, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Parser: lenPrefix}); err == nil {
		t.Fatal("a set without Dial was accepted")
	}
	if _, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Dial: tcpDial("127.0.0.1:1")}); err == nil {
		t.Fatal("a set without Parser was accepted")
	}
}

// A peer that accepts and closes at once does not make the set dial in a
// tight loop: connections lost young are replaced after a backoff.
func TestConnSetBacksOffQuickLosses(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr := testconn.Serve(t, func(c net.Conn) { c.Close() })
	var dials atomic.Int32
	dial := tcpDial(addr)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Dial:       func(ctx context.Context) (net.Conn, error) { dials.Add(1); return dial(ctx) },
		Parser:     lenPrefix,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three dials", func() bool { return dials.Load() >= 3 })
	start, n := time.Now(), dials.Load()
	waitFor(t, "two more dials", func() bool { return dials.Load() >= n+2 })
	cs.Close()
	// Two more dials need two backoffs, the shorter at least 40 ms / 2.
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("two redials in %v: no backoff after quick losses", d)
	}
}

// A Dial that returns neither a connection nor an error is a failed dial,
// reported and retried, not a panic: an untyped nil, and a nil of a
// concrete type (a nil *tls.Conn, whose Close would dereference it).
func TestConnSetNilConnection(t *testing.T) {
	for name, c := range map[string]net.Conn{"nil": nil, "typed nil": (*tls.Conn)(nil)} {
		t.Run(name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			reported := make(chan error, 1)
			cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
				Dial:       func(context.Context) (net.Conn, error) { return c, nil },
				Parser:     lenPrefix,
				MinBackoff: time.Millisecond,
				OnDialError: func(err error) {
					select {
					case reported <- err:
					default:
					}
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if err := waitErr(t, reported, "the dial error"); !errors.Is(err, kcm.ErrBadConn) {
				t.Fatalf("reported %v, want ErrBadConn", err)
			}
		})
	}
}

package kcm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
	"go.uber.org/goleak"
)

// Audit 20: ConnSet (connset.go).

// a20wait waits for a value on ch, failing the test after d.
func a20wait[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// ConnSet doc: "ConnSet keeps a number of connections attached to a mux,
// dialling a new one whenever one leaves it (its peer closed it, it
// failed, or it was unattached)". A *kcm.Socket is a net.Conn (Socket
// doc), so a set may keep connections that are sockets of other muxes (a
// kcm tunnel inside kcm). When such a connection's own mux closes, its
// Read fails with an error wrapping kcm.ErrClosed, the set's psock fails
// with that error, and tend (connset.go:147) takes errors.Is(p.Err(),
// ErrClosed) for "the set's mux closed": the slot ends for good while the
// set's mux is open, and the set never dials again.
func TestAudit20ConnSetSlotSurvivesConnErrorWrappingErrClosed(t *testing.T) {
	m := newMux(t, kcm.Config{})
	var mu sync.Mutex
	var inner []*kcm.Mux
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, im := range inner {
			im.Close()
		}
	})
	dialled := make(chan *kcm.Mux, 16)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
		Dial: func(ctx context.Context) (net.Conn, error) {
			im := kcm.NewMux(kcm.Config{})
			mu.Lock()
			inner = append(inner, im)
			mu.Unlock()
			dialled <- im
			return im.NewSocket(kcm.SeqPacket), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	first := a20wait(t, dialled, 5*time.Second, "the first dial")
	first.Close() // the tunnel under the set's first connection goes away
	a20wait(t, dialled, 5*time.Second, "the set to dial again after its connection failed")
	select {
	case <-m.Done():
		t.Fatal("the set's mux closed")
	default:
	}
}

// The same conflation on the dial side (connset.go:129): a Dial whose
// error wraps kcm.ErrClosed (a dialler that opens its connection through
// another mux, which closed) ends the slot for good, and OnDialError is
// not even told. OnDialError doc: "is called with each failed dial or
// attach"; MinBackoff doc: the set dials again after a failed dial.
func TestAudit20ConnSetDialErrorWrappingErrClosedIsRetried(t *testing.T) {
	m := newMux(t, kcm.Config{})
	var calls atomic.Int32
	second := make(chan struct{})
	reported := make(chan error, 1)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
		Dial: func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) == 2 {
				close(second)
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("dial through tunnel: %w", kcm.ErrClosed)
		},
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
	err = a20wait(t, reported, 5*time.Second, "OnDialError with the failed dial")
	if !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("reported %v, want the dial's error", err)
	}
	a20wait(t, second, 5*time.Second, "the set to dial again")
}

// NewConnSet doc: "It stops when Close is called or the mux closes";
// TestConnSetEndsWithMuxWhileDialsFail holds that no dial follows the
// mux's closing. tend dials before it ever looks at the mux or its
// context (connset.go:122, no stopped check at the top of the loop), so a
// set made on a closed mux dials every slot once: real connections to the
// service, made for a mux that is gone and closed at once. The same gap
// lets a slot whose healthy connection was lost redial (continue at
// connset.go:152) after Close or the mux's Close began.
func TestAudit20ConnSetOnClosedMuxDialsNothing(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	m.Close()
	var calls atomic.Int32
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size:   3,
		Parser: lenPrefix,
		Dial: func(ctx context.Context) (net.Conn, error) {
			calls.Add(1)
			return nil, errors.New("refused")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cs.Close()
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d dials for a mux that was closed before the set was made", n)
	}
}

// ConnSetConfig doc: "MinBackoff and MaxBackoff bound the wait before
// dialling again after a failed dial". jitter (connset.go:206) draws the
// wait between half the backoff and the backoff, so the first waits are
// as short as MinBackoff/2: a service author who sets MinBackoff to spare
// a struggling backend gets redials at twice the rate asked for. Here
// MinBackoff == MaxBackoff == 100 ms; every gap between failed dials must
// be at least 100 ms (a timer never fires early, so the check cannot
// fail spuriously once the bound holds; with the bug each gap is below
// 100 ms with probability ~0.98).
func TestAudit20ConnSetWaitIsAtLeastMinBackoff(t *testing.T) {
	m := newMux(t, kcm.Config{})
	const minBackoff = 100 * time.Millisecond
	const dials = 4
	stamps := make(chan time.Time, dials)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Parser:     lenPrefix,
		MinBackoff: minBackoff,
		MaxBackoff: minBackoff,
		Dial: func(ctx context.Context) (net.Conn, error) {
			select {
			case stamps <- time.Now():
			default:
			}
			return nil, errors.New("refused")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	prev := a20wait(t, stamps, 5*time.Second, "dial 1")
	for i := 2; i <= dials; i++ {
		at := a20wait(t, stamps, 5*time.Second, fmt.Sprintf("dial %d", i))
		if gap := at.Sub(prev); gap < minBackoff {
			t.Fatalf("dial %d came %v after the failed dial before it; MinBackoff is %v", i, gap, minBackoff)
		}
		prev = at
	}
}

// Close doc: "It always returns nil", and returns when the set's
// goroutines have ended: twice, concurrently, and after the mux closed
// too. Afterwards the set reports no psock and the mux has none of its.
func TestAudit20ConnSetCloseTwiceAndConcurrently(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 2, Dial: tcpDial(addr), Parser: lenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	accept(t, accepted)
	accept(t, accepted)
	waitFor(t, "two psocks", func() bool { return len(cs.Psocks()) == 2 })
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- cs.Close() }()
	}
	for range 2 {
		if err := a20wait(t, errs, 5*time.Second, "a concurrent Close"); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if err := cfDo(t, 5*time.Second, "a third Close", cs.Close); err != nil {
		t.Fatalf("third Close: %v", err)
	}
	if n, k := len(cs.Psocks()), len(m.Psocks()); n != 0 || k != 0 {
		t.Fatalf("after Close: the set reports %d psocks, the mux has %d", n, k)
	}
	m.Close()
	if err := cfDo(t, 5*time.Second, "Close after the mux closed", cs.Close); err != nil {
		t.Fatalf("Close after the mux closed: %v", err)
	}
}

// A Dial that fails forever: every failure reaches OnDialError wrapping
// the dial's own error (errors.Is), the backoff stops doubling at
// MaxBackoff (30 dials with MaxBackoff 4 ms take far less than 5 s; an
// uncapped doubling from 1 ms would take years), and a connection Dial
// returns closed fails the attach with an error wrapping ErrBadConn, also
// reported.
func TestAudit20ConnSetDialErrorsForeverAreReportedAndCapped(t *testing.T) {
	m := newMux(t, kcm.Config{})
	refused := errors.New("connection refused")
	closedConn, _ := tcpPair(t)
	closedConn.Close()
	var calls atomic.Int32
	reports := make(chan error, 64)
	const want = 30
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		MaxBackoff: 4 * time.Millisecond,
		Dial: func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) == 1 {
				return closedConn, nil
			}
			return nil, refused
		},
		OnDialError: func(err error) {
			select {
			case reports <- err:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if err := a20wait(t, reports, 5*time.Second, "the failed attach"); !errors.Is(err, kcm.ErrBadConn) {
		t.Fatalf("attach of a closed connection reported %v, want ErrBadConn", err)
	}
	deadline := time.After(5 * time.Second)
	for i := 2; i <= want; i++ {
		select {
		case err := <-reports:
			if !errors.Is(err, refused) {
				t.Fatalf("dial %d reported %v, want the dial's error wrapped", i, err)
			}
		case <-deadline:
			t.Fatalf("only %d failed dials reported in 5 s with MaxBackoff 4 ms", i-1)
		}
	}
}

// NewConnSet doc: "It stops when Close is called or the mux closes": with
// the mux closed, every goroutine of the set ends without Close, whether
// its slot was attached or backing off after failed dials.
func TestAudit20ConnSetGoroutinesEndWithMuxWithoutClose(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	addr, accepted := listenPeers(t)
	ignore := goleak.IgnoreCurrent() // the listener's goroutine lives on
	dial := tcpDial(addr)
	var calls atomic.Int32
	failing := make(chan struct{})
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size:       2,
		Parser:     lenPrefix,
		MinBackoff: time.Hour, // the failing slot sleeps until the mux closes
		Dial: func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) == 2 {
				close(failing)
				return nil, errors.New("refused")
			}
			return dial(ctx)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	accept(t, accepted)
	<-failing
	waitFor(t, "one psock", func() bool { return len(cs.Psocks()) == 1 })
	m.Close()
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("goroutines left after the mux closed, without ConnSet.Close: %v", err)
	}
	cs.Close()
}

// MuxStats doc: "Psocks sums the counters of every psock the mux ever
// had, attached or gone"; Psock.Stats stays readable after it left. A set
// whose peers each send k messages and hang up churns through n
// connections, then keeps the last: the mux's totals are the sum of every
// psock's own counters, and count each message and each attach once.
func TestAudit20ConnSetChurnStatsAddUp(t *testing.T) {
	const n, k = 6, 4
	failed := make(chan *kcm.Psock, n)
	m := newMux(t, kcm.Config{OnPsockError: func(p *kcm.Psock, err error) { failed <- p }})
	var served atomic.Int32
	held := make(chan net.Conn, 1)
	addr := testconn.Serve(t, func(c net.Conn) {
		for i := range k {
			c.Write(msgOf(uint32(i), 16+i))
		}
		if served.Add(1) <= n {
			c.Close()
			return
		}
		held <- c
	})
	var d net.Dialer
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
		Dial:       func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	last := a20wait(t, held, 5*time.Second, "the last connection")
	defer last.Close()
	s := m.NewSocket(kcm.Datagram)
	var bytes uint64
	for range (n + 1) * k {
		bytes += uint64(len(recvWithin(t, s, 5*time.Second)))
	}
	var sum kcm.PsockStats
	for range n {
		st := a20wait(t, failed, 5*time.Second, "a psock's failure").Stats()
		sum.RxMsgs += st.RxMsgs
		sum.RxBytes += st.RxBytes
	}
	waitFor(t, "the last psock in the set", func() bool { return len(cs.Psocks()) == 1 })
	live := cs.Psocks()[0].Stats()
	sum.RxMsgs += live.RxMsgs
	sum.RxBytes += live.RxBytes
	st := m.Stats()
	if st.PsockAttach != n+1 || st.RxMsgs != (n+1)*k || st.RxBytes != bytes {
		t.Fatalf("mux: %d attaches, %d messages, %d bytes; want %d, %d, %d", st.PsockAttach, st.RxMsgs, st.RxBytes, n+1, (n+1)*k, bytes)
	}
	if st.Psocks.RxMsgs != sum.RxMsgs || st.Psocks.RxBytes != sum.RxBytes || sum.RxMsgs != st.RxMsgs {
		t.Fatalf("psock totals %d msgs %d bytes; sum of each psock's %d, %d", st.Psocks.RxMsgs, st.Psocks.RxBytes, sum.RxMsgs, sum.RxBytes)
	}
}

// ConnSet.Close doc: it "unattaches its connections and closes them
// (messages queued on them go out on the mux's other psocks, as on any
// Unattach), and returns when its goroutines have ended". With a writer
// stuck mid-message on a peer that stopped reading, Close still returns,
// the peer's connection is closed, and the cut message goes out whole,
// from its first byte, on a psock attached afterwards.
func TestAudit20ConnSetCloseWithWriterStuckMidMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Dial: tcpDial(addr), Parser: lenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	stuck := accept(t, accepted)
	waitFor(t, "the psock", func() bool { return len(cs.Psocks()) == 1 })
	s := m.NewSocket(kcm.Datagram)
	big := msgOf(7, 16<<20) // far more than the loopback buffers hold
	sent := make(chan error, 1)
	go func() { sent <- s.Send(big) }()
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(stuck, make([]byte, 4)); err != nil {
		t.Fatalf("the message's first bytes: %v", err)
	}
	// The peer reads no more: the writer is stuck inside the message.
	if err := cfDo(t, 5*time.Second, "ConnSet.Close with a stuck writer", cs.Close); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.PsockUnattach != 1 || st.PsockUnattachRsvd != 1 {
		t.Fatalf("unattach %d, mid-message %d; want 1, 1", st.PsockUnattach, st.PsockUnattachRsvd)
	}
	_, peer := attachPeer(t, m)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if id := checkMsg(t, readMsg(t, peer)); id != 7 {
		t.Fatalf("message %d on the new psock, want 7", id)
	}
	if err := a20wait(t, sent, 5*time.Second, "the send"); err != nil {
		t.Fatalf("send: %v", err)
	}
	// The stuck peer's connection was closed: after the bytes in flight, EOF.
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); err != nil {
		t.Fatalf("the stuck peer's connection after Close: %v, want EOF", err)
	}
}

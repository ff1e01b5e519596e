package kcm

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestAudit19StaleReservationLostFromTotals replays, deterministically, a
// sender whose pickTx loaded the mux's only psock p (txOne) just before p
// failed, and reserved it just after:
//
//  1. a sender of socket s enters pickTx: m.txOne.Load() returns p, and
//     s.txp (nil) != p; it is preempted before s.reserve(p);
//  2. p's peer closes: the reader gets EOF and fails p. removeLocked
//     publishes txOne = nil, scans the sockets (s.txp is nil: nothing to
//     release) and, its reader still running, leaves p in m.cold.leaving;
//  3. the sender goes on: s.reserve(p) swaps s.txp to the gone p and counts
//     p.Reserved (p is still in m.cold.leaving, so Stats counts it);
//  4. the reader has let go: the next Stats (any monitoring) folds p's
//     counters into the mux's departed aggregate, Reserved included;
//  5. s closes: Close swaps s.txp (p) to nil and counts p.Unreserved on p,
//     which was folded already: the release is lost from Mux.Stats.
//
// Step 3 is the tail of pickTx (transmit.go, pickTx: `s.reserve(p)`),
// called here directly since no hook stops a sender between its load of
// txOne and its reserve. The public-API race in
// TestAudit19ReservationRaceWithPsockFailure reaches the same state.
// Afterwards, with every socket closed and every psock gone, the mux's
// Reserved exceeds its Unreserved for good.
func TestAudit19StaleReservationLostFromTotals(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	r := m.NewSocket(Datagram) // keeps a reader on p, so that EOF fails it
	recvDone := make(chan error, 1)
	go func() {
		_, err := r.Recv(make([]byte, 64))
		recvDone <- err
	}()

	// 1. The sender's pickTx would load txOne == p here.
	if got := m.txOne.Load(); got != p {
		t.Fatalf("txOne = %v, want the only psock", got)
	}

	// 2. p fails: its reader gets EOF.
	peer.Close()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the psock did not fail on EOF")
	}
	m.mu.Lock()
	inLeaving := slices.Contains(m.cold.leaving, p)
	m.mu.Unlock()
	if !inLeaving {
		t.Fatal("precondition: the failed psock is not waiting in m.cold.leaving (it was folded at once)")
	}
	// 3. The preempted sender reserves the psock it loaded, while p still
	// waits in m.cold.leaving (nothing called Stats since it failed).
	s.reserve(p)
	if got := s.txp.Load(); got != nil {
		t.Errorf("the socket keeps its reservation of psock %d, which left", got.index)
	}
	mid := m.Stats().Psocks // 4. any Stats folds p, its reader gone
	m.mu.Lock()
	stillLeaving := slices.Contains(m.cold.leaving, p)
	m.mu.Unlock()
	if stillLeaving {
		t.Fatal("precondition: the gone psock was not folded by Stats")
	}
	t.Logf("after the stale reserve and the fold: Reserved %d, Unreserved %d", mid.Reserved, mid.Unreserved)

	// The /proc dump shows s holding a psock that is not in the mux.
	var dump strings.Builder
	m.WriteProc(&dump)
	t.Logf("proc after the stale reserve:\n%s", dump.String())

	// 5. Every socket closes; no psock is attached.
	s.Close()
	r.Close()
	<-recvDone
	st := m.Stats()
	if len(m.Psocks()) != 0 {
		t.Fatalf("psocks still attached: %d", len(m.Psocks()))
	}
	if st.Psocks.Reserved != st.Psocks.Unreserved {
		t.Errorf("all sockets closed, all psocks gone: mux Reserved %d != Unreserved %d (a reservation's release was lost)",
			st.Psocks.Reserved, st.Psocks.Unreserved)
	}
}

package kcm_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the fifteenth review (of d8755c0 and 2210f85).

// r15FlusherStuck sets up the scenario of d8755c0's fix: sA's Send wrote
// its own message, then, as the psock's writer, flushes sB's uncopied
// message (sB waits for it), and that write stalls inside sB's message:
// the peer stopped reading. It returns the channels of both Sends.
func r15FlusherStuck(t *testing.T, m *kcm.Mux) (p *kcm.Psock, sA, sB *kcm.Socket, errA, errB chan error) {
	t.Helper()
	p, peer := attachStalled(t, m)
	sA, sB = m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	own, big := msgOf(1, 1<<20), msgOf(2, 512<<10) // big: not copied (sB waits), under flushBudget
	errA, errB = make(chan error, 1), make(chan error, 1)
	go func() { errA <- sA.Send(own) }()
	waitSmem(t, m, p.Index(), int64(len(own)))
	go func() { errB <- sB.Send(big) }()
	waitSmem(t, m, p.Index(), int64(len(own)+len(big)))
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if id := checkMsg(t, readMsg(t, peer)); id != 1 {
		t.Fatalf("first message %d, want sA's", id)
	}
	peer.SetReadDeadline(time.Time{})
	// sB's message taken by the flusher (sA's Send), stalled.
	waitProc(t, m, func(string) bool {
		return a15PsockSendQ(m, p.Index()) == 0 && psockSmem(m, p.Index()) > 0
	})
	select {
	case err := <-errA:
		t.Fatalf("sA's Send returned (%v) before its socket closed: it does not flush sB's message", err)
	default:
	}
	return p, sA, sB, errA, errB
}

// TestReview15SecondCloseAfterFlusherKick: sA (the flusher) closes, which
// sets flusherKicked and a past deadline; before the interrupted writer
// runs handKicked, sB, whose Send waits in that very write (holdsSender),
// closes too: dropSocketLocked's first case sets closeKicked again, which
// is already set, and nothing records that sB wants the write stopped.
// handKicked then clears closeKicked and the deadline and finishKicked
// writes the rest of sB's message with no deadline: sB's Send, whose
// socket is closed ("Blocked calls on it return ErrClosed"), stays blocked
// until the peer reads. GOMAXPROCS(1) only makes the two Closes come before
// the writer runs, as they may on any machine.
func TestReview15SecondCloseAfterFlusherKick(t *testing.T) {
	m := newMux(t, kcm.Config{})
	_, sA, sB, errA, errB := r15FlusherStuck(t, m)
	prev := runtime.GOMAXPROCS(1)
	sA.Close()
	sB.Close()
	runtime.GOMAXPROCS(prev)
	waitErr(t, errA, "sA's Send, its socket closed")
	waitErr(t, errB, "sB's Send, whose message was being written, its socket closed")
}

// TestReview15UnattachAfterFlusherKick: sA (the flusher) closes, and an
// Unattach (stopTx: stopped, then a past write deadline, then it waits for
// the writer) comes before the interrupted writer runs handKicked.
// handKicked does not look at t.stopped: it takes the Unattach's deadline
// off (SetWriteDeadline(time.Time{})) and finishKicked writes the rest
// with no deadline to a peer that does not read, so Unattach, waiting for
// the writer to stop (t.idle), never returns. The Unattach doc and
// stopTx: "a write in progress is interrupted". Under -race the same
// run also reports handKicked's m.wg.Add (from a sender's goroutine, the
// counter at 0) racing Mux.Close's m.wg.Wait: nothing orders the two, so
// finishKicked may start after Close returned.
func TestReview15UnattachAfterFlusherKick(t *testing.T) {
	// Deterministic without -race; the race detector randomizes the
	// scheduler's run order, so a few rounds are tried.
	for round := range 20 {
		if r15UnattachHangs(t) {
			t.Fatalf("round %d: Unattach, after the flusher's socket closed, did not return within 3s", round)
		}
	}
}

func r15UnattachHangs(t *testing.T) bool {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	p, sA, _, errA, _ := r15FlusherStuck(t, m)
	prev := runtime.GOMAXPROCS(1)
	sA.Close()
	un := make(chan error, 1)
	go func() { _, err := p.Unattach(); un <- err }()
	select {
	case <-un:
	case <-time.After(3 * time.Second):
		runtime.GOMAXPROCS(prev)
		return true
	}
	runtime.GOMAXPROCS(prev)
	waitErr(t, errA, "sA's Send, its socket closed")
	return false
}

package kcm

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
)

// TestReview16OwnStoppedAfterMuxClose: ownTimedOut (under t.mu) finds
// the psock not stopped, lets go of t.mu, and ownStopped takes it again
// later (after disarmWrite and a copy of the whole message, which for a
// large one takes a while). A Mux.Close in between fails the psock
// (stopped) and returns once m.wg is done; ownStopped does not look at
// t.stopped (handKicked does, "the goroutine is counted before Close can
// wait"): it still does m.wg.Add(1) and starts finishKicked, a goroutine
// of the mux's that runs after Close returned, and the Send returns nil
// for a message of a closed mux. The interleaving is driven step by step:
// the writer holds p (claim), Close runs, then the writer's ownStopped.
func TestReview16OwnStoppedAfterMuxClose(t *testing.T) {
	m, p, _ := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	s.SetWriteDeadline(time.Now()) // its own write just timed out, mid-message
	if !p.tx.claim(s) {
		t.Fatal("psock busy")
	}
	msg := make([]byte, 1000)
	binary.BigEndian.PutUint32(msg, 996)
	m.Close() // between ownTimedOut and ownStopped
	if err := m.ownStopped(p, s, msg, 100, false); err != errLeaving {
		t.Fatalf("ownStopped after the mux closed: %v, want errLeaving (nil: finishKicked started after Close's wait)", err)
	}
	// The writer then ends the write as any failed one (writeOwn).
	if err := m.ownWriteFailed(p, s, 1, true, os.ErrDeadlineExceeded); !errors.Is(err, ErrClosed) {
		t.Fatalf("the write's end after the mux closed: %v, want ErrClosed", err)
	}
}

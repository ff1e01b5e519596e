package kcm_test

// Review 16: a socket's write deadline bounding the writes of its own
// messages (commits 72c7a07, 1d68c05).

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// r16Wait returns the error of a call started earlier, or fails the test
// if it does not come within d.
func r16Wait(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
		return nil
	}
}

// r16StoppedOK reports whether err is what a send whose write deadline
// stopped its write returns: nil (stopped inside the message, the mux
// finishes it) or os.ErrDeadlineExceeded (before its first byte).
func r16StoppedOK(err error) bool {
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}

// TestReview16StaleDeadlineFailsAnotherSocketsWrite: a Send that found
// its psock idle with no write deadline writes with a plain conn.Write
// (writeOwn, no armWrite). A SetWriteDeadline while that write is blocked
// puts the deadline on the connection (txState.newDeadline: t.writer ==
// s, !t.timed). The write then completes before that deadline, and
// nothing takes it off again (only writeTimed/writev/ownStopped disarm):
// flushQueued lets go of the psock with the socket's deadline still on
// the connection. Once it passes, the next write of another socket, with
// no deadline of its own, fails at once with i/o timeout, and ownTimedOut
// (its writer has no deadline) makes it a write failure: the psock fails.
func TestReview16StaleDeadlineFailsAnotherSocketsWrite(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer := attachStalled(t, m)
	s := m.NewSocket(kcm.Datagram)
	big := msgOf(1, 4<<20)
	errs := make(chan error, 1)
	go func() { errs <- s.Send(big) }() // no deadline: a plain write
	waitSmem(t, m, p.Index(), int64(len(big)))
	dl := time.Now().Add(1500 * time.Millisecond)
	s.SetWriteDeadline(dl) // reaches the write under way (newDeadline)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readMsg(t, peer); !bytes.Equal(got, big) {
		t.Fatalf("peer got message %d, want 1", checkMsg(t, got))
	}
	if err := r16Wait(t, errs, 3*time.Second, "s's Send"); err != nil {
		t.Fatalf("s's Send: %v", err)
	}
	if time.Now().After(dl) {
		t.Skip("the write ended after the deadline: nothing to check")
	}
	<-time.After(time.Until(dl) + 50*time.Millisecond) // s's deadline, long after its write, passes

	o := m.NewSocket(kcm.Datagram) // no deadline
	msg := msgOf(2, 100)
	if err := o.Send(msg); err != nil {
		t.Fatalf("o's Send: %v", err)
	}
	select {
	case <-p.Done():
		t.Fatalf("the psock failed on another socket's write, without a deadline of its own, after s's write had ended: %v (s's deadline left on the connection)", p.Err())
	default:
	}
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatalf("peer got message %d, want 2", checkMsg(t, got))
	}
}

// TestReview16DeadlineSetWhileBlockedIgnoredWithWriteTimeout: with
// Config.WriteTimeout, a write deadline set while the socket's own write
// is blocked (peer stalled) does not reach it: newDeadline skips the
// connection when t.timed, and the write goes on under the deadline
// armWrite set, now+WriteTimeout (here an hour), while SetWriteDeadline's
// doc promises it bounds "also one under way" (it does without
// WriteTimeout).
func TestReview16DeadlineSetWhileBlockedIgnoredWithWriteTimeout(t *testing.T) {
	m := newMux(t, kcm.Config{WriteTimeout: time.Hour})
	_, s, _, errs := stuckSend(t, m)
	s.SetWriteDeadline(time.Now())
	if err := r16Wait(t, errs, 3*time.Second, "a Send blocked in its own write, after its deadline passed"); !r16StoppedOK(err) {
		t.Fatalf("send: %v, want nil or os.ErrDeadlineExceeded", err)
	}
}

// TestReview16DeadlineMovedLaterFailsPsockWithWriteTimeout: with
// Config.WriteTimeout, armWrite arms the earlier socket deadline. Moved
// later (or cleared) while the write waits with no byte accepted,
// newDeadline leaves the old one on the connection (t.timed). When it
// passes, goOn finds neither the socket's deadline expired nor progress
// (n == 0, timed: `return n > 0`), and ownTimedOut says no (ownExpired
// false): the write counts as failed and the psock leaves the mux with
// "i/o timeout", though neither the socket's deadline nor WriteTimeout
// (an hour) passed.
func TestReview16DeadlineMovedLaterFailsPsockWithWriteTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		dl   func() time.Time
	}{
		{"later", func() time.Time { return time.Now().Add(time.Hour) }},
		{"cleared", func() time.Time { return time.Time{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{WriteTimeout: time.Hour})
			c, _ := tcpPair(t) // the peer never reads
			a21Fill(t, c)      // no byte of the next write is accepted
			p, err := m.Attach(c, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			s := m.NewSocket(kcm.Datagram)
			old := time.Now().Add(time.Second)
			s.SetWriteDeadline(old)
			msg := msgOf(1, 1000)
			errs := make(chan error, 1)
			go func() { errs <- s.Send(msg) }()
			waitSmem(t, m, p.Index(), int64(len(msg))) // its write is under way
			if time.Now().After(old) {
				t.Skip("too slow: the old deadline passed before it moved")
			}
			s.SetWriteDeadline(tc.dl())
			select {
			case <-p.Done():
				t.Fatalf("the psock failed at the socket's old write deadline, moved meanwhile: %v", p.Err())
			case err := <-errs:
				t.Fatalf("send returned %v with its deadline moved away", err)
			case <-time.After(time.Until(old) + 700*time.Millisecond):
			}
		})
	}
}

// TestReview16SendToDeadlineSetWhileBlockedIgnored: SetWriteDeadline
// reaches a write under way only on s.txp (socket.go: p := s.txp.Load();
// p.tx.newDeadline), the psock Send last reserved. SendTo (and
// SendBatchTo) write on the psock given, which they never reserve: a
// SendTo blocked in its own write on a stalled peer ignores a deadline
// set meanwhile, and waits for as long as the peer does not read, though
// SetWriteDeadline says it bounds a write under way, and SendTo that it
// "honours the write deadline". (Likewise for concurrent Sends of one
// socket on two psocks: only one of them is s.txp.)
func TestReview16SendToDeadlineSetWhileBlockedIgnored(t *testing.T) {
	for _, batch := range []bool{false, true} {
		name := "SendTo"
		if batch {
			name = "SendBatchTo"
		}
		t.Run(name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			p, _ := attachStalled(t, m)
			s := m.NewSocket(kcm.Datagram)
			big := msgOf(1, 4<<20)
			errs := make(chan error, 1)
			go func() {
				if batch {
					errs <- s.SendBatchTo([][]byte{big, msgOf(2, 100)}, p)
				} else {
					errs <- s.SendTo(big, p)
				}
			}()
			waitSmem(t, m, p.Index(), int64(len(big)))
			s.SetWriteDeadline(time.Now())
			if err := r16Wait(t, errs, 2*time.Second, name+" blocked in its own write, after its deadline passed"); !r16StoppedOK(err) {
				t.Fatalf("%s: %v, want nil or os.ErrDeadlineExceeded", name, err)
			}
		})
	}
}

// TestReview16CutMessageRetriedUnbalancesSendBuffer: ownStopped queues
// the copy of a message the deadline cut as txEntry{n, s, pinned}, not
// owned (no room taken in the send buffer). When its psock then fails,
// requeueLocked copies it again as an owned entry (enqueueCopy, or the
// backlog's owned: true) without backlog.reserve; finishEntry then
// unreserves bytes that were never reserved. Once the message is written
// elsewhere, Mux.Queued's send (backlog.queued) stays at -len(message)
// instead of 0, and the send buffer admits that much more for good.
func TestReview16CutMessageRetriedUnbalancesSendBuffer(t *testing.T) {
	m := newMux(t, kcm.Config{WriteTimeout: 200 * time.Millisecond})
	dead, s, big, errs := stuckSend(t, m)
	s.SetWriteDeadline(time.Now())
	if err := waitErr(t, errs, "send"); err != nil {
		t.Fatalf("send: %v, want nil", err)
	}
	waitDone(t, dead)
	_, peer := attachPeer(t, m)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readMsg(t, peer); !bytes.Equal(got, big) {
		t.Fatalf("the next psock's peer got %d bytes, want the whole %d-byte message", len(got), len(big))
	}
	// Its writer accounts the message once the write returns.
	limit := time.Now().Add(2 * time.Second)
	for {
		_, send := m.Queued()
		if send == 0 {
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("Mux.Queued send %d with nothing held, want 0", send)
		}
		time.Sleep(time.Millisecond)
	}
}

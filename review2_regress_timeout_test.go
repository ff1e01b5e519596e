package kcm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 3 (assembly deadline, backpressure): a psock paused by a full
// receive queue stops reading. Bytes of the next message it had already
// buffered when it paused must not make it time out while the mux itself
// keeps it from reading: the rest of the message arrived promptly and sits
// in the kernel. The kernel's strparser pauses at a message boundary and
// starts no timer for a message it has not begun.
func TestReview2PausedPsockDoesNotTimeOutArrivedMessage(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 1000, MessageTimeout: 150 * time.Millisecond})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	a, b, c := msgOf(1, 700), msgOf(2, 700), msgOf(3, 700)
	// A, B and half of C in one write: the background reader reads them in
	// one go, queues A and B, and pauses with half of C buffered.
	first := append(append(append([]byte(nil), a...), b...), c[:300]...)
	if _, err := peer.Write(first); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := peer.Write(c[300:]); err != nil { // well within the deadline
		t.Fatal(err)
	}
	// Stay away longer than the deadline: the psock is paused.
	time.Sleep(400 * time.Millisecond)
	for i := uint32(1); i <= 3; i++ {
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2000)
		n, err := s.Recv(buf)
		if err != nil {
			t.Fatalf("message %d: %v (psock err %v, timeouts %d)", i, err, p.Err(), p.Stats().MsgTimeouts)
		}
		if id := checkMsg(t, buf[:n]); id != i {
			t.Fatalf("got %d want %d", id, i)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("psock failed: %v", p.Err())
	default:
	}
}

// Spec 3 (assembly deadline): a message whose bytes all arrived well
// within the deadline must not time out just because no receiver read the
// psock for a while (the psock is idle between two receives of a lone
// receiver and its background reader has not started yet).
func TestReview2IdlePsockDoesNotTimeOutArrivedMessage(t *testing.T) {
	m := newMux(t, kcm.Config{MessageTimeout: 60 * time.Millisecond})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	buf := make([]byte, 4096)
	// A busy exchange: the receiver keeps coming back, so the psock's
	// grace period grows to its maximum.
	deadline := time.Now().Add(1200 * time.Millisecond)
	id := uint32(0)
	for time.Now().Before(deadline) {
		if _, err := peer.Write(msgOf(id, 32)); err != nil {
			t.Fatal(err)
		}
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := s.Recv(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := checkMsg(t, buf[:n]); got != id {
			t.Fatalf("got %d want %d", got, id)
		}
		id++
	}
	// The next message's first half comes with a complete one; the rest
	// follows 5 ms later, while the application is busy for 150 ms.
	a, b := msgOf(id, 32), msgOf(id+1, 1000)
	peer.Write(append(append([]byte(nil), a...), b[:100]...))
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := s.Recv(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkMsg(t, buf[:n])
	time.Sleep(5 * time.Millisecond)
	peer.Write(b[100:])
	time.Sleep(150 * time.Millisecond)
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err = s.Recv(buf)
	if err != nil {
		t.Fatalf("recv: %v (psock err %v, MsgTimeouts %d)", err, p.Err(), p.Stats().MsgTimeouts)
	}
	if got := checkMsg(t, buf[:n]); got != id+1 {
		t.Fatalf("got %d want %d", got, id+1)
	}
	if err := p.Err(); err != nil || errors.Is(err, kcm.ErrMessageTimeout) {
		t.Fatalf("psock err %v", err)
	}
}

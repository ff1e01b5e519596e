package kcm_test

// Review 18: socket write deadlines on the transmit side, third pass.

import (
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// TestReview18DeadlineMissesOwnWriteAfterTxpMoved: SetWriteDeadline
// reaches a Send's write under way only on s.txp (socket.go:
// s.txp.Load().tx.newDeadline) unless the socket ever used SendTo. A
// socket's Send blocked in its own write on psock p1 (its peer stalled)
// shows p1's load; the socket's next Send (another goroutine) finds p2
// less loaded, pickTx reserves p2 (s.txp = p2) and writes there. A
// deadline set then goes to p2 alone: the Send blocked on p1 writes on
// without a deadline and never returns while p1's peer does not read.
func TestReview18DeadlineMissesOwnWriteAfterTxpMoved(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p1, _ := attachStalled(t, m)
	s := m.NewSocket(kcm.Datagram)
	big := msgOf(1, 4<<20)
	errs := make(chan error, 1)
	go func() { errs <- s.Send(big) }()
	waitSmem(t, m, p1.Index(), int64(len(big)))
	_, peer2 := attachPeer(t, m)
	if err := s.Send(msgOf(2, 100)); err != nil { // reserves p2: p1 is loaded
		t.Fatal(err)
	}
	peer2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := checkMsg(t, readMsg(t, peer2)); got != 2 {
		t.Fatalf("p2's peer got message %d, want 2", got)
	}
	s.SetWriteDeadline(time.Now())
	if err := r16Wait(t, errs, 2*time.Second, "Send blocked in its own write on p1, after its deadline passed"); !r16StoppedOK(err) {
		t.Fatalf("Send: %v, want nil or os.ErrDeadlineExceeded", err)
	}
}

package kcm_test

import (
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// r17Within returns what a call started earlier sends on ch, failing the
// test if it does not come within d.
func r17Within(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s still blocked %v after its write deadline passed", what, d)
		return nil
	}
}

// stalledQueueWrite attaches to m a TCP psock whose peer stops reading,
// starts a's Send of m1 (256 KiB), which a writes itself, lets queue put
// messages behind it, lets the peer take m1 and no more, and waits until
// a's send writes the queue, which the connection cannot take. It returns
// the peer and a's error channel.
func stalledQueueWrite(t *testing.T, m *kcm.Mux, a *kcm.Socket, queue func()) (net.Conn, chan error) {
	t.Helper()
	c, peer := stalledPair(t)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	m1 := msgOf(1, 256<<10)
	errA := make(chan error, 1)
	go func() { errA <- a.Send(m1) }()
	// a writes m1 itself (the psock's load is m1 while it writes).
	waitProc(t, m, func(string) bool { return a21Field(m, "psock-0", 8) == strconv.Itoa(len(m1)) })
	queue()
	if _, err := io.ReadFull(peer, make([]byte, len(m1))); err != nil {
		t.Fatal(err)
	}
	waitProc(t, m, func(string) bool {
		return a21Field(m, "psock-0", 3) == "1" && a21Field(m, "psock-0", 7) == "0"
	})
	return peer, errA
}

// r17TakenWrite is stalledQueueWrite with each of the senders' uncopied
// 900 KiB messages (ids 2, 3, ...) queued: every sender waits taken. It
// returns the peer and the senders' error channels.
func r17TakenWrite(t *testing.T, m *kcm.Mux, a *kcm.Socket, senders ...*kcm.Socket) (net.Conn, chan error, []chan error) {
	t.Helper()
	var errs []chan error
	peer, errA := stalledQueueWrite(t, m, a, func() {
		for i, s := range senders {
			ch := make(chan error, 1)
			errs = append(errs, ch)
			msg := msgOf(uint32(2+i), 900<<10)
			go func() { ch <- s.Send(msg) }()
			waitSendQ(t, m, s, 1)
		}
	})
	return peer, errA, errs
}

// TestReview17SecondTakenKickDuringFinishKicked: two senders, b and c,
// wait uncopied in one queue write to a stalled peer. b's deadline passes:
// kickTaken interrupts the write, handKicked copies b's message and lets b
// go, and finishKicked goes on writing the rest. Then c's deadline passes:
// kickTaken finds t.inflight still holding c (handKicked does not clear
// it) and interrupts finishKicked's write the same way, but finishKicked
// does not hand a kicked write on (no handKicked): completeQueue sees a
// close-interrupted write, and, stopped inside a message, fails the psock
// with ErrMidMessage (c gets errRestart, then its deadline); stopped
// between two, it puts the messages back and c, blocked in <-w.done with
// no second kick, waits for the stalled write.
func TestReview17SecondTakenKickDuringFinishKicked(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a, b, c := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	peer, _, errs := r17TakenWrite(t, m, a, b, c)
	b.SetWriteDeadline(time.Now())
	if err := r17Within(t, errs[0], 2*time.Second, "b's Send"); err != nil {
		t.Fatalf("b's Send returned %v, want nil (its message copied)", err)
	}
	// finishKicked writes the rest; c's deadline passes in turn.
	c.SetWriteDeadline(time.Now())
	if err := r17Within(t, errs[1], 2*time.Second, "c's Send"); err != nil {
		t.Fatalf("c's Send returned %v, want nil (its message copied); stats %+v", err, m.Stats())
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, id := range []uint32{2, 3} {
		if got := checkMsg(t, readMsg(t, peer)); got != id {
			t.Fatalf("peer got message %d, want %d", got, id)
		}
	}
	waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
	if st := m.Stats(); st.Psocks.TxAborts != 0 || st.TxRetries != 0 {
		t.Fatalf("TxAborts %d, TxRetries %d: want 0 (no psock failed)", st.Psocks.TxAborts, st.TxRetries)
	}
}

// TestReview17FlusherKickThenTakenKick: the same through the flusher's
// deadline: a's deadline, set while its send writes the queue that holds
// b's uncopied message, hands the write to finishKicked without copying
// b's (b's deadline had not passed). b's deadline then
// passes: kickTaken interrupts finishKicked's write, which fails the
// psock (or puts the queue back under a b that waits for ever).
func TestReview17FlusherKickThenTakenKick(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a, b := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	peer, errA, errs := r17TakenWrite(t, m, a, b)
	a.SetWriteDeadline(time.Now())
	if err := r17Within(t, errA, 2*time.Second, "a's Send"); err != nil {
		t.Fatalf("a's Send returned %v, want nil (its message written)", err)
	}
	b.SetWriteDeadline(time.Now())
	if err := r17Within(t, errs[0], 2*time.Second, "b's Send"); err != nil {
		t.Fatalf("b's Send returned %v, want nil (its message copied); stats %+v", err, m.Stats())
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := checkMsg(t, readMsg(t, peer)); got != 2 {
		t.Fatalf("peer got message %d, want 2", got)
	}
	waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
	if st := m.Stats(); st.Psocks.TxAborts != 0 || st.TxRetries != 0 {
		t.Fatalf("TxAborts %d, TxRetries %d: want 0 (no psock failed)", st.Psocks.TxAborts, st.TxRetries)
	}
}

// TestReview17BacklogWaiterTakenNotKicked: a sender whose uncopied
// message waited in the backlog (the send buffer full, no psock) and went
// to a psock attached meanwhile (backlog.flushLocked), whose queue write
// to a stalled peer took it, is not let go at its write deadline: its
// txWaiter's p is nil (set only by queueLocked), so wait never calls
// kickTaken and returns <-w.done, waiting for the stalled write, unlike
// a sender queued on the psock directly.
func TestReview17BacklogWaiterTakenNotKicked(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 64 << 10})
	a, b := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	if err := a.Send(msgOf(1, 60<<10)); err != nil { // copied into the backlog: the send buffer is full
		t.Fatal(err)
	}
	errB := make(chan error, 1)
	go func() { errB <- b.Send(msgOf(2, 900<<10)) }() // waits uncopied in the backlog
	waitSendQ(t, m, b, 1)
	c, peer := tcpPair(t)
	c.(*net.TCPConn).SetWriteBuffer(32 << 10)
	peer.(*net.TCPConn).SetReadBuffer(32 << 10)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	// The backlog goes to the psock, whose queue write takes both.
	waitProc(t, m, func(string) bool { return a21Field(m, "psock-0", 7) == "0" && a21Field(m, "psock-0", 8) != "0" })
	b.SetWriteDeadline(time.Now())
	if err := r17Within(t, errB, 2*time.Second, "b's Send"); err != nil {
		t.Fatalf("b's Send returned %v, want nil (its message copied)", err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, id := range []uint32{1, 2} {
		if got := checkMsg(t, readMsg(t, peer)); got != id {
			t.Fatalf("peer got message %d, want %d", got, id)
		}
	}
	waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
}

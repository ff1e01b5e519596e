package kcm

// Review 18: socket write deadlines on the transmit side, third pass.

import (
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// TestReview18ClearedDeadlineRaceLeavesStaleOne: a deadline set while a
// Send's own plain write is under way is put on the connection by
// newDeadline (dlArmed), to be taken off by flushQueued when the writer
// lets go, but its idle path looks only at t.writer.wdl. Clearing the
// deadline (SetWriteDeadline(time.Time{})) stores wdl = 0 first and calls
// newDeadline after: a writer that lets go in between takes the idle
// path (wdl is 0) and leaves the socket's deadline on the connection,
// dlArmed still set; newDeadline then finds nobody writing and does
// nothing. The next plain write on the psock, of any socket with no
// deadline, fails with i/o timeout, and the psock fails. Driven step by
// step: the write completes as the deadline is set, then the clearing
// SetWriteDeadline's store, the writer's flushQueued, its newDeadline.
func TestReview18ClearedDeadlineRaceLeavesStaleOne(t *testing.T) {
	t.Skip("BUG: a deadline cleared as its own write completes stays on the connection (flushQueued idle path reads wdl == 0, dlArmed left set) and fails the psock later")
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	msg := make([]byte, 100)
	binary.BigEndian.PutUint32(msg, 96)
	if err := s.Send(msg); err != nil { // reserves p (s.txp)
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !p.tx.claim(s) { // s's Send writes its message, no deadline: plain write
		t.Fatal("psock busy")
	}
	s.SetWriteDeadline(time.Now()) // as the write completes: newDeadline arms it
	// SetWriteDeadline(time.Time{}): its store...
	s.wdl.Store(0)
	// ...the writer lets go (writeOwn: n == len(b))...
	m.flushQueued(p, msgCount{})
	// ...and the rest of it.
	s.kickSenders()
	p.tx.newDeadline(p, s, time.Time{})

	if err := s.Send(msg); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadFull(peer, got)
	st := m.Stats()
	if err != nil || st.Psocks.TxAborts != 0 || p.Err() != nil {
		t.Fatalf("a Send with no deadline after the socket's deadline was cleared: peer read %v, TxAborts %d, psock error %v (want the message, no abort, no failure)", err, st.Psocks.TxAborts, p.Err())
	}
}

package kcm

// Review 18: socket write deadlines on the transmit side, third pass.

import (
	"encoding/binary"
	"io"
	"os"
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

// TestReview18PlainWriteDeadlineMovedAsItFires: a Send that found its
// psock idle with no deadline writes with a plain conn.Write (writeOwn),
// which has no goOn: a deadline set meanwhile (newDeadline puts it on the
// connection) stops it with i/o timeout. If the socket moves its deadline
// later (or clears it) after the connection's fired but before writeOwn
// asks ownTimedOut, ownExpired is false, the timeout counts as a write
// error, and the psock fails and leaves the mux, its stream intact, though
// the stop was the socket's own deadline (writeTimed's goOn re-arms and
// goes on in the same case). Now writeOwn goes on (writeOn). Driven step
// by step: the writer holds p, the deadline fires mid-message, is moved
// an hour later, then writeOwn's tail runs.
func TestReview18PlainWriteDeadlineMovedAsItFires(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	msg := make([]byte, 100)
	binary.BigEndian.PutUint32(msg, 96)
	if err := s.Send(msg); err != nil { // reserves p (s.txp)
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(peer, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	if !p.tx.claim(s) { // writeOwn: plain p.conn.Write(b), s had no deadline
		t.Fatal("psock busy")
	}
	s.SetWriteDeadline(time.Now())                // fires: the write returns i/o timeout, 40 of 100 bytes in
	s.SetWriteDeadline(time.Now().Add(time.Hour)) // moved later just then
	// writeOwn goes on with the rest (writeOn): the deadline that stopped
	// it was moved, and nothing else asked the write to stop.
	b := make([]byte, 100)
	binary.BigEndian.PutUint32(b, 96)
	n, err := p.writeOn(b, 40, os.ErrDeadlineExceeded)
	if n != len(b) || err != nil {
		t.Fatalf("writeOn: %d bytes, %v; want the whole %d, no error", n, err, len(b))
	}
	m.flushQueued(p, msgCount{1, uint64(len(b))})
	if p.Err() != nil {
		t.Fatalf("the psock failed (%v) for a write its socket's own deadline stopped", p.Err())
	}
}

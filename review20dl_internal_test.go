package kcm

// Review 20: socket write deadlines with batches, held messages,
// WriteTimeout and TLS.

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
)

// TestReview20TimedWriteDeadlineMovedAsItFires: a Send whose socket has a
// write deadline writes its own message with writeTimed (also writev and
// the coalesced path of a batch), which asks goOn what to do with an
// i/o timeout. If the socket's deadline fired on the connection with no
// byte of progress (a peer that reads slowly) and the socket moved it
// later, or cleared it, just then (before goOn looks), goOn answers
// "stop": cleared, ownDeadline is false and it falls to `return n > 0`;
// moved later under Config.WriteTimeout, p.tx.timed sends it to the same
// `return n > 0`, though WriteTimeout's own deadline (t.wtoAt) is an hour
// away. ownTimedOut then says no (not expired), and writeOwn fails the
// psock (ownWriteFailed): a healthy connection leaves the mux, its
// stream intact, for a deadline that no longer applies. writeOn, which
// review 18 added for the same race, covers only the plain (untimed)
// conn.Write. Driven step by step as writeTimed runs: armWrite, the
// deadline fires (set to now), the write returns 0 bytes, the deadline
// moves, goOn.
func TestReview20TimedWriteDeadlineMovedAsItFires(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		moved func() time.Time
	}{
		{"cleared", Config{}, func() time.Time { return time.Time{} }},
		{"laterWithWriteTimeout", Config{WriteTimeout: time.Hour}, func() time.Time { return time.Now().Add(time.Hour) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, p, _ := attachedPsock(t, tc.cfg)
			s := m.NewSocket(Datagram)
			s.SetWriteDeadline(time.Now().Add(time.Hour))
			b := make([]byte, 100)
			binary.BigEndian.PutUint32(b, 96)
			if !p.tx.claim(s) { // writeOwn with s.wdl set: writeTimed
				t.Fatal("psock busy")
			}
			armed := p.armWrite()
			s.SetWriteDeadline(time.Now()) // newDeadline: fires on the connection
			n, err := p.conn.Write(b)      // the write under way returns: no progress
			if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write: %d, %v; want 0, i/o timeout", n, err)
			}
			s.SetWriteDeadline(tc.moved()) // moved just then
			if !p.goOn(armed, n, err) {
				// writeTimed returns (0, err); writeOwn's tail:
				if p.ownTimedOut(err) {
					t.Fatal("ownTimedOut after the deadline moved")
				}
				m.ownWriteFailed(p, s, 1, false, err)
				t.Fatalf("goOn stopped the write; the psock failed: %v (want the write to go on: its socket's deadline moved, WriteTimeout has not passed)", p.Err())
			}
			if _, err := p.writeTimed(b); err != nil {
				t.Fatal(err)
			}
			m.flushQueued(p, msgCount{1, uint64(len(b))})
			if p.Err() != nil {
				t.Fatal(p.Err())
			}
		})
	}
}

// TestReview20BatchDeadlineMovedAfterGoOn: the same race one step later,
// on writeBatch's writev path (and any timed write): goOn sees the
// socket's deadline expired and stops the write (0 bytes in); the socket
// moves its deadline later before transmitBatch asks ownTimedOut, which
// looks at the deadline again, now not expired: the timeout counts as a
// write error and the psock fails, its stream intact. writeOn (review 18)
// re-checks only after the plain conn.Write; writeBatch has no such step.
// Driven step by step: the deadline passes, writeBatch returns, the
// deadline moves, transmitBatch's tail.
func TestReview20BatchDeadlineMovedAfterGoOn(t *testing.T) {
	m, p, _ := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	msgs := make([][]byte, 2)
	for i := range msgs {
		msgs[i] = make([]byte, 4096) // writev path
		binary.BigEndian.PutUint32(msgs[i], 4092)
	}
	if !p.tx.claim(s) { // transmitBatch
		t.Fatal("psock busy")
	}
	s.SetWriteDeadline(time.Now())
	done, cut, err := p.writeBatch(msgs)
	if done != 0 || cut || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writeBatch: %d, %v, %v; want 0, false, i/o timeout", done, cut, err)
	}
	s.SetWriteDeadline(time.Now().Add(time.Hour)) // moved just then
	if p.ownTimedOut(err) {
		n, err := m.batchStopped(p, s, msgs, done, false)
		if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("batchStopped: %d, %v", n, err)
		}
		return
	}
	m.ownWriteFailed(p, s, len(msgs), cut, err)
	t.Fatalf("the psock failed (%v) for a write its socket's own deadline stopped, intact (want ErrDeadlineExceeded, nothing sent, psock kept)", p.Err())
}

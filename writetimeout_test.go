package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A write stuck on a peer that stopped reading fails its psock after
// Config.WriteTimeout, and the message restarts from its first byte on
// another psock.
func TestWriteTimeoutMovesMessageOffDeadPeer(t *testing.T) {
	m := newMux(t, kcm.Config{WriteTimeout: 300 * time.Millisecond})
	dead, _, big, errs := stuckSend(t, m)
	_, live := attachPeer(t, m)
	read := make(chan []byte, 1)
	go func() { // the live peer reads at once, so its psock's write completes in time
		b, err := readFrame(live)
		if err != nil {
			t.Errorf("live peer: %v", err)
		}
		read <- b
	}()
	if err := waitDone(t, dead); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled psock left with %v, want a write deadline error", err)
	}
	if err := waitErr(t, errs, "send"); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := <-read
	if id := checkMsg(t, got); id != 7 || len(got) != len(big) {
		t.Fatalf("the live peer got message %d of %d bytes, want 7 whole", id, len(got))
	}
	if st := m.Stats(); st.TxRetries != 1 {
		t.Fatalf("TxRetries %d, want 1", st.TxRetries)
	}
}

// Writes that complete in time are not affected: request/response traffic
// over a mux with a short WriteTimeout keeps its psock.
func TestWriteTimeoutSparesWritesInTime(t *testing.T) {
	m := newMux(t, kcm.Config{WriteTimeout: 200 * time.Millisecond})
	p, peer := attachPeer(t, m)
	s := m.NewSocket(kcm.Datagram)
	for i := range 30 {
		if err := s.Send(msgOf(uint32(i), 100)); err != nil {
			t.Fatal(err)
		}
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
			t.Fatalf("peer got %d, want %d", id, i)
		}
		if i%10 == 0 {
			// An idle gap longer than the timeout: the last write's
			// deadline passes with no write pending, and the next write
			// gets a fresh one.
			time.Sleep(250 * time.Millisecond)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("psock left: %v", p.Err())
	default:
	}
}

// A closing socket and an Unattach still interrupt a write at once when a
// long WriteTimeout is set: the timeout does not replace their deadline.
func TestWriteTimeoutKeepsInterrupts(t *testing.T) {
	for _, how := range []string{"close", "unattach"} {
		t.Run(how, func(t *testing.T) {
			m := newMux(t, kcm.Config{WriteTimeout: time.Minute})
			p, peer := attachStalled(t, m)
			s := m.NewSocket(kcm.Datagram)
			errs := make(chan error, 1)
			go func() { errs <- s.Send(msgOf(1, 4<<20)) }()
			waitSmem(t, m, p.Index(), 4<<20)
			// Smem counts the message before its write begins: its first
			// byte on the wire says the write is under way. The rest of
			// the 4 MiB stays stuck behind the peer's small buffer.
			if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			if how == "close" {
				s.Close()
				if err := waitErr(t, errs, "send"); !errors.Is(err, kcm.ErrClosed) {
					t.Fatalf("send after close: %v", err)
				}
				return
			}
			done := make(chan error, 1)
			go func() { _, err := p.Unattach(); done <- err }()
			if err := waitErr(t, done, "unattach"); !errors.Is(err, kcm.ErrMidMessage) {
				t.Fatalf("unattach: %v, want ErrMidMessage", err)
			}
			s.Close() // the message went to the backlog: no psock is left
			waitErr(t, errs, "send")
		})
	}
}

// A send whose write deadline passes while its message is being written
// (the stream is inside the message) returns nil: the rest of the message
// is copied and the mux finishes it. Here the psock fails by WriteTimeout
// first, so the message goes out again, whole, on the next psock, as any
// copied message would: a retry, and an abort on the failed psock.
func TestWriteDeadlineMidMessageLeavesTheRestToTheMux(t *testing.T) {
	m := newMux(t, kcm.Config{WriteTimeout: 200 * time.Millisecond})
	dead, s, big, errs := stuckSend(t, m)
	s.SetWriteDeadline(time.Now()) // a message being written still goes out whole
	if err := waitErr(t, errs, "send"); err != nil {
		t.Fatalf("send: %v, want nil: its message is the mux's to finish", err)
	}
	if err := waitDone(t, dead); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled psock left with %v, want a write deadline error", err)
	}
	if a := dead.Stats().TxAborts; a != 1 {
		t.Errorf("TxAborts %d, want 1", a)
	}
	_, peer := attachPeer(t, m)
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := readMsg(t, peer); !bytes.Equal(got, big) {
		t.Fatalf("the next psock's peer got %d bytes, want the whole %d-byte message", len(got), len(big))
	}
	if r := m.Stats().TxRetries; r != 1 {
		t.Errorf("TxRetries %d, want 1", r)
	}
}

// stuckSend attaches to m a psock whose peer never reads and returns it,
// with a socket whose Send of big (message 7, 4 MiB) is stuck in its write
// on it, and the channel that Send's error will come on.
func stuckSend(t *testing.T, m *kcm.Mux) (dead *kcm.Psock, s *kcm.Socket, big []byte, errs chan error) {
	t.Helper()
	dead, _ = attachStalled(t, m)
	s = m.NewSocket(kcm.Datagram)
	big = msgOf(7, 4<<20)
	errs = make(chan error, 1)
	go func() { errs <- s.Send(big) }()
	waitSmem(t, m, dead.Index(), 4<<20)
	return dead, s, big, errs
}

// A sender waiting uncopied in the backlog (no psock, the send buffer too
// small for a copy) whose message a psock's attach then took, and whose
// write to a peer that does not read is stuck, is let go at its write
// deadline: its message is copied and goes out whole once the peer reads.
func TestWriteDeadlineReleasesSenderTakenFromBacklog(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 64 << 10})
	s := m.NewSocket(kcm.Datagram)
	// The first message is copied into the empty send buffer; the second,
	// far more than the connection's buffers, waits uncopied.
	first, msg := msgOf(0, 32<<10), msgOf(1, 16<<20)
	if err := s.Send(first); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { errs <- s.Send(msg) }()
	waitSendQ(t, m, s, 2)
	p, peer := attachStalled(t, m)
	waitSmem(t, m, p.Index(), int64(len(first)+len(msg)))
	select {
	case err := <-errs:
		t.Fatalf("send returned %v before its deadline: it did not wait uncopied", err)
	default:
	}
	s.SetWriteDeadline(time.Now())
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("send: %v, want nil: its message is copied, the mux's to finish", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("send still blocked 5 s after its write deadline passed")
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for want := range uint32(2) {
		if id := checkMsg(t, readMsg(t, peer)); id != want {
			t.Fatalf("peer got message %d, want %d", id, want)
		}
	}
	waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
}

// A deadline set while a send writes its own message with none (a plain
// write, blocked on a peer that does not read) stops it inside the
// message: the send returns nil, and the message, copied, goes out whole
// once the peer reads, on the same psock (the deadline that stopped the
// write is not left on the connection for the copy's write).
func TestWriteDeadlineSetDuringPlainWriteFinishesTheMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachStalled(t, m)
	msg := msgOf(1, 4<<20)
	errs := make(chan error, 1)
	go func() { errs <- s.Send(msg) }()
	waitSmem(t, m, p.Index(), int64(len(msg)))
	s.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if err := waitErr(t, errs, "send"); err != nil {
		t.Fatalf("send: %v, want nil: its message is copied, the mux's to finish", err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if id := checkMsg(t, readMsg(t, peer)); id != 1 {
		t.Fatalf("peer got message %d, want 1", id)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("psock failed: %v", err)
	}
}

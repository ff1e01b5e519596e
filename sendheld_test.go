package kcm_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A closed socket takes nothing, whatever the flags: a piece sent with
// More or a message held with Batch after Close fails like a plain send.
func TestHeldSendAfterCloseFails(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	attachPeer(t, m)
	s.Close()
	for _, f := range []kcm.SendFlags{kcm.More, kcm.Batch, kcm.More | kcm.Batch} {
		if err := s.SendMsg(msgOf(1, 10), f); !errors.Is(err, kcm.ErrClosed) {
			t.Fatalf("SendMsg with flags %d on a closed socket: %v", f, err)
		}
	}
}

// A send refused because the write deadline passed has no effect, like a
// net.Conn Write past its deadline: the message open with More stays open,
// and once the deadline is lifted the next call ends it whole. Before, the
// refused call threw the open part away, and the retry sent its last
// piece alone, as if it were a whole message.
func TestExpiredDeadlineKeepsOpenMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	msg := msgOf(5, 300)
	if err := s.SendMsg(msg[:100], kcm.More); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	for _, f := range []kcm.SendFlags{kcm.More, 0, kcm.Batch} {
		err := s.SendMsg(msg[100:200], f)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
			t.Fatalf("SendMsg with flags %d past the deadline: %v", f, err)
		}
	}
	s.SetWriteDeadline(time.Time{})
	if err := s.SendMsg(msg[100:], 0); err != nil {
		t.Fatal(err)
	}
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatalf("peer got %d bytes, want the whole %d-byte message", len(got), len(msg))
	}
	if st := s.Stats(); st.TxMsgs != 1 || st.TxBytes != uint64(len(msg)) {
		t.Fatalf("socket stats %+v", st)
	}
}

// Likewise a batch survives a send refused at its deadline: the held
// messages go out, in order, with the next send that ends the batch.
func TestExpiredDeadlineKeepsBatch(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for i := 0; i < 2; i++ {
		if err := s.SendMsg(msgOf(uint32(i), 40), kcm.Batch); err != nil {
			t.Fatal(err)
		}
	}
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := s.SendMsg(msgOf(2, 40), 0); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("send past the deadline: %v", err)
	}
	if err := s.Send(nil); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("batch end past the deadline: %v", err)
	}
	s.SetWriteDeadline(time.Time{})
	if err := s.SendMsg(msgOf(2, 40), 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
			t.Fatalf("message %d: got %d", i, id)
		}
	}
	if st := s.Stats(); st.TxMsgs != 3 {
		t.Fatalf("socket stats %+v", st)
	}
}

// writeHeld returns a mux whose psock p (its peer's end: peer) holds the
// write of message a, which a socket sends (its error goes to errA), until
// sc.release is closed: the senders that come next queue behind it.
func writeHeld(t *testing.T) (m *kcm.Mux, p *kcm.Psock, peer net.Conn, sc *stepConn, a []byte, errA chan error) {
	t.Helper()
	m = newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	sc = newStepConn(c, 1)
	p, err := m.Attach(sc, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	sA := m.NewSocket(kcm.Datagram)
	a, errA = msgOf(1, 100), make(chan error, 1)
	go func() { errA <- sA.Send(a) }()
	<-sc.entered // sA writes its own message, held
	return m, p, peer, sc, a, errA
}

// A batch that fails part way (here: its last message waits uncopied behind
// another socket's write and the deadline passes) has sent the messages
// before the failing one: they reach the peer and count in the socket's
// TxMsgs and TxBytes, as the psock counts them. Before, the socket counted
// none of them.
func TestPartlyFailedBatchCountsWhatWentOut(t *testing.T) {
	m, p, peer, sc, a, errA := writeHeld(t)
	sB := m.NewSocket(kcm.Datagram)
	errB := make(chan error, 1)
	batch := [][]byte{msgOf(2, 100), msgOf(3, 200), msgOf(4, 200<<10)}
	go func() { errB <- sB.SendBatch(batch) }()
	waitSmem(t, m, p.Index(), int64(len(a)+len(batch[0])+len(batch[1])+len(batch[2])))
	sB.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := waitErr(t, errB, "SendBatch past its deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendBatch: %v", err)
	}
	close(sc.release)
	if err := waitErr(t, errA, "sA's send"); err != nil {
		t.Fatal(err)
	}
	readIDs(t, peer, 1, 2, 3)
	want := uint64(len(batch[0]) + len(batch[1]))
	if st := sB.Stats(); st.TxMsgs != 2 || st.TxBytes != want {
		t.Fatalf("sB stats %+v, want 2 messages, %d bytes", st, want)
	}
}

// The same holds when the call that ends a message fails after waiting:
// the message stays open without that call's bytes, so repeating the call
// sends the message whole.
func TestDeadlineWhileEndingKeepsOpenMessage(t *testing.T) {
	m, p, peer, sc, a, errA := writeHeld(t)
	sB := m.NewSocket(kcm.SeqPacket)
	errB := make(chan error, 1)
	// msg is too large to copy: its sender waits in the queue.
	held, msg := msgOf(2, 50), msgOf(3, 200<<10)
	if err := sB.SendMsg(held, kcm.Batch); err != nil {
		t.Fatal(err)
	}
	if err := sB.SendMsg(msg[:10], kcm.More); err != nil {
		t.Fatal(err)
	}
	go func() { errB <- sB.SendMsg(msg[10:], 0) }()
	waitSmem(t, m, p.Index(), int64(len(a)+len(held)+len(msg)))
	sB.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := waitErr(t, errB, "SendMsg past its deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendMsg: %v", err)
	}
	close(sc.release)
	if err := waitErr(t, errA, "sA's send"); err != nil {
		t.Fatal(err)
	}
	sB.SetWriteDeadline(time.Time{})
	if err := sB.SendMsg(msg[10:], 0); err != nil {
		t.Fatal(err)
	}
	readIDs(t, peer, 1, 2)
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatalf("peer got %d bytes, want the whole %d-byte message", len(got), len(msg))
	}
	if st := sB.Stats(); st.TxMsgs != 2 || st.TxBytes != uint64(len(held)+len(msg)) {
		t.Fatalf("sB stats %+v", st)
	}
}

// SendBatch is a send without Batch, like sendmmsg's last message: it
// writes the messages held with Batch before its own, and its first
// message ends one open with More. Before, it left both held and its
// messages overtook the ones the socket had sent first.
func TestSendBatchEndsHeldMessages(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	if err := s.SendMsg(msgOf(1, 30), kcm.Batch); err != nil {
		t.Fatal(err)
	}
	open := msgOf(2, 40)
	if err := s.SendMsg(open[:20], kcm.More); err != nil {
		t.Fatal(err)
	}
	if err := s.SendBatch([][]byte{open[20:], nil, msgOf(3, 50)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(msgOf(4, 60)); err != nil {
		t.Fatal(err)
	}
	readIDs(t, peer, 1, 2, 3, 4)
	if st := s.Stats(); st.TxMsgs != 4 {
		t.Fatalf("socket stats %+v", st)
	}
}

// A zero-length send is a no-op on an open socket only: after Close it
// fails like any send (SendTo and SendBatch already did), and Write of
// nothing on a closed socket reports it, as a closed net.Conn does.
func TestZeroLengthSendAfterCloseFails(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, _ := attachPeer(t, m)
	if err := s.Send(nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Send(nil); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Send(nil) on a closed socket: %v", err)
	}
	if _, err := s.Write(nil); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Write(nil) on a closed socket: %v", err)
	}
	if err := s.SendTo(nil, p); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("SendTo(nil) on a closed socket: %v", err)
	}
	if err := s.SendBatch(nil); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("SendBatch(nil) on a closed socket: %v", err)
	}
}

// The socket's other calls do not wait for a call that ends held messages
// while it writes (or waits to): here a Batch and a More go through while
// the ending call waits, and when that call fails at its deadline, what
// it did not send is held again before what they held, as if they had
// come after it. The retry sends the batch in order, and the message open
// with More whole: its first piece, the piece added meanwhile, the last.
func TestHeldCallsDuringEndingCall(t *testing.T) {
	m, p, peer, sc, a, errA := writeHeld(t)
	sB := m.NewSocket(kcm.SeqPacket)
	held, held2 := msgOf(2, 50), msgOf(4, 60)
	msg := msgOf(3, 200<<10) // too large to copy: the ending call waits in the queue
	p1, p2, p3 := msg[:10], msg[10:20], msg[20:]
	if err := sB.SendMsg(held, kcm.Batch); err != nil {
		t.Fatal(err)
	}
	if err := sB.SendMsg(p1, kcm.More); err != nil {
		t.Fatal(err)
	}
	errB := make(chan error, 1)
	go func() { errB <- sB.SendMsg(p3, 0) }()
	waitSmem(t, m, p.Index(), int64(len(a)+len(held)+len(p1)+len(p3)))
	for _, c := range []struct {
		b     []byte
		flags kcm.SendFlags
	}{{held2, kcm.Batch}, {p2, kcm.More}} {
		if err := cfDo(t, 2*time.Second, "a held send during the ending call", func() error { return sB.SendMsg(c.b, c.flags) }); err != nil {
			t.Fatal(err)
		}
	}
	sB.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := waitErr(t, errB, "the ending call past its deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ending call: %v", err)
	}
	close(sc.release)
	if err := waitErr(t, errA, "sA's send"); err != nil {
		t.Fatal(err)
	}
	sB.SetWriteDeadline(time.Time{})
	if err := sB.SendMsg(p3, 0); err != nil {
		t.Fatal(err)
	}
	readIDs(t, peer, 1, 2, 4)
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatalf("peer got %d bytes, want the whole %d-byte message", len(got), len(msg))
	}
}

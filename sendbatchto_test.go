package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// SendBatchTo puts a batch for an idle psock in one write, on that psock
// alone, in order; empty messages are skipped.
func TestSendBatchToOneWriteOnItsPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	cc := &writeCounter{Conn: c}
	p, err := m.Attach(cc, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := attachPeer(t, m)
	s := m.NewSocket(kcm.Datagram)
	var batch [][]byte
	for i := range 10 {
		batch = append(batch, msgOf(uint32(i), 16+i))
		if i == 4 {
			batch = append(batch, nil)
		}
	}
	if err := s.SendBatchTo(batch, p); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 10 {
		b := readMsg(t, peer)
		if id := checkMsg(t, b); id != uint32(i) {
			t.Fatalf("message %d is %d: out of order", i, id)
		}
	}
	if n := cc.writes.Load(); n != 1 {
		t.Errorf("%d writes for one batch to an idle psock, want 1", n)
	}
	if st := p.Stats(); st.TxMsgs != 10 {
		t.Errorf("psock TxMsgs %d, want 10", st.TxMsgs)
	}
	if st := other.Stats(); st.TxMsgs != 0 {
		t.Errorf("the other psock wrote %d messages", st.TxMsgs)
	}
	if st := s.Stats(); st.TxMsgs != 10 {
		t.Errorf("socket TxMsgs %d, want 10", st.TxMsgs)
	}
}

// A batch for a busy psock waits in its queue, behind what is being
// written, and goes out in order once the peer reads.
func TestSendBatchToBusyPsockQueuesInOrder(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer := attachStalled(t, m)
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	big := msgOf(100, 4<<20)
	errs := stuckSendTo(t, m, sA, p, big)
	batch := [][]byte{msgOf(1, 20), msgOf(2, 30), msgOf(3, 40)}
	if err := sB.SendBatchTo(batch, p); err != nil {
		t.Fatalf("SendBatchTo on a busy psock: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b := readMsg(t, peer); !bytes.Equal(b, big) {
		t.Fatal("the message being written did not come first, whole")
	}
	for _, want := range batch {
		if b := readMsg(t, peer); !bytes.Equal(b, want) {
			t.Fatalf("got message %d, want %d", checkMsg(t, b), checkMsg(t, want))
		}
	}
	if err := waitErr(t, errs, "SendTo"); err != nil {
		t.Fatal(err)
	}
}

// SendBatchTo fails as SendTo does: a psock not attached to the socket's
// mux, or one that failed, is not replaced, and nothing is sent; a closed
// socket sends nothing.
func TestSendBatchToErrors(t *testing.T) {
	m := newMux(t, kcm.Config{})
	other := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	foreign, _ := attachPeer(t, other)
	failed, peer := attachPeer(t, m)
	live, _ := attachPeer(t, m)
	peer.Close()
	if err := waitDone(t, failed); !errors.Is(err, io.EOF) {
		t.Fatalf("psock error %v, want EOF", err)
	}
	batch := [][]byte{msgOf(1, 10), msgOf(2, 10)}
	for name, p := range map[string]*kcm.Psock{"nil": nil, "another mux's": foreign, "failed": failed} {
		if err := s.SendBatchTo(batch, p); !errors.Is(err, kcm.ErrNotAttached) {
			t.Errorf("%s psock: %v, want ErrNotAttached", name, err)
		}
	}
	if err := s.SendBatchTo(batch, failed); !errors.Is(err, io.EOF) {
		t.Errorf("failed psock: %v, want its cause (EOF) too", err)
	}
	if err := s.SendBatchTo([][]byte{nil, {}}, nil); err != nil {
		t.Errorf("a batch of empty messages: %v, want nil (nothing to send)", err)
	}
	s.Close()
	if err := s.SendBatchTo(batch, live); !errors.Is(err, kcm.ErrClosed) {
		t.Errorf("closed socket: %v, want ErrClosed", err)
	}
	if st := s.Stats(); st.TxMsgs != 0 {
		t.Errorf("TxMsgs %d after failed sends", st.TxMsgs)
	}
	if st := live.Stats(); st.TxMsgs != 0 {
		t.Errorf("the live psock wrote %d messages", st.TxMsgs)
	}
}

// failingConn fails every write with errWrite.
type failingConn struct{ net.Conn }

var errWrite = errors.New("write refused")

func (failingConn) Write([]byte) (int, error) { return 0, errWrite }

// A batch whose write fails is lost with its psock, not restarted on
// another: SendBatchTo returns the psock's failure, and TxAborts counts
// the batch.
func TestSendBatchToWriteFailure(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	p, err := m.Attach(failingConn{c}, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	live, _ := attachPeer(t, m)
	s := m.NewSocket(kcm.Datagram)
	err = s.SendBatchTo([][]byte{msgOf(1, 10), msgOf(2, 10), msgOf(3, 10)}, p)
	if !errors.Is(err, kcm.ErrNotAttached) || !errors.Is(err, errWrite) {
		t.Fatalf("SendBatchTo: %v, want ErrNotAttached caused by the write error", err)
	}
	if err := waitDone(t, p); !errors.Is(err, errWrite) {
		t.Fatalf("psock error %v", err)
	}
	if st := p.Stats(); st.TxAborts != 3 {
		t.Errorf("TxAborts %d, want 3", st.TxAborts)
	}
	if st := live.Stats(); st.TxMsgs != 0 {
		t.Errorf("the live psock wrote %d messages", st.TxMsgs)
	}
	if st := m.Stats(); st.TxRetries != 0 {
		t.Errorf("TxRetries %d: pinned messages are not retried", st.TxRetries)
	}
	if st := s.Stats(); st.TxMsgs != 0 {
		t.Errorf("socket TxMsgs %d", st.TxMsgs)
	}
}

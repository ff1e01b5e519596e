package kcm_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

func TestConformanceProbeSocketCloseWakesBlockedSend(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1000})
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(msgOf(1, 900)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msgOf(2, 900)) }()
	waitSendQ(t, m, s, 2) // it waits for room, in the backlog
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, kcm.ErrClosed) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Send blocked in the send buffer ignores Socket.Close")
	}
}

func TestConformanceProbeWriteDeadlineSetWhileBlocked(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1000})
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(msgOf(1, 900)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msgOf(2, 900)) }()
	waitSendQ(t, m, s, 2) // it waits for room, in the backlog
	s.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("blocked Send ignores a write deadline set while it waits")
	}
}

func TestConformanceProbeSocketCloseDropsBacklog(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	for i := 0; i < 3; i++ {
		a.Send(msgOf(uint32(i), 50))
	}
	a.Close()
	b.Send(msgOf(99, 50))
	_, peer := attachPeer(t, m)
	if id := checkMsg(t, readMsg(t, peer)); id != 99 {
		t.Fatalf("first message on the wire is %d: the closed socket's unsent messages were written", id)
	}
}

func TestConformanceProbeWritePastDeadline(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	attachPeer(t, m)
	s.SetWriteDeadline(time.Unix(1, 0))
	n, err := s.Write(msgOf(1, 10))
	if n != 0 || !isTimeout(err) {
		t.Fatalf("Write with past deadline = %d, %v", n, err)
	}
}

func TestConformanceProbeReadPastDeadlineWithQueued(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 10))
	for p.Stats().RxMsgs < 1 {
		time.Sleep(time.Millisecond)
	}
	s.SetReadDeadline(time.Unix(1, 0))
	n, err := s.Read(make([]byte, 100))
	if n != 0 || !isTimeout(err) {
		t.Fatalf("Read with past deadline = %d, %v", n, err)
	}
}

func TestConformanceProbePausedPsockResumesForNewSocket(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 4096})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	for i := 0; i < 20; i++ {
		peer.Write(msgOf(uint32(i), 1000))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(proc(m), "RxPause") {
		if time.Now().After(deadline) {
			t.Fatalf("psock never paused:\n%s", proc(m))
		}
		time.Sleep(time.Millisecond)
	}
	s.Close() // drops the ready queue
	s2 := m.NewSocket(kcm.Datagram)
	err := cfDo(t, 3*time.Second, "Recv on a new socket", func() error {
		s2.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := s2.Recv(make([]byte, 2000))
		return err
	})
	if err != nil {
		t.Fatalf("psock paused forever after the ready queue was dropped: %v (psock rx %d msgs)\n%s", err, p.Stats().RxMsgs, proc(m))
	}
}

func TestConformanceProbeDuplicateAttachLeavesConnAlone(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	cfLeaderMode(t, s, peer)
	errc := make(chan error, 1)
	go func() {
		s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := s.Recv(make([]byte, 100))
		errc <- err
	}()
	waitReceiving(t, m, s) // it reads c
	if _, err := m.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrAlreadyAttached) {
		t.Fatalf("second attach: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(2 * time.Second):
		peer.Write(msgOf(5, 10)) // unblock it
		t.Fatal("a rejected duplicate Attach cleared the attached connection's read deadline: Recv missed its deadline")
	}
}

func TestConformanceProbeParserNotRecalledWithoutNewBytes(t *testing.T) {
	parser := &recordingParser{}
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	p, err := m.Attach(c, parser)
	if err != nil {
		t.Fatal(err)
	}
	msg := msgOf(1, 100)
	peer.Write(msg[:2])
	for p.Stats().NeedMoreHdr == 0 {
		time.Sleep(time.Millisecond)
	}
	// Several receives time out while the two bytes wait for more.
	for i := 0; i < 3; i++ {
		s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		s.Recv(make([]byte, 200))
	}
	time.Sleep(200 * time.Millisecond) // background readers come and go
	got := parser.calls()
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("parser called again with the same %d bytes (calls %v); NeedMoreHdr=%d", got[i], got, p.Stats().NeedMoreHdr)
		}
	}
	peer.Write(msg[2:])
	if g := recvWithin(t, s, 5*time.Second); !bytes.Equal(g, msg) {
		t.Fatal("message differs")
	}
}

// A message a SeqPacket socket peeked stays with the mux: another socket
// can take it, also after the peeking socket closes, whether the psock is
// led by a receiver (one psock) or read in the background (two).
func TestConformanceProbeSeqPacketPeekedMessageStaysWithMux(t *testing.T) {
	for _, psocks := range []int{1, 2} {
		for _, closeA := range []bool{false, true} {
			m := newMux(t, kcm.Config{})
			a := m.NewSocket(kcm.SeqPacket)
			b := a.Clone()
			_, peer := attachPeer(t, m)
			if psocks == 2 {
				attachPeer(t, m)
			}
			msg := msgOf(1, 50)
			peer.Write(msg)
			buf := make([]byte, 100)
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := a.RecvMsg(buf, kcm.Peek); err != nil {
				t.Fatal(err)
			}
			if closeA {
				a.Close()
			}
			err := cfDo(t, 2*time.Second, "recv", func() error {
				b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := b.Recv(buf)
				if err == nil && !bytes.Equal(buf[:n], msg) {
					t.Error("wrong message")
				}
				return err
			})
			if err != nil {
				t.Fatalf("%d psocks, peeker closed %v: socket b cannot take the peeked message: %v", psocks, closeA, err)
			}
		}
	}
}

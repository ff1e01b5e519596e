package kcm_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Attach of a second psock interrupts the first one's reader; its parser
// must not see the same bytes again.
func TestConformanceProbeParserRecallAfterInterrupt(t *testing.T) {
	parser := &recordingParser{}
	m := newMux(t, kcm.Config{})
	m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	p, err := m.Attach(c, parser)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte{0, 0})
	for p.Stats().NeedMoreHdr == 0 {
		time.Sleep(time.Millisecond)
	}
	attachPeer(t, m)
	time.Sleep(100 * time.Millisecond) // no event: let the reader restart
	if lens := parser.calls(); len(lens) != 1 {
		t.Fatalf("parser called %d times with lengths %v on 2 bytes that never grew; NeedMoreHdr=%d", len(lens), lens, p.Stats().NeedMoreHdr)
	}
}

func TestConformanceProbeParserRecallLeader(t *testing.T) {
	parser := &recordingParser{}
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	p, err := m.Attach(c, parser)
	if err != nil {
		t.Fatal(err)
	}
	cfLeaderMode(t, s, peer)
	parser.reset()
	msg := msgOf(2, 10)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 100)
		n, _ := s.Recv(b)
		got <- b[:n]
	}()
	peer.Write(msg[:2])
	for p.Stats().NeedMoreHdr == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		s.SetReadDeadline(time.Now().Add(time.Hour)) // kicks the reader
		time.Sleep(10 * time.Millisecond)
	}
	peer.Write(msg[2:])
	if g := <-got; !bytes.Equal(g, msg) {
		t.Fatal("message differs")
	}
	lens := parser.calls()
	for i := 1; i < len(lens); i++ {
		if lens[i] == lens[i-1] {
			t.Fatalf("parser called again with the same bytes: lengths %v", lens)
		}
	}
}

func TestConformanceProbeSocketCloseMidTransmit(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, _ := attachPeer(t, m) // the peer never reads
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msgOf(1, 16<<20)) }()
	for p.Stats().Reserved == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the write is blocked in the kernel: no event
	s.Close()
	select {
	case <-p.Done():
		t.Logf("psock left with %v", p.Err())
	case <-time.After(2 * time.Second):
		t.Error("psock holding a partial message of a closed socket stays attached")
	}
	select {
	case err := <-errc:
		t.Logf("Send returned %v", err)
	case <-time.After(2 * time.Second):
		t.Error("Send of the closed socket still blocked")
	}
}

var _ = errors.Is

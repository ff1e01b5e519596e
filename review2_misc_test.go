package kcm_test

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 5: socket counters count bytes copied to the application and
// messages taken to their end: SeqPacket pieces, a truncated Datagram
// message (counted as taken, only the copied bytes), peeks (not counted),
// batches; psock and mux counters count what was parsed and written.
func TestReview2CountersExact(t *testing.T) {
	m := newMux(t, kcm.Config{})
	dg := m.NewSocket(kcm.Datagram)
	sp := m.NewSocket(kcm.SeqPacket)
	p, peer := attachPeer(t, m)
	sizes := []int{100, 1000, 50, 300, 20, 20, 20}
	var total uint64
	for i, n := range sizes {
		peer.Write(msgOf(uint32(i), n-4))
		total += uint64(n)
	}
	buf := make([]byte, 4096)
	recv := func(s *kcm.Socket, b []byte, f kcm.RecvFlags) (int, kcm.RecvFlags, error) {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		return s.RecvMsg(b, f)
	}
	// 100 bytes: peeked twice (not counted), then taken whole by dg.
	for i := 0; i < 2; i++ {
		if n, _, err := recv(dg, buf, kcm.Peek); err != nil || n != 100 {
			t.Fatalf("peek: %d %v", n, err)
		}
	}
	if n, f, err := recv(dg, buf, 0); err != nil || n != 100 || f&kcm.EOR == 0 {
		t.Fatalf("recv: %d %v %v", n, f, err)
	}
	// 1000 bytes: SeqPacket in pieces of 300.
	got := 0
	for got < 1000 {
		n, f, err := recv(sp, buf[:300], 0)
		if err != nil {
			t.Fatal(err)
		}
		got += n
		if (f&kcm.EOR != 0) != (got == 1000) {
			t.Fatalf("EOR %v at %d", f&kcm.EOR != 0, got)
		}
	}
	// 50 bytes: truncated to 10 on a Datagram socket.
	if n, f, err := recv(dg, buf[:10], 0); n != 10 || f&kcm.Trunc == 0 || !errors.Is(err, kcm.ErrTruncated) {
		t.Fatalf("truncated recv: %d %v %v", n, f, err)
	}
	// 300 bytes through RecvMessage, then the three 20-byte ones in a batch.
	sp.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := sp.RecvMessage()
	if err != nil || msg.Len() != 300 {
		t.Fatalf("RecvMessage: %d %v", msg.Len(), err)
	}
	msg.Release()
	ms := make([]kcm.Message, 3)
	k := 0
	for k < 3 {
		sp.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := sp.RecvBatch(ms[k:])
		if err != nil {
			t.Fatal(err)
		}
		k += n
	}
	kcm.ReleaseBatch(ms)
	if st := dg.Stats(); st.RxMsgs != 2 || st.RxBytes != 110 {
		t.Fatalf("datagram socket %+v, want 2 msgs 110 bytes", st)
	}
	if st := sp.Stats(); st.RxMsgs != 5 || st.RxBytes != 1360 {
		t.Fatalf("seqpacket socket %+v, want 5 msgs 1360 bytes", st)
	}
	if st := p.Stats(); st.RxMsgs != uint64(len(sizes)) || st.RxBytes != total {
		t.Fatalf("psock %+v", st)
	}
	// Transmit: a batch, a More-built message and a plain one.
	if err := dg.SendBatch([][]byte{msgOf(10, 6), msgOf(11, 96), nil}); err != nil {
		t.Fatal(err)
	}
	b := msgOf(12, 196)
	sp.SendMsg(b[:50], kcm.More)
	sp.SendMsg(b[50:], 0)
	dg.Send(msgOf(13, 46))
	for i := 0; i < 4; i++ {
		readMsg(t, peer)
	}
	if st := dg.Stats(); st.TxMsgs != 3 || st.TxBytes != 12+100+50 {
		t.Fatalf("datagram tx %+v", st)
	}
	if st := sp.Stats(); st.TxMsgs != 1 || st.TxBytes != 200 {
		t.Fatalf("seqpacket tx %+v", st)
	}
	if st := m.Stats(); st.TxMsgs != 4 || st.TxBytes != 362 || st.RxMsgs != uint64(len(sizes)) || st.RxBytes != total {
		t.Fatalf("mux %+v", st)
	}
}

// Spec 2/3: a net.Pipe psock follows deadlines and interrupts like a TCP
// one: a receive with a deadline times out (a net timeout), attaching a
// second psock takes the lead away from a receiver reading the pipe, and
// Unattach hands back the pipe with the undelivered bytes first.
func TestReview2PipePsockDeadlinesAndInterrupts(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := net.Pipe()
	defer peer.Close()
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		go func() { peer.Write(b) }()
	}
	write(msgOf(1, 50))
	if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 1 {
		t.Fatal("wrong message")
	}
	// Nothing comes: the deadline expires.
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := s.Recv(make([]byte, 100)); !isTimeout(err) {
		t.Fatalf("recv past deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	// A receiver blocks on the pipe; a second psock arrives and its
	// message must not wait behind the silent pipe.
	got := make(chan uint32, 2)
	go func() {
		for i := 0; i < 2; i++ {
			b := make([]byte, 200)
			n, err := s.Recv(b)
			if err != nil {
				return
			}
			got <- checkMsg(t, b[:n])
		}
	}()
	waitReceiving(t, m, s)
	_, tcpPeer := attachPeer(t, m)
	tcpPeer.Write(msgOf(2, 50))
	select {
	case id := <-got:
		if id != 2 {
			t.Fatalf("got %d", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second psock's message stuck behind the pipe")
	}
	// Half a message on the pipe, then unattach: the bytes come back.
	half := msgOf(3, 100)
	done := make(chan struct{})
	go func() { peer.Write(half[:40]); close(done) }()
	<-done // a pipe's Write returns once its reader, the mux, has the 40 bytes
	rc, err := cfDoConn(t, p)
	if err != nil {
		t.Fatal(err)
	}
	write(half[40:])
	rest := make([]byte, len(half))
	rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(rc, rest); err != nil {
		t.Fatal(err)
	}
	if id := checkMsg(t, rest); id != 3 {
		t.Fatalf("unattached pipe gave message %d", id)
	}
	rc.Close()
	tcpPeer.Write(msgOf(4, 50))
	select {
	case id := <-got:
		if id != 4 {
			t.Fatalf("got %d", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message after unattach")
	}
}

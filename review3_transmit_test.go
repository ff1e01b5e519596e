package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the third review: transmit side.

// stalledPair returns a TCP pair with small buffers whose server end (the
// peer) is never read: a large write on the client end blocks.
func stalledPair(t *testing.T) (client, peer net.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	c.(*net.TCPConn).SetWriteBuffer(32 << 10)
	peer.(*net.TCPConn).SetReadBuffer(32 << 10)
	return c, peer
}

// attachStalled attaches to m a psock whose peer, returned, does not read
// until the test makes it (stalledPair).
func attachStalled(t *testing.T, m *kcm.Mux) (*kcm.Psock, net.Conn) {
	t.Helper()
	c, peer := stalledPair(t)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p, peer
}

var smemRE = regexp.MustCompile(`(?m)^\s*psock-(\d+)\s.*$`)

// psockSmem returns the Smem column (bytes queued or being written) of
// psock index idx in the mux's proc dump, or -1.
func psockSmem(m *kcm.Mux, idx int) int64 {
	for _, line := range smemRE.FindAllStringSubmatch(proc(m), -1) {
		if line[1] != strconv.Itoa(idx) {
			continue
		}
		f := bytes.Fields([]byte(line[0]))
		// Object RX-Msgs RX-Bytes TX-Msgs TX-Bytes Recv-Q Rmem Send-Q Smem Status
		if len(f) >= 9 {
			n, _ := strconv.ParseInt(string(f[8]), 10, 64)
			return n
		}
	}
	return -1
}

// waitSmem waits until psock idx holds at least n bytes for sending.
func waitSmem(t *testing.T, m *kcm.Mux, idx int, n int64) {
	t.Helper()
	waitProc(t, m, func(string) bool { return psockSmem(m, idx) >= n })
}

// stuckSendTo starts s.SendTo(msg, p) on a psock whose peer does not read
// (attachStalled), msg too large for the connection's buffers, and returns
// once the write is under way: a psock busy writing. The SendTo's error
// comes on the channel returned, which has room for one more.
func stuckSendTo(t *testing.T, m *kcm.Mux, s *kcm.Socket, p *kcm.Psock, msg []byte) chan error {
	t.Helper()
	errs := make(chan error, 2)
	go func() { errs <- s.SendTo(msg, p) }()
	waitSmem(t, m, p.Index(), int64(len(msg)))
	return errs
}

// TestSendAvoidsStalledPsock: a psock whose peer stopped reading, stuck in
// a large write, does not take new messages while another psock is idle,
// even from a socket that had reserved it; and a message already waiting
// behind the stuck write moves when a psock goes idle (here: is attached).
func TestSendAvoidsStalledPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	_, peerA := attachStalled(t, m)
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	if err := sB.Send(msgOf(1, 10)); err != nil { // sB reserves psock 0
		t.Fatal(err)
	}
	readMsg(t, peerA)
	errs := make(chan error, 3)
	go func() { errs <- sA.Send(msgOf(2, 4<<20)) }()
	waitSmem(t, m, 0, 4<<20) // sA is writing
	big := msgOf(3, 200<<10) // too large to copy: its sender waits in the queue
	go func() { errs <- sC.Send(big) }()
	waitSmem(t, m, 0, 4<<20+200<<10)

	_, peerB := attachPeer(t, m)
	peerB.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readMsg(t, peerB); !bytes.Equal(got, big) {
		t.Fatalf("psock 1 got message %d, want sC's waiting message 3", checkMsg(t, got))
	}
	if err := <-errs; err != nil {
		t.Fatalf("sC: %v", err)
	}
	other := msgOf(4, 200<<10)
	go func() { errs <- sB.Send(other) }()
	if got := readMsg(t, peerB); !bytes.Equal(got, other) {
		t.Fatalf("psock 1 got message %d, want sB's message 4", checkMsg(t, got))
	}
	if err := <-errs; err != nil {
		t.Fatalf("sB: %v", err)
	}
	m.Close()
	if err := <-errs; !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("sA, stuck until the mux closed: %v", err)
	}
}

// TestSocketCloseReleasesSenderInOthersWrite: a sender whose large message
// is being written by another goroutine (a writer flushing the queue) to a
// stalled peer returns ErrClosed when its socket closes; and a sender whose
// own message went out is not held writing other sockets' large messages.
func TestSocketCloseReleasesSenderInOthersWrite(t *testing.T) {
	m := newMux(t, kcm.Config{})
	_, peer := attachStalled(t, m)
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	a, b := msgOf(1, 4<<20), msgOf(2, 16<<20)
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errA <- sA.Send(a) }()
	waitSmem(t, m, 0, int64(len(a)))
	go func() { errB <- sB.Send(b) }() // waits, uncopied, behind a
	waitSmem(t, m, 0, int64(len(a)+len(b)))
	if _, err := io.ReadFull(peer, make([]byte, len(a))); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, errA, "sA's Send, after its message was read (is it writing sB's 16 MiB?)"); err != nil {
		t.Fatalf("sA: %v", err)
	}
	sB.Close()
	if err := waitErr(t, errB, "sB's Send, after its socket closed"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("sB's Send after its socket closed: %v, want ErrClosed", err)
	}
}

// waitErr returns the error a call started earlier sends on ch, failing
// the test if it does not come within 5 s (cfDo starts and waits at once).
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return within 5s", what)
		return nil
	}
}

// TestTxRetriesCountsWaitingSenders: TxRetries counts every message
// restarted after a psock failed, the one its writer wrote, a copied one
// and one whose sender waited uncopied in the queue alike.
func TestTxRetriesCountsWaitingSenders(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	gc := newGateConn(c)
	if _, err := m.Attach(gc, lenPrefix); err != nil {
		t.Fatal(err)
	}
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	a, small, big := msgOf(1, 100), msgOf(2, 100), msgOf(3, 200<<10)
	errs := make(chan error, 2)
	go func() { errs <- sA.Send(a) }()
	<-gc.entered                           // sA writes a itself and is held in Write
	if err := sC.Send(small); err != nil { // copied into the queue
		t.Fatal(err)
	}
	go func() { errs <- sB.Send(big) }() // too big to copy: waits queued
	waitSmem(t, m, 0, int64(len(a)+len(small)+len(big)))
	gc.failAndRelease() // every message goes to the backlog: no psock left
	_, good := attachPeer(t, m)
	got := map[uint32][]byte{}
	good.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < 3 {
		b := readMsg(t, good)
		got[checkMsg(t, b)] = b
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got[3], big) {
		t.Fatal("the waiting sender's message differs")
	}
	if r := m.Stats().TxRetries; r != 3 {
		t.Fatalf("TxRetries %d, want 3", r)
	}
}

// TestReservationsOfDepartedPsockCount: a socket's reservation of a psock
// that left the mux is released, and counted, when the psock leaves, so the
// mux's aggregate Reserved and Unreserved agree with its psocks'.
func TestReservationsOfDepartedPsockCount(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p1, peer1 := attachPeer(t, m)
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(msgOf(1, 20)); err != nil {
		t.Fatal(err)
	}
	readMsg(t, peer1)
	if _, err := p1.Unattach(); err != nil {
		t.Fatal(err)
	}
	p2, peer2 := attachPeer(t, m)
	if err := s.Send(msgOf(2, 20)); err != nil {
		t.Fatal(err)
	}
	readMsg(t, peer2)
	s.Close()
	agg, s1, s2 := m.Stats().Psocks, p1.Stats(), p2.Stats()
	if agg.Reserved != s1.Reserved+s2.Reserved || agg.Unreserved != s1.Unreserved+s2.Unreserved {
		t.Fatalf("mux Reserved/Unreserved %d/%d, psocks' sum %d/%d",
			agg.Reserved, agg.Unreserved, s1.Reserved+s2.Reserved, s1.Unreserved+s2.Unreserved)
	}
	if agg.Reserved != 2 || agg.Unreserved != 2 {
		t.Fatalf("every socket closed: Reserved %d, Unreserved %d, want 2 and 2", agg.Reserved, agg.Unreserved)
	}
}

// TestTxAbortsOfUnattachedWriterReachMux: a writer cut by Unattach counts
// its abort before it lets go of the psock, so the count is in the mux's
// aggregate once Unattach has returned.
func TestTxAbortsOfUnattachedWriterReachMux(t *testing.T) {
	for round := range 20 {
		m := kcm.NewMux(kcm.Config{})
		p1, _ := attachStalled(t, m)
		s := m.NewSocket(kcm.Datagram)
		msg := msgOf(1, 2<<20)
		errc := make(chan error, 1)
		go func() { errc <- s.Send(msg) }()
		waitSmem(t, m, 0, int64(len(msg)))
		_, peer2 := attachPeer(t, m)
		go io.Copy(io.Discard, peer2)
		if _, err := p1.Unattach(); !errors.Is(err, kcm.ErrMidMessage) {
			t.Fatalf("round %d: unattach: %v", round, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if own, agg := p1.Stats().TxAborts, m.Stats().Psocks.TxAborts; own != 1 || agg != own {
			t.Fatalf("round %d: psock TxAborts %d, mux aggregate %d, want 1 and 1", round, own, agg)
		}
		m.Close()
	}
}

// gateConn holds its first Write until failAndRelease, which also makes
// every Write fail without writing.
type gateConn struct {
	net.Conn
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
	first   bool
	fail    bool
}

func newGateConn(c net.Conn) *gateConn {
	return &gateConn{Conn: c, gate: make(chan struct{}), entered: make(chan struct{})}
}

func (c *gateConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	first := !c.first
	c.first = true
	c.mu.Unlock()
	if first {
		close(c.entered)
		<-c.gate
	}
	c.mu.Lock()
	fail := c.fail
	c.mu.Unlock()
	if fail {
		return 0, errInjected
	}
	return c.Conn.Write(b)
}

func (c *gateConn) failAndRelease() {
	c.mu.Lock()
	c.fail = true
	c.mu.Unlock()
	close(c.gate)
}

// TestBacklogSenderOnSlowPsockDeadline: a sender waiting uncopied in the
// backlog is moved into a new psock's queue by Attach and taken into a
// write that stalls; its write deadline passes meanwhile. It must return
// once the write goes through (the message is out whole), and the race
// detector must see no unsynchronised access to its state (the writer
// marks it taken under the psock's transmit lock, the sender reads that
// under the mux lock). The sleeps are the point: nothing signals "waiting
// in the backlog", and the deadline has to pass during the write.
func TestBacklogSenderOnSlowPsockDeadline(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1024})
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(msgOf(1, 200)); err != nil { // backlog, copied
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msgOf(2, 4<<20)) }() // backlog, waits uncopied
	waitSendQ(t, m, s, 2)
	_, peer := attachStalled(t, m)
	time.Sleep(300 * time.Millisecond)
	go io.Copy(io.Discard, peer)
	if err := waitErr(t, errc, "Send, after the peer read everything"); err != nil {
		t.Fatalf("the message went out whole, yet Send returned %v", err)
	}
}

// Queued shows the bytes the mux holds: parsed messages nobody received
// (read by the background reader after the grace period) and messages
// copied behind a stuck write.
func TestQueuedShowsHeldBytes(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for i := range 3 {
		peer.Write(msgOf(uint32(i), 20)) // 24 bytes each
	}
	waitProc(t, m, func(string) bool { recv, _ := m.Queued(); return recv == 72 })
	recvWithin(t, s, 5*time.Second)
	if recv, send := m.Queued(); recv != 48 || send != 0 {
		t.Fatalf("after one receive: recv %d, send %d; want 48, 0", recv, send)
	}

	p, _ := attachStalled(t, m)
	errs := stuckSendTo(t, m, s, p, msgOf(1, 4<<20)) // uncopied
	if err := s.SendTo(msgOf(2, 96), p); err != nil {
		t.Fatal(err)
	}
	if _, send := m.Queued(); send != 100 {
		t.Fatalf("send %d with one 100-byte message copied, want 100", send)
	}
	s.Close()
	waitErr(t, errs, "stuck send")
}

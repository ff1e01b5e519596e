package kcm_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// readFrame reads one framed message from c, for goroutines that must not
// call t.Fatal.
func readFrame(c net.Conn) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	m := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
	copy(m, hdr[:])
	_, err := io.ReadFull(c, m[4:])
	return m, err
}

// The server side of an unconnected mux: workers take requests from
// several client connections and reply on the connection each came from.
func TestSendToRepliesOnTheRequestsConnection(t *testing.T) {
	m := newMux(t, kcm.Config{})
	const clients, workers, per = 3, 4, 200
	peers := make([]net.Conn, clients)
	for i := range peers {
		_, peers[i] = attachPeer(t, m)
	}
	serveSockets(t, m, workers, func(s *kcm.Socket) {
		for {
			msg, err := s.RecvMessage()
			if err != nil {
				return // the mux closed
			}
			err = s.SendTo(msg.Bytes(), msg.Psock()) // echo to its sender
			msg.Release()
			if err != nil {
				t.Errorf("send to: %v", err)
				return
			}
		}
	})
	var wg sync.WaitGroup
	for c, peer := range peers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := peer.Write(msgOf(affID(c, i), 16+i%64)); err != nil {
					t.Errorf("client %d: write: %v", c, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			seen := make(map[uint32]bool)
			for range per {
				b, err := readFrame(peer)
				if err != nil {
					t.Errorf("client %d: read: %v", c, err)
					return
				}
				id := checkMsg(t, b)
				if int(id>>16) != c || seen[id] {
					t.Errorf("client %d got reply %#x: not its own, or twice", c, id)
				}
				seen[id] = true
			}
		}()
	}
	wg.Wait()
}

// SendTo names a psock of the socket's mux, attached now: any other is
// ErrNotAttached, and nothing is sent.
func TestSendToPsockNotAttached(t *testing.T) {
	m := newMux(t, kcm.Config{})
	other := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	foreign, _ := attachPeer(t, other)
	left, _ := attachPeer(t, m)
	if _, err := left.Unattach(); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*kcm.Psock{"nil": nil, "another mux's": foreign, "unattached": left} {
		if err := s.SendTo(msgOf(1, 10), p); !errors.Is(err, kcm.ErrNotAttached) {
			t.Errorf("%s psock: %v, want ErrNotAttached", name, err)
		}
	}
	if st := s.Stats(); st.TxMsgs != 0 {
		t.Errorf("TxMsgs %d after failed sends", st.TxMsgs)
	}
}

// A psock that failed is not replaced by another: SendTo reports the
// failure as its cause, and the other psock writes nothing.
func TestSendToFailedPsockIsNotRetried(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	other, _ := attachPeer(t, m)
	peer.Close()
	if err := waitDone(t, p); !errors.Is(err, io.EOF) {
		t.Fatalf("psock error %v, want EOF", err)
	}
	err := s.SendTo(msgOf(1, 10), p)
	if !errors.Is(err, kcm.ErrNotAttached) || !errors.Is(err, io.EOF) {
		t.Fatalf("SendTo: %v, want ErrNotAttached caused by EOF", err)
	}
	if st := other.Stats(); st.TxMsgs != 0 {
		t.Fatalf("the other psock wrote %d messages", st.TxMsgs)
	}
}

// Messages queued for a psock that leaves are not moved to another one:
// the writer's own, a copied one and a waiting sender's; the waiting
// senders are told.
func TestSendToQueuedMessagesStayWithTheirPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, _ := attachStalled(t, m) // its peer never reads
	other, _ := attachPeer(t, m)
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	errs := stuckSendTo(t, m, sA, p, msgOf(1, 4<<20))
	if err := sB.SendTo(msgOf(2, 100), p); err != nil {
		t.Fatalf("copied send: %v", err)
	}
	go func() { errs <- sC.SendTo(msgOf(3, 200<<10), p) }() // too large to copy: waits
	waitSmem(t, m, p.Index(), 4<<20+104+200<<10+4)
	if _, err := p.Unattach(); !errors.Is(err, kcm.ErrMidMessage) {
		t.Fatalf("unattach: %v, want ErrMidMessage (sA's message was cut)", err)
	}
	for range 2 {
		if err := waitErr(t, errs, "SendTo"); !errors.Is(err, kcm.ErrNotAttached) {
			t.Errorf("waiting SendTo: %v, want ErrNotAttached", err)
		}
	}
	if st := other.Stats(); st.TxMsgs != 0 {
		t.Errorf("the other psock wrote %d messages", st.TxMsgs)
	}
	if st := m.Stats(); st.TxRetries != 0 {
		t.Errorf("TxRetries %d: pinned messages are not retried", st.TxRetries)
	}
	if st := p.Stats(); st.TxAborts != 3 {
		t.Errorf("TxAborts %d, want 3: the cut message, the copied one and the waiting one", st.TxAborts)
	}
}

// SendTo on a busy psock honours the socket's write deadline while it
// waits, and sends nothing after it.
func TestSendToWaitHonoursDeadline(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, _ := attachStalled(t, m)
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	errs := stuckSendTo(t, m, sA, p, msgOf(1, 4<<20))
	sB.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if err := sB.SendTo(msgOf(2, 200<<10), p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTo past its deadline: %v", err)
	}
	sA.Close() // ends the stuck write
	if err := waitErr(t, errs, "stuck SendTo"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("stuck SendTo after close: %v", err)
	}
}

// stepConn holds its first writes, each until the test releases it, and
// reports a write deadline set in the past (an Unattach stopping the
// writer).
type stepConn struct {
	net.Conn
	entered chan struct{}
	release chan struct{}
	kicked  chan struct{}
	kick    sync.Once
	mu      sync.Mutex
	held    int // writes still to hold
}

func newStepConn(c net.Conn, held int) *stepConn {
	return &stepConn{Conn: c, entered: make(chan struct{}, held), release: make(chan struct{}), kicked: make(chan struct{}), held: held}
}

func (c *stepConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	hold := c.held > 0
	if hold {
		c.held--
	}
	c.mu.Unlock()
	if hold {
		c.entered <- struct{}{}
		<-c.release
	}
	return c.Conn.Write(b)
}

func (c *stepConn) SetWriteDeadline(d time.Time) error {
	err := c.Conn.SetWriteDeadline(d)
	if !d.IsZero() && d.Before(time.Now()) {
		c.kick.Do(func() { close(c.kicked) })
	}
	return err
}

// An Unattach that stops pinned messages before any of their bytes went
// out, the writer's own and queued ones alike, writes no byte of them: the
// caller's next write on the returned connection follows the last message
// written whole. (On a connection kcm does not write itself, as this
// wrapper, an interrupted write is reported as a cut: ErrMidMessage.) The
// lost messages' senders are told, and each counts once in TxAborts.
func TestSendToUnattachWritesNoPartOfAStoppedMessage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ownDone bool // the writer's own message goes out before the unattach
		held    int  // writes the connection holds
		aborts  uint64
	}{
		{"own write stopped", false, 1, 3},
		{"queue write stopped", true, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			c, peer := tcpPair(t)
			sc := newStepConn(c, tc.held)
			p, err := m.Attach(sc, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
			a, small, big := msgOf(1, 100), msgOf(2, 100), msgOf(3, 200<<10)
			errA, errC := make(chan error, 1), make(chan error, 1)
			go func() { errA <- sA.SendTo(a, p) }()
			<-sc.entered // sA writes its own message, held
			if err := sB.SendTo(small, p); err != nil {
				t.Fatalf("copied SendTo: %v", err)
			}
			go func() { errC <- sC.SendTo(big, p) }() // too large to copy: waits
			waitSmem(t, m, p.Index(), int64(len(a)+len(small)+len(big)))
			if tc.ownDone {
				sc.release <- struct{}{}
				<-sc.entered // sA goes on with the queue (small, then big), held
			}
			type res struct {
				c   net.Conn
				err error
			}
			un := make(chan res, 1)
			go func() {
				c, err := p.Unattach()
				un <- res{c, err}
			}()
			<-sc.kicked
			sc.release <- struct{}{} // the held write meets the past deadline
			r := <-un
			if !errors.Is(r.err, kcm.ErrMidMessage) || r.c == nil {
				t.Fatalf("unattach: %v, want the connection and ErrMidMessage", r.err)
			}
			wantA := kcm.ErrNotAttached
			if tc.ownDone {
				wantA = nil
			}
			if err := waitErr(t, errA, "SendTo"); !errors.Is(err, wantA) {
				t.Errorf("writer's SendTo: %v, want %v", err, wantA)
			}
			if err := waitErr(t, errC, "SendTo"); !errors.Is(err, kcm.ErrNotAttached) {
				t.Errorf("waiting SendTo: %v, want ErrNotAttached", err)
			}
			if st := p.Stats(); st.TxAborts != tc.aborts {
				t.Errorf("TxAborts %d, want %d", st.TxAborts, tc.aborts)
			}
			mine := msgOf(9, 50)
			if _, err := r.c.Write(mine); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if tc.ownDone {
				if id := checkMsg(t, readMsg(t, peer)); id != 1 {
					t.Fatalf("peer read message %d first, want 1", id)
				}
			}
			if id := checkMsg(t, readMsg(t, peer)); id != 9 {
				t.Fatalf("peer read message %d after the unattach, want the caller's 9", id)
			}
		})
	}
}

// Mux.Close overtakes pinned messages in each state: the writer's own,
// stuck on a peer that stopped reading, a copied one and a waiting one.
// The blocked senders return ErrClosed; nothing hangs.
func TestSendToMuxCloseEndsEveryPhase(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, _ := attachStalled(t, m)
	sB, errs := pinEveryPhase(t, m, p)
	m.Close()
	for range 2 {
		if err := waitErr(t, errs, "SendTo"); !errors.Is(err, kcm.ErrClosed) {
			t.Errorf("SendTo overtaken by Close: %v, want ErrClosed", err)
		}
	}
	if err := sB.SendTo(msgOf(4, 100), p); !errors.Is(err, kcm.ErrClosed) {
		t.Errorf("SendTo after Close: %v, want ErrClosed", err)
	}
	// Close is not a failure: it drops pinned messages as it drops every
	// queued one, the writer's own included, and counts none of them.
	if st := p.Stats(); st.TxAborts != 0 {
		t.Errorf("TxAborts %d after Close, want 0", st.TxAborts)
	}
}

// A psock that fails (its peer resets the connection) while pinned
// messages wait on it: every sender still waiting is told ErrNotAttached
// with the failure as its cause, and the three lost messages count in
// TxAborts.
func TestSendToPsockFailureEndsEveryPhase(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer := attachStalled(t, m)
	other, _ := attachPeer(t, m)
	_, errs := pinEveryPhase(t, m, p)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // a reset
	cause := waitDone(t, p)
	if cause == nil {
		t.Fatal("psock left without an error")
	}
	for range 2 {
		err := waitErr(t, errs, "SendTo")
		if !errors.Is(err, kcm.ErrNotAttached) || !errors.Is(err, cause) {
			t.Errorf("SendTo on a failed psock: %v, want ErrNotAttached caused by %v", err, cause)
		}
	}
	if st := p.Stats(); st.TxAborts != 3 {
		t.Errorf("TxAborts %d, want 3", st.TxAborts)
	}
	if st := other.Stats(); st.TxMsgs != 0 {
		t.Errorf("the other psock wrote %d messages", st.TxMsgs)
	}
}

// pinEveryPhase puts a SendTo message for p, whose peer does not read, in
// each state: the writer's own (message 1, 4 MiB, stuck), a copied one
// (message 2, sent by the socket returned) and a waiting one (message 3,
// 200 KiB). The two blocked senders' errors come on errs.
func pinEveryPhase(t *testing.T, m *kcm.Mux, p *kcm.Psock) (*kcm.Socket, chan error) {
	t.Helper()
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	errs := stuckSendTo(t, m, sA, p, msgOf(1, 4<<20))
	if err := sB.SendTo(msgOf(2, 100), p); err != nil {
		t.Fatalf("copied send: %v", err)
	}
	go func() { errs <- sC.SendTo(msgOf(3, 200<<10), p) }()
	waitSmem(t, m, p.Index(), 4<<20+104+200<<10+4)
	return sB, errs
}

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
	var served sync.WaitGroup
	defer served.Wait()
	defer m.Close()
	for range workers {
		s := m.NewSocket(kcm.Datagram)
		served.Add(1)
		go func() {
			defer served.Done()
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
		}()
	}
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
	c, _ := stalledPair(t) // its peer never reads
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := attachPeer(t, m)
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	errs := make(chan error, 2)
	go func() { errs <- sA.SendTo(msgOf(1, 4<<20), p) }()
	waitSmem(t, m, p.Index(), 4<<20) // sA writes, stuck
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
	c, _ := stalledPair(t)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	errs := make(chan error, 1)
	go func() { errs <- sA.SendTo(msgOf(1, 4<<20), p) }()
	waitSmem(t, m, p.Index(), 4<<20)
	sB.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if err := sB.SendTo(msgOf(2, 200<<10), p); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("SendTo past its deadline: %v", err)
	}
	sA.Close() // ends the stuck write
	if err := waitErr(t, errs, "stuck SendTo"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("stuck SendTo after close: %v", err)
	}
}

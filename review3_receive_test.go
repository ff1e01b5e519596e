package kcm_test

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the third review: receive side.

// failBySending makes p fail through its transmit side, after its peer
// went away: the peer answers the first write with a reset and the next
// write fails. It sends until p has left the mux.
func failBySending(t *testing.T, s *kcm.Socket, p *kcm.Psock) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if err := s.Send(msgOf(uint32(900+i), 16)); err != nil {
			break
		}
		select {
		case <-p.Done():
			return
		case <-time.After(time.Millisecond): // the reset arrives after the write
		}
	}
	waitDone(t, p)
}

// TestCompleteMessagesSurviveTransmitFailure: complete messages read from
// a psock and not yet delivered are delivered when the psock fails on its
// transmit side, as they are after a read-side failure (spec 3: only the
// partial message is discarded). The receiver leads the psock, reads two
// messages in one read and returns the first; the second sits in the
// psock when the peer goes away and a send fails.
func TestCompleteMessagesSurviveTransmitFailure(t *testing.T) {
	for _, reset := range []bool{true, false} {
		name := "fin"
		if reset {
			name = "reset"
		}
		t.Run(name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			p, peer := attachPeer(t, m)
			cfLeaderMode(t, s, peer)
			a, b := msgOf(1, 32), msgOf(2, 32)
			got := make(chan []byte, 1)
			go func() {
				buf := make([]byte, 256)
				n, _ := s.Recv(buf)
				got <- append([]byte(nil), buf[:n]...)
			}()
			waitProc(t, m, func(d string) bool {
				return strings.Contains(d, "RxWait") || strings.Contains(d, "RxLed-")
			})
			if _, err := peer.Write(append(append([]byte(nil), a...), b...)); err != nil {
				t.Fatal(err)
			}
			if g := <-got; !bytes.Equal(g, a) {
				t.Fatalf("first message %q, want %q", g, a)
			}
			if reset {
				peer.(*net.TCPConn).SetLinger(0)
			}
			peer.Close()
			failBySending(t, s, p)
			if g := recvWithin(t, s, 5*time.Second); !bytes.Equal(g, b) {
				t.Fatalf("second message %q, want %q (psock error %v)", g, b, p.Err())
			}
		})
	}
}

// TestPausedPsockMessagesSurviveTransmitFailure: a psock paused by a full
// receive queue holds parsed messages; they are delivered, not dropped
// uncounted, when the psock fails on its transmit side.
func TestPausedPsockMessagesSurviveTransmitFailure(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 1 << 10})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	const count = 100
	var out []byte
	for i := range count {
		out = append(out, msgOf(uint32(i), 100)...)
	}
	if _, err := peer.Write(out); err != nil {
		t.Fatal(err)
	}
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxPause") })
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	failBySending(t, s, p)
	for i := range count {
		if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != uint32(i) {
			t.Fatalf("message %d has id %d", i, id)
		}
	}
	if d := m.Stats().RxReadyDrops; d != 0 {
		t.Errorf("RxReadyDrops %d, want 0", d)
	}
}

// TestConcurrentPartialReadsLoseNothing: two goroutines read one socket
// with buffers shorter than its messages. Pieces may go to either, but
// every byte comes out exactly once (net.Conn allows concurrent Reads, and
// the rest of a message a call began stays for the next call).
func TestConcurrentPartialReadsLoseNothing(t *testing.T) {
	for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
		t.Run(typ.String(), func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(typ)
			_, peer := attachPeer(t, m)
			const count, size = 2000, 100
			var out []byte
			for i := range count {
				out = append(out, msgOf(uint32(i), size)...)
			}
			go peer.Write(out)
			total := int64(len(out))
			var got atomic.Int64
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 40)
					for got.Load() < total {
						var n int
						var err error
						if typ == kcm.SeqPacket {
							n, _, err = s.RecvMsg(buf, 0)
						} else {
							n, err = s.Read(buf)
						}
						if err != nil {
							return
						}
						if got.Add(int64(n)) == total {
							s.SetReadDeadline(time.Now()) // release the other reader
						}
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				s.SetReadDeadline(time.Now())
				<-done
			}
			if got.Load() != total {
				t.Fatalf("read %d bytes, peer sent %d", got.Load(), total)
			}
		})
	}
}

package kcm_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the sixth review: ConnSet, Mux.Queued and the
// receive wake-up changes of 9f916e8 and e87f5ee.

// The set ends with its mux (ConnSet doc: "It stops when Close is called
// or the mux closes") also while its dials fail: only a dial that
// succeeds reaches AttachConfig and its ErrClosed, so a slot whose
// service is down keeps dialling, with backoff, for a mux that is gone,
// until the application happens to call Close.
func TestConnSetEndsWithMuxWhileDialsFail(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	var calls atomic.Int32
	var muxClosed atomic.Bool
	late := make(chan int32, 1)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Dial: func(ctx context.Context) (net.Conn, error) {
			n := calls.Add(1)
			switch {
			case n == 2:
				m.Close() // the mux closes while the slot dials
				muxClosed.Store(true)
			case muxClosed.Load():
				select {
				case late <- n:
				default:
				}
			}
			return nil, errors.New("connection refused")
		},
		Parser:     lenPrefix,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-m.Done()
	cs.Close() // returns once the slots have ended
	select {
	case n := <-late:
		t.Fatalf("dial %d after the mux closed: the set did not end with its mux", n)
	default:
	}
}

// r6piece is what one Read of 12 bytes on a SeqPacket socket returned.
type r6piece struct {
	id  uint32 // the message's id, from its first piece; 0 for a later piece
	n   int
	eor bool
	err error
}

func r6readPiece(s *kcm.Socket, ch chan<- r6piece) {
	buf := make([]byte, 12)
	n, fl, err := s.RecvMsg(buf, 0)
	p := r6piece{n: n, eor: fl&kcm.EOR != 0, err: err}
	if err == nil && n >= 8 && buf[0] == 0 && buf[1] == 0 && buf[2] == 0 && (buf[3] == 8 || buf[3] == 40) {
		// A first piece: the 4-byte frame header, then the id.
		p.id = uint32(buf[4])<<24 | uint32(buf[5])<<16 | uint32(buf[6])<<8 | uint32(buf[7])
	}
	ch <- p
}

// Two Read calls wait on SeqPacket socket s, then a Recv on socket u. One
// segment brings M1 (44 bytes, longer than the 12-byte buffers) and M2
// (12 bytes). The reader hands M1 to s's first call and, before that call
// has run and kept M1's rest (hasKept is still false), hands M2 straight
// to s's second call: s returns M2 whole while M1's rest is still unread,
// and its next receive returns the middle of M1 after M2 (spec 3: within
// one socket FIFO; a SeqPacket receive into a short buffer leaves the
// message for the next receive to continue). When the first call wins
// the race instead, M2 is queued for s's second call (which has a kept
// rest), that call takes the rest and passes no wake-up on, and u's
// Recv sleeps with M2 in the shared queue. Either way u should get M2
// and s's two calls the first two pieces of M1.
func TestKeptRestAndFreshMessageFromBackgroundReader(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	u := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	r6keptRest(t, m, s, u, peer)
}

// The same with a receive of s leading the psock (a deadline keeps it off
// the fast path): lead hands M1 to the leader and shareLocked gives M2 to
// the first follower, s's other call, since s has no kept rest yet; the
// leader keeps M1's rest only afterwards, in recvPiece, under the same
// lock. The wait list holds s's second call before u's Recv, so u gets
// nothing and s returns M1's head, M2, then the rest of M1.
func TestKeptRestAndFreshMessageFromLeader(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	u := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	r6keptRest(t, m, s, u, peer)
}

// r6keptRest starts two Read calls (12-byte buffers) on SeqPacket socket
// s, then a Recv on u, and writes M1 (44 bytes) and M2 (12) in one segment.
func r6keptRest(t *testing.T, m *kcm.Mux, s, u *kcm.Socket, peer net.Conn) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	pieces := make(chan r6piece, 2)
	go r6readPiece(s, pieces)
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxWait") || strings.Contains(d, "RxLed-") })
	waiting := 1 // the first call waits, or leads the psock
	if strings.Contains(proc(m), "RxLed-") {
		waiting = 0
	}
	go r6readPiece(s, pieces)
	waitBlockedReceives(t, waiting+1)
	u.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := r5recv(t, u)
	waitBlockedReceives(t, waiting+2)
	if _, err := peer.Write(append(msgOf(1, 40), msgOf(2, 8)...)); err != nil {
		t.Fatal(err)
	}
	var seq []r6piece
	for range 2 {
		seq = append(seq, <-pieces)
	}
	r := <-got
	for _, p := range seq {
		if p.err != nil || p.eor || p.id == 2 {
			t.Errorf("s's concurrent reads returned %+v, %+v; want the first two 12-byte pieces of M1 (id 1), not M2 (id 2) while M1's rest is unread", seq[0], seq[1])
			break
		}
	}
	if r.err != nil || r.id != 2 {
		t.Errorf("u's receive: %#x, %v; want M2, which no receive of s may take before M1's rest:\n%s", r.id, r.err, proc(m))
	}
}

package kcm_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Affinity tests use msgOf messages whose id carries the index of the
// socket they are meant for in its top 16 bits.

func affID(sock, seq int) uint32 { return uint32(sock)<<16 | uint32(seq) }

// bySocketID is the tests' Config.Affinity: the socket index in a msgOf id.
func bySocketID(msg []byte, _ *kcm.Psock) int {
	if len(msg) < 8 {
		return -1
	}
	return int(binary.BigEndian.Uint32(msg[4:]) >> 16)
}

// recvID receives one message on s and returns its id.
func recvID(t *testing.T, s *kcm.Socket) uint32 {
	t.Helper()
	return checkMsg(t, recvWithin(t, s, 5*time.Second))
}

// affinityPair returns a mux configured by cfg with two sockets of type
// typ and one psock, and the psock's peer.
func affinityPair(t *testing.T, cfg kcm.Config, typ kcm.SocketType) (m *kcm.Mux, a, b *kcm.Socket, peer net.Conn) {
	t.Helper()
	m = newMux(t, cfg)
	a = m.NewSocket(typ)
	b = a.Clone()
	_, peer = attachPeer(t, m)
	return m, a, b, peer
}

// queueFor writes n messages of size bytes for socket a, then one for b,
// and receives b's: a's messages, earlier in the stream, now wait for a.
func queueFor(t *testing.T, peer io.Writer, a, b *kcm.Socket, n, size int) {
	t.Helper()
	for seq := range n {
		peer.Write(msgOf(affID(a.Index(), seq), size))
	}
	peer.Write(msgOf(affID(b.Index(), 0), 20))
	if got := recvID(t, b); got != affID(b.Index(), 0) {
		t.Fatalf("b got %#x, want its own message", got)
	}
}

// expectSeqs receives n messages on s and checks they are owner's
// messages 0 to n-1, in order.
func expectSeqs(t *testing.T, s *kcm.Socket, owner *kcm.Socket, n int) {
	t.Helper()
	for seq := range n {
		if got := recvID(t, s); got != affID(owner.Index(), seq) {
			t.Fatalf("socket %d got %#x, want socket %d's message %d", s.Index(), got, owner.Index(), seq)
		}
	}
}

// echoPeers attaches n connections to m whose far ends echo every message.
func echoPeers(t *testing.T, m *kcm.Mux, n int) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for range n {
		_, peer := attachPeer(t, m)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var hdr [4]byte
			for {
				if _, err := io.ReadFull(peer, hdr[:]); err != nil {
					return
				}
				body := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
				copy(body, hdr[:])
				if _, err := io.ReadFull(peer, body[4:]); err != nil {
					return
				}
				if _, err := peer.Write(body); err != nil {
					return
				}
			}
		}()
	}
}

// Each socket's replies come back to it over several connections, however
// the sockets' receive calls interleave: what the shared test of kcmperf
// and any client of a request/response protocol over a mux need.
func TestAffinitySteersRepliesToTheirSocket(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: bySocketID})
	const sockets, rounds = 8, 200
	socks := make([]*kcm.Socket, sockets)
	for i := range socks {
		socks[i] = m.NewSocket(kcm.Datagram)
	}
	echoPeers(t, m, 3)
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range rounds {
				want := affID(s.Index(), seq)
				if err := s.Send(msgOf(want, 8+seq%50)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				s.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 128)
				n, err := s.Recv(buf)
				if err != nil {
					t.Errorf("socket %d: recv: %v", s.Index(), err)
					return
				}
				if got := checkMsg(t, buf[:n]); got != want {
					t.Errorf("socket %d got reply %#x, want %#x", s.Index(), got, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range socks {
		if st := s.Stats(); st.RxMsgs != rounds {
			t.Errorf("socket %d received %d messages, want %d", s.Index(), st.RxMsgs, rounds)
		}
	}
}

// A message for a socket that is not receiving waits for it, in its own
// queue: other sockets do not take it, and it comes first, in order, at the
// socket's next receives.
func TestAffinityQueuesForSocketNotReceiving(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID}, kcm.Datagram)
	queueFor(t, peer, a, b, 3, 20)
	if _, _, err := b.RecvMsg(make([]byte, 64), kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
		t.Fatalf("b's next receive: %v, want ErrWouldBlock (a's messages are a's)", err)
	}
	if dump := proc(m); !strings.Contains(dump, "kcm-0       0          0                0          0                3        72") {
		t.Errorf("dump does not show a's three waiting messages (Recv-Q 3, Rmem 72):\n%s", dump)
	}
	expectSeqs(t, a, a, 3)
}

// A waiting receive of the named socket gets the message even when a
// receive of another socket waited longer.
func TestAffinityHandsToWaitingSocket(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID}, kcm.Datagram)
	type reply struct {
		sock int
		id   uint32
	}
	got := make(chan reply, 2)
	recvOn := func(s *kcm.Socket) {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := s.Recv(buf)
		if err != nil {
			t.Errorf("socket %d: %v", s.Index(), err)
			got <- reply{s.Index(), badID}
			return
		}
		got <- reply{s.Index(), checkMsg(t, buf[:n])}
	}
	go recvOn(b)
	waitProc(t, m, func(d string) bool { return strings.Count(d, "RxWait") == 1 })
	go recvOn(a)
	waitProc(t, m, func(d string) bool { return strings.Count(d, "RxWait") == 2 })
	peer.Write(msgOf(affID(a.Index(), 7), 20))
	if r := <-got; r != (reply{a.Index(), affID(a.Index(), 7)}) {
		t.Fatalf("socket %d got %#x, want a (%d) to get its message", r.sock, r.id, a.Index())
	}
	peer.Write(msgOf(affID(b.Index(), 8), 20))
	if r := <-got; r != (reply{b.Index(), affID(b.Index(), 8)}) {
		t.Fatalf("socket %d got %#x, want b's message", r.sock, r.id)
	}
	if a.Stats().RxMsgs != 1 || b.Stats().RxMsgs != 1 {
		t.Fatalf("a received %d, b %d", a.Stats().RxMsgs, b.Stats().RxMsgs)
	}
}

// Messages without a socket of their own go to any receiving socket: an
// index no open socket has, -1, or that of a socket that stopped receiving.
func TestAffinityWithoutTargetGoesToAnySocket(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: bySocketID})
	a := m.NewSocket(kcm.Datagram)
	off := a.Clone()
	off.SetRecvDisabled(true)
	_, peer := attachPeer(t, m)
	want := []uint32{affID(99, 1), affID(off.Index(), 2), 3} // 3: too short for an index
	peer.Write(msgOf(want[0], 20))
	peer.Write(msgOf(want[1], 20))
	peer.Write(frame([]byte{0, 0, 0}))
	for _, id := range want[:2] {
		if got := recvID(t, a); got != id {
			t.Fatalf("got %#x, want %#x", got, id)
		}
	}
	if b := recvWithin(t, a, 5*time.Second); len(b) != 7 {
		t.Fatalf("got %d bytes, want the 7-byte message", len(b))
	}
}

// The messages waiting for a socket go to the others, in order, when it
// closes or disables receiving.
func TestAffinityReleasesQueueOnCloseAndDisable(t *testing.T) {
	for _, how := range []string{"close", "disable"} {
		t.Run(how, func(t *testing.T) {
			_, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID}, kcm.Datagram)
			queueFor(t, peer, a, b, 3, 20)
			if how == "close" {
				a.Close()
			} else {
				a.SetRecvDisabled(true)
			}
			expectSeqs(t, b, a, 3)
			if how == "disable" {
				a.SetRecvDisabled(false)
				peer.Write(msgOf(affID(a.Index(), 4), 20))
				if got := recvID(t, a); got != affID(a.Index(), 4) {
					t.Fatalf("a, enabled again, got %#x", got)
				}
			}
		})
	}
}

// A quarter of Config.RecvBuffer bounds what waits for particular
// sockets together: past it, a message goes to any socket. (RecvBuffer
// 400: 100 bytes for own queues, a share of 25 for each of four sockets,
// and one message always fits its socket's empty queue.)
func TestAffinityBoundFallsBackToAnySocket(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 400}, kcm.Datagram)
	c, d := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	for _, s := range []*kcm.Socket{a, c, d} {
		peer.Write(msgOf(affID(s.Index(), 0), 36)) // 40 bytes each
	}
	if got := recvID(t, b); got != affID(d.Index(), 0) {
		t.Fatalf("b got %#x, want d's message (over the bound)", got)
	}
	expectSeqs(t, a, a, 1)
	expectSeqs(t, c, c, 1)
}

// Each socket's own queue holds at most its share of that quarter (one
// message always fits): past it, the socket's messages go to any socket.
// (RecvBuffer 400: a share of 50 for each of two sockets.)
func TestAffinityShareFallsBackToAnySocket(t *testing.T) {
	_, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 400}, kcm.Datagram)
	for seq := range 3 {
		peer.Write(msgOf(affID(a.Index(), seq), 36)) // 40 bytes each
	}
	// b first: once a takes its first message, its queue is empty again
	// and would take the third.
	for seq := 1; seq < 3; seq++ {
		if got := recvID(t, b); got != affID(a.Index(), seq) {
			t.Fatalf("b got %#x, want a's message %d (over a's share)", got, seq)
		}
	}
	expectSeqs(t, a, a, 1)
}

// A socket that does not receive fills only its share of the own queues,
// so steering goes on for the others: here, with idle's share taken, the
// messages for a still wait for a instead of going to b.
func TestAffinityIdleSocketKeepsSteeringForOthers(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 4000}, kcm.Datagram)
	idle := m.NewSocket(kcm.Datagram) // 1000 bytes for own queues, a share of 333 each
	for seq := range 10 {
		peer.Write(msgOf(affID(idle.Index(), seq), 96)) // 100 bytes each
	}
	for seq := range 3 {
		peer.Write(msgOf(affID(a.Index(), seq), 96))
	}
	peer.Write(msgOf(affID(b.Index(), 0), 96))
	// b takes what idle's share could not hold, then its own message.
	for seq := 3; seq < 10; seq++ {
		if got := recvID(t, b); got != affID(idle.Index(), seq) {
			t.Fatalf("b got %#x, want idle's message %d", got, seq)
		}
	}
	if got := recvID(t, b); got != affID(b.Index(), 0) {
		t.Fatalf("b got %#x, want its own message, not a's", got)
	}
	expectSeqs(t, a, a, 3)
	expectSeqs(t, idle, idle, 3)
}

// Peek of a message waiting for its socket leaves it first in line;
// SeqPacket pieces and RecvBatch work on such messages too.
func TestAffinityPeekPiecesAndBatch(t *testing.T) {
	_, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID}, kcm.SeqPacket)
	queueFor(t, peer, a, b, 4, 40)

	buf := make([]byte, 64)
	n, _, err := a.RecvMsg(buf, kcm.Peek)
	if err != nil || checkMsg(t, buf[:n]) != affID(a.Index(), 0) {
		t.Fatalf("peek: %v", err)
	}
	whole := readPieces(t, a, 44, 10)
	if got := checkMsg(t, whole); got != affID(a.Index(), 0) {
		t.Fatalf("pieces gave %#x", got)
	}
	ms := make([]kcm.Message, 8)
	k, err := a.RecvBatch(ms)
	if err != nil || k != 3 {
		t.Fatalf("batch: %d messages, %v; want 3", k, err)
	}
	for i, msg := range ms[:k] {
		if got := checkMsg(t, msg.Bytes()); got != affID(a.Index(), i+1) {
			t.Fatalf("batch message %d is %#x", i, got)
		}
	}
	kcm.ReleaseBatch(ms[:k])
}

// A panic in the affinity function is bad input on that psock: its message
// still reaches a socket, the psock fails with ErrParse, and another psock
// goes on.
func TestAffinityPanicFailsOnlyItsPsock(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: func(msg []byte, p *kcm.Psock) int {
		if msg[4] == 0xff {
			panic("bad message")
		}
		return -1
	}})
	s := m.NewSocket(kcm.Datagram)
	bad, badPeer := attachPeer(t, m)
	_, goodPeer := attachPeer(t, m)
	badPeer.Write(frame([]byte{0xff, 1, 2}))
	if b := recvWithin(t, s, 5*time.Second); len(b) != 7 || b[4] != 0xff {
		t.Fatalf("got %x, want the message that made the function panic", b)
	}
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrParse) {
		t.Fatalf("psock error %v, want ErrParse", err)
	}
	goodPeer.Write(msgOf(5, 20))
	if got := recvID(t, s); got != 5 {
		t.Fatalf("got %#x from the other psock", got)
	}
}

// Closing the mux drops the messages waiting for sockets and counts them.
func TestAffinityMuxCloseDropsQueues(t *testing.T) {
	m := kcm.NewMux(kcm.Config{Affinity: bySocketID})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	peer.Write(msgOf(affID(a.Index(), 0), 20))
	peer.Write(msgOf(affID(b.Index(), 0), 20))
	recvID(t, b)
	m.Close()
	if st := m.Stats(); st.RxReadyDrops != 1 {
		t.Fatalf("RxReadyDrops %d, want 1", st.RxReadyDrops)
	}
	if _, err := a.Recv(make([]byte, 64)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("recv after close: %v", err)
	}
}

// A panic in the affinity function stops its psock only after the complete
// messages read with the bad one are delivered.
func TestAffinityPanicKeepsBufferedMessages(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: func(msg []byte, p *kcm.Psock) int {
		if msg[4] == 0xff {
			panic("bad message")
		}
		return -1
	}})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	batch := append(frame([]byte{0xff, 1, 2}), msgOf(1, 20)...)
	peer.Write(append(batch, msgOf(2, 20)...))
	if b := recvWithin(t, s, 5*time.Second); len(b) != 7 {
		t.Fatalf("got %d bytes first, want the 7-byte message", len(b))
	}
	for _, want := range []uint32{1, 2} {
		if got := recvID(t, s); got != want {
			t.Fatalf("got %#x, want %d", got, want)
		}
	}
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrParse) {
		t.Fatalf("psock error %v, want ErrParse", err)
	}
}

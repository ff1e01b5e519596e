package kcm_test

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// The receive fast path (a receiver leading the lone idle psock) must give
// the same results as the general path in the cases it hands over to it.
// cfLeaderMode puts each mux in the state where it is taken.

// A message longer than the Datagram receiver's buffer: the fast path lets
// go without taking it, and the general path truncates it.
func TestLeaderDatagramTruncation(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	a, b := msgOf(1, 105), msgOf(2, 20)
	if _, err := peer.Write(append(a, b...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 20)
	n, err := s.Recv(buf)
	if n != 20 || !errors.Is(err, kcm.ErrTruncated) || !bytes.Equal(buf, a[:20]) {
		t.Fatalf("n=%d err=%v", n, err)
	}
	buf = make([]byte, 64)
	if n, err := s.Recv(buf); err != nil || !bytes.Equal(buf[:n], b) {
		t.Fatalf("next message: n=%d err=%v", n, err)
	}
	if st := s.Stats(); st.RxMsgs != 3 || st.RxBytes != uint64(16+4+20+len(b)) {
		t.Fatalf("socket stats %+v", st)
	}
}

// A SeqPacket message read in pieces through Read.
func TestLeaderSeqPacketPieces(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	a := msgOf(7, 36)
	if _, err := peer.Write(a); err != nil {
		t.Fatal(err)
	}
	if got := readPieces(t, s, len(a), 16); !bytes.Equal(got, a) {
		t.Fatal("pieces do not make the message")
	}
	b := msgOf(8, 20)
	if _, err := peer.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := s.Read(buf); err != nil || !bytes.Equal(buf[:n], b) {
		t.Fatalf("whole message: n=%d err=%v", n, err)
	}
}

// RecvMessage lends the message from the psock's buffer, and the buffer is
// read into again once the message is released.
func TestLeaderRecvMessageLends(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	for i := range 100 {
		want := msgOf(uint32(i), 8+i)
		if _, err := peer.Write(want); err != nil {
			t.Fatal(err)
		}
		msg, err := s.RecvMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.Bytes(), want) || msg.Psock() != p {
			t.Fatalf("message %d: got %x", i, msg.Bytes())
		}
		msg.Release()
	}
	if st := p.Stats(); st.RxMsgs != 101 {
		t.Fatalf("psock counted %d messages, want 101", st.RxMsgs)
	}
}

// Messages held past the next receives keep their bytes: the reader must
// not read over a buffer a lent message still uses.
func TestLeaderLentMessagesSurviveLaterReads(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, s, peer)
	var held []kcm.Message
	var wants [][]byte
	for i := range 50 {
		want := msgOf(uint32(i), 32)
		if _, err := peer.Write(want); err != nil {
			t.Fatal(err)
		}
		msg, err := s.RecvMessage()
		if err != nil {
			t.Fatal(err)
		}
		held, wants = append(held, msg), append(wants, want)
	}
	for i := range held {
		if !bytes.Equal(held[i].Bytes(), wants[i]) {
			t.Fatalf("message %d changed while held", i)
		}
		held[i].Release()
	}
	last := msgOf(99, 40)
	if _, err := peer.Write(last); err != nil {
		t.Fatal(err)
	}
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, last) {
		t.Fatal("the exchange after the releases failed")
	}
}

// Receivers waiting on a lone psock get one message each from a single
// read: whoever reads it (a receiver leading it, which shares what its read
// brought in beyond its own message, or the background reader) hands the
// further messages to the waiting receivers in turn, and reads again only
// when none is left.
func TestOneReadServesEveryWaitingReceiver(t *testing.T) {
	m := newMux(t, kcm.Config{})
	socks := []*kcm.Socket{m.NewSocket(kcm.Datagram)}
	for range 3 {
		socks = append(socks, socks[0].Clone())
	}
	_, peer := attachPeer(t, m)
	cfLeaderMode(t, socks[0], peer)

	type got struct {
		sock int
		msg  []byte
		err  error
	}
	res := make(chan got, len(socks))
	for i, s := range socks {
		go func() {
			b := make([]byte, 64)
			n, err := s.Recv(b)
			res <- got{i, b[:n], err}
		}()
	}
	// Every receiver is blocked: one may lead the psock, the rest wait.
	waitProc(t, m, func(d string) bool {
		return strings.Count(d, "RxWait")+strings.Count(d, "RxLed-") == len(socks)
	})

	var all []byte
	for id := uint32(1); id <= 4; id++ {
		all = append(all, msgOf(id, 16)...)
	}
	if _, err := peer.Write(all); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]int{}
	for range socks {
		select {
		case g := <-res:
			if g.err != nil {
				t.Fatalf("socket %d: %v", g.sock, g.err)
			}
			seen[checkMsg(t, g.msg)]++
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 4 receivers returned; dump:\n%s", len(seen), proc(m))
		}
	}
	for id := uint32(1); id <= 4; id++ {
		if seen[id] != 1 {
			t.Fatalf("message %d delivered %d times (all: %v)", id, seen[id], seen)
		}
	}
	for i, s := range socks {
		want := uint64(1)
		if i == 0 {
			want = 2 // and cfLeaderMode's message
		}
		if st := s.Stats(); st.RxMsgs != want {
			t.Errorf("socket %d RxMsgs %d, want %d", i, st.RxMsgs, want)
		}
	}
	if st := m.Stats(); st.RxMsgs != 5 {
		t.Errorf("mux RxMsgs %d, want 5", st.RxMsgs)
	}
}

// Request/response traffic makes the fast path read each reply straight
// into the receiver's buffer. Whatever arrives instead must come out as the
// buffered path gives it, counters included: several messages in one read,
// a header or a body split over reads, a message longer than the buffer, a
// bad header. (net.Pipe hands each read at most one write, so the splits
// happen where the test puts them.)
func TestDirectReadsFallBack(t *testing.T) {
	failed := make(chan error, 1)
	m := newMux(t, kcm.Config{MaxMessageSize: 1000, OnPsockError: func(_ *kcm.Psock, err error) { failed <- err }})
	c, peer := net.Pipe()
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	writes := make(chan []byte, 16)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for b := range writes {
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	defer func() { close(writes); peer.Close(); <-wrote }()

	buf := make([]byte, 64)
	var msgs, total int
	recv := func(want []byte) {
		t.Helper()
		n, err := s.Recv(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("Recv: %d bytes, %v; want message %x", n, err, want[:8])
		}
		msgs, total = msgs+1, total+len(want)
	}
	var id uint32
	next := func(size int) []byte { id++; return msgOf(id, size) }
	lockstep := func() {
		for range 3 {
			msg := next(16)
			writes <- msg
			recv(msg)
		}
	}

	lockstep()
	a, b, c2, d := next(16), next(20), next(12), next(24)
	writes <- slices.Concat(a, b, c2, d[:10]) // 70 bytes: read as 64, then 6
	writes <- d[10:]
	for _, msg := range [][]byte{a, b, c2, d} {
		recv(msg)
	}
	lockstep()
	e := next(30)
	writes <- e[:3] // not even the header
	writes <- e[3:]
	recv(e)
	lockstep()
	f := next(40)
	writes <- f[:10] // the header and part of the body
	writes <- f[10:]
	recv(f)
	lockstep()
	g := next(100)
	writes <- g
	if n, err := s.Recv(buf); n != len(buf) || !errors.Is(err, kcm.ErrTruncated) || !bytes.Equal(buf, g[:len(buf)]) {
		t.Fatalf("longer than the buffer: %d bytes, %v", n, err)
	}
	msgs, total = msgs+1, total+len(buf)
	lockstep()

	if st := s.Stats(); st.RxMsgs != uint64(msgs) || st.RxBytes != uint64(total) {
		t.Fatalf("socket stats %+v, want %d messages, %d bytes", st, msgs, total)
	}
	if st := p.Stats(); st.RxMsgs != uint64(msgs) || st.RxBytes != uint64(total-len(buf)+len(g)) || st.NeedMoreHdr != 1 {
		t.Fatalf("psock stats %+v, want %d messages, %d bytes, 1 parser call short of a header", st, msgs, total-len(buf)+len(g))
	}

	// A bad header stops the psock, as on the buffered path.
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv(buf)
		got <- err
	}()
	writes <- frame(make([]byte, 5000))
	select {
	case err := <-failed:
		if !errors.Is(err, kcm.ErrMessageTooBig) {
			t.Fatalf("psock failed with %v, want ErrMessageTooBig", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the psock did not fail on a 5000-byte message (limit 1000)")
	}
	s.Close()
	if err := <-got; !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Recv after the psock failed and the socket closed: %v", err)
	}
}

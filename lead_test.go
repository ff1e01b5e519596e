package kcm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm/internal/testconn"
)

// TestLeadYieldsToKeptRest: a leader that finds, once it has read its
// message, that another call on its socket was handed part of a message
// meanwhile (possible when a psock is attached during the read) returns
// that rest first and keeps its own message behind it, so the pieces of
// two messages never interleave on the socket. The race cannot be made to
// happen on demand, so the test sets the state up by hand.
func TestLeadYieldsToKeptRest(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(SeqPacket)

	// A first message, handed by the psock's background reader to a
	// receive waiting for it, takes the psock from that reader. (Had it
	// been queued, the reader would go on reading.)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	freeFromReader(t, m, p, s, peer)
	// m.mu is held: another call's rest, then a lead for a piece-taking call.
	rest := []byte("rest of another message")
	s.keepRest(Message{b: rest, rest: true}, false)
	peer.Write(framed("second"))
	p.rx, p.leader = rxLed, s
	var out [1]Message
	n, err := m.lead(p, s, out[:], rxMode{limit: 64, partial: true})
	got, queued := out[0], m.ready.len()
	m.mu.Unlock()
	if n != 1 || err != nil || !bytes.Equal(got.b, rest) {
		t.Fatalf("lead returned %d, %v, %q; want the kept rest first", n, err, got.b)
	}
	if queued != 1 {
		t.Fatalf("%d messages queued after the lead; want its own message", queued)
	}
	buf := make([]byte, 64)
	if n, _, err := s.RecvMsg(buf, 0); err != nil || string(buf[4:n]) != "second" {
		t.Fatalf("next receive: %q, %v; want the leader's message", buf[:n], err)
	}
}

// waitLocked polls cond under m.mu until it holds, and returns with m.mu
// held; after 5 s it fails the test with msg.
func waitLocked(t *testing.T, m *Mux, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		if cond() {
			return
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLeadBatchYieldsToKeptRest: TestLeadYieldsToKeptRest for a RecvBatch
// whose lead carves several messages, with the race made to happen: the
// leader is held in its parser after its read, a psock is attached, and
// the new psock's message is handed in part to a piece-taking call on the
// same socket. The batch must not overtake the rest of that message: the
// socket's next message is its rest, then the leader's, in stream order.
func TestLeadBatchYieldsToKeptRest(t *testing.T) {
	m, s := batchBehindRest(t, nil)
	buf := make([]byte, 64)
	for _, want := range []string{"held-1", "p-2"} {
		n, fl, err := s.RecvMsg(buf, 0)
		if err != nil || fl&EOR == 0 || n < 4 || string(buf[4:n]) != want {
			t.Fatalf("next receive: %q, %v, %v; want %q whole", buf[:n], fl, err, want)
		}
	}
	if st := m.Stats(); st.RxReadyDrops != 0 {
		t.Errorf("RxReadyDrops %d, want 0", st.RxReadyDrops)
	}
}

// The whole messages a socket keeps behind a rest are not its own: when it
// closes or stops receiving first, they go to the other sockets, in order,
// as its queued messages would (spec section 3); only the rest, which no
// other socket could make sense of, stays with it or is dropped.
func TestMessagesKeptBehindRestMoveOn(t *testing.T) {
	for _, how := range []string{"close", "disable"} {
		t.Run(how, func(t *testing.T) {
			m, s := batchBehindRest(t, nil)
			other := m.NewSocket(SeqPacket)
			other.SetReadDeadline(time.Now().Add(5 * time.Second))
			if how == "close" {
				s.Close()
			} else {
				s.SetRecvDisabled(true)
			}
			buf := make([]byte, 64)
			for _, want := range []string{"held-1", "p-2"} {
				n, fl, err := other.RecvMsg(buf, 0)
				if err != nil || fl&EOR == 0 || n < 4 || string(buf[4:n]) != want {
					t.Fatalf("other socket: %q, %v, %v; want %q whole", buf[:n], fl, err, want)
				}
			}
			if how == "disable" {
				m.mu.Lock()
				kept := len(s.kept)
				m.mu.Unlock()
				if kept != 0 {
					t.Errorf("disabled socket keeps %d messages, want none", kept)
				}
			}
			if st := m.Stats(); st.RxReadyDrops != 0 {
				t.Errorf("RxReadyDrops %d, want 0", st.RxReadyDrops)
			}
		})
	}
}

// batchBehindRest makes the race of TestLeadBatchYieldsToKeptRest happen
// and checks the batch's result. It returns the mux and the socket, which
// then keeps the leader's two messages, "held-1" and "p-2", behind the
// rest the batch returned. beforeLead, if not nil, is called while the
// leader still sits in its parser, the rest kept.
func batchBehindRest(t *testing.T, beforeLead func(s *Socket)) (*Mux, *Socket) {
	t.Helper()
	h := newHeldLead(t)
	m, p, s, peer1, held := h.m, h.p, h.s, h.peer1, h.held
	s.SetReadDeadline(time.Now().Add(5 * time.Second))

	// A first message, handed to a waiting receive, makes the background
	// reader let go (see TestLeadYieldsToKeptRest); the grace timer is
	// disarmed so that the batch receive, not a new background reader,
	// takes the psock.
	freeFromReader(t, m, p, s, peer1)
	p.graceArmed = false
	m.mu.Unlock()

	type batch struct {
		ms  []Message
		err error
	}
	batchc := make(chan batch, 1)
	go func() {
		ms := make([]Message, 4)
		n, err := s.RecvBatch(ms)
		batchc <- batch{ms[:n], err}
	}()
	waitLocked(t, m, "the batch receive never led the psock", func() bool { return p.rx == rxLed && p.leader == s })
	m.mu.Unlock()
	two := append(framed("held-1"), framed("p-2")...)
	peer1.Write(two)
	if n := <-held; n != len(two) {
		t.Fatalf("the leader's read brought %d bytes, want both messages' %d", n, len(two))
	}

	// The leader sits in its parser with both messages read. A piece-taking
	// call waits; a psock attached now hands it part of its message.
	long := h.handPiece(t)

	if beforeLead != nil {
		beforeLead(s)
	}
	h.release()
	b := <-batchc
	defer ReleaseBatch(b.ms)
	var got []string
	for _, msg := range b.ms {
		got = append(got, string(msg.b))
	}
	if b.err != nil || len(got) != 1 || got[0] != string(framed(long)[10:]) {
		t.Fatalf("batch: %q, %v; want only the rest of the message a call on the socket began reading", got, b.err)
	}
	return m, s
}

// TestFastLeadYieldsToKeptRest: TestLeadBatchYieldsToKeptRest for the fast
// path, a Recv that leads the lone psock (recvFast): its message must not
// overtake the rest of a message another call on its socket began reading
// while it read, neither copied (Recv) nor lent (RecvMessage).
func TestFastLeadYieldsToKeptRest(t *testing.T) {
	for _, lend := range []bool{false, true} {
		t.Run(fmt.Sprintf("lend=%v", lend), func(t *testing.T) { testFastLeadYieldsToKeptRest(t, lend, false) })
	}
	// Its socket stops receiving before the leader takes the message
	// (TestDisabledDuringLeadKeepsNoMessages): the message goes to the
	// other sockets at once.
	t.Run("disabled", func(t *testing.T) { testFastLeadYieldsToKeptRest(t, false, true) })
}

func testFastLeadYieldsToKeptRest(t *testing.T, lend, disable bool) {
	h := newHeldLead(t)
	m, p, s, peer1, held := h.m, h.p, h.s, h.peer1, h.held
	// s has no read deadline: the fast path takes none.
	within := func(what string, c <-chan struct{}) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never came", what)
		}
	}

	freeFromReader(t, m, p, s, peer1)
	p.graceArmed = false // see TestLeadBatchYieldsToKeptRest
	m.mu.Unlock()

	var got []byte
	var gotErr error
	fast := make(chan struct{})
	go func() {
		defer close(fast)
		if lend {
			msg, err := s.RecvMessage()
			got, gotErr = append([]byte(nil), msg.Bytes()...), err
			msg.Release()
			return
		}
		b := make([]byte, 64)
		n, err := s.Recv(b)
		got, gotErr = b[:n], err
	}()
	waitLocked(t, m, "the receive never led the psock", func() bool { return p.rx == rxLed && p.leader == s })
	m.mu.Unlock()
	peer1.Write(framed("held-1"))
	<-held

	long := h.handPiece(t)

	next, flags, want := s, RecvFlags(0), SocketStats{RxMsgs: 3, RxBytes: uint64(len("first") + len(long) + len("held-1") + 12)}
	if disable {
		s.SetRecvDisabled(true)
		next, flags, want = m.NewSocket(SeqPacket), DontWait, SocketStats{RxMsgs: 2, RxBytes: uint64(len("first") + len(long) + 8)}
	}
	h.release()
	within("the leading receive's message", fast)
	if gotErr != nil || string(got) != string(framed(long)[10:]) {
		t.Fatalf("leading receive: %q, %v; want the rest of the message a call on the socket began reading", got, gotErr)
	}
	b := make([]byte, 64)
	n, fl, err := next.RecvMsg(b, flags)
	if err != nil || fl&EOR == 0 || n < 4 || string(b[4:n]) != "held-1" {
		t.Fatalf("next receive: %q, %v, %v; want the leader's message whole", b[:n], fl, err)
	}
	if st := s.Stats(); st.RxMsgs != want.RxMsgs || st.RxBytes != want.RxBytes {
		t.Fatalf("socket counters %+v; want %+v", st, want)
	}
}

// TestSocketCloseHandsOnKeptMessages: whole messages a leader read while
// another call on its socket was handed part of a message (see
// TestLeadYieldsToKeptRest) are the mux's, not the socket's: when the
// socket closes they go to the other sockets, as its other unread messages
// do. Only the rest is dropped. They were dropped, uncounted.
func TestSocketCloseHandsOnKeptMessages(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s, other := m.NewSocket(SeqPacket), m.NewSocket(SeqPacket)

	freeFromReader(t, m, p, s, peer)
	s.keepRest(Message{b: []byte("rest of another message"), rest: true}, false)
	peer.Write(append(framed("second"), framed("third")...))
	p.rx, p.leader = rxLed, s
	out := make([]Message, 4)
	n, err := m.lead(p, s, out, rxMode{limit: -1})
	queued := m.ready.len()
	m.mu.Unlock()
	ReleaseBatch(out[:n])
	if n != 1 || err != nil || queued != 2 {
		t.Fatalf("lead returned %d, %v and queued %d; want the rest, and both messages queued", n, err, queued)
	}

	s.Close()
	buf := make([]byte, 64)
	for _, want := range []string{"second", "third"} {
		n, fl, err := other.RecvMsg(buf, DontWait)
		if err != nil || fl&EOR == 0 || n < 4 || string(buf[4:n]) != want {
			t.Fatalf("other socket: %q, %v, %v; want %q", buf[:n], fl, err, want)
		}
	}
}

// TestPeekLeadShowsKeptRest: a Peek that leads the psock while another
// call on its socket is handed part of a message returns that rest, which
// is what the next receive gets, and leaves its own message behind it. It
// returned its own message, which the next receive did not get.
func TestPeekLeadShowsKeptRest(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(SeqPacket)
	freeFromReader(t, m, p, s, peer)
	const rest = "rest of another message"
	s.keepRest(Message{b: []byte(rest), rest: true}, false)
	peer.Write(framed("second"))
	p.rx, p.leader = rxLed, s
	var out [1]Message
	n, err := m.lead(p, s, out[:], rxMode{limit: 64, peek: true})
	m.mu.Unlock()
	if n != 1 || err != nil || string(out[0].b) != rest {
		t.Fatalf("peek's lead: %d, %v, %q; want the kept rest", n, err, out[0].b)
	}
	m.mu.Lock()
	s.keepRest(out[0], true) // as peek puts it back
	m.mu.Unlock()
	buf := make([]byte, 64)
	for _, want := range []string{rest, "\x00\x00\x00\x06second"} {
		n, _, err := s.RecvMsg(buf, DontWait)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("next receive: %q, %v; want %q", buf[:n], err, want)
		}
	}
}

// freeFromReader takes psock p, attached to m with a 4-byte length prefix
// parser, from its background reader: a first message, "first", handed by
// the reader to a receive of s waiting for it, makes the reader let go
// (had the message been queued, the reader would go on reading). It
// returns with m.mu held, once p can be led.
func freeFromReader(t *testing.T, m *Mux, p *Psock, s *Socket, peer net.Conn) {
	t.Helper()
	first := make(chan error, 1)
	go func() {
		n, err := s.Recv(make([]byte, 64))
		if err == nil && n != 9 {
			err = fmt.Errorf("%d bytes", n)
		}
		first <- err
	}()
	waitLocked(t, m, "the first receive never waited", func() bool { return m.waiters.follower() != nil || p.leader == s })
	m.mu.Unlock()
	peer.Write(append(binary.BigEndian.AppendUint32(nil, 5), "first"...))
	if err := <-first; err != nil {
		t.Fatalf("first message: %v", err)
	}
	waitLocked(t, m, "the psock never became idle", func() bool { return m.leadableLocked() == p })
}

// framed returns payload s behind its 4-byte big-endian length, as
// framedLen parses it.
func framed(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

func framedLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	return testconn.FrameLen(b), nil
}

// heldLead is a mux of one psock, p, whose parser stops once, on the first
// message whose payload begins "held", until release: a receive that leads
// p can be held after its read while the test changes the mux under it.
type heldLead struct {
	m         *Mux
	p         *Psock
	s         *Socket  // SeqPacket
	peer1     net.Conn // p's peer
	c2, peer2 net.Conn // a second connection, for the test to attach
	held      chan int // the bytes the parser saw when it stopped
	release   func()   // lets the parser go on; also at the test's end
}

func newHeldLead(t *testing.T) *heldLead {
	h := &heldLead{held: make(chan int, 1)}
	hold := make(chan struct{})
	var holdOnce, releaseOnce sync.Once
	h.release = func() { releaseOnce.Do(func() { close(hold) }) }
	gate := ParserFunc(func(b []byte) (int, error) {
		if bytes.HasPrefix(b[min(4, len(b)):], []byte("held")) {
			holdOnce.Do(func() { h.held <- len(b); <-hold })
		}
		return framedLen(b)
	})
	c1, peer1 := loopbackPair(t)
	h.c2, h.peer2 = loopbackPair(t)
	h.peer1 = peer1
	h.m = NewMux(Config{})
	t.Cleanup(func() { h.m.Close() })
	t.Cleanup(h.release) // runs first
	p, err := h.m.Attach(c1, gate)
	if err != nil {
		t.Fatal(err)
	}
	h.p, h.s = p, h.m.NewSocket(SeqPacket)
	return h
}

// TestKeptMessagesReachLeadingReceive: the whole messages a lead read while
// another call on its socket was handed part of a message are queued at
// once, so a receive of another socket takes them without waiting for the
// socket to close or stop receiving, and without leading the psock (it
// would wait in its read for bytes the peer never sends).
func TestKeptMessagesReachLeadingReceive(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s, other := m.NewSocket(SeqPacket), m.NewSocket(SeqPacket)
	freeFromReader(t, m, p, s, peer)
	s.keepRest(Message{b: []byte("rest of another message"), rest: true}, false)
	peer.Write(framed("second"))
	p.rx, p.leader = rxLed, s
	var out [1]Message
	n, err := m.lead(p, s, out[:], rxMode{limit: -1})
	p.graceArmed = false // no background reader
	m.mu.Unlock()
	ReleaseBatch(out[:n])
	if n != 1 || err != nil {
		t.Fatalf("lead returned %d, %v; want the rest", n, err)
	}
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	if n, err := other.Recv(b); err != nil || string(b[:n]) != string(framed("second")) {
		t.Fatalf("other socket: %q, %v; want the message the lead read", b[:n], err)
	}
}

// TestDisabledDuringLeadKeepsNoMessages: a socket that stops receiving
// while a receive on it leads, and another call on it is handed part of a
// message, keeps only that rest: the leader's whole messages, which it
// would keep behind the rest, go to the other sockets at once, as those it
// kept before SetRecvDisabled did. They stayed on the disabled socket,
// which takes no new messages, until a receive on it took them.
func TestDisabledDuringLeadKeepsNoMessages(t *testing.T) {
	m, s := batchBehindRest(t, func(s *Socket) { s.SetRecvDisabled(true) })
	m.mu.Lock()
	kept := len(s.kept)
	m.mu.Unlock()
	if kept != 0 {
		t.Errorf("disabled socket keeps %d messages, want none", kept)
	}
	other := m.NewSocket(SeqPacket)
	buf := make([]byte, 64)
	for _, want := range []string{"held-1", "p-2"} {
		n, fl, err := other.RecvMsg(buf, DontWait)
		if err != nil || fl&EOR == 0 || n < 4 || string(buf[4:n]) != want {
			t.Fatalf("other socket: %q, %v, %v; want %q whole", buf[:n], fl, err, want)
		}
	}
}

// handPiece has a piece-taking receive of h.s wait, attaches h.c2 and has
// its peer send a message longer than the piece: the receive gets the
// message's first 10 bytes, and h.s keeps the rest. It returns the
// message's payload.
func (h *heldLead) handPiece(t *testing.T) string {
	t.Helper()
	type piece struct {
		b     []byte
		flags RecvFlags
		err   error
	}
	piecec := make(chan piece, 1)
	go func() {
		b := make([]byte, 10)
		n, fl, err := h.s.RecvMsg(b, 0)
		piecec <- piece{b[:n], fl, err}
	}()
	waitLocked(t, h.m, "the piece-taking receive never waited", func() bool { return h.m.waiters.follower() != nil })
	h.m.mu.Unlock()
	if _, err := h.m.Attach(h.c2, ParserFunc(framedLen)); err != nil {
		t.Fatal(err)
	}
	long := "q-1 is longer than ten bytes"
	h.peer2.Write(framed(long))
	select {
	case pc := <-piecec:
		if pc.err != nil || pc.flags&EOR != 0 || !bytes.Equal(pc.b, framed(long)[:10]) {
			t.Fatalf("piece: %q, %v, %v; want the first 10 bytes of the new psock's message", pc.b, pc.flags, pc.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the piece-taking receive got nothing")
	}
	return long
}

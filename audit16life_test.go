package kcm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// a16GateConn holds every Write until the gate opens or the connection is
// closed (unlike stepConn, Close releases a held write, as closing a real
// connection does). Deadlines pass through to the connection, but a held
// Write ignores them: it stands for a write the mux cannot interrupt.
type a16GateConn struct {
	net.Conn
	entered   chan struct{} // a Write began (buffered: one per write)
	gate      chan struct{} // closed: writes go through
	closed    chan struct{}
	closeOnce sync.Once
	fail      atomic.Bool // once the gate opens, writes fail
}

func newA16GateConn(c net.Conn) *a16GateConn {
	return &a16GateConn{Conn: c, entered: make(chan struct{}, 64), gate: make(chan struct{}), closed: make(chan struct{})}
}

var errA16GateWrite = errors.New("gate: write failed")

func (g *a16GateConn) Write(b []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.gate:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	if g.fail.Load() {
		return 0, errA16GateWrite
	}
	return g.Conn.Write(b)
}

func (g *a16GateConn) Close() error {
	g.closeOnce.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// waitPsockFlag waits until psock i's line of the proc dump shows flag.
func waitPsockFlag(t *testing.T, m *kcm.Mux, i int, flag string) {
	t.Helper()
	obj := "psock-" + string(rune('0'+i))
	waitProc(t, m, func(d string) bool { return strings.Contains(procLine(d, obj), flag) })
}

// Psock.Unattach: "one that the mux's Close overtakes with ErrClosed (the
// connection is then closed)"; a second concurrent Unattach fails with
// ErrUnattachInProgress; Mux.Close: blocked calls return ErrClosed; the
// psock's Err is ErrClosed and OnPsockError is not called for Close.
func TestAudit16UnattachOvertakenByMuxClose(t *testing.T) {
	var cbs atomic.Int32
	m := kcm.NewMux(kcm.Config{OnPsockError: func(*kcm.Psock, error) { cbs.Add(1) }})
	defer m.Close()
	c, peer := tcpPair(t)
	g := newA16GateConn(c)
	p, err := m.Attach(g, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	sent := make(chan error, 1)
	go func() { sent <- s.Send(msgOf(1, 100)) }()
	<-g.entered // the sender writes its own message, held
	un := make(chan error, 1)
	var unConn net.Conn
	go func() {
		var err error
		unConn, err = p.Unattach()
		un <- err
	}()
	waitPsockFlag(t, m, 0, "Done") // unattaching: waits for the held write
	if _, err := p.Unattach(); !errors.Is(err, kcm.ErrUnattachInProgress) {
		t.Fatalf("second Unattach: %v, want ErrUnattachInProgress", err)
	}
	select {
	case err := <-un:
		t.Fatalf("Unattach returned %v while the write is held", err)
	default:
	}
	m.Close()
	if err := waitErr(t, un, "Unattach"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Unattach overtaken by Close: %v, want ErrClosed", err)
	}
	if unConn != nil {
		t.Fatalf("Unattach overtaken by Close returned a connection %v", unConn)
	}
	if err := waitErr(t, sent, "Send"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Send blocked in a write when the mux closed: %v, want ErrClosed", err)
	}
	if err := waitDone(t, p); err != kcm.ErrClosed {
		t.Fatalf("Err = %v, want ErrClosed", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, peer); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
	if n := cbs.Load(); n != 0 {
		t.Fatalf("OnPsockError called %d times for Close/Unattach", n)
	}
}

// A write that fails while its psock is being unattached is the
// unattach's, not a psock failure: Unattach returns the connection with
// ErrMidMessage (a wrapper: any interrupted write counts as cut), Err stays
// nil, OnPsockError is not called, and the message goes out whole on the
// other psock.
func TestAudit16UnattachWriteErrorIsNoFailure(t *testing.T) {
	var cbs atomic.Int32
	m := newMux(t, kcm.Config{OnPsockError: func(*kcm.Psock, error) { cbs.Add(1) }})
	c, _ := tcpPair(t)
	g := newA16GateConn(c)
	p, err := m.Attach(g, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	msg := msgOf(7, 300)
	sent := make(chan error, 1)
	go func() { sent <- s.Send(msg) }()
	<-g.entered
	_, peer2 := attachPeer(t, m)
	un := make(chan error, 1)
	var back net.Conn
	go func() {
		var err error
		back, err = p.Unattach()
		un <- err
	}()
	waitPsockFlag(t, m, 0, "Done")
	g.fail.Store(true)
	close(g.gate)
	if err := waitErr(t, un, "Unattach"); !errors.Is(err, kcm.ErrMidMessage) {
		t.Fatalf("Unattach: %v, want ErrMidMessage", err)
	}
	if back == nil {
		t.Fatal("no connection returned")
	}
	defer back.Close()
	if err := waitErr(t, sent, "Send"); err != nil {
		t.Fatalf("Send: %v", err)
	}
	peer2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readMsg(t, peer2); !bytes.Equal(got, msg) {
		t.Fatal("restarted message differs")
	}
	if err := waitDone(t, p); err != nil {
		t.Fatalf("Err after Unattach = %v", err)
	}
	if n := cbs.Load(); n != 0 {
		t.Fatalf("OnPsockError called %d times for an Unattach", n)
	}
}

// Spec 2: bytes already buffered are parsed right after attach; an
// Unattach right after the attach, whatever the reader was doing, loses
// nothing: the messages it parsed are receivable, the connection returned
// yields the rest, then the live stream.
func TestAudit16UnattachRightAfterAttachLosesNothing(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	buf := make([]byte, 1<<16)
	for round := range 40 {
		c, peer := tcpPair(t)
		var stream []byte
		for i := range 30 {
			stream = append(stream, msgOf(uint32(round<<8|i), 20+i*37)...)
		}
		tail := msgOf(uint32(round<<8|255), 500)
		cut := 3 + round*7%400
		if _, err := peer.Write(append(append([]byte(nil), stream...), tail[:cut]...)); err != nil {
			t.Fatal(err)
		}
		p, err := m.Attach(c, lenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if round%2 == 1 {
			time.Sleep(time.Duration(round%5) * 100 * time.Microsecond) // vary where the reader is
		}
		back, err := p.Unattach()
		if err != nil {
			t.Fatalf("round %d: Unattach: %v", round, err)
		}
		var got []byte
		for {
			n, _, err := s.RecvMsg(buf, kcm.DontWait)
			if err != nil {
				if !errors.Is(err, kcm.ErrWouldBlock) {
					t.Fatalf("round %d: recv: %v", round, err)
				}
				break
			}
			got = append(got, buf[:n]...)
		}
		if st := p.Stats(); st.RxBytes != uint64(len(got)) {
			t.Fatalf("round %d: psock parsed %d bytes, %d received", round, st.RxBytes, len(got))
		}
		if _, err := peer.Write(tail[cut:]); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), stream...), tail...)
		rest := make([]byte, len(want)-len(got))
		back.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(back, rest); err != nil {
			t.Fatalf("round %d: reading the returned connection: %v", round, err)
		}
		if !bytes.Equal(append(got, rest...), want) {
			t.Fatalf("round %d: bytes lost, repeated or reordered across the unattach", round)
		}
		back.Close()
	}
}

// Spec 2 / Psock.Unattach: a receiver leading the lone psock, in the
// direct-read mode of request/response traffic, has read half a message
// when the psock is unattached: the returned connection yields those
// bytes, then the rest of the stream; the receiver goes on waiting and
// gets the next psock's message.
func TestAudit16UnattachLeaderHalfMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	rp := &recordingParser{}
	c, peer := tcpPair(t)
	p, err := m.Attach(c, rp)
	if err != nil {
		t.Fatal(err)
	}
	// Request/response: each read is exactly one message.
	for range 3 {
		cfLeaderMode(t, s, peer)
	}
	half := msgOf(5, 400)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 4096)
		n, err := s.Recv(b)
		if err != nil {
			t.Errorf("recv: %v", err)
			got <- nil
			return
		}
		got <- b[:n]
	}()
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxLed-0") })
	rp.reset()
	if _, err := peer.Write(half[:100]); err != nil {
		t.Fatal(err)
	}
	waitProc(t, m, func(string) bool {
		for _, n := range rp.calls() {
			if n == 100 {
				return true
			}
		}
		return false
	})
	back, err := p.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := peer.Write(half[100:]); err != nil {
		t.Fatal(err)
	}
	rest := make([]byte, len(half))
	back.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(back, rest); err != nil {
		t.Fatalf("returned connection: %v", err)
	}
	if !bytes.Equal(rest, half) {
		t.Fatal("the returned connection does not continue where the mux stopped")
	}
	select {
	case b := <-got:
		t.Fatalf("receive returned %d bytes after its psock left", len(b))
	default:
	}
	_, peer2 := attachPeer(t, m)
	next := msgOf(6, 50)
	peer2.Write(next)
	select {
	case b := <-got:
		if !bytes.Equal(b, next) {
			t.Fatal("the waiting receive got the wrong message")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting receive did not get the new psock's message")
	}
}

// Spec 2: the same connection attached to several muxes at once: exactly
// one attach succeeds, the others fail with ErrAlreadyAttached and leave
// the connection alone.
func TestAudit16ConcurrentAttachToSeveralMuxes(t *testing.T) {
	for range 20 {
		c, peer := tcpPair(t)
		const n = 6
		muxes := make([]*kcm.Mux, n)
		for i := range muxes {
			muxes[i] = newMux(t, kcm.Config{})
		}
		var wg sync.WaitGroup
		var wins atomic.Int32
		winner := make(chan *kcm.Mux, n)
		start := make(chan struct{})
		for _, m := range muxes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := m.Attach(c, lenPrefix)
				switch {
				case err == nil:
					wins.Add(1)
					winner <- m
				case !errors.Is(err, kcm.ErrAlreadyAttached):
					t.Errorf("attach: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("%d attaches succeeded", w)
		}
		m := <-winner
		s := m.NewSocket(kcm.Datagram)
		msg := msgOf(3, 40)
		peer.Write(msg)
		if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
			t.Fatal("message differs")
		}
		for _, o := range muxes {
			if n := len(o.Psocks()); (o == m) != (n == 1) || n > 1 {
				t.Fatalf("mux has %d psocks", n)
			}
		}
	}
}

// Config.OnPsockError: called once, after the psock left, in a goroutine
// of its own, "so it may call any method of the mux, Close included".
func TestAudit16OnPsockErrorMayCallBackIntoMux(t *testing.T) {
	type result struct {
		doneClosed bool
		errMatches bool
		unattach   error
		psocks     int
		attach     error
	}
	res := make(chan result, 4)
	var m *kcm.Mux
	var spare net.Conn
	m = kcm.NewMux(kcm.Config{OnPsockError: func(p *kcm.Psock, err error) {
		var r result
		select {
		case <-p.Done():
			r.doneClosed = true
		default:
		}
		r.errMatches = p.Err() == err
		_, r.unattach = p.Unattach()
		m.Stats()
		r.psocks = len(m.Psocks())
		np, aerr := m.Attach(spare, lenPrefix)
		r.attach = aerr
		if np != nil {
			np.Unattach()
		}
		m.Close()
		res <- r
	}})
	defer m.Close()
	spare, _ = tcpPair(t)
	p, peer := attachPeer(t, m)
	_, _ = attachPeer(t, m)
	peer.Close()
	if err := waitDone(t, p); err != io.EOF {
		t.Fatalf("Err = %v, want io.EOF", err)
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("the callback did not finish: it deadlocked calling back into the mux")
	}
	if !r.doneClosed || !r.errMatches || !errors.Is(r.unattach, kcm.ErrNotAttached) || r.psocks != 1 || r.attach != nil {
		t.Fatalf("callback saw %+v", r)
	}
	select {
	case <-m.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the callback's Close did not close the mux")
	}
	select {
	case r := <-res:
		t.Fatalf("second callback %+v", r)
	case <-time.After(20 * time.Millisecond): // no event for "no call"
	}
}

// Mux.Close: "Blocked calls return ErrClosed". A Send whose own large
// message is part written to a peer that stopped reading is such a call.
func TestAudit16MuxCloseEndsSendMidWrite(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	p, peer := attachPeer(t, m)
	_ = peer // it never reads
	s := m.NewSocket(kcm.Datagram)
	sent := make(chan error, 1)
	msg := msgOf(1, 16<<20)
	go func() { sent <- s.Send(msg) }()
	waitSmem(t, m, p.Index(), int64(len(msg))) // the write is under way
	m.Close()
	if err := waitErr(t, sent, "Send"); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Send: %v, want ErrClosed", err)
	}
	if err := waitDone(t, p); err != kcm.ErrClosed {
		t.Fatalf("Err = %v", err)
	}
}

// ConnSet: a connection the application unattaches is the application's:
// the set dials a replacement and never closes the returned connection,
// also when the set closes.
func TestAudit16ConnSetLeavesUnattachedConnAlone(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 1, Dial: tcpDial(addr), Parser: lenPrefix,
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	peer1 := accept(t, accepted)
	waitFor(t, "the set's psock", func() bool { return len(cs.Psocks()) == 1 })
	p1 := cs.Psocks()[0]
	back, err := p1.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	peer2 := accept(t, accepted)
	waitFor(t, "a replacement", func() bool { ps := cs.Psocks(); return len(ps) == 1 && ps[0] != p1 })
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}
	peer2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the set's own connection after Close: %v, want EOF", err)
	}
	// The application's connection still works both ways.
	msg := msgOf(9, 30)
	if _, err := back.Write(msg); err != nil {
		t.Fatalf("write on the unattached connection: %v", err)
	}
	peer1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readMsg(t, peer1); !bytes.Equal(got, msg) {
		t.Fatal("differs")
	}
	peer1.Write(msg)
	b := make([]byte, len(msg))
	back.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(back, b); err != nil || !bytes.Equal(b, msg) {
		t.Fatalf("read on the unattached connection: %v", err)
	}
	if st := m.Stats(); st.PsockAttach != 2 || st.PsockUnattach != 2 {
		t.Fatalf("attach %d unattach %d", st.PsockAttach, st.PsockUnattach)
	}
}

// Spec 3 peer EOF with a receiver leading the lone psock (direct reads of
// request/response traffic): a message before EOF is delivered, then Err
// is io.EOF at a boundary, io.ErrUnexpectedEOF inside a message.
func TestAudit16PeerEOFWhileLeading(t *testing.T) {
	for _, mid := range []bool{false, true} {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		p, peer := attachPeer(t, m)
		for range 3 {
			cfLeaderMode(t, s, peer)
		}
		got := make(chan []byte, 2)
		go func() {
			b := make([]byte, 4096)
			for {
				n, err := s.Recv(b)
				if err != nil {
					close(got)
					return
				}
				got <- append([]byte(nil), b[:n]...)
			}
		}()
		waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxLed-0") })
		last := msgOf(8, 60)
		out := last
		if mid {
			out = append(append([]byte(nil), last...), msgOf(9, 60)[:30]...)
		}
		peer.Write(out)
		peer.Close()
		want := io.EOF
		if mid {
			want = io.ErrUnexpectedEOF
		}
		if err := waitDone(t, p); err != want {
			t.Fatalf("mid=%v: Err = %v, want %v", mid, err, want)
		}
		select {
		case b := <-got:
			if !bytes.Equal(b, last) {
				t.Fatal("message before EOF differs")
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("mid=%v: the message before EOF was not delivered", mid)
		}
		m.Close()
		for range got {
		}
	}
}

// Spec 1: psock indexes are the lowest free, also after a failure; socket
// indexes the lowest free with several holes.
func TestAudit16IndexesAfterFailureAndHoles(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p0, peer0 := attachPeer(t, m)
	p1, _ := attachPeer(t, m)
	p2, _ := attachPeer(t, m)
	if p0.Index() != 0 || p1.Index() != 1 || p2.Index() != 2 {
		t.Fatal("psock indexes")
	}
	peer0.Close()
	waitDone(t, p0)
	if _, err := p2.Unattach(); err != nil {
		t.Fatal(err)
	}
	a, _ := attachPeer(t, m)
	b, _ := attachPeer(t, m)
	c, _ := attachPeer(t, m)
	if a.Index() != 0 || b.Index() != 2 || c.Index() != 3 {
		t.Fatalf("psock indexes after holes: %d %d %d", a.Index(), b.Index(), c.Index())
	}
	ss := []*kcm.Socket{m.NewSocket(kcm.Datagram), m.NewSocket(kcm.SeqPacket), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)}
	ss[3].Close()
	ss[0].Close()
	ss[2].Close()
	for _, want := range []int{0, 2, 3, 4} {
		if x := ss[1].Clone(); x.Index() != want || x.Type() != kcm.SeqPacket {
			t.Fatalf("clone index %d type %v, want %d", x.Index(), x.Type(), want)
		}
	}
	idx := []int{}
	for _, s := range m.Sockets() {
		idx = append(idx, s.Index())
	}
	if len(idx) != 5 || idx[0] != 0 || idx[4] != 4 {
		t.Fatalf("Sockets indexes %v", idx)
	}
}

// Spec 5: "plus aggregates of psocks that left": the mux's counters keep
// what psocks that were unattached or failed had counted, error counters
// included, and never go down as psocks leave.
func TestAudit16StatsKeepPsocksThatLeft(t *testing.T) {
	m := newMux(t, kcm.Config{MaxMessageSize: 1000})
	s := m.NewSocket(kcm.Datagram)
	pa, peerA := attachPeer(t, m)
	peerA.Write(msgOf(1, 100))
	recvWithin(t, s, 5*time.Second)
	if err := s.Send(msgOf(2, 50)); err != nil {
		t.Fatal(err)
	}
	readMsg(t, peerA)
	before := m.Stats()
	back, err := pa.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	back.Close()
	after := m.Stats()
	if after.RxMsgs < before.RxMsgs || after.TxMsgs < before.TxMsgs || after.RxMsgs != 1 || after.TxMsgs != 1 ||
		after.Psocks.Reserved != after.Psocks.Unreserved || after.Psocks.Reserved != 1 {
		t.Fatalf("after unattach %+v (before %+v)", after, before)
	}
	pb, peerB := attachPeer(t, m)
	peerB.Write(msgOf(3, 20))
	recvWithin(t, s, 5*time.Second)
	peerB.Write(frame(make([]byte, 2000))) // too big
	waitDone(t, pb)
	st := m.Stats()
	if st.RxMsgs != 2 || st.RxBytes != 104+24 || st.Psocks.MsgTooBig != 1 || st.PsockAttach != 2 || st.PsockUnattach != 1 {
		t.Fatalf("after a failure %+v", st)
	}
	if pst := pb.Stats(); pst.MsgTooBig != 1 || pst.RxMsgs != 1 {
		t.Fatalf("departed psock's own stats %+v", pst)
	}
}

// Spec 6: a message's Psock that left the mux is not attached, even when a
// new psock took its index: SendTo fails with ErrNotAttached and writes
// nothing on the new psock.
func TestAudit16SendToDepartedPsockWhoseIndexIsReused(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 20))
	msg, err := s.RecvMessage()
	if err != nil {
		t.Fatal(err)
	}
	from := msg.Psock()
	msg.Release()
	peer.Close()
	waitDone(t, from)
	p2, peer2 := attachPeer(t, m)
	if p2.Index() != from.Index() {
		t.Fatalf("index %d not reused (%d)", p2.Index(), from.Index())
	}
	if err := s.SendTo(msgOf(2, 20), from); !errors.Is(err, kcm.ErrNotAttached) {
		t.Fatalf("SendTo a departed psock: %v", err)
	}
	if err := s.SendTo(msgOf(3, 20), p2); err != nil {
		t.Fatal(err)
	}
	peer2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if id := checkMsg(t, readMsg(t, peer2)); id != 3 {
		t.Fatalf("new psock's peer read message %d first", id)
	}
}

// Mux.AttachConfig: "any on a closed mux with ErrClosed"; the connection
// is left alone and may be attached elsewhere.
func TestAudit16AttachToClosedMuxLeavesConnFree(t *testing.T) {
	m1 := kcm.NewMux(kcm.Config{})
	m1.Close()
	c, peer := tcpPair(t)
	if _, err := m1.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("attach to closed mux: %v", err)
	}
	m2 := newMux(t, kcm.Config{})
	if _, err := m2.Attach(c, lenPrefix); err != nil {
		t.Fatalf("attach elsewhere afterwards: %v", err)
	}
	s := m2.NewSocket(kcm.Datagram)
	peer.Write(msgOf(4, 10))
	if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 4 {
		t.Fatal("wrong message")
	}
}

// ConnSet: the set's Dial context is cancelled when the mux closes, and a
// connection Dial returns afterwards is closed, not left open.
func TestAudit16ConnSetDialAfterMuxClosed(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	addr, accepted := listenPeers(t)
	dial := tcpDial(addr)
	entered := make(chan struct{})
	var once sync.Once
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 1, Parser: lenPrefix,
		Dial: func(ctx context.Context) (net.Conn, error) {
			once.Do(func() { close(entered) })
			<-ctx.Done()
			return dial(context.Background()) // a dial that ignores the cancel
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	m.Close()
	if err := cfDo(t, 5*time.Second, "ConnSet.Close", cs.Close); err != nil {
		t.Fatal(err)
	}
	peer := accept(t, accepted)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection dialled after the mux closed: %v, want closed", err)
	}
}

// a16SlowCloseConn's Close blocks until release is closed: a connection
// slow to close (as a tls.Conn saying goodbye to a stalled peer).
type a16SlowCloseConn struct {
	net.Conn
	release chan struct{}
}

func (c *a16SlowCloseConn) Close() error {
	<-c.release
	return c.Conn.Close()
}

// Spec 2: "Attaching the same connection twice, to this or another mux,
// fails"; ARCHITECTURE: "a connection cannot be attached to two muxes
// (the kernel marks the socket itself)". The connection Unattach hands
// back with bytes it kept is a wrapper of the mux's making (it has a
// NetConn method); attached to one mux, the connection under it can still
// be attached to another, and both then read the one stream. (Doc
// ambiguity: whether a wrapper and what it wraps are "the same
// connection"; kcm itself walks NetConn layers elsewhere.)
func TestAudit16WrappedConnAttachedTwice(t *testing.T) {
	m1, m2, m3 := newMux(t, kcm.Config{}), newMux(t, kcm.Config{}), newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	rp := &recordingParser{}
	p, err := m1.Attach(c, rp)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write(msgOf(1, 100)[:10])
	waitProc(t, m1, func(string) bool { return len(rp.calls()) > 0 }) // the mux read them
	back, err := p.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := back.(interface{ NetConn() net.Conn }); !ok {
		t.Skip("no bytes were kept: the connection came back as it was")
	}
	if _, err := m2.Attach(back, lenPrefix); err != nil {
		t.Fatal(err)
	}
	if _, err := m3.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrAlreadyAttached) {
		t.Fatalf("the connection under an attached one attached again: %v, want ErrAlreadyAttached", err)
	}
}

// Mux.Close: a Close called while another is under way returns at once
// (it may be called from one of the goroutines the first waits for, a
// connection's Close), and the first returns once the mux's goroutines,
// the slow connection's closer among them, have ended.
func TestAudit16OverlappingCloseReturnsAtOnce(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	c, _ := tcpPair(t)
	slow := &a16SlowCloseConn{Conn: c, release: make(chan struct{})}
	if _, err := m.Attach(slow, lenPrefix); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- m.Close() }()
	<-m.Done()
	if err := cfDo(t, 2*time.Second, "the second Close", m.Close); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-first:
		t.Fatalf("the first Close returned (%v) before the connection closed", err)
	default:
	}
	close(slow.release)
	if err := waitErr(t, first, "the first Close"); err != nil {
		t.Fatal(err)
	}
}

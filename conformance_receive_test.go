package kcm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 3: a length equal to the psock's maximum is accepted, one more
// aborts with ErrMessageTooBig (msg_too_big).
func TestConformanceMaxMessageSizeBoundary(t *testing.T) {
	const max = 1000
	m := newMux(t, kcm.Config{MaxMessageSize: max})
	s := m.NewSocket(kcm.Datagram)
	okP, okPeer := attachPeer(t, m)
	exact := msgOf(1, max-4)
	if len(exact) != max {
		t.Fatalf("test message is %d bytes", len(exact))
	}
	okPeer.Write(exact)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, exact) {
		t.Fatal("message of exactly MaxMessageSize not delivered")
	}
	badP, badPeer := attachPeer(t, m)
	badPeer.Write(msgOf(2, max-3))
	if err := waitDone(t, badP); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("MaxMessageSize+1: Err = %v", err)
	}
	if st := badP.Stats(); st.MsgTooBig != 1 || st.RxMsgs != 0 {
		t.Fatalf("stats %+v", st)
	}
	select {
	case <-okP.Done():
		t.Fatalf("the other psock left: %v", okP.Err())
	default:
	}
}

// Spec 3 and the issue: the default maximum is 8 MiB.
func TestConformanceDefaultMaxMessageSize8MiB(t *testing.T) {
	if kcm.DefaultMaxMessageSize != 8<<20 {
		t.Fatalf("DefaultMaxMessageSize = %d", kcm.DefaultMaxMessageSize)
	}
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	exact := msgOf(3, 8<<20-4)
	go peer.Write(exact)
	if got := recvWithin(t, s, 10*time.Second); !bytes.Equal(got, exact) {
		t.Fatal("8 MiB message not delivered")
	}
	bad, badPeer := attachPeer(t, m)
	hdr := make([]byte, 4)
	binary.BigEndian.PutUint32(hdr, 8<<20-3)
	badPeer.Write(hdr)
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("8 MiB + 1: Err = %v", err)
	}
}

// Spec 3: Datagram receive into a zero-length buffer reports truncation
// and drops the message; SeqPacket keeps the whole message for the next
// receive.
func TestConformanceZeroLengthRecvBuffer(t *testing.T) {
	t.Run("Datagram", func(t *testing.T) {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		_, peer := attachPeer(t, m)
		a, b := msgOf(1, 20), msgOf(2, 20)
		peer.Write(append(a, b...))
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, flags, err := s.RecvMsg(nil, 0)
		if n != 0 || !errors.Is(err, kcm.ErrTruncated) || flags&kcm.Trunc == 0 {
			t.Fatalf("RecvMsg(nil) = %d, %v, %v", n, flags, err)
		}
		if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, b) {
			t.Fatal("the truncated message was not discarded")
		}
	})
	t.Run("SeqPacket", func(t *testing.T) {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.SeqPacket)
		_, peer := attachPeer(t, m)
		a := msgOf(1, 20)
		peer.Write(a)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, flags, err := s.RecvMsg([]byte{}, 0)
		if n != 0 || err != nil || flags&(kcm.EOR|kcm.Trunc) != 0 {
			t.Fatalf("RecvMsg(empty) = %d, %v, %v", n, flags, err)
		}
		if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, a) {
			t.Fatal("message not kept after a zero-length receive")
		}
	})
}

// Spec 3: SeqPacket pieces carry EOR only on the last one, and a Datagram
// truncation reports Trunc with n = len(b).
func TestConformanceRecvFlagsPerPiece(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	msg := msgOf(1, 96) // 100 bytes
	peer.Write(msg)
	buf := make([]byte, 25)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	for i := 0; i < 4; i++ {
		n, flags, err := s.RecvMsg(buf, 0)
		if err != nil || n != 25 {
			t.Fatalf("piece %d: %d, %v", i, n, err)
		}
		if (flags&kcm.EOR != 0) != (i == 3) || flags&kcm.Trunc != 0 {
			t.Fatalf("piece %d flags %v", i, flags)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("pieces differ")
	}
	if st := s.Stats(); st.RxMsgs != 1 || st.RxBytes != 100 {
		t.Fatalf("socket stats %+v", st)
	}
}

// Spec 3: a parser that gives every byte its own message.
func TestConformanceParserOneBytePerMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	p, err := m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) { return 1, nil }))
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	stream := make([]byte, n)
	for i := range stream {
		stream[i] = byte(i)
	}
	go writeChunked(peer, stream, rand.New(rand.NewSource(3)))
	buf := make([]byte, 4)
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < n; i++ {
		k, err := s.Recv(buf)
		if err != nil || k != 1 || buf[0] != byte(i) {
			t.Fatalf("message %d: %d %x %v", i, k, buf[:k], err)
		}
	}
	if st := p.Stats(); st.RxMsgs != n || st.RxBytes != n || st.NeedMoreHdr != 0 {
		t.Fatalf("psock stats %+v", st)
	}
}

// Spec 3: a parser may return exactly the bytes it was shown; that is one
// whole message, not a contradiction.
func TestConformanceParserReturnsBytesSeen(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	c, peer := tcpPair(t)
	var total atomic.Int64
	p, err := m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) {
		total.Add(int64(len(b)))
		return len(b), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("abcdefgh"), 1000)
	go writeChunked(peer, data, rand.New(rand.NewSource(4)))
	var got []byte
	for len(got) < len(data) {
		got = append(got, recvWithin(t, s, 5*time.Second)...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("stream differs")
	}
	select {
	case <-p.Done():
		t.Fatalf("psock failed: %v", p.Err())
	default:
	}
	if st := p.Stats(); st.BadHdrLen != 0 || st.RxBytes != uint64(len(data)) {
		t.Fatalf("stats %+v", st)
	}
}

// Spec 3: the assembly deadline aborts a stalled message even when no
// socket exists at all, and OnPsockError hears of it.
func TestConformanceMessageTimeoutWithoutReceiver(t *testing.T) {
	errs := make(chan error, 4)
	m := newMux(t, kcm.Config{MessageTimeout: 50 * time.Millisecond,
		OnPsockError: func(_ *kcm.Psock, err error) { errs <- err }})
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 100)[:10])
	start := time.Now()
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrMessageTimeout) {
		t.Fatalf("Err = %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 3*time.Second {
		t.Fatalf("aborted after %v", d)
	}
	if err := <-errs; !errors.Is(err, kcm.ErrMessageTimeout) {
		t.Fatalf("callback got %v", err)
	}
	if st := p.Stats(); st.MsgTimeouts != 1 {
		t.Fatalf("MsgTimeouts = %d", st.MsgTimeouts)
	}
	if len(m.Psocks()) != 0 {
		t.Fatal("failed psock still attached")
	}
	// The connection is closed.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection of the failed psock still open")
	}
}

// Spec 3: the assembly deadline is per message and not extended by later
// bytes, also when a receiver is waiting (it then leads the read).
func TestConformanceMessageTimeoutWhileReceiving(t *testing.T) {
	m := newMux(t, kcm.Config{MessageTimeout: 80 * time.Millisecond})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv(make([]byte, 200))
		errc <- err
	}()
	msg := msgOf(1, 100)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(msg)-1; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			peer.Write(msg[i : i+1])
		}
	}()
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrMessageTimeout) {
		t.Fatalf("Err = %v", err)
	}
	s.Close()
	if err := <-errc; !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("recv: %v", err)
	}
}

// Spec 3: peer EOF with nobody receiving still ends the psock: Done
// closes with Err exactly io.EOF, and the messages stay receivable.
func TestConformancePeerEOFWithoutReceiver(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 10))
	peer.Close()
	if err := waitDone(t, p); err != io.EOF {
		t.Fatalf("Err = %#v, want io.EOF itself", err)
	}
	s := m.NewSocket(kcm.Datagram)
	if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 1 {
		t.Fatal("message lost")
	}
}

// Spec 3: Err is nil while attached and after Unattach, exactly
// ErrClosed after Mux.Close, exactly io.ErrUnexpectedEOF on a cut message.
func TestConformancePsockErrValues(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	p1, _ := attachPeer(t, m)
	p2, _ := attachPeer(t, m)
	p3, peer3 := attachPeer(t, m)
	if p1.Err() != nil {
		t.Fatalf("Err while attached = %v", p1.Err())
	}
	select {
	case <-p1.Done():
		t.Fatal("Done closed while attached")
	default:
	}
	c, err := p1.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := waitDone(t, p1); err != nil {
		t.Fatalf("Err after Unattach = %v", err)
	}
	peer3.Write([]byte{0, 0, 0, 9, 1})
	peer3.Close()
	if err := waitDone(t, p3); err != io.ErrUnexpectedEOF {
		t.Fatalf("Err after EOF mid-message = %#v", err)
	}
	m.Close()
	if err := waitDone(t, p2); err != kcm.ErrClosed {
		t.Fatalf("Err after Mux.Close = %#v, want ErrClosed itself", err)
	}
	if _, err := p2.Unattach(); !errors.Is(err, kcm.ErrNotAttached) {
		t.Fatalf("Unattach after close: %v", err)
	}
}

// Spec 3 / Config: OnPsockError is called once per failed psock, after it
// left, and never for Unattach or Mux.Close.
func TestConformanceOnPsockErrorOncePerFailure(t *testing.T) {
	type call struct {
		p   *kcm.Psock
		err error
	}
	calls := make(chan call, 16)
	var m *kcm.Mux
	m = kcm.NewMux(kcm.Config{MaxMessageSize: 100, OnPsockError: func(p *kcm.Psock, err error) {
		for _, q := range m.Psocks() {
			if q == p {
				t.Errorf("callback for psock %d while it is still attached", p.Index())
			}
		}
		calls <- call{p, err}
	}})
	defer m.Close()
	errBad := errors.New("bad")
	var failing []*kcm.Psock
	for i := 0; i < 3; i++ {
		c, peer := tcpPair(t)
		var parser kcm.Parser = lenPrefix
		if i == 1 {
			parser = kcm.ParserFunc(func([]byte) (int, error) { return 0, errBad })
		}
		p, err := m.Attach(c, parser)
		if err != nil {
			t.Fatal(err)
		}
		failing = append(failing, p)
		switch i {
		case 0:
			peer.Write(frame(make([]byte, 200))) // too big
		case 1:
			peer.Write([]byte{1}) // parser error
		case 2:
			peer.Close() // EOF
		}
	}
	keep, _ := attachPeer(t, m)
	closed, _ := attachPeer(t, m)
	for _, p := range failing {
		waitDone(t, p)
	}
	c, err := keep.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	m.Close()
	waitDone(t, closed)
	seen := map[*kcm.Psock]error{}
	timeout := time.After(2 * time.Second)
	for len(seen) < 3 {
		select {
		case c := <-calls:
			if _, dup := seen[c.p]; dup {
				t.Fatalf("callback twice for psock %d", c.p.Index())
			}
			seen[c.p] = c.err
		case <-timeout:
			t.Fatalf("%d callbacks of 3", len(seen))
		}
	}
	if !errors.Is(seen[failing[0]], kcm.ErrMessageTooBig) || !errors.Is(seen[failing[1]], errBad) || seen[failing[2]] != io.EOF {
		t.Fatalf("callback errors %v", seen)
	}
	for p, err := range seen {
		if p.Err() != err {
			t.Errorf("callback error %v differs from Err %v", err, p.Err())
		}
	}
	select {
	case c := <-calls:
		t.Fatalf("extra callback for psock %d: %v", c.p.Index(), c.err)
	case <-time.After(50 * time.Millisecond): // no event for "no call"
	}
}

// Spec 3: counters are updated before the application sees the event.
func TestConformanceCountersBeforeRecvReturns(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	buf := make([]byte, 100)
	for i := 1; i <= 50; i++ {
		peer.Write(msgOf(uint32(i), 16))
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Recv(buf); err != nil {
			t.Fatal(err)
		}
		want := uint64(i)
		if ps, ms, ss := p.Stats(), m.Stats(), s.Stats(); ps.RxMsgs < want || ms.RxMsgs < want || ss.RxMsgs != want || ss.RxBytes != 20*want {
			t.Fatalf("after %d receives: psock %d, mux %d, socket %+v", i, ps.RxMsgs, ms.RxMsgs, ss)
		}
		if err := s.Send(msgOf(uint32(i), 16)); err != nil {
			t.Fatal(err)
		}
		if ss := s.Stats(); ss.TxMsgs != want || ss.TxBytes != 20*want {
			t.Fatalf("after %d sends: socket %+v", i, ss)
		}
		readMsg(t, peer)
	}
}

// Spec 5: counters survive Mux.Close and include departed psocks.
func TestConformanceStatsAfterMuxClose(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 16))
	recvWithin(t, s, 5*time.Second)
	s.Send(msgOf(2, 16))
	readMsg(t, peer)
	before := m.Stats()
	m.Close()
	after := m.Stats()
	if after.RxMsgs != 1 || after.RxBytes != 20 || after.TxMsgs != 1 || after.TxBytes != 20 || after.PsockAttach != 1 {
		t.Fatalf("after close %+v (before %+v)", after, before)
	}
	if after.Psocks.RxMsgs != 1 || p.Stats().RxMsgs != 1 {
		t.Fatalf("psock aggregate %+v", after.Psocks)
	}
	if ss := s.Stats(); ss.RxMsgs != 1 || ss.TxMsgs != 1 {
		t.Fatalf("socket after close %+v", ss)
	}
	if err := s.Send([]byte("x")); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("send after mux close: %v", err)
	}
	if _, err := s.Recv(make([]byte, 4)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("recv after mux close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Spec 3: an expired deadline error matches os.ErrDeadlineExceeded and is
// a net.Error whose Timeout is true, on receive and on send.
func TestConformanceDeadlineErrorsAreNetTimeouts(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 100})
	s := m.NewSocket(kcm.SeqPacket)
	check := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%s: %v", what, err)
		}
	}
	s.SetDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := s.Recv(make([]byte, 10))
	check("Recv", err)
	_, err = s.Read(make([]byte, 10))
	check("Read", err)
	_, err = s.RecvMessage()
	check("RecvMessage", err)
	_, err = s.RecvBatch(make([]kcm.Message, 2))
	check("RecvBatch", err)
	s.SetDeadline(time.Time{})
	if err := s.Send(msgOf(1, 100)); err != nil { // fills the send buffer
		t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(20 * time.Millisecond))
	check("Send", s.Send(msgOf(2, 100)))
	_, err = s.Write(msgOf(3, 100))
	check("Write", err)
}

// Spec 3: a deadline set from another goroutine wakes every receive
// blocked on the socket, and the message that arrives later is intact.
func TestConformanceDeadlineWakesAllBlockedReceivers(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	const n = 8
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := s.Recv(make([]byte, 100))
			errc <- err
		}()
	}
	time.Sleep(20 * time.Millisecond) // no event: let them block
	s.SetDeadline(time.Now().Add(10 * time.Millisecond))
	for i := 0; i < n; i++ {
		select {
		case err := <-errc:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%d receivers still blocked", n-i)
		}
	}
	s.SetDeadline(time.Time{})
	msg := msgOf(9, 10)
	peer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("message lost after the timeouts")
	}
}

// Spec 3 steering: many goroutines receive on several sockets from several
// psocks while sockets are disabled and enabled; every message arrives
// exactly once, intact, and in stream order per psock within a goroutine.
func TestConformanceManyReceiversExactlyOnce(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 64 << 10})
	// SeqPacket sockets are read in pieces by one goroutine each (pieces of
	// one message go to whoever reads the socket next); Datagram sockets
	// are read whole by several goroutines each.
	first := m.NewSocket(kcm.SeqPacket)
	dg := m.NewSocket(kcm.Datagram)
	socks := []*kcm.Socket{first, first.Clone(), dg, dg.Clone()}
	const npsock, per = 3, 1500
	var peers []net.Conn
	for i := 0; i < npsock; i++ {
		_, peer := attachPeer(t, m)
		peers = append(peers, peer)
	}
	var mu sync.Mutex
	seen := map[uint32]bool{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range socks {
		readers := 1
		if s.Type() == kcm.Datagram {
			readers = 3
		}
		for g := 0; g < readers; g++ {
			wg.Add(1)
			go func(s *kcm.Socket) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(s.Index()*10 + g)))
				last := map[uint32]int{}
				for {
					msg := make([]byte, 0, 3000)
					buf := make([]byte, 1+rng.Intn(2000))
					if s.Type() == kcm.Datagram {
						buf = make([]byte, 4000)
					}
					for {
						n, flags, err := s.RecvMsg(buf, 0)
						if err != nil {
							return
						}
						msg = append(msg, buf[:n]...)
						if flags&kcm.EOR != 0 {
							break
						}
					}
					id := checkMsg(t, msg)
					src, seq := id>>16, int(id&0xffff)
					if l, ok := last[src]; ok && seq <= l {
						t.Errorf("psock %d: message %d after %d in one goroutine", src, seq, l)
					}
					last[src] = seq
					mu.Lock()
					if seen[id] {
						t.Errorf("message %x delivered twice", id)
					}
					seen[id] = true
					if len(seen) == npsock*per {
						close(done)
					}
					mu.Unlock()
				}
			}(s)
		}
	}
	stop := make(chan struct{})
	var tg sync.WaitGroup
	tg.Add(1)
	go func() { // toggles
		defer tg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			socks[i%4].SetRecvDisabled(i%2 == 0 && i%4 != 3)
		}
	}()
	for i, peer := range peers {
		go func(i int, peer net.Conn) {
			rng := rand.New(rand.NewSource(int64(i)))
			for j := 0; j < per; j++ {
				if _, err := peer.Write(msgOf(uint32(i<<16|j), 8+rng.Intn(3000))); err != nil {
					return
				}
			}
		}(i, peer)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		t.Errorf("%d of %d messages arrived", len(seen), npsock*per)
		mu.Unlock()
	}
	close(stop)
	tg.Wait()
	for _, s := range socks {
		s.Close()
	}
	wg.Wait()
}

// Spec 3: with every socket disabled, messages wait in the mux; enabling
// one gives them in stream order.
func TestConformanceAllDisabledThenEnabled(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	a.SetRecvDisabled(true)
	b.SetRecvDisabled(true)
	p, peer := attachPeer(t, m)
	for i := 0; i < 10; i++ {
		peer.Write(msgOf(uint32(i), 30))
	}
	errc := make(chan error, 1)
	go func() {
		b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := b.Recv(make([]byte, 100))
		errc <- err
	}()
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("disabled socket received: %v", err)
	}
	for p.Stats().RxMsgs < 10 {
		time.Sleep(time.Millisecond)
	}
	b.SetRecvDisabled(false)
	for i := 0; i < 10; i++ {
		if id := checkMsg(t, recvWithin(t, b, 5*time.Second)); id != uint32(i) {
			t.Fatalf("got %d want %d", id, i)
		}
	}
	if st := a.Stats(); st.RxMsgs != 0 {
		t.Fatal("disabled socket got messages")
	}
}

// Spec 3 memory: with nobody receiving and a peer flooding, the mux reads
// at most about RecvBuffer plus one read buffer ahead, and the heap stays
// bounded.
func TestConformanceMemoryBoundedUnderFlood(t *testing.T) {
	const rb = 256 << 10
	m := newMux(t, kcm.Config{RecvBuffer: rb})
	m.NewSocket(kcm.Datagram)
	var ps []*kcm.Psock
	var peers []net.Conn
	for i := 0; i < 4; i++ {
		p, peer := attachPeer(t, m)
		ps = append(ps, p)
		peers = append(peers, peer)
	}
	before := memInUse()
	var wg sync.WaitGroup
	for _, peer := range peers {
		wg.Add(1)
		go func(peer net.Conn) {
			defer wg.Done()
			peer.SetWriteDeadline(time.Now().Add(400 * time.Millisecond))
			msg := msgOf(1, 4000)
			for {
				if _, err := peer.Write(msg); err != nil {
					return
				}
			}
		}(peer)
	}
	wg.Wait()
	var read uint64
	for _, p := range ps {
		read += p.Stats().RxBytes
	}
	after := memInUse()
	t.Logf("mux parsed %d bytes; heap grew %d bytes", read, int64(after)-int64(before))
	if read > rb+4*(4<<20) {
		t.Fatalf("mux parsed %d bytes with RecvBuffer %d", read, rb)
	}
	if grow := int64(after) - int64(before); grow > 32<<20 {
		t.Fatalf("heap grew by %d bytes", grow)
	}
}

// Spec 3: the same messages, up to 1 MiB, cut and delayed differently,
// come out identical.
func TestConformanceRandomChunkingLargeMessages(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	var want [][]byte
	var stream []byte
	for i := 0; i < 24; i++ {
		size := rng.Intn(1 << 20)
		if i%3 != 0 {
			size = rng.Intn(100)
		}
		msg := msgOf(uint32(i), size)
		want = append(want, msg)
		stream = append(stream, msg...)
	}
	for seed := int64(0); seed < 3; seed++ {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		_, peer := attachPeer(t, m)
		go func(rng *rand.Rand) {
			b := stream
			for len(b) > 0 {
				n := 1 + rng.Intn(min(len(b), 1+rng.Intn(300000)))
				if _, err := peer.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
				if rng.Intn(4) == 0 {
					time.Sleep(time.Duration(rng.Intn(2000)) * time.Microsecond)
				}
			}
		}(rand.New(rand.NewSource(seed)))
		for i, w := range want {
			if got := recvWithin(t, s, 10*time.Second); !bytes.Equal(got, w) {
				t.Fatalf("seed %d message %d differs", seed, i)
			}
		}
		m.Close()
	}
}

// Spec 3: messages from many psocks, random sizes up to 1 MiB, received by
// many sockets: each intact and exactly once.
func TestConformanceReceiveAtomicityManyPsocks(t *testing.T) {
	m := newMux(t, kcm.Config{})
	first := m.NewSocket(kcm.Datagram)
	socks := []*kcm.Socket{first, first.Clone(), first.Clone()}
	const npsock, per = 4, 20
	var total int
	for i := 0; i < npsock; i++ {
		_, peer := attachPeer(t, m)
		var stream []byte
		rng := rand.New(rand.NewSource(int64(i)))
		for j := 0; j < per; j++ {
			size := rng.Intn(1 << 20)
			if rng.Intn(3) > 0 {
				size = rng.Intn(3000)
			}
			stream = append(stream, msgOf(uint32(i<<16|j), size)...)
			total++
		}
		go writeChunked(peer, stream, rng)
	}
	ids := make(chan uint32, total)
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func(s *kcm.Socket) {
			defer wg.Done()
			buf := make([]byte, 2<<20)
			for {
				n, err := s.Recv(buf)
				if err != nil {
					return
				}
				ids <- checkMsg(t, buf[:n])
			}
		}(s)
	}
	seen := map[uint32]bool{}
	for len(seen) < total {
		select {
		case id := <-ids:
			if seen[id] {
				t.Fatalf("message %x twice", id)
			}
			seen[id] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d messages", len(seen), total)
		}
	}
	for _, s := range socks {
		s.Close()
	}
	wg.Wait()
}

package kcm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Every call of the parser sees the first byte of a message, even when
// messages are pipelined and split at random (spec 3, kcm).
func TestParserSeesMessageStart(t *testing.T) {
	const magic = 0xA5
	var bad sync.Map
	parser := kcm.ParserFunc(func(b []byte) (int, error) {
		if b[0] != magic {
			bad.Store(b[0], true)
		}
		if len(b) < 3 {
			return 0, nil
		}
		return 3 + int(binary.BigEndian.Uint16(b[1:])), nil
	})
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	if _, err := m.Attach(c, parser); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	var stream []byte
	var want [][]byte
	for i := 0; i < 500; i++ {
		msg := []byte{magic, 0, 0}
		n := rng.Intn(300)
		binary.BigEndian.PutUint16(msg[1:], uint16(n))
		for j := 0; j < n; j++ {
			msg = append(msg, byte(rng.Intn(256)))
		}
		want = append(want, msg)
		stream = append(stream, msg...)
	}
	go writeChunked(peer, stream, rng)
	for i, w := range want {
		got := recvWithin(t, s, 10*time.Second)
		if !bytes.Equal(got, w) {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(w))
		}
	}
	bad.Range(func(k, _ any) bool {
		t.Errorf("parser called on a buffer starting with %#x", k)
		return true
	})
}

// The same stream cut into pieces of random sizes, written with random
// delays, yields identical messages.
func TestRandomChunkingAndDelaysGiveIdenticalMessages(t *testing.T) {
	for seed := int64(0); seed < 4; seed++ {
		rng := rand.New(rand.NewSource(seed))
		var stream []byte
		var want [][]byte
		for i := 0; i < 200; i++ {
			msg := msgOf(uint32(i), rng.Intn(70000))
			want = append(want, msg)
			stream = append(stream, msg...)
		}
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.SeqPacket)
		_, peer := attachPeer(t, m)
		go func() {
			for len(stream) > 0 {
				n := 1 + rng.Intn(min(len(stream), 20000))
				if _, err := peer.Write(stream[:n]); err != nil {
					return
				}
				stream = stream[n:]
				if rng.Intn(10) == 0 {
					time.Sleep(time.Duration(rng.Intn(300)) * time.Microsecond)
				}
			}
		}()
		for i, w := range want {
			got := recvWithin(t, s, 10*time.Second)
			if !bytes.Equal(got, w) {
				t.Fatalf("seed %d message %d differs (%d vs %d bytes)", seed, i, len(got), len(w))
			}
		}
		m.Close()
	}
}

// Bytes that arrived before the attach are parsed right after it.
func TestAttachParsesBufferedBytes(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	msg := msgOf(7, 100)
	if _, err := peer.Write(append(msg, msg...)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("got %x", got)
		}
	}
}

// A length not larger than what the parser already saw when it asked for
// more is a contradiction: the psock aborts with ErrBadLength.
func TestBadLengthAbortsPsock(t *testing.T) {
	short := make(chan struct{})
	var once sync.Once
	parser := kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 8 {
			once.Do(func() { close(short) })
			return 0, nil
		}
		return 2, nil // shorter than the 3 bytes it already saw and found short
	})
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	p, err := m.Attach(c, parser)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte{1, 2, 3})
	<-short // the first bytes are parsed alone
	peer.Write([]byte{4, 5, 6, 7, 8, 9})
	err = waitDone(t, p)
	if !errors.Is(err, kcm.ErrBadLength) {
		t.Fatalf("Err = %v, want ErrBadLength", err)
	}
	if st := p.Stats(); st.BadHdrLen != 1 {
		t.Fatalf("BadHdrLen = %d", st.BadHdrLen)
	}
}

// A negative length from a parser is a bad length too.
func TestNegativeLengthIsBadLength(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	p, _ := m.Attach(c, kcm.ParserFunc(func([]byte) (int, error) { return -5, nil }))
	peer.Write([]byte{1})
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrBadLength) {
		t.Fatalf("Err = %v", err)
	}
}

// A length above the maximum aborts the psock with ErrMessageTooBig, and
// the other psocks and sockets carry on.
func TestMessageTooBigAbortsOnlyThatPsock(t *testing.T) {
	m := newMux(t, kcm.Config{MaxMessageSize: 1000})
	s := m.NewSocket(kcm.Datagram)
	bad, badPeer := attachPeer(t, m)
	_, goodPeer := attachPeer(t, m)
	badPeer.Write(frame(make([]byte, 2000)))
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("Err = %v", err)
	}
	if st := bad.Stats(); st.MsgTooBig != 1 {
		t.Fatalf("MsgTooBig = %d", st.MsgTooBig)
	}
	msg := msgOf(1, 500)
	goodPeer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("good psock's message lost")
	}
	if got := len(m.Psocks()); got != 1 {
		t.Fatalf("%d psocks left, want 1", got)
	}
}

// The per-psock limit overrides the mux's.
func TestPsockMaxMessageSizeOverride(t *testing.T) {
	m := newMux(t, kcm.Config{MaxMessageSize: 100})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	if _, err := m.AttachConfig(c, lenPrefix, kcm.PsockConfig{MaxMessageSize: 10000}); err != nil {
		t.Fatal(err)
	}
	msg := msgOf(3, 5000)
	peer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("message over the mux limit but under the psock's was not delivered")
	}
}

// A message not complete within MessageTimeout of its first byte aborts
// the psock, even while bytes keep trickling in.
func TestMessageTimeoutAbortsPsock(t *testing.T) {
	m := newMux(t, kcm.Config{MessageTimeout: 100 * time.Millisecond})
	p, peer := attachPeer(t, m)
	msg := frame(make([]byte, 100))
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(msg)-1; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := peer.Write(msg[i : i+1]); err != nil {
				return
			}
		}
	}()
	err := waitDone(t, p)
	if !errors.Is(err, kcm.ErrMessageTimeout) {
		t.Fatalf("Err = %v, want ErrMessageTimeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("aborted after %v, before the deadline", d)
	}
	if st := p.Stats(); st.MsgTimeouts != 1 {
		t.Fatalf("MsgTimeouts = %d", st.MsgTimeouts)
	}
}

// Complete messages are never timed out, and the deadline restarts for
// each message.
func TestMessageTimeoutSparesCompleteMessages(t *testing.T) {
	m := newMux(t, kcm.Config{MessageTimeout: 50 * time.Millisecond})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	for i := 0; i < 5; i++ {
		msg := msgOf(uint32(i), 20)
		peer.Write(msg)
		if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
			t.Fatal("message lost")
		}
		time.Sleep(60 * time.Millisecond) // idle longer than the deadline
	}
	select {
	case <-p.Done():
		t.Fatalf("psock failed while idle between messages: %v", p.Err())
	default:
	}
}

// A parser error aborts the psock; the error is wrapped so errors.Is
// finds both ErrParse and the parser's own error.
func TestParserErrorIsWrapped(t *testing.T) {
	errProto := errors.New("not my protocol")
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	p, _ := m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) {
		if b[0] != 'K' {
			return 0, errProto
		}
		return 1, nil
	}))
	peer.Write([]byte("x"))
	err := waitDone(t, p)
	if !errors.Is(err, errProto) || !errors.Is(err, kcm.ErrParse) {
		t.Fatalf("Err = %v", err)
	}
	if st := p.Stats(); st.Interrupted != 1 {
		t.Fatalf("Interrupted = %d", st.Interrupted)
	}
}

// A parser error after part of the message was buffered counts as
// unrecoverable.
func TestParserErrorAfterPartialCountsUnrecovIntr(t *testing.T) {
	errProto := errors.New("bad header")
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	short := make(chan struct{})
	var once sync.Once
	p, _ := m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 2 {
			once.Do(func() { close(short) })
			return 0, nil
		}
		return 0, errProto
	}))
	peer.Write([]byte("a"))
	<-short // the first byte is parsed alone
	peer.Write([]byte("b"))
	if err := waitDone(t, p); !errors.Is(err, errProto) {
		t.Fatalf("Err = %v", err)
	}
	if st := p.Stats(); st.UnrecovIntr != 1 || st.NeedMoreHdr == 0 {
		t.Fatalf("UnrecovIntr = %d, NeedMoreHdr = %d", st.UnrecovIntr, st.NeedMoreHdr)
	}
}

// Peer EOF at a message boundary: every message is delivered, then the
// psock fails with io.EOF and leaves the mux, with the callback called.
func TestPeerEOFDeliversThenFailsWithEOF(t *testing.T) {
	got := make(chan error, 1)
	m := newMux(t, kcm.Config{OnPsockError: func(p *kcm.Psock, err error) { got <- err }})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	for i := 0; i < 3; i++ {
		peer.Write(msgOf(uint32(i), 50))
	}
	peer.Close()
	if err := waitDone(t, p); err != io.EOF {
		t.Fatalf("Err = %v, want io.EOF", err)
	}
	for i := 0; i < 3; i++ {
		if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != uint32(i) {
			t.Fatalf("message %d, want %d", id, i)
		}
	}
	if err := <-got; err != io.EOF {
		t.Fatalf("OnPsockError got %v", err)
	}
	if len(m.Psocks()) != 0 {
		t.Fatal("failed psock still in the mux")
	}
}

// Peer EOF inside a message: io.ErrUnexpectedEOF.
func TestPeerEOFMidMessageIsUnexpected(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 100)[:50])
	peer.Close()
	if err := waitDone(t, p); err != io.ErrUnexpectedEOF {
		t.Fatalf("Err = %v, want io.ErrUnexpectedEOF", err)
	}
}

// Messages go only to sockets that are receiving: a socket that is not in
// a receive call never holds messages another socket could take.
func TestSteeringOnlyToReceivingSockets(t *testing.T) {
	m := newMux(t, kcm.Config{})
	idle := m.NewSocket(kcm.Datagram) // never receives
	busy := idle.Clone()
	_, peer := attachPeer(t, m)
	const n = 200
	go func() {
		for i := 0; i < n; i++ {
			peer.Write(msgOf(uint32(i), 30))
		}
	}()
	for i := 0; i < n; i++ {
		if id := checkMsg(t, recvWithin(t, busy, 5*time.Second)); id != uint32(i) {
			t.Fatalf("got message %d, want %d", id, i)
		}
	}
	if st := idle.Stats(); st.RxMsgs != 0 {
		t.Fatalf("idle socket received %d messages", st.RxMsgs)
	}
}

// Many receiving sockets share the messages of one psock; each message is
// delivered once, and each socket sees its messages in stream order.
func TestLoadBalancingAcrossReceivers(t *testing.T) {
	m := newMux(t, kcm.Config{})
	first := m.NewSocket(kcm.Datagram)
	socks := []*kcm.Socket{first, first.Clone(), first.Clone(), first.Clone()}
	_, peer := attachPeer(t, m)
	const n = 4000
	var mu sync.Mutex
	seen := make(map[uint32]bool)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, s := range socks {
		wg.Add(1)
		go func(s *kcm.Socket) {
			defer wg.Done()
			buf := make([]byte, 1024)
			last := -1
			for {
				n, err := s.Recv(buf)
				if err != nil {
					return
				}
				id := binary.BigEndian.Uint32(buf[4:n])
				if int(id) <= last {
					t.Errorf("socket %d: message %d after %d", s.Index(), id, last)
				}
				last = int(id)
				mu.Lock()
				if seen[id] {
					t.Errorf("message %d delivered twice", id)
				}
				seen[id] = true
				if len(seen) == n {
					close(done)
				}
				mu.Unlock()
			}
		}(s)
	}
	go func() {
		for i := 0; i < n; i++ {
			peer.Write(msgOf(uint32(i), 40))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("not every message arrived")
	}
	for _, s := range socks {
		s.Close()
	}
	wg.Wait()
}

// When nobody receives, the psock stops reading: the queue in the mux
// stays within RecvBuffer and the TCP window closes on the peer, whose
// writes block. Receiving again drains everything in order.
func TestBackpressureClosesWindow(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 64 << 10})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	// Small kernel buffers, so the window closes after little data.
	c.(*net.TCPConn).SetReadBuffer(32 << 10)
	peer.(*net.TCPConn).SetWriteBuffer(32 << 10)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	msg := msgOf(0, 1000)
	written := make(chan int, 1)
	go func() {
		n := 0
		peer.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			if _, err := peer.Write(msgOf(uint32(n), 1000)); err != nil {
				written <- n
				return
			}
			n++
		}
	}()
	n := <-written // the peer's writes blocked until its deadline
	if n > 20000 {
		t.Fatalf("peer wrote %d messages without blocking", n)
	}
	if st := p.Stats(); st.RxBytes > 64<<10+uint64(len(msg))+256<<10 {
		t.Fatalf("mux read %d bytes ahead with a 64 KiB receive buffer", st.RxBytes)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2000)
	for i := 0; i < n; i++ {
		k, err := s.Recv(buf)
		if err != nil {
			t.Fatal(err)
		}
		if id := checkMsg(t, buf[:k]); id != uint32(i) {
			t.Fatalf("got %d, want %d", id, i)
		}
	}
}

// A single message larger than RecvBuffer is still delivered.
func TestMessageLargerThanRecvBufferDelivered(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 4096})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	msg := msgOf(9, 100000)
	go peer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("large message not delivered intact")
	}
}

// Datagram receive into a short buffer: the first bytes, ErrTruncated,
// and the rest of that message is gone.
func TestDatagramTruncation(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	a, b := msgOf(1, 105), msgOf(2, 20)
	peer.Write(append(a, b...))
	buf := make([]byte, 20)
	n, flags, err := s.RecvMsg(buf, 0)
	if n != 20 || !errors.Is(err, kcm.ErrTruncated) || flags&kcm.Trunc == 0 {
		t.Fatalf("n=%d flags=%v err=%v", n, flags, err)
	}
	if !bytes.Equal(buf, a[:20]) {
		t.Fatal("wrong first bytes")
	}
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, b) {
		t.Fatal("next receive did not return the next message")
	}
}

// SeqPacket receive into a short buffer keeps the rest; EOR marks the read
// that finishes the message.
func TestSeqPacketPartialReadKeepsRest(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	a, b := msgOf(1, 100), msgOf(2, 20)
	peer.Write(append(a, b...))
	var got []byte
	buf := make([]byte, 30)
	for {
		n, flags, err := s.RecvMsg(buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
		if flags&kcm.EOR != 0 {
			break
		}
		if len(got) > len(a) {
			t.Fatal("no EOR at the end of the message")
		}
	}
	if !bytes.Equal(got, a) {
		t.Fatal("pieces do not make the message")
	}
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, b) {
		t.Fatal("next message wrong")
	}
}

// Peek returns the next message and leaves it queued.
func TestPeekLeavesMessage(t *testing.T) {
	for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(typ)
		_, peer := attachPeer(t, m)
		a := msgOf(1, 100)
		peer.Write(a)
		buf := make([]byte, 200)
		n, flags, err := s.RecvMsg(buf, kcm.Peek)
		if err != nil || !bytes.Equal(buf[:n], a) || flags&kcm.EOR == 0 {
			t.Fatalf("%v peek: n=%d flags=%v err=%v", typ, n, flags, err)
		}
		if got := recvWithin(t, s, time.Second); !bytes.Equal(got, a) {
			t.Fatalf("%v: message gone after peek", typ)
		}
		if st := s.Stats(); st.RxMsgs != 1 {
			t.Fatalf("%v: RxMsgs = %d after peek and receive", typ, st.RxMsgs)
		}
	}
}

// DontWait on an empty socket: ErrWouldBlock at once.
func TestDontWaitWouldBlock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	attachPeer(t, m)
	if _, _, err := s.RecvMsg(make([]byte, 10), kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
		t.Fatalf("err = %v", err)
	}
}

// An expired read deadline returns a timeout error matching
// os.ErrDeadlineExceeded; a message arriving later is still there.
func TestReadDeadlineKeepsMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := s.Recv(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("err = %v", err)
	}
	msg := msgOf(5, 10)
	peer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("message lost after a timeout")
	}
}

// A deadline set while a receive is blocked applies to it.
func TestReadDeadlineWakesBlockedReceive(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	attachPeer(t, m)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv(make([]byte, 10))
		errc <- err
	}()
	waitReceiving(t, m, s)
	s.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked receive ignored the new deadline")
	}
}

// SetRecvDisabled: the socket takes nothing; messages go to others or wait
// in the mux, and it gets them again when enabled, queue first.
func TestSetRecvDisabled(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	a.SetRecvDisabled(true)
	errc := make(chan error, 1)
	go func() {
		a.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := a.Recv(make([]byte, 100))
		errc <- err
	}()
	peer.Write(msgOf(1, 20))
	if id := checkMsg(t, recvWithin(t, b, 5*time.Second)); id != 1 {
		t.Fatal("wrong message")
	}
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("disabled socket's receive: %v", err)
	}
	peer.Write(msgOf(2, 20))
	peer.Write(msgOf(3, 20))
	// Nobody enabled receives: the messages wait in the mux.
	waitProc(t, m, func(string) bool { recv, _ := m.Queued(); return recv == 48 })
	a.SetRecvDisabled(false)
	for want := uint32(2); want <= 3; want++ {
		if id := checkMsg(t, recvWithin(t, a, 5*time.Second)); id != want {
			t.Fatalf("got %d want %d", id, want)
		}
	}
}

// Closing a socket leaves the messages it did not take to the others.
func TestCloseSocketMovesMessagesToOthers(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	for i := 0; i < 5; i++ {
		peer.Write(msgOf(uint32(i), 20))
	}
	checkMsg(t, recvWithin(t, a, 5*time.Second))
	a.Close()
	for i := 1; i < 5; i++ {
		if id := checkMsg(t, recvWithin(t, b, 5*time.Second)); id != uint32(i) {
			t.Fatalf("got %d want %d", id, i)
		}
	}
}

// Messages from one psock come out in stream order.
func TestStreamOrderPerPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, p1 := attachPeer(t, m)
	_, p2 := attachPeer(t, m)
	const n = 500
	go func() {
		for i := 0; i < n; i++ {
			p1.Write(msgOf(uint32(i), 30))
		}
	}()
	go func() {
		for i := 0; i < n; i++ {
			p2.Write(msgOf(uint32(1<<20+i), 30))
		}
	}()
	next := [2]uint32{0, 1 << 20}
	for i := 0; i < 2*n; i++ {
		id := checkMsg(t, recvWithin(t, s, 5*time.Second))
		k := id >> 20
		if id != next[k] {
			t.Fatalf("psock %d: got %d want %d", k, id, next[k])
		}
		next[k]++
	}
}

// Zero-copy receive lends the buffer until Release; batch receive returns
// several messages at once.
func TestRecvMessageAndBatch(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	var stream []byte
	for i := 0; i < 100; i++ {
		stream = append(stream, msgOf(uint32(i), 64)...)
	}
	peer.Write(stream)
	msg, err := s.RecvMessage()
	if err != nil {
		t.Fatal(err)
	}
	if checkMsg(t, msg.Bytes()) != 0 || msg.Psock() != p {
		t.Fatal("wrong first message")
	}
	msg.Release()
	msg.Release() // a second release of the emptied message is harmless
	next := uint32(1)
	batch := make([]kcm.Message, 16)
	for next < 100 {
		n, err := s.RecvBatch(batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range batch[:n] {
			if id := checkMsg(t, batch[i].Bytes()); id != next {
				t.Fatalf("got %d want %d", id, next)
			}
			next++
			batch[i].Release()
		}
	}
}

// A parser that panics on bad input stops its psock with a parse error;
// the process and the other psocks go on.
func TestPanickingParserStopsOnlyItsPsock(t *testing.T) {
	forParserForms(t, testPanickingParserStopsOnlyItsPsock)
}

// forParserForms runs test with a ParserFunc, which the mux calls
// directly, and with a Parser of another type, called through its method:
// both must be covered by the mux's recover.
func forParserForms(t *testing.T, test func(t *testing.T, form func(kcm.ParserFunc) kcm.Parser)) {
	t.Run("ParserFunc", func(t *testing.T) { test(t, func(f kcm.ParserFunc) kcm.Parser { return f }) })
	t.Run("method", func(t *testing.T) { test(t, func(f kcm.ParserFunc) kcm.Parser { return methodParser{f} }) })
}

// methodParser is a Parser that is not a ParserFunc.
type methodParser struct{ f kcm.ParserFunc }

func (p methodParser) Parse(b []byte) (int, error) { return p.f(b) }

func testPanickingParserStopsOnlyItsPsock(t *testing.T, form func(kcm.ParserFunc) kcm.Parser) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	bad, err := m.Attach(c, form(func(b []byte) (int, error) {
		var table [4]int
		return table[int(b[0])], nil // index out of range on bytes >= 4
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, goodPeer := attachPeer(t, m)
	peer.Write([]byte{200})
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrParse) {
		t.Fatalf("Err = %v, want ErrParse", err)
	}
	msg := msgOf(1, 10)
	goodPeer.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("good psock's message lost")
	}
}

// A parser that panics in the middle of a batch (RecvBatch parses all but
// the first message of a read under one recover) fails its psock like a
// panic on a single message: the messages before it are delivered, whole
// and in order, the psock leaves with a parse error and counts one
// interrupted parse.
func TestPanicInBatchKeepsMessagesBefore(t *testing.T) {
	forParserForms(t, testPanicInBatchKeepsMessagesBefore)
}

func testPanicInBatchKeepsMessagesBefore(t *testing.T, form func(kcm.ParserFunc) kcm.Parser) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := net.Pipe() // one Write, one read: the batch sees every message
	defer peer.Close()
	p, err := m.Attach(c, form(func(b []byte) (int, error) {
		if len(b) > 0 && b[0] == 0xEE {
			panic("bad header")
		}
		return lenPrefix(b)
	}))
	if err != nil {
		t.Fatal(err)
	}
	var stream []byte
	for i := range 5 {
		stream = append(stream, frame(msgOf(uint32(i), 16))...)
	}
	stream = append(stream, 0xEE, 0, 0, 0)
	go peer.Write(stream)
	ms := make([]kcm.Message, 64)
	next := uint32(0)
	for next < 5 {
		n, err := s.RecvBatch(ms)
		if err != nil {
			t.Fatalf("after %d messages: %v", next, err)
		}
		for i := range ms[:n] {
			if id := checkMsg(t, ms[i].Bytes()[4:]); id != next {
				t.Fatalf("message %d, want %d", id, next)
			}
			next++
		}
		kcm.ReleaseBatch(ms[:n])
	}
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrParse) || !strings.Contains(err.Error(), "bad header") {
		t.Fatalf("psock left with %v, want ErrParse with the panic", err)
	}
	if st := p.Stats(); st.Interrupted != 1 || st.RxMsgs != 5 {
		t.Fatalf("Interrupted %d, RxMsgs %d, want 1 and 5", st.Interrupted, st.RxMsgs)
	}
}

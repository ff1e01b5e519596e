package kcm_test

// Audit 21: the Socket seen as a net.Conn and as a SOCK_DGRAM /
// SOCK_SEQPACKET socket: Read, Write, Close, addresses, deadlines, Recv,
// RecvMsg (Peek, DontWait, EOR, Trunc), RecvMessage, RecvBatch, Send,
// SendMsg (More, Batch), SendBatch, SendTo.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
)

// a21Stream is a parser that makes every byte that arrived one message:
// the socket then carries a byte stream, as a net.Conn user expects of
// Read and Write, whatever the peer writes.
var a21Stream = kcm.ParserFunc(func(b []byte) (int, error) { return len(b), nil })

// a21StreamSocket returns a socket of a mux whose one psock is a TCP
// connection, parsed by a21Stream, and the raw peer of that connection.
func a21StreamSocket(t *testing.T, typ kcm.SocketType) (*kcm.Socket, net.Conn) {
	t.Helper()
	m := newMux(t, kcm.Config{})
	c, peer := tcpPair(t)
	if _, err := m.Attach(c, a21Stream); err != nil {
		t.Fatal(err)
	}
	return m.NewSocket(typ), peer
}

// a21Fill fills the send side of c, whose peer does not read, until the
// connection accepts no more bytes, so that no byte of a later write is
// accepted.
func a21Fill(t *testing.T, c net.Conn) {
	t.Helper()
	junk := make([]byte, 256<<10)
	for zeros := 0; zeros < 3; {
		c.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
		n, err := c.Write(junk)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
		if n == 0 {
			zeros++
		}
	}
	c.SetWriteDeadline(time.Time{})
}

// a21Field returns field i of obj's line in the mux's dump ("" if none).
func a21Field(m *kcm.Mux, obj string, i int) string {
	f := strings.Fields(procLine(proc(m), obj))
	if i < len(f) {
		return f[i]
	}
	return ""
}

// ---- Bugs -----------------------------------------------------------------

// TestAudit21WriteDeadlineIgnoredOnStalledPsock: a write deadline set
// before Send does not bound a Send that found its psock idle when the
// peer stopped reading: Send writes its message straight to the
// connection (writeOwn) with no deadline on it, and waits there for as
// long as the peer does not read (forever, without Config.WriteTimeout).
// Here not one byte of the message was accepted, so nothing would be cut
// by giving up; net.Conn says "a deadline is an absolute time after which
// I/O operations fail instead of blocking", and the kernel's kcm_sendmsg
// waits for send buffer room under SO_SNDTIMEO and fails with EAGAIN.
func TestAudit21WriteDeadlineIgnoredOnStalledPsock(t *testing.T) {
	calls := []struct {
		name string
		call func(s *kcm.Socket, p *kcm.Psock, b []byte) error
	}{
		{"Send", func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.Send(b) }},
		{"SendBatch", func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.SendBatch([][]byte{b, b}) }},
		{"EndMore", func(s *kcm.Socket, p *kcm.Psock, b []byte) error {
			if err := s.SendMsg(b[:3], kcm.More); err != nil {
				return err
			}
			return s.SendMsg(b[3:], 0)
		}},
		{"SendTo", func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.SendTo(b, p) }},
		{"SendBatchTo", func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.SendBatchTo([][]byte{b, b}, p) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			conn, _ := tcpPair(t) // the peer never reads
			a21Fill(t, conn)
			p, err := m.Attach(conn, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			sent := make(chan error, 1)
			go func() { sent <- c.call(s, p, msgOf(1, 10)) }()
			select {
			case err := <-sent:
				if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
					t.Fatalf("%s past its write deadline, nothing accepted: %v, want os.ErrDeadlineExceeded", c.name, err)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("%s still blocked 2 s after its 100 ms write deadline (no byte of it accepted by the connection)", c.name)
			}
		})
	}
}

// TestAudit21WriteLoopOnStalledPeerNeverTimesOut is
// golang.org/x/net/nettest's FutureTimeout for the write side: Writes to a
// peer that does not read must end with a timeout once the deadline
// passes. nettest.TestConn's PresentTimeout and FutureTimeout both hang
// on a Socket until their one-minute guard closes the pipe (run with a
// parser that makes every byte a message, so that the Socket is a plain
// byte stream).
func TestAudit21WriteLoopOnStalledPeerNeverTimesOut(t *testing.T) {
	s, _ := a21StreamSocket(t, kcm.Datagram) // the peer never reads
	s.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		b := make([]byte, 1024)
		for {
			if _, err := s.Write(b); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write loop ended with %v, want a timeout", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Write loop to a stalled peer still blocked 3 s after a 200 ms write deadline")
	}
}

// TestAudit21WriteDeadlineSetWhileFlushing: a deadline set while a send
// is blocked in a write to a peer that stopped reading lets it go, as
// Socket.Close does, for two kinds of send that once stayed blocked:
//
//   - flusher: a Send whose own message is written whole and which goes on
//     writing what other sockets queued meanwhile. The write is
//     interrupted and handed to a goroutine of the mux's (flusherKicked,
//     finishKicked); the send returns nil.
//   - taken: a Send whose uncopied message (over 64 KiB) waited in the
//     queue and was taken into that write. The write is interrupted, the
//     message copied (kickTaken, copyExpired); the send returns nil.
//
// Either way the messages reach the peer whole once it reads, and the
// send buffer empties.
func TestAudit21WriteDeadlineSetWhileFlushing(t *testing.T) {
	for _, tc := range []string{"flusher", "taken"} {
		t.Run(tc, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			a, b := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
			errB := make(chan error, 1)
			peer, errA := stalledQueueWrite(t, m, a, func() {
				if tc == "flusher" {
					for i := range 14 { // copied into the queue: under flushBudget together
						if err := b.Send(msgOf(uint32(10+i), 60<<10)); err != nil {
							t.Fatal(err)
						}
					}
					return
				}
				go func() { errB <- b.Send(msgOf(2, 900<<10)) }() // uncopied
				waitSendQ(t, m, b, 1)
			})
			who, errc := a, errA
			if tc == "taken" {
				who, errc = b, errB
			}
			who.SetWriteDeadline(time.Now())
			select {
			case err := <-errc:
				// Its message is written (flusher) or copied (taken).
				if err != nil {
					t.Fatalf("send returned %v, want nil", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("send still blocked 2 s after its write deadline passed (%s)", tc)
			}
			// The mux finishes the write: the peer gets b's messages whole,
			// and nothing stays counted in the send buffer.
			peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			want := []uint32{2}
			if tc == "flusher" {
				want = want[:0]
				for i := range 14 {
					want = append(want, uint32(10+i))
				}
			}
			for _, id := range want {
				if got := checkMsg(t, readMsg(t, peer)); got != id {
					t.Fatalf("peer got message %d, want %d", got, id)
				}
			}
			waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
		})
	}
}

// ---- Verified promises ----------------------------------------------------

// a21End ends the call of name on s blocked on ch by how (close, muxclose,
// a past deadline or one soon, set with setDeadline) and checks its error.
func a21End(t *testing.T, m *kcm.Mux, s *kcm.Socket, setDeadline func(time.Time) error, how, name string, ch chan error) {
	t.Helper()
	switch how {
	case "close":
		s.Close()
	case "muxclose":
		m.Close()
	case "past":
		setDeadline(time.Now().Add(-time.Second))
	case "soon":
		setDeadline(time.Now().Add(20 * time.Millisecond))
	}
	err := waitErr(t, ch, name)
	if how == "close" || how == "muxclose" {
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, kcm.ErrClosed) {
			t.Fatalf("%s after %s: %v, want ErrClosed", name, how, err)
		}
		return
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
		t.Fatalf("%s after a deadline: %v, want os.ErrDeadlineExceeded", name, err)
	}
}

// Spec 8, observed on a real kernel: a SOCK_DGRAM receive into a 20-byte
// buffer of a 109-byte message returns 20 with MSG_TRUNC, the rest of that
// message is gone and the next receive returns the next message; MSG_PEEK
// returns the whole message and leaves it queued; an empty socket with
// MSG_DONTWAIT gives EAGAIN. Checked on each way a message reaches a
// receive: read by the receive itself (one psock), handed over or queued
// by a background reader (two psocks).
func TestAudit21DatagramKernelObservations(t *testing.T) {
	for _, np := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d psocks", np), func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			var peer net.Conn
			for range np {
				_, peer = attachPeer(t, m)
			}
			first, next := msgOf(1, 105), msgOf(2, 30) // 109 bytes framed
			if _, err := peer.Write(append(append([]byte(nil), first...), next...)); err != nil {
				t.Fatal(err)
			}
			s.SetReadDeadline(time.Now().Add(4 * time.Second))
			big := make([]byte, 200)
			n, fl, err := s.RecvMsg(big, kcm.Peek)
			if err != nil || n != 109 || fl != kcm.EOR || !bytes.Equal(big[:n], first) {
				t.Fatalf("Peek = %d, %v, %v; want the whole 109-byte message", n, fl, err)
			}
			b := make([]byte, 20)
			n, fl, err = s.RecvMsg(b, 0)
			if n != 20 || fl != kcm.EOR|kcm.Trunc || !errors.Is(err, kcm.ErrTruncated) || !bytes.Equal(b, first[:20]) {
				t.Fatalf("RecvMsg(20 bytes) = %d, %v, %v; want 20, EOR|Trunc, ErrTruncated", n, fl, err)
			}
			n, fl, err = s.RecvMsg(big, 0)
			if err != nil || fl != kcm.EOR || !bytes.Equal(big[:n], next) {
				t.Fatalf("next RecvMsg = %q, %v, %v; want the next message", big[:n], fl, err)
			}
			for _, f := range []kcm.RecvFlags{kcm.DontWait, kcm.DontWait | kcm.Peek} {
				if _, _, err := s.RecvMsg(big, f); !errors.Is(err, kcm.ErrWouldBlock) {
					t.Fatalf("RecvMsg(%v) on an empty socket: %v, want ErrWouldBlock", f, err)
				}
			}
			if st := s.Stats(); st.RxMsgs != 2 || st.RxBytes != 20+34 {
				t.Fatalf("stats %+v: want 2 messages, 54 bytes copied", st)
			}
		})
	}
}

// Zero-length buffers: a Datagram receive consumes the message with
// ErrTruncated (as recv(2) with len 0 on the kernel's KCM); Read and a
// SeqPacket receive return 0 bytes and keep the whole message, which the
// next receive returns, with EOR; a Peek into nothing leaves it.
func TestAudit21ZeroLengthBuffers(t *testing.T) {
	m := newMux(t, kcm.Config{})
	seq, dg := m.NewSocket(kcm.SeqPacket), m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	msg1, msg2 := msgOf(1, 40), msgOf(2, 40)
	peer.Write(append(append([]byte(nil), msg1...), msg2...))
	seq.SetReadDeadline(time.Now().Add(4 * time.Second))
	if n, err := seq.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if n, fl, err := seq.RecvMsg(nil, 0); n != 0 || fl != 0 || err != nil {
		t.Fatalf("SeqPacket RecvMsg(nil) = %d, %v, %v; want 0, no EOR", n, fl, err)
	}
	if n, fl, err := seq.RecvMsg(nil, kcm.Peek); n != 0 || fl != 0 || err != nil {
		t.Fatalf("SeqPacket Peek(nil) = %d, %v, %v", n, fl, err)
	}
	b := make([]byte, 100)
	if n, fl, err := seq.RecvMsg(b, 0); err != nil || fl != kcm.EOR || !bytes.Equal(b[:n], msg1) {
		t.Fatalf("after empty reads: %q, %v, %v; want the whole message", b[:n], fl, err)
	}
	dg.SetReadDeadline(time.Now().Add(4 * time.Second))
	if n, fl, err := dg.RecvMsg(nil, 0); n != 0 || fl != kcm.EOR|kcm.Trunc || !errors.Is(err, kcm.ErrTruncated) {
		t.Fatalf("Datagram RecvMsg(nil) = %d, %v, %v; want 0, EOR|Trunc, ErrTruncated", n, fl, err)
	}
	if _, _, err := dg.RecvMsg(b, kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
		t.Fatalf("after a truncated zero-length receive: %v, want the message gone", err)
	}
	if st := seq.Stats(); st.RxMsgs != 1 || st.RxBytes != uint64(len(msg1)) {
		t.Fatalf("SeqPacket stats %+v", st)
	}
	if st := dg.Stats(); st.RxMsgs != 1 || st.RxBytes != 0 {
		t.Fatalf("Datagram stats %+v", st)
	}
}

// Every blocked receive call returns when its socket closes, when the mux
// closes (errors.Is net.ErrClosed and kcm.ErrClosed), and when a deadline
// in the past or soon is set meanwhile (os.ErrDeadlineExceeded, Timeout()
// true), whatever reads the psocks: no psock, the receive itself (one),
// background readers (two).
func TestAudit21BlockedReceivesEnd(t *testing.T) {
	calls := []struct {
		name string
		call func(s *kcm.Socket) error
	}{
		{"Recv", func(s *kcm.Socket) error { _, err := s.Recv(make([]byte, 64)); return err }},
		{"Read", func(s *kcm.Socket) error { _, err := s.Read(make([]byte, 64)); return err }},
		{"RecvMsg", func(s *kcm.Socket) error { _, _, err := s.RecvMsg(make([]byte, 64), 0); return err }},
		{"Peek", func(s *kcm.Socket) error { _, _, err := s.RecvMsg(make([]byte, 64), kcm.Peek); return err }},
		{"RecvMessage", func(s *kcm.Socket) error { _, err := s.RecvMessage(); return err }},
		{"RecvBatch", func(s *kcm.Socket) error { _, err := s.RecvBatch(make([]kcm.Message, 4)); return err }},
	}
	for _, c := range calls {
		for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
			for _, np := range []int{0, 1, 2} {
				for _, how := range []string{"close", "muxclose", "past", "soon"} {
					t.Run(fmt.Sprintf("%s/%v/%d/%s", c.name, typ, np, how), func(t *testing.T) {
						m := newMux(t, kcm.Config{})
						s := m.NewSocket(typ)
						for range np {
							attachPeer(t, m)
						}
						ch := make(chan error, 1)
						go func() { ch <- c.call(s) }()
						waitReceiving(t, m, s)
						a21End(t, m, s, s.SetReadDeadline, how, c.name, ch)
					})
				}
			}
		}
	}
}

// A read deadline moved later, or cleared, while a receive waits does not
// end it at the old deadline, on each way the psocks are read; the
// receive then gets the message that arrives.
func TestAudit21ReadDeadlineExtendedWhileBlocked(t *testing.T) {
	for _, np := range []int{1, 2} {
		for _, ext := range []string{"later", "cleared"} {
			t.Run(fmt.Sprintf("%d/%s", np, ext), func(t *testing.T) {
				t.Parallel()
				m := newMux(t, kcm.Config{})
				s := m.NewSocket(kcm.SeqPacket)
				var peer net.Conn
				for range np {
					_, peer = attachPeer(t, m)
				}
				s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				got := make(chan error, 1)
				b := make([]byte, 64)
				go func() {
					n, fl, err := s.RecvMsg(b, 0)
					if err == nil && (fl != kcm.EOR || checkMsg(t, b[:n]) != 7) {
						err = fmt.Errorf("got %q, %v", b[:n], fl)
					}
					got <- err
				}()
				waitReceiving(t, m, s)
				if ext == "later" {
					s.SetReadDeadline(time.Now().Add(time.Hour))
				} else {
					s.SetReadDeadline(time.Time{})
				}
				// Not a synchronisation: the receive must not end by itself.
				select {
				case err := <-got:
					t.Fatalf("receive ended (%v) although its deadline was moved", err)
				case <-time.After(300 * time.Millisecond):
				}
				peer.Write(msgOf(7, 20))
				if err := waitErr(t, got, "RecvMsg"); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// Blocked sends end when their socket or the mux closes (ErrClosed,
// net.ErrClosed) and when a deadline in the past or soon is set while
// they wait: in the mux's backlog (no psock, send buffer full) or
// uncopied behind a busy psock; every kind of send.
func TestAudit21BlockedSendsEnd(t *testing.T) {
	type sendCall func(s *kcm.Socket, p *kcm.Psock, b []byte) error
	calls := []struct {
		name   string
		pinned bool
		call   sendCall
	}{
		{"Write", false, func(s *kcm.Socket, p *kcm.Psock, b []byte) error { _, err := s.Write(b); return err }},
		{"SendBatch", false, func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.SendBatch([][]byte{b, b}) }},
		{"EndMore", false, func(s *kcm.Socket, p *kcm.Psock, b []byte) error {
			if err := s.SendMsg(b[:10], kcm.More); err != nil {
				return err
			}
			return s.SendMsg(b[10:], 0)
		}},
		{"EndBatch", false, func(s *kcm.Socket, p *kcm.Psock, b []byte) error {
			if err := s.SendMsg(b, kcm.Batch); err != nil {
				return err
			}
			return s.SendMsg(nil, 0)
		}},
		{"SendTo", true, func(s *kcm.Socket, p *kcm.Psock, b []byte) error { return s.SendTo(b, p) }},
	}
	for _, c := range calls {
		for _, where := range []string{"backlog", "queue"} {
			if where == "backlog" && c.pinned {
				continue
			}
			for _, how := range []string{"close", "muxclose", "past", "soon"} {
				t.Run(fmt.Sprintf("%s/%s/%s", c.name, where, how), func(t *testing.T) {
					m := newMux(t, kcm.Config{SendBuffer: 1 << 16})
					s, other := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
					var p *kcm.Psock
					if where == "backlog" {
						if err := other.Send(msgOf(2, 60000)); err != nil { // fills the send buffer
							t.Fatal(err)
						}
					} else {
						var conn net.Conn
						conn, _ = tcpPair(t)
						conn.(*net.TCPConn).SetWriteBuffer(32 << 10)
						var err error
						if p, err = m.Attach(conn, lenPrefix); err != nil {
							t.Fatal(err)
						}
						huge := msgOf(2, 4<<20)
						go other.Send(huge) // holds the psock: its peer never reads
						waitProc(t, m, func(string) bool { return a21Field(m, "psock-0", 8) == strconv.Itoa(len(huge)) })
					}
					ch := make(chan error, 1)
					go func() { ch <- c.call(s, p, msgOf(1, 100<<10)) }()
					waitSendQ(t, m, s, 1)
					a21End(t, m, s, s.SetWriteDeadline, how, c.name, ch)
				})
			}
		}
	}
}

// A write deadline moved later while a send waits in the backlog does not
// end it at the old one; the send goes out when a psock comes.
func TestAudit21WriteDeadlineExtendedWhileBlocked(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1 << 16})
	s, other := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	if err := other.Send(msgOf(2, 60000)); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	msg := msgOf(1, 100<<10)
	ch := make(chan error, 1)
	go func() { ch <- s.Send(msg) }()
	waitSendQ(t, m, s, 1)
	s.SetWriteDeadline(time.Now().Add(time.Hour))
	select { // not a synchronisation: the send must not end by itself
	case err := <-ch:
		t.Fatalf("Send ended (%v) although its deadline was moved", err)
	case <-time.After(300 * time.Millisecond):
	}
	_, peer := attachPeer(t, m)
	if err := waitErr(t, ch, "Send"); err != nil {
		t.Fatal(err)
	}
	if got := readMsg(t, peer); checkMsg(t, got) != 2 {
		t.Fatal("backlog order")
	}
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatal("the waiting send's message differs")
	}
}

// The net.Conn deadline checks of golang.org/x/net/nettest that a Socket
// passes (PastTimeout, ReadTimeout, WriteTimeout, RacyRead, CloseTimeout),
// on a socket that carries a byte stream: a deadline in the past fails
// Read and Write at once with n == 0 and a net.Error whose Timeout() is
// true, a read timeout does not stop writes nor a write timeout reads, the
// socket works again once the deadline is cleared, a Read's buffer is the
// caller's again when it times out, and Close ends a Read and a Write
// loop.
func TestAudit21NetConnDeadlines(t *testing.T) {
	checkTimeout := func(t *testing.T, n int, err error) {
		t.Helper()
		ne, ok := err.(net.Error)
		if n != 0 || !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %d, %v (%T); want 0 and a net.Error timeout", n, err, err)
		}
	}
	roundtrip := func(t *testing.T, s *kcm.Socket, peer net.Conn) {
		t.Helper()
		if err := s.SetDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("Hello, world!")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 13)
		if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "Hello, world!" {
			t.Fatalf("peer got %q, %v", buf, err)
		}
		peer.Write(buf)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "Hello, world!" {
			t.Fatalf("socket got %q, %v", buf, err)
		}
	}
	for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
		t.Run(typ.String(), func(t *testing.T) {
			s, peer := a21StreamSocket(t, typ)
			roundtrip(t, s, peer)
			s.SetDeadline(time.Unix(1, 0))
			n, err := s.Write(make([]byte, 1024))
			checkTimeout(t, n, err)
			n, err = s.Read(make([]byte, 1024))
			checkTimeout(t, n, err)
			roundtrip(t, s, peer)

			s.SetReadDeadline(time.Unix(1, 0))
			n, err = s.Read(make([]byte, 1024))
			checkTimeout(t, n, err)
			if _, err := s.Write([]byte("after a read timeout")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(peer, make([]byte, 20)); err != nil {
				t.Fatal(err)
			}
			s.SetReadDeadline(time.Time{})
			s.SetWriteDeadline(time.Unix(1, 0))
			n, err = s.Write(make([]byte, 1024))
			checkTimeout(t, n, err)
			peer.Write([]byte("after a write timeout"))
			if _, err := io.ReadFull(s, make([]byte, 21)); err != nil {
				t.Fatal(err)
			}
			roundtrip(t, s, peer)

			// RacyRead: the peer streams; reads time out every ms, and each
			// scribbles on its buffer at once (the race detector watches
			// for the mux writing into it after the call).
			stop := make(chan struct{})
			streamed := make(chan struct{})
			go func() {
				defer close(streamed)
				chunk := bytes.Repeat([]byte{'x'}, 1024)
				for {
					select {
					case <-stop:
						return
					default:
					}
					peer.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
					peer.Write(chunk)
				}
			}()
			var wg sync.WaitGroup
			s.SetReadDeadline(time.Now().Add(time.Millisecond))
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b1, b2 := make([]byte, 1024), make([]byte, 1024)
					for range 50 {
						_, err := s.Read(b1)
						copy(b1, b2)
						if err != nil {
							if !isTimeout(err) {
								t.Errorf("racy read: %v", err)
								return
							}
							s.SetReadDeadline(time.Now().Add(time.Millisecond))
						}
					}
				}()
			}
			wg.Wait()
			close(stop)
			<-streamed

			// CloseTimeout: Close ends a Read loop and a Write loop.
			s.SetDeadline(time.Time{})
			go io.Copy(io.Discard, peer)
			loops := make(chan error, 2)
			go func() {
				var err error
				for b := make([]byte, 1024); err == nil; {
					_, err = s.Read(b)
				}
				loops <- err
			}()
			go func() {
				var err error
				for b := make([]byte, 1024); err == nil; {
					_, err = s.Write(b)
				}
				loops <- err
			}()
			waitReceiving(t, s.Mux(), s)
			s.Close()
			for range 2 {
				if err := waitErr(t, loops, "loop"); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("loop after Close: %v, want net.ErrClosed", err)
				}
			}
		})
	}
}

// The Socket is a net.Conn that the standard library's users of one work
// over: net/rpc with its gob codec (bufio on both sides, concurrent calls
// from many goroutines, a client read loop that Close ends) and with
// jsonrpc, on a socket carrying a byte stream.
type a21Arith struct{}

func (a21Arith) Mul(args [2]int, reply *int) error { *reply = args[0] * args[1]; return nil }

func TestAudit21NetRPCOverSocket(t *testing.T) {
	for _, codec := range []string{"gob", "json"} {
		t.Run(codec, func(t *testing.T) {
			s, peer := a21StreamSocket(t, kcm.SeqPacket)
			srv := rpc.NewServer()
			if err := srv.RegisterName("Arith", a21Arith{}); err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			go func() {
				defer close(served)
				if codec == "gob" {
					srv.ServeConn(peer)
				} else {
					srv.ServeCodec(jsonrpc.NewServerCodec(peer))
				}
			}()
			var cl *rpc.Client
			if codec == "gob" {
				cl = rpc.NewClient(s)
			} else {
				cl = jsonrpc.NewClient(s)
			}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 100 {
						var r int
						if err := cl.Call("Arith.Mul", [2]int{g, i}, &r); err != nil {
							t.Error(err)
							return
						}
						if r != g*i {
							t.Errorf("Mul(%d, %d) = %d", g, i, r)
						}
					}
				}()
			}
			wg.Wait()
			if err := cl.Close(); err != nil { // closes the socket: its read loop ends
				t.Fatal(err)
			}
			var r int
			if err := cl.Call("Arith.Mul", [2]int{1, 2}, &r); !errors.Is(err, rpc.ErrShutdown) {
				t.Fatalf("call after Close: %v, want rpc.ErrShutdown", err)
			}
			peer.Close()
			<-served
		})
	}
}

// io.Copy into a socket (each Write one message) and out of one into a
// bufio-framed reader: Read returns messages and pieces of them, so a
// stream reader over a SeqPacket or Datagram socket reads the framed
// messages back exactly, with buffers shorter and longer than them.
func TestAudit21IOCopyAndBufio(t *testing.T) {
	for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
		t.Run(typ.String(), func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(typ)
			_, peer := attachPeer(t, m)
			var want bytes.Buffer
			for i := range 200 {
				want.Write(msgOf(uint32(i), 8+i*37))
			}
			// Into the socket: the peer receives the exact bytes.
			src := bytes.NewReader(want.Bytes())
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(peer, int64(want.Len())))
				got <- b
			}()
			if n, err := io.Copy(struct{ io.Writer }{s}, src); err != nil || n != int64(want.Len()) {
				t.Fatalf("io.Copy into the socket: %d, %v", n, err)
			}
			if !bytes.Equal(<-got, want.Bytes()) {
				t.Fatal("the peer read other bytes")
			}
			// Out of the socket, through bufio (4 KiB buffer, 16-byte reads).
			go peer.Write(want.Bytes())
			s.SetReadDeadline(time.Now().Add(4 * time.Second))
			br := bufio.NewReaderSize(s, 4096)
			for i := range 200 {
				var hdr [4]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					t.Fatal(err)
				}
				body := make([]byte, 8+i*37)
				if _, err := io.ReadFull(br, body); err != nil {
					t.Fatal(err)
				}
				if id := checkMsg(t, append(hdr[:], body...)); id != uint32(i) {
					t.Fatalf("message %d read as %d", i, id)
				}
			}
			var out bytes.Buffer
			go peer.Write(want.Bytes())
			if n, err := io.CopyN(&out, struct{ io.Reader }{s}, int64(want.Len())); err != nil || n != int64(want.Len()) {
				t.Fatalf("io.CopyN out of the socket: %d, %v", n, err)
			}
			if !bytes.Equal(out.Bytes(), want.Bytes()) {
				t.Fatal("io.Copy out of the socket read other bytes")
			}
		})
	}
}

// A non-blocking Peek gets a message whose bytes arrived before the call,
// and leaves it whole: a short non-blocking receive then cuts it as its
// type says (Datagram: the rest is gone; SeqPacket: the rest is the next
// receive's, with EOR), and the socket is empty after.
func TestAudit21PeekDontWaitArrived(t *testing.T) {
	for _, np := range []int{1, 2} {
		for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
			t.Run(fmt.Sprintf("%d/%v", np, typ), func(t *testing.T) {
				m := newMux(t, kcm.Config{})
				s := m.NewSocket(typ)
				var peers []net.Conn
				for range np {
					peer, c := testconn.Pair(t, "unix")
					if _, err := m.Attach(c, lenPrefix); err != nil {
						t.Fatal(err)
					}
					peers = append(peers, peer)
				}
				b, small := make([]byte, 100), make([]byte, 10)
				for i := range 50 {
					msg := msgOf(uint32(i), 40)
					peers[i%np].Write(msg)
					n, fl, err := s.RecvMsg(b, kcm.Peek|kcm.DontWait)
					if err != nil || fl != kcm.EOR || !bytes.Equal(b[:n], msg) {
						t.Fatalf("%d: Peek|DontWait = %d, %v, %v; want the arrived message", i, n, fl, err)
					}
					n, fl, err = s.RecvMsg(small, kcm.DontWait)
					if typ == kcm.Datagram {
						if n != 10 || fl != kcm.EOR|kcm.Trunc || !errors.Is(err, kcm.ErrTruncated) {
							t.Fatalf("%d: short Datagram receive = %d, %v, %v", i, n, fl, err)
						}
					} else {
						if n != 10 || fl != 0 || err != nil {
							t.Fatalf("%d: short SeqPacket receive = %d, %v, %v", i, n, fl, err)
						}
						n, fl, err = s.RecvMsg(b, kcm.DontWait)
						if err != nil || fl != kcm.EOR || !bytes.Equal(b[:n], msg[10:]) {
							t.Fatalf("%d: rest = %d, %v, %v", i, n, fl, err)
						}
					}
					if _, _, err := s.RecvMsg(b, kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
						t.Fatalf("%d: socket not empty after: %v", i, err)
					}
				}
			})
		}
	}
}

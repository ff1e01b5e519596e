package kcm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"
)

// The fast path (recvFast) reads the lone psock's connection itself, on
// request/response traffic straight into the caller's buffer. A psock
// attached, the psock unattached, or the mux closed while it waits in that
// read must end the read and leave the call to the general path, with
// nothing lost and every message counted once.
func TestFastDirectReadInterrupted(t *testing.T) {
	frame := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
	// setup returns a mux whose psock p the next Recv on s reads directly.
	setup := func(t *testing.T) (m *Mux, p *Psock, peer1 io.Writer, s *Socket) {
		m, p, peer := attachedPsock(t, Config{})
		s = m.NewSocket(Datagram) // no read deadline: the fast path takes none
		for i, name := range []string{"bg", "buffered"} {
			got := make(chan string, 1)
			go func() {
				b := make([]byte, 64)
				n, err := s.Recv(b)
				if err != nil {
					n = 0
				}
				got <- string(b[:n])
			}()
			waitLocked(t, m, "the receive never waited", func() bool { return m.waiters.follower() != nil || p.leader == s })
			m.mu.Unlock()
			peer.Write(frame(name))
			if g := <-got; g != string(frame(name)) {
				t.Fatalf("round %d: %q", i, g)
			}
			// The next receive must lead, not a background reader.
			waitLocked(t, m, "the psock never became idle", func() bool { return m.leadableLocked() == p })
			p.graceArmed = false
			direct := p.sp.direct > 0 && p.sp.start == p.sp.end
			m.mu.Unlock()
			if i == 1 && !direct {
				t.Fatal("a read of one whole message did not make the next one direct")
			}
		}
		return m, p, peer, s
	}
	// recv starts a Recv on s and waits until it blocks in the fast path's read.
	recv := func(t *testing.T, m *Mux, p *Psock, s *Socket) <-chan []byte {
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, 64)
			n, err := s.Recv(b)
			if err != nil {
				b = []byte(err.Error())
				n = len(b)
			}
			got <- b[:n]
		}()
		waitLocked(t, m, "the receive never led the psock", func() bool { return p.rx == rxLed && p.leader == s })
		m.mu.Unlock()
		waitStack(t, "kcm.(*Mux).recvFast(", "net.(*conn).Read(")
		return got
	}
	within := func(t *testing.T, got <-chan []byte) string {
		t.Helper()
		select {
		case b := <-got:
			return string(b)
		case <-time.After(5 * time.Second):
			t.Fatal("the receive is stuck")
			return ""
		}
	}

	t.Run("attach", func(t *testing.T) {
		m, p, peer1, s := setup(t)
		got := recv(t, m, p, s)
		c2, peer2 := loopbackPair(t)
		q, err := m.Attach(c2, p.sp.parser)
		if err != nil {
			t.Fatal(err)
		}
		peer2.Write(frame("q-1")) // only the new psock speaks: the read must let go
		if g := within(t, got); g != string(frame("q-1")) {
			t.Fatalf("receive: %q; want the new psock's message", g)
		}
		peer1.Write(frame("p-3"))
		b := make([]byte, 64)
		if n, err := s.Recv(b); err != nil || string(b[:n]) != string(frame("p-3")) {
			t.Fatalf("next receive: %q, %v", b[:n], err)
		}
		if ps, qs, ss := p.Stats(), q.Stats(), s.Stats(); ps.RxMsgs != 3 || qs.RxMsgs != 1 || ss.RxMsgs != 4 {
			t.Fatalf("messages counted: psock %d, new psock %d, socket %d; want 3, 1, 4", ps.RxMsgs, qs.RxMsgs, ss.RxMsgs)
		}
	})

	t.Run("unattach", func(t *testing.T) {
		m, p, peer1, s := setup(t)
		got := recv(t, m, p, s)
		c, err := p.Unattach()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*prefixConn); ok {
			t.Fatal("the unattached connection holds bytes nobody sent")
		}
		// The stream goes on where the mux stopped: the next bytes are the
		// peer's next message.
		peer1.Write(frame("p-3"))
		b := make([]byte, len(frame("p-3")))
		if _, err := io.ReadFull(c, b); err != nil || !bytes.Equal(b, frame("p-3")) {
			t.Fatalf("unattached connection: %q, %v", b, err)
		}
		// The receive waits on in the general path and takes a message of
		// the connection attached again.
		p2, err := m.Attach(c, p.sp.parser)
		if err != nil {
			t.Fatal(err)
		}
		peer1.Write(frame("p-4"))
		if g := within(t, got); g != string(frame("p-4")) {
			t.Fatalf("receive: %q; want the message after the unattach", g)
		}
		if ms, p2s, ss := m.Stats(), p2.Stats(), s.Stats(); ms.RxMsgs != 3 || p2s.RxMsgs != 1 || ss.RxMsgs != 3 {
			t.Fatalf("messages counted: mux %d, psock %d, socket %d; want 3, 1, 3", ms.RxMsgs, p2s.RxMsgs, ss.RxMsgs)
		}
	})

	t.Run("close", func(t *testing.T) {
		m, p, _, s := setup(t)
		got := recv(t, m, p, s)
		m.Close()
		if g := within(t, got); !errors.Is(p.Err(), ErrClosed) || g != (&OpError{Op: "recv", Socket: s.index, Err: ErrClosed}).Error() {
			t.Fatalf("receive: %q, psock error %v; want ErrClosed", g, p.Err())
		}
	})
}

// waitStack waits until a goroutine's stack holds each of frames.
func waitStack(t *testing.T, frames ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		k := runtime.Stack(buf, true)
		for _, g := range bytes.Split(buf[:k], []byte("\n\n")) {
			all := true
			for _, f := range frames {
				all = all && bytes.Contains(g, []byte(f))
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %q:\n%s", frames, buf[:k])
		}
		time.Sleep(time.Millisecond)
	}
}

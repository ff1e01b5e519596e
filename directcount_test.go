package kcm

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// TestDirectReadCountsLikeBuffered: after request/response traffic turned
// direct reads on, a read straight into a receiver's buffer that the
// buffer cuts short (the reply is more than one message) must show the
// parser what a read into the psock's buffer would, and count alike:
// NeedMoreHdr, the parser's calls, RxMsgs and RxBytes. The same chunks go
// to a receiver on the fast path and to one on the general path (a read
// deadline keeps it off the fast path). The fast path read 17 bytes, the
// first message and one byte of the next header, and the parser was
// called with that byte: a NeedMoreHdr the stream never had.
func TestDirectReadCountsLikeBuffered(t *testing.T) {
	type result struct {
		calls []int
		st    PsockStats
	}
	run := func(general bool) (r result) {
		c, peer := loopbackPair(t)
		m := NewMux(Config{})
		t.Cleanup(func() { m.Close() })
		rp := &r9Parser{}
		p, err := m.Attach(c, rp)
		if err != nil {
			t.Fatal(err)
		}
		s := m.NewSocket(Datagram)
		if general {
			s.SetReadDeadline(time.Now().Add(time.Hour))
		}
		buf := make([]byte, 64)
		lockstep := func() { // request/response: one whole message per read
			t.Helper()
			for i := range 3 {
				msg := r9Msg(byte(i), 16)
				peer.Write(msg)
				if n, err := s.Recv(buf); err != nil || !bytes.Equal(buf[:n], msg) {
					t.Fatalf("lockstep %d: %q, %v", i, buf[:n], err)
				}
			}
			m.mu.Lock()
			direct := p.sp.direct
			m.mu.Unlock()
			if !general && direct == 0 {
				t.Skip("direct reads did not turn on (a background reader took the psock)")
			}
		}
		small := make([]byte, 17) // room beyond one message: direct reads go on
		recv := func(want []byte) {
			t.Helper()
			if n, err := s.Recv(small); err != nil || !bytes.Equal(small[:n], want) {
				t.Fatalf("general=%v: %q, %v; want %q", general, small[:n], err, want)
			}
		}
		lockstep()
		before, _ := p.Stats(), rp.take()
		a, b := r9Msg(10, 16), r9Msg(11, 16)
		peer.Write(append(slices.Clone(a), b...)) // two messages in one chunk
		recv(a)
		recv(b)
		mid := p.Stats()
		r.calls = append(rp.take(), -1)
		lockstep()
		mid2, _ := p.Stats(), rp.take()
		e, d := r9Msg(12, 16), r9Msg(13, 16)
		peer.Write(append(slices.Clone(e), d[:2]...)) // a message and part of a header
		recv(e)
		peer.Write(d[2:])
		recv(d)
		after := p.Stats()
		r.calls = append(r.calls, rp.take()...)
		r.st = PsockStats{
			RxMsgs:      mid.RxMsgs - before.RxMsgs + after.RxMsgs - mid2.RxMsgs,
			RxBytes:     mid.RxBytes - before.RxBytes + after.RxBytes - mid2.RxBytes,
			NeedMoreHdr: mid.NeedMoreHdr - before.NeedMoreHdr + after.NeedMoreHdr - mid2.NeedMoreHdr,
		}
		return r
	}
	fast, general := run(false), run(true)
	if fast.st != general.st {
		t.Errorf("counters: fast path %+v, general path %+v", fast.st, general.st)
	}
	if !slices.Equal(fast.calls, general.calls) {
		t.Errorf("parser called with %v bytes on the fast path, %v on the general path", fast.calls, general.calls)
	}
}

package kcm_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// ConnSet.Psocks returns the set's connections attached now: a psock that
// left the mux (its Done channel closed, Mux.Psocks without it) is not
// listed, also before the slot's tending goroutine has cleared its slot
// (it used to be, until then).
func TestAudit14ConnSetPsocksOmitsPsockThatLeft(t *testing.T) {
	m := newMux(t, kcm.Config{})
	addr, accepted := listenPeers(t)
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{Size: 1, Dial: tcpDial(addr), Parser: lenPrefix,
		MinBackoff: time.Hour, MaxBackoff: time.Hour}) // no redial during the test
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	accept(t, accepted)
	waitFor(t, "the set's psock", func() bool { return len(cs.Psocks()) == 1 })
	p := cs.Psocks()[0]
	c, err := p.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-p.Done()
	if len(m.Psocks()) != 0 {
		t.Fatal("the mux still lists the unattached psock")
	}
	if ps := cs.Psocks(); len(ps) != 0 {
		t.Fatalf("ConnSet.Psocks returns %d psock(s) after its only psock left the mux", len(ps))
	}
}

// Spec 5 (/proc/net/kcm socket line) and Mux.Queued: the rest of a
// SeqPacket message a short receive left is the socket's Recv-Q (one
// piece) and Rmem (its bytes), counts in Queued's recv, and the socket's
// counters hold the bytes taken but not the message yet.
func TestAudit14KeptRestInProcQueuedAndStats(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	msg := msgOf(1, 100)
	peer.Write(msg)
	buf := make([]byte, 30)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, fl, err := s.RecvMsg(buf, 0)
	if err != nil || n != 30 || fl&kcm.EOR != 0 {
		t.Fatalf("first piece: n %d, flags %v, err %v; want 30, no EOR, nil", n, fl, err)
	}
	rest := len(msg) - 30
	d := proc(m)
	// Object RX-Msgs RX-Bytes TX-Msgs TX-Bytes Recv-Q Rmem Send-Q Smem Status
	f := strings.Fields(procLine(d, fmt.Sprintf("kcm-%d", s.Index())))
	if len(f) < 7 || f[5] != "1" || f[6] != fmt.Sprint(rest) {
		t.Errorf("socket line %v: want Recv-Q 1, Rmem %d; dump:\n%s", f, rest, d)
	}
	if r, _ := m.Queued(); r != rest {
		t.Errorf("Queued recv %d, want %d", r, rest)
	}
	if st := s.Stats(); st.RxMsgs != 0 || st.RxBytes != 30 {
		t.Errorf("socket stats %+v after a piece, want 0 messages, 30 bytes", st)
	}
	b := make([]byte, 200)
	if n, fl, err := s.RecvMsg(b, 0); err != nil || n != rest || fl != kcm.EOR || !bytes.Equal(b[:n], msg[30:]) {
		t.Fatalf("rest: n %d, flags %v, err %v", n, fl, err)
	}
	if r, _ := m.Queued(); r != 0 {
		t.Errorf("Queued recv %d after the rest was taken", r)
	}
	if st := s.Stats(); st.RxMsgs != 1 || st.RxBytes != uint64(len(msg)) {
		t.Errorf("socket stats %+v, want 1 message, %d bytes", st, len(msg))
	}
}

// Spec 5: a psock paused by a full receive queue shows RxPause and RdyRx.
func TestAudit14ProcPausedPsockFlags(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 1000})
	m.NewSocket(kcm.Datagram) // never receives
	_, peer := attachPeer(t, m)
	go func() {
		for i := 0; i < 100; i++ {
			if _, err := peer.Write(msgOf(uint32(i), 200)); err != nil {
				return
			}
		}
	}()
	waitProc(t, m, func(d string) bool { return strings.Contains(procLine(d, "psock-0"), "RxPause") })
	if d := proc(m); !strings.Contains(procLine(d, "psock-0"), "RdyRx") {
		t.Errorf("paused psock without RdyRx; dump:\n%s", d)
	}
}

// Spec 5 (reserved/unreserved): a socket that reserved a psock that
// failed, then another, and closed, has every reservation released: the
// mux's aggregate shows two of each.
func TestAudit14ReservationsBalance(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p1, peer1 := attachPeer(t, m)
	if err := s.Send(msgOf(1, 10)); err != nil {
		t.Fatal(err)
	}
	readMsg(t, peer1)
	peer1.Close()
	waitDone(t, p1)
	_, peer2 := attachPeer(t, m)
	if err := s.Send(msgOf(2, 10)); err != nil {
		t.Fatal(err)
	}
	readMsg(t, peer2)
	s.Close()
	if st := m.Stats(); st.Psocks.Reserved != 2 || st.Psocks.Unreserved != 2 {
		t.Errorf("Reserved %d, Unreserved %d; want 2, 2", st.Psocks.Reserved, st.Psocks.Unreserved)
	}
}

// Spec 5: WriteProc of several muxes heads the dump with their count and
// lists a mux line for each.
func TestAudit14WriteProcSeveralMuxes(t *testing.T) {
	m1 := newMux(t, kcm.Config{})
	m2 := newMux(t, kcm.Config{})
	m1.NewSocket(kcm.Datagram)
	var b strings.Builder
	kcm.WriteProc(&b, m1, m2)
	d := b.String()
	if !strings.HasPrefix(d, "*** KCM statistics (2 MUX) ****\n") || strings.Count(d, "KCMs: 1, Psocks 0") != 1 ||
		strings.Count(d, "KCMs: 0, Psocks 0") != 1 {
		t.Errorf("dump of two muxes:\n%s", d)
	}
}

// Spec 3 (Datagram truncation, SeqPacket pieces, Peek, DontWait, the
// flags-reporting receive) and spec 5 (socket rx_msgs/rx_bytes): random
// sequences of RecvMsg (with and without DontWait), Recv, Read, Peek,
// RecvMessage and RecvBatch, with buffers at, around and far from the
// message (or kept rest) length, on one psock whose peer writes messages
// of every buffer class in random pieces, under a small RecvBuffer or an
// assembly deadline, with the read deadline switched on and off (fast and
// general paths), agree byte for byte, flag for flag and counter for
// counter with a model of the documented semantics.
func TestAudit14ReceiveCallsMatchModel(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		for _, typ := range []kcm.SocketType{kcm.Datagram, kcm.SeqPacket} {
			audit14ModelRun(t, seed, typ)
			if t.Failed() {
				return
			}
		}
	}
}

func audit14ModelRun(t *testing.T, seed int64, typ kcm.SocketType) {
	rng := rand.New(rand.NewSource(seed))
	cfg := kcm.Config{}
	switch rng.Intn(4) {
	case 1:
		cfg.RecvBuffer = 100
	case 2:
		cfg.RecvBuffer = 5000
	case 3:
		cfg.MessageTimeout = 10 * time.Second
	}
	m := kcm.NewMux(cfg)
	defer m.Close()
	s := m.NewSocket(typ)
	_, peer := attachPeer(t, m)
	nmsgs := 60
	var msgs [][]byte
	for i := 0; i < nmsgs; i++ {
		var size int
		switch rng.Intn(4) {
		case 0:
			size = 8 + rng.Intn(20)
		case 1:
			size = 8 + rng.Intn(300)
		case 2:
			size = 8 + rng.Intn(5000)
		default:
			size = 8 + rng.Intn(70000)
		}
		msgs = append(msgs, msgOf(uint32(i), size))
	}
	wseed := rng.Int63()
	go func() {
		r := rand.New(rand.NewSource(wseed))
		for _, mm := range msgs {
			if r.Intn(3) == 0 {
				time.Sleep(time.Duration(r.Intn(300)) * time.Microsecond)
			}
			if r.Intn(2) == 0 {
				if _, err := peer.Write(mm); err != nil {
					return
				}
			} else if writeChunked(peer, mm, r) != nil {
				return
			}
		}
	}()
	watchdog := time.AfterFunc(20*time.Second, func() { m.Close() })
	defer watchdog.Stop()

	next := 0
	var rest []byte // model: the rest of the current message, if begun
	var wantMsgs, wantBytes uint64
	cur := func() []byte {
		if rest != nil {
			return rest
		}
		return msgs[next]
	}
	consume := func(n int, whole bool) { // consume n bytes of cur; whole: message done regardless
		c := cur()
		wantBytes += uint64(n)
		if whole || n == len(c) {
			wantMsgs++
			rest = nil
			next++
			return
		}
		rest = c[n:]
	}
	bufSize := func() int {
		c := len(cur())
		switch rng.Intn(6) {
		case 0:
			return c
		case 1:
			return c + 1
		case 2:
			return max(c-1, 0)
		case 3:
			return rng.Intn(c + 1)
		case 4:
			return c + rng.Intn(1000)
		default:
			return 1 + rng.Intn(100)
		}
	}
	step := 0
	for next < nmsgs {
		step++
		op := rng.Intn(9)
		if rng.Intn(5) == 0 {
			s.SetReadDeadline(time.Now().Add(30 * time.Second))
		} else if rng.Intn(5) == 0 {
			s.SetReadDeadline(time.Time{})
		}
		dw := rng.Intn(4) == 0
		var f kcm.RecvFlags
		if dw {
			f = kcm.DontWait
		}
		c := cur()
		fail := func(format string, args ...any) {
			t.Fatalf("seed %d %v step %d op %d dw %v (msg %d, rest %v, len %d): "+format,
				append([]any{seed, typ, step, op, dw, next, rest != nil, len(c)}, args...)...)
		}
		wouldBlock := func(err error) bool {
			if errors.Is(err, kcm.ErrWouldBlock) {
				if !dw {
					fail("ErrWouldBlock without DontWait")
				}
				if rest != nil {
					fail("ErrWouldBlock with a kept rest")
				}
				return true
			}
			return false
		}
		switch op {
		case 0, 1: // RecvMsg
			b := make([]byte, bufSize())
			n, fl, err := s.RecvMsg(b, f)
			if wouldBlock(err) {
				continue
			}
			k := min(len(b), len(c))
			if n != k || !bytes.Equal(b[:n], c[:k]) {
				fail("RecvMsg n=%d want %d (err %v)", n, k, err)
			}
			if typ == kcm.Datagram {
				var wf kcm.RecvFlags = kcm.EOR
				if k < len(c) {
					wf |= kcm.Trunc
					if !errors.Is(err, kcm.ErrTruncated) {
						fail("err %v want ErrTruncated", err)
					}
				} else if err != nil {
					fail("err %v", err)
				}
				if fl != wf {
					fail("flags %v want %v", fl, wf)
				}
				consume(k, true)
			} else {
				if err != nil {
					fail("err %v", err)
				}
				var wf kcm.RecvFlags
				if k == len(c) {
					wf = kcm.EOR
				}
				if fl != wf {
					fail("flags %v want %v", fl, wf)
				}
				consume(k, false)
			}
		case 2: // Recv
			if dw {
				continue
			}
			b := make([]byte, bufSize())
			n, err := s.Recv(b)
			k := min(len(b), len(c))
			if n != k || !bytes.Equal(b[:n], c[:k]) {
				fail("Recv n=%d want %d (err %v)", n, k, err)
			}
			if typ == kcm.Datagram {
				if (k < len(c)) != errors.Is(err, kcm.ErrTruncated) || (k == len(c) && err != nil) {
					fail("err %v", err)
				}
				consume(k, true)
			} else {
				if err != nil {
					fail("err %v", err)
				}
				consume(k, false)
			}
		case 3: // Read
			if dw {
				continue
			}
			b := make([]byte, bufSize())
			n, err := s.Read(b)
			k := min(len(b), len(c))
			if err != nil || n != k || !bytes.Equal(b[:n], c[:k]) {
				fail("Read n=%d want %d err %v", n, k, err)
			}
			consume(k, false)
		case 4, 5: // Peek
			b := make([]byte, bufSize())
			n, fl, err := s.RecvMsg(b, f|kcm.Peek)
			if wouldBlock(err) {
				continue
			}
			k := min(len(b), len(c))
			if err != nil || n != k || !bytes.Equal(b[:n], c[:k]) {
				fail("Peek n=%d want %d err %v", n, k, err)
			}
			var wf kcm.RecvFlags
			if k == len(c) {
				wf = kcm.EOR
			} else if typ == kcm.Datagram {
				wf = kcm.Trunc
			}
			if fl != wf {
				fail("peek flags %v want %v", fl, wf)
			}
		case 6: // RecvMessage
			if dw {
				continue
			}
			msg, err := s.RecvMessage()
			if err != nil || !bytes.Equal(msg.Bytes(), c) {
				fail("RecvMessage len %d err %v", msg.Len(), err)
			}
			msg.Release()
			consume(len(c), true)
		case 7: // RecvBatch
			if dw {
				continue
			}
			ms := make([]kcm.Message, 1+rng.Intn(5))
			n, err := s.RecvBatch(ms)
			if err != nil || n < 1 {
				fail("RecvBatch %d %v", n, err)
			}
			if rest != nil && n != 1 {
				fail("RecvBatch returned %d with a kept rest", n)
			}
			for i := 0; i < n; i++ {
				if next >= nmsgs || !bytes.Equal(ms[i].Bytes(), cur()) {
					fail("RecvBatch message %d of %d wrong (len %d)", i, n, ms[i].Len())
				}
				consume(len(cur()), true)
			}
			kcm.ReleaseBatch(ms[:n])
		case 8: // stats check
			st := s.Stats()
			if st.RxMsgs != wantMsgs || st.RxBytes != wantBytes {
				fail("stats %+v want msgs %d bytes %d", st, wantMsgs, wantBytes)
			}
		}
	}
	st := s.Stats()
	if st.RxMsgs != wantMsgs || st.RxBytes != wantBytes {
		t.Fatalf("seed %d: final stats %+v want %d %d", seed, st, wantMsgs, wantBytes)
	}
}

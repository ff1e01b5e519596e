package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Sockets and psocks take the lowest free index, reused after close.
func TestIndexesAreLowestFree(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a, b, c := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	if a.Index() != 0 || b.Index() != 1 || c.Index() != 2 {
		t.Fatal("socket indexes")
	}
	b.Close()
	if d := a.Clone(); d.Index() != 1 || d.Type() != kcm.Datagram {
		t.Fatalf("clone index %d type %v", d.Index(), d.Type())
	}
	p0, _ := attachPeer(t, m)
	p1, _ := attachPeer(t, m)
	if p0.Index() != 0 || p1.Index() != 1 {
		t.Fatal("psock indexes")
	}
	if _, err := p0.Unattach(); err != nil {
		t.Fatal(err)
	}
	if p2, _ := attachPeer(t, m); p2.Index() != 0 {
		t.Fatalf("psock index %d, want 0", p2.Index())
	}
}

func TestAttachRejectsBadConnections(t *testing.T) {
	m := newMux(t, kcm.Config{})
	if _, err := m.Attach(nil, lenPrefix); !errors.Is(err, kcm.ErrBadConn) {
		t.Fatalf("nil: %v", err)
	}
	var nilTCP *net.TCPConn
	if _, err := m.Attach(nilTCP, lenPrefix); !errors.Is(err, kcm.ErrBadConn) {
		t.Fatalf("typed nil: %v", err)
	}
	c, _ := tcpPair(t)
	c.Close()
	if _, err := m.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrBadConn) {
		t.Fatalf("closed: %v", err)
	}
}

// The same connection cannot be attached twice, to this or another mux.
func TestAttachTwiceFails(t *testing.T) {
	m1, m2 := newMux(t, kcm.Config{}), newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	if _, err := m1.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrAlreadyAttached) {
		t.Fatalf("same mux: %v", err)
	}
	if _, err := m2.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrAlreadyAttached) {
		t.Fatalf("other mux: %v", err)
	}
}

// Attach works on any net.Conn, not only TCP.
func TestAttachPipe(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	a, b := net.Pipe()
	defer b.Close()
	if _, err := m.Attach(a, lenPrefix); err != nil {
		t.Fatal(err)
	}
	msg := msgOf(3, 77)
	go b.Write(msg)
	if got := recvWithin(t, s, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("pipe message differs")
	}
	go s.Send(msg)
	if got := readMsg(t, b); !bytes.Equal(got, msg) {
		t.Fatal("pipe send differs")
	}
}

// Unattach of a psock that left fails with ErrNotAttached.
func TestUnattachNotAttached(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, _ := attachPeer(t, m)
	if _, err := p.Unattach(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unattach(); !errors.Is(err, kcm.ErrNotAttached) {
		t.Fatalf("second unattach: %v", err)
	}
	if err := waitDone(t, p); err != nil {
		t.Fatalf("Err after unattach = %v", err)
	}
}

// Unattach loses nothing: parsed messages stay receivable, and the
// returned connection yields every byte read but not delivered, then the
// live stream.
func TestUnattachLosesNothing(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	var stream []byte
	for i := 0; i < 20; i++ {
		stream = append(stream, msgOf(uint32(i), 100)...)
	}
	tail := msgOf(99, 100)
	peer.Write(append(stream, tail[:30]...))
	first := recvWithin(t, s, 5*time.Second)
	// The rest is read by the mux: every message is parsed.
	waitProc(t, m, func(string) bool { return p.Stats().RxMsgs == 20 })
	c, err := p.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	peer.Write(tail[30:])
	// Whatever the mux had parsed is delivered; the rest is on c.
	var got []byte
	got = append(got, first...)
	buf := make([]byte, 200)
	for {
		n, _, err := s.RecvMsg(buf, kcm.DontWait)
		if err != nil {
			break
		}
		got = append(got, buf[:n]...)
	}
	rest := make([]byte, len(stream)+len(tail)-len(got))
	if _, err := io.ReadFull(c, rest); err != nil {
		t.Fatalf("reading the returned connection: %v", err)
	}
	got = append(got, rest...)
	if !bytes.Equal(got, append(stream, tail...)) {
		t.Fatal("bytes lost or reordered across unattach")
	}
	c.Close()
}

// Unattach racing with traffic and with Close: no panic, no leak, and
// every message is delivered once or handed back.
func TestCloseAndUnattachRacingWithTraffic(t *testing.T) {
	for round := 0; round < 20; round++ {
		m := kcm.NewMux(kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		var ps []*kcm.Psock
		var peers []net.Conn
		for i := 0; i < 3; i++ {
			p, peer := attachPeer(t, m)
			ps = append(ps, p)
			peers = append(peers, peer)
		}
		var wg sync.WaitGroup
		for i, peer := range peers {
			wg.Add(2)
			go func(i int, peer net.Conn) {
				defer wg.Done()
				for j := 0; ; j++ {
					if _, err := peer.Write(msgOf(uint32(i<<16|j), 50)); err != nil {
						return
					}
				}
			}(i, peer)
			go func(peer net.Conn) {
				defer wg.Done()
				io.Copy(io.Discard, peer)
			}(peer)
		}
		for g := 0; g < 2; g++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				buf := make([]byte, 100)
				for {
					if _, err := s.Recv(buf); err != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					if err := s.Send(msgOf(uint32(j), 40)); err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if c, err := ps[round%3].Unattach(); err == nil || errors.Is(err, kcm.ErrMidMessage) {
			c.Close()
		}
		m.Close()
		for _, peer := range peers {
			peer.Close()
		}
		wg.Wait()
		for _, p := range ps {
			waitDone(t, p)
		}
	}
}

// Close ends blocked calls with ErrClosed and closes attached connections.
func TestMuxCloseEndsEverything(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv(make([]byte, 10))
		errc <- err
	}()
	waitReceiving(t, m, s)
	m.Close()
	if err := <-errc; !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("blocked recv: %v", err)
	}
	if err := waitDone(t, p); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("psock Err: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection not closed: %v", err)
	}
	if err := s.Send([]byte("x")); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := m.Attach(peer, lenPrefix); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("attach after close: %v", err)
	}
}

// Unattaching a psock in the middle of a transmitted message: the message
// restarts on another psock and the caller is told the stream was cut.
func TestUnattachMidMessageRetriesAndReports(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, stuckPeer := attachPeer(t, m) // never read: the write stalls
	msg := msgOf(5, 16<<20)
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msg) }()
	for p.Stats().Reserved == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the write is in the kernel, blocked
	_, goodPeer := attachPeer(t, m)
	got := make(chan []byte, 1)
	go func() { got <- readMsg(t, goodPeer) }()
	c, err := p.Unattach()
	if !errors.Is(err, kcm.ErrMidMessage) || c == nil {
		t.Fatalf("Unattach = %v, %v", c, err)
	}
	c.Close()
	stuckPeer.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatal("retried message differs")
	}
	st := m.Stats()
	if st.PsockUnattachRsvd != 1 || st.PsockUnattach != 1 || st.TxRetries == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Counters follow the kernel's meaning, and the proc dumps show them in
// the right columns.
func TestStatsAndProcDumps(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	msg := msgOf(1, 96) // 100 bytes framed
	s.Send(msg)
	readMsg(t, peer)
	peer.Write(msg)
	recvWithin(t, s, 5*time.Second)
	if st := s.Stats(); st != (kcm.SocketStats{RxMsgs: 1, RxBytes: 100, TxMsgs: 1, TxBytes: 100}) {
		t.Fatalf("socket stats %+v", st)
	}
	ps := p.Stats()
	if ps.RxMsgs != 1 || ps.RxBytes != 100 || ps.TxMsgs != 1 || ps.TxBytes != 100 || ps.Reserved != 1 {
		t.Fatalf("psock stats %+v", ps)
	}
	p2, _ := attachPeer(t, m)
	p2.Unattach()
	ms := m.Stats()
	if ms.PsockAttach != 2 || ms.PsockUnattach != 1 || ms.RxMsgs != 1 || ms.TxMsgs != 1 {
		t.Fatalf("mux stats %+v", ms)
	}
	var b strings.Builder
	if err := m.WriteProc(&b); err != nil {
		t.Fatal(err)
	}
	proc := b.String()
	for _, want := range []string{"*** KCM statistics (1 MUX) ****", "Object", "Recv-Q", "Status", "KCMs: 1, Psocks 1", "kcm-0", "psock-0", "Psck-0", "Rsvd-0"} {
		if !strings.Contains(proc, want) {
			t.Errorf("/proc/net/kcm dump lacks %q:\n%s", want, proc)
		}
	}
	b.Reset()
	m.WriteProcStats(&b)
	lines := strings.Split(b.String(), "\n")
	hdr, vals := strings.Fields(lines[0]), strings.Fields(lines[1])
	col := func(name string) string {
		for i, h := range hdr {
			if h == name {
				return vals[i-1] // the value line has no MUX label
			}
		}
		t.Fatalf("no column %s in %q", name, lines[0])
		return ""
	}
	if col("Attach") != "2" || col("Unattach") != "1" || col("UnattchRsvd") != "0" || col("RX-Msgs") != "1" {
		t.Fatalf("kcm_stats MUX table:\n%s", b.String())
	}
	if !strings.HasPrefix(lines[2], "Psock") || !strings.Contains(lines[2], "RX-Aborts") {
		t.Fatalf("kcm_stats Psock table:\n%s", b.String())
	}
}

// An idle psock holds no read buffer: its cost beyond the connection stays
// within 16 KiB.
func TestIdlePsockMemory(t *testing.T) {
	const n = 500
	m := newMux(t, kcm.Config{})
	m.NewSocket(kcm.Datagram)
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, _ := tcpPair(t)
		conns = append(conns, c)
	}
	before := memInUse()
	for _, c := range conns {
		if _, err := m.Attach(c, lenPrefix); err != nil {
			t.Fatal(err)
		}
	}
	// Let every background reader reach its idle wait.
	time.Sleep(100 * time.Millisecond)
	after := memInUse()
	per := (int64(after) - int64(before)) / n
	t.Logf("%d bytes per idle psock", per)
	if per > 16<<10 {
		t.Fatalf("%d bytes per idle psock, want <= 16 KiB", per)
	}
}

func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// Concurrent Unattach calls: exactly one wins; the others fail with
// ErrUnattachInProgress or, once it is done, ErrNotAttached.
func TestConcurrentUnattach(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, _ := attachPeer(t, m)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Unattach()
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, kcm.ErrUnattachInProgress), errors.Is(err, kcm.ErrNotAttached):
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d unattaches succeeded", wins)
	}
}

// A socket closed while it is blocked receiving returns ErrClosed, and the
// psock it was reading goes on serving the other sockets.
func TestSocketCloseWhileReceiving(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Recv(make([]byte, 100))
		errc <- err
	}()
	waitReceiving(t, m, a)
	a.Close()
	if err := <-errc; !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("recv on closed socket: %v", err)
	}
	msg := msgOf(4, 10)
	peer.Write(msg)
	if got := recvWithin(t, b, 5*time.Second); !bytes.Equal(got, msg) {
		t.Fatal("message lost")
	}
}

// When the last socket closes, queued messages are dropped and counted.
func TestLastSocketCloseDropsReady(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	peer.Write(msgOf(1, 10))
	peer.Write(msgOf(2, 10))
	for p.Stats().RxMsgs < 2 { // the background reader queues both
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if st := m.Stats(); st.RxReadyDrops != 2 {
		t.Fatalf("RxReadyDrops = %d", st.RxReadyDrops)
	}
}

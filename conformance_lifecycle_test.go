package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"go.uber.org/goleak"
)

// Spec 2: unattach hands back the connection exactly where the mux
// stopped; attaching it to another mux continues the stream without a
// lost or repeated byte, even with a partial message buffered.
func TestConformanceUnattachContinuesOnAnotherMux(t *testing.T) {
	m1 := newMux(t, kcm.Config{})
	m2 := newMux(t, kcm.Config{})
	s1 := m1.NewSocket(kcm.Datagram)
	s2 := m2.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m1)
	const n = 200
	var stream []byte
	for i := 0; i < n; i++ {
		stream = append(stream, msgOf(uint32(i), 10+i*7)...)
	}
	cut := len(stream)/2 + 3 // inside a message
	peer.Write(stream[:cut])
	next := uint32(0)
	for i := 0; i < 10; i++ {
		if id := checkMsg(t, recvWithin(t, s1, 5*time.Second)); id != next {
			t.Fatalf("got %d want %d", id, next)
		}
		next++
	}
	c, err := p.Unattach()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	go peer.Write(stream[cut:])
	// Messages m1 parsed before the unattach are still on m1.
	for {
		n, _, err := s1.RecvMsg(make([]byte, 4000), kcm.DontWait)
		if err != nil {
			break
		}
		_ = n
		next++
	}
	for ; next < n; next++ {
		if id := checkMsg(t, recvWithin(t, s2, 5*time.Second)); id != next {
			t.Fatalf("on the second mux: got %d want %d", id, next)
		}
	}
}

// Spec 2: unattach with traffic queued both ways loses nothing: every
// complete message reaches exactly one peer, and the unattached stream
// is cut only when Unattach says so.
func TestConformanceUnattachWithQueuedTraffic(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	stuck, stuckPeer := attachPeer(t, m) // its peer does not read yet
	const n = 300
	var wg sync.WaitGroup
	for g := 0; g < 3; g++ {
		snd := s.Clone()
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := snd.Send(msgOf(uint32(g<<16|i), 5000)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}(g)
	}
	// Wait until the stuck psock's stream is full (its sender queue grows).
	deadline := time.Now().Add(5 * time.Second)
	for stuck.Stats().TxBytes < 64<<10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, goodPeer := attachPeer(t, m)
	got := make(chan uint32, 3*n)
	var rg sync.WaitGroup
	read := func(c net.Conn, mayCut bool) {
		defer rg.Done()
		for {
			var hdr [4]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			k := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
			msg := make([]byte, 4+k)
			copy(msg, hdr[:])
			if _, err := io.ReadFull(c, msg[4:]); err != nil {
				if !mayCut {
					t.Error("stream cut inside a message")
				}
				return
			}
			got <- checkMsg(t, msg)
		}
	}
	rg.Add(1)
	go read(goodPeer, false)
	// Incoming traffic on the stuck psock too.
	for i := 0; i < 20; i++ {
		stuckPeer.Write(msgOf(uint32(7<<16|i), 100))
	}
	c, err := stuck.Unattach()
	if err != nil && !errors.Is(err, kcm.ErrMidMessage) {
		t.Fatal(err)
	}
	cutReported := errors.Is(err, kcm.ErrMidMessage)
	// The peer reads what was accepted, then EOF. (CloseWrite, not Close:
	// closing with unread incoming bytes would reset the connection.)
	under := c
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		under = nc.NetConn()
	}
	under.(*net.TCPConn).CloseWrite()
	go io.Copy(io.Discard, c)
	rg.Add(1)
	go read(stuckPeer, cutReported)
	wg.Wait()
	seen := map[uint32]bool{}
	for len(seen) < 3*n {
		select {
		case id := <-got:
			if seen[id] {
				t.Fatalf("message %x written twice", id)
			}
			seen[id] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d messages arrived (cut reported: %v)", len(seen), 3*n, cutReported)
		}
	}
	goodPeer.SetReadDeadline(aLongTimeAgo)
	rg.Wait()
	// Incoming: every message parsed before the unattach is receivable.
	rx := stuck.Stats().RxMsgs
	for i := uint64(0); i < rx; i++ {
		if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != uint32(7<<16|i) {
			t.Fatalf("incoming %x, want %x", id, 7<<16|i)
		}
	}
}

// Spec 1: Mux.Close racing with Attach, Unattach, Send and Recv: every
// call returns, no panic, no goroutine left.
func TestConformanceMuxCloseRacingEverything(t *testing.T) {
	for round := 0; round < 15; round++ {
		m := kcm.NewMux(kcm.Config{})
		s := m.NewSocket(kcm.SeqPacket)
		var wg sync.WaitGroup
		var pmu sync.Mutex
		var ps []*kcm.Psock
		for i := 0; i < 2; i++ {
			p, peer := attachPeer(t, m)
			ps = append(ps, p)
			wg.Add(2)
			go func(i int) {
				defer wg.Done()
				for j := 0; ; j++ {
					if _, err := peer.Write(msgOf(uint32(j), 100+j%500)); err != nil {
						return
					}
				}
			}(i)
			go func() { defer wg.Done(); io.Copy(io.Discard, peer) }()
		}
		wg.Add(4)
		go func() { // attaches and unattaches
			defer wg.Done()
			for j := 0; j < 10; j++ {
				c, peer := tcpPair(t)
				go io.Copy(io.Discard, peer)
				p, err := m.Attach(c, lenPrefix)
				if err != nil {
					if !errors.Is(err, kcm.ErrClosed) {
						t.Errorf("attach: %v", err)
					}
					return
				}
				pmu.Lock()
				ps = append(ps, p)
				pmu.Unlock()
				if j%2 == 0 {
					if c, err := p.Unattach(); err == nil || errors.Is(err, kcm.ErrMidMessage) {
						c.Close()
					}
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				if _, err := s.Recv(buf); err != nil {
					if !errors.Is(err, kcm.ErrClosed) {
						t.Errorf("recv: %v", err)
					}
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			c := s.Clone()
			for {
				if _, err := c.RecvMessage(); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if err := s.Send(msgOf(uint32(j), 50+j%3000)); err != nil {
					if !errors.Is(err, kcm.ErrClosed) {
						t.Errorf("send: %v", err)
					}
					return
				}
			}
		}()
		time.Sleep(time.Duration(round%5) * time.Millisecond) // vary where Close lands
		if err := cfDo(t, 5*time.Second, "Mux.Close", m.Close); err != nil {
			t.Fatal(err)
		}
		pmu.Lock()
		for _, p := range ps {
			waitDone(t, p)
		}
		pmu.Unlock()
		if err := cfDo(t, 10*time.Second, "callers", func() error { wg.Wait(); return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// Spec 2: after every psock is unattached, the mux runs no goroutine.
func TestConformanceNoGoroutinesAfterUnattach(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	m := kcm.NewMux(kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	var conns []net.Conn
	var ps []*kcm.Psock
	for i := 0; i < 3; i++ {
		c, peer := tcpPair(t)
		p, err := m.Attach(c, lenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
		peer.Write(msgOf(uint32(i), 100))
	}
	for i := 0; i < 3; i++ {
		recvWithin(t, s, 5*time.Second)
		s.Send(msgOf(9, 10))
	}
	for _, p := range ps {
		c, err := p.Unattach()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if err := goleak.Find(ignore); err != nil {
		t.Fatalf("goroutines left with every psock unattached: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	m.Close()
}

// Spec 5: the /proc/net/kcm layout: exact header, every value under its
// column, one line per socket and psock, mux summary and status flags.
func TestConformanceProcLayout(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s0 := m.NewSocket(kcm.Datagram)
	s1 := s0.Clone()
	p0, peer0 := attachPeer(t, m)
	msg := msgOf(1, 96)
	s0.Send(msg)
	readMsg(t, peer0)
	peer0.Write(msg)
	recvWithin(t, s0, 5*time.Second)
	attachPeer(t, m)
	errc := make(chan error, 1)
	go func() { _, err := s1.Recv(make([]byte, 10)); errc <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(proc(m), "RxWait") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	lines := strings.Split(strings.TrimRight(proc(m), "\n"), "\n")
	if lines[0] != "*** KCM statistics (1 MUX) ****" {
		t.Fatalf("header %q", lines[0])
	}
	cols := []string{"Object", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Recv-Q", "Rmem", "Send-Q", "Smem", "Status"}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != strings.Join(cols, " ") {
		t.Fatalf("columns %q", lines[1])
	}
	at := map[string]int{}
	for _, c := range cols {
		at[c] = strings.Index(lines[1], c)
	}
	// valueAt returns the field that starts at the column of name.
	valueAt := func(line, name string) string {
		i := at[name]
		if i >= len(line) || line[i] == ' ' || line[i-1] != ' ' {
			t.Fatalf("no value at column %s in %q", name, line)
		}
		return strings.Fields(line[i:])[0]
	}
	byObj := map[string]string{}
	for _, l := range lines[2:] {
		obj := strings.Fields(l)[0]
		if _, dup := byObj[obj]; dup {
			t.Fatalf("two lines for %s", obj)
		}
		byObj[obj] = l
	}
	if len(byObj) != 5 {
		t.Fatalf("want mux + 2 kcm + 2 psock lines:\n%s", strings.Join(lines, "\n"))
	}
	mux := byObj["mux"]
	if !strings.Contains(mux, "KCMs: 2, Psocks 2") || valueAt(mux, "RX-Msgs") != "1" || valueAt(mux, "TX-Bytes") != "100" {
		t.Fatalf("mux line %q", mux)
	}
	k0 := byObj["kcm-0"]
	if !strings.HasPrefix(k0, "   kcm-0") || valueAt(k0, "RX-Msgs") != "1" || valueAt(k0, "RX-Bytes") != "100" ||
		valueAt(k0, "TX-Msgs") != "1" || valueAt(k0, "TX-Bytes") != "100" || !strings.Contains(k0, "Psck-0") {
		t.Fatalf("kcm-0 line %q", k0)
	}
	if k1 := byObj["kcm-1"]; !strings.Contains(k1, "RxWait") || valueAt(k1, "RX-Msgs") != "0" {
		t.Fatalf("kcm-1 line %q", k1)
	}
	ps0 := byObj["psock-0"]
	if !strings.HasPrefix(ps0, "   psock-0") || valueAt(ps0, "RX-Msgs") != "1" || valueAt(ps0, "TX-Bytes") != "100" || !strings.Contains(ps0, "Rsvd-0") {
		t.Fatalf("psock-0 line %q", ps0)
	}
	_ = p0
	s1.Close()
	<-errc
}

// Spec 5: /proc/net/kcm_stats with Unattach and UnattchRsvd in their own
// columns, TX-Retries and RX-Aborts counted.
func TestConformanceProcStatsFixedColumns(t *testing.T) {
	m := newMux(t, kcm.Config{MaxMessageSize: 1 << 20})
	s := m.NewSocket(kcm.Datagram)
	// 1: an abort on receive.
	bad, badPeer := attachPeer(t, m)
	badPeer.Write([]byte{0, 0x20, 0, 0}) // a 2 MiB length: too big
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("Err = %v", err)
	}
	// 2: a plain unattach.
	p, _ := attachPeer(t, m)
	if c, err := p.Unattach(); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	// 3: an unattach mid-message: a retry and UnattchRsvd.
	stuck, stuckPeer := attachPeer(t, m)
	big := msgOf(5, 16<<20)
	errc := make(chan error, 1)
	go func() { errc <- s.Send(big) }()
	for stuck.Stats().Reserved == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the write is blocked in the kernel: no event
	_, goodPeer := attachPeer(t, m)
	got := make(chan []byte, 1)
	go func() { got <- readMsg(t, goodPeer) }()
	c, err := stuck.Unattach()
	if !errors.Is(err, kcm.ErrMidMessage) {
		t.Fatalf("unattach: %v", err)
	}
	c.Close()
	stuckPeer.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-got, big) {
		t.Fatal("retried message differs")
	}
	st := m.Stats()
	if st.PsockAttach != 4 || st.PsockUnattach != 2 || st.PsockUnattachRsvd != 1 || st.TxRetries < 1 || st.Psocks.MsgTooBig != 1 {
		t.Fatalf("stats %+v", st)
	}
	var b strings.Builder
	if err := m.WriteProcStats(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	table := func(h, v string) map[string]string {
		hf, vf := strings.Fields(h), strings.Fields(v)
		if len(hf) != len(vf)+1 {
			t.Fatalf("header %q, values %q", h, v)
		}
		out := map[string]string{}
		for i, name := range hf[1:] {
			out[name] = vf[i]
		}
		return out
	}
	mux := table(lines[0], lines[1])
	if strings.Fields(lines[0])[0] != "MUX" || mux["Attach"] != "4" || mux["Unattach"] != "2" || mux["UnattchRsvd"] != "1" ||
		mux["TX-Retries"] == "0" || mux["RX-RdyDrops"] != "0" {
		t.Fatalf("MUX table %v\n%s", mux, b.String())
	}
	psock := table(lines[2], lines[3])
	want := []string{"RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Reserved", "Unreserved", "RX-Aborts", "RX-MemFail", "RX-NeedMor", "RX-BadLen", "RX-TooBig", "RX-Timeout", "TX-Aborts"}
	if strings.Join(strings.Fields(lines[2])[1:], " ") != strings.Join(want, " ") {
		t.Fatalf("Psock columns %q", lines[2])
	}
	if strings.Fields(lines[2])[0] != "Psock" || psock["RX-Aborts"] != "1" || psock["RX-TooBig"] != "1" || psock["TX-Aborts"] == "0" {
		t.Fatalf("Psock table %v\n%s", psock, b.String())
	}
}

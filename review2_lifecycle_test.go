package kcm_test

import (
	"errors"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 2 (unattach loses nothing): one connection, under a continuous
// stream of messages in random chunks, is attached, unattached and
// attached again to a new mux many times, while a receiver reads (it leads
// the psock, waits for a background reader, or is absent so the psock
// pauses on a tiny receive queue). Every message arrives exactly once, in
// stream order, split over the muxes.
func TestReview2AttachUnattachCyclesAcrossMuxes(t *testing.T) {
	c, peer := tcpPair(t)
	const n = 4000
	rng := rand.New(rand.NewSource(1))
	var stream []byte
	for i := 0; i < n; i++ {
		stream = append(stream, msgOf(uint32(i), rng.Intn(1500))...)
	}
	go writeChunked(peer, stream, rand.New(rand.NewSource(2)))

	var got []uint32
	var conn net.Conn = c
	cycles, idle := 0, 0
	giveUp := time.Now().Add(2 * time.Minute)
	for cycle := 0; len(got) < n; cycle++ {
		cycles++
		// A loaded machine moves fewer messages per cycle: fail only on no
		// progress at all, not on slowness.
		if idle > 100 || time.Now().After(giveUp) {
			t.Fatalf("only %d of %d messages after %d cycles (%d without progress)", len(got), n, cycle, idle)
		}
		cfg := kcm.Config{}
		if cycle%3 == 1 {
			cfg.RecvBuffer = 2048 // the psock pauses quickly
		}
		m := kcm.NewMux(cfg)
		s := m.NewSocket(kcm.Datagram)
		p, err := m.Attach(conn, lenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var ids []uint32
		var rwg sync.WaitGroup
		var drain atomic.Bool
		receive := func() {
			defer rwg.Done()
			buf := make([]byte, 4096)
			flags := kcm.RecvFlags(0)
			for {
				k, _, err := s.RecvMsg(buf, flags)
				if err != nil {
					if flags == 0 && drain.Load() {
						// Woken by the deadline after the unattach: take
						// what the mux still holds, without waiting.
						s.SetReadDeadline(time.Time{})
						flags = kcm.DontWait
						continue
					}
					return
				}
				id := checkMsg(t, buf[:k])
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}
		mode := cycle % 4
		if mode != 3 { // in mode 3 nobody receives until after the unattach
			rwg.Add(1)
			go receive()
		}
		switch mode {
		case 0:
			time.Sleep(time.Duration(rng.Intn(3000)) * time.Microsecond)
		case 1, 3:
			time.Sleep(2 * time.Millisecond)
		case 2:
			for end := time.Now().Add(2 * time.Second); ; {
				mu.Lock()
				k := len(ids)
				mu.Unlock()
				if k >= 3 || len(got)+k >= n || time.Now().After(end) {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		nc, err := cfDoConn(t, p)
		if err != nil {
			t.Fatalf("cycle %d: unattach: %v", cycle, err)
		}
		if mode == 3 {
			rwg.Add(1)
			go receive()
		}
		// No psock is left: the receiver takes what the mux queued and
		// stops when nothing is left (no timing involved).
		drain.Store(true)
		s.SetReadDeadline(time.Now())
		if err := cfDo(t, 5*time.Second, "receiver", func() error { rwg.Wait(); return nil }); err != nil {
			t.Fatal(err)
		}
		m.Close()
		select {
		case <-p.Done():
		default:
			t.Fatal("unattached psock not done")
		}
		if err := p.Err(); err != nil {
			t.Fatalf("psock Err after unattach: %v", err)
		}
		if len(ids) == 0 {
			idle++
		} else {
			idle = 0
		}
		got = append(got, ids...)
		conn = nc
	}
	conn.Close()
	t.Logf("%d messages over %d muxes", len(got), cycles)
	for i, id := range got {
		if id != uint32(i) {
			t.Fatalf("message %d is %d (of %d)", i, id, len(got))
		}
	}
	if len(got) != n {
		t.Fatalf("%d messages, want %d", len(got), n)
	}
}

func cfDoConn(t *testing.T, p *kcm.Psock) (net.Conn, error) {
	var c net.Conn
	err := cfDo(t, 5*time.Second, "Unattach", func() error {
		var err error
		c, err = p.Unattach()
		return err
	})
	return c, err
}

// Spec 3 (SetRecvDisabled): receive disable toggled by another goroutine
// while one socket leads the lone psock and another socket waits: no
// message is lost or duplicated, nothing hangs, and once the toggling
// socket stays disabled the other one gets everything left.
func TestReview2RecvDisableToggledWhileLeading(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	const n = 3000
	var stream []byte
	for i := 0; i < n; i++ {
		stream = append(stream, msgOf(uint32(i), 20+i%200)...)
	}
	var count [n]atomic.Int32
	var total atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	recvLoop := func(s *kcm.Socket) {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			k, err := s.Recv(buf)
			if err != nil {
				return
			}
			id := checkMsg(t, buf[:k])
			if count[id].Add(1) != 1 {
				t.Errorf("message %d twice", id)
			}
			if total.Add(1) == n {
				close(stop)
			}
		}
	}
	wg.Add(2)
	go recvLoop(a)
	go recvLoop(b)
	toggled := make(chan struct{})
	go func() {
		defer close(toggled)
		rng := rand.New(rand.NewSource(5))
		for i := 0; i < 2000; i++ {
			a.SetRecvDisabled(rng.Intn(2) == 0)
			if rng.Intn(4) == 0 {
				time.Sleep(time.Duration(rng.Intn(200)) * time.Microsecond)
			}
		}
		a.SetRecvDisabled(true)
	}()
	go writeChunked(peer, stream, rand.New(rand.NewSource(6)))
	<-toggled
	before := a.Stats().RxMsgs
	select {
	case <-stop:
	case <-time.After(15 * time.Second):
		t.Fatalf("%d of %d messages received", total.Load(), n)
	}
	// a is disabled from the end of the toggling on; it may only have
	// finished a receive it had already begun.
	if after := a.Stats().RxMsgs; after > before+1 {
		t.Errorf("disabled socket received %d more messages", after-before)
	}
	a.Close()
	b.Close()
	wg.Wait()
	if got := a.Stats().RxMsgs + b.Stats().RxMsgs; got != n {
		t.Fatalf("sockets counted %d messages, want %d", got, n)
	}
}

// Spec 3 (deadlines): a receiver whose read deadline is short and moved
// all the time, racing message arrival: every timeout is a net timeout,
// and no message is lost, duplicated or reordered.
func TestReview2DeadlinesRacingArrival(t *testing.T) {
	for _, npsocks := range []int{1, 2} {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		const n = 1500
		var peers []net.Conn
		for i := 0; i < npsocks; i++ {
			_, peer := attachPeer(t, m)
			peers = append(peers, peer)
		}
		for i, peer := range peers {
			go func() {
				rng := rand.New(rand.NewSource(int64(i)))
				for j := 0; j < n; j++ {
					if _, err := peer.Write(msgOf(uint32(i<<16|j), rng.Intn(300))); err != nil {
						return
					}
					if rng.Intn(50) == 0 {
						time.Sleep(time.Duration(rng.Intn(500)) * time.Microsecond)
					}
				}
			}()
		}
		// Another goroutine keeps moving the deadline too.
		stopMover := make(chan struct{})
		moved := make(chan struct{})
		go func() {
			defer close(moved)
			rng := rand.New(rand.NewSource(9))
			for {
				select {
				case <-stopMover:
					return
				default:
				}
				s.SetReadDeadline(time.Now().Add(time.Duration(rng.Intn(300)) * time.Microsecond))
				time.Sleep(time.Duration(rng.Intn(300)) * time.Microsecond)
			}
		}()
		next := make([]uint32, npsocks)
		buf := make([]byte, 512)
		timeouts := 0
		for got, start := 0, time.Now(); got < n*npsocks; {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%d of %d messages", got, n*npsocks)
			}
			k, err := s.Recv(buf)
			if err != nil {
				if !isTimeout(err) || !errors.Is(err, errDeadline) {
					t.Fatalf("recv: %v", err)
				}
				timeouts++
				continue
			}
			id := checkMsg(t, buf[:k])
			src, seq := id>>16, id&0xffff
			if seq != next[src] {
				t.Fatalf("psock %d: got %d want %d", src, seq, next[src])
			}
			next[src]++
			got++
		}
		close(stopMover)
		<-moved
		t.Logf("%d psocks: %d timeouts", npsocks, timeouts)
	}
}

// Spec 1 / 3: Socket.Close while RecvBatch and RecvMessage are blocked (a
// leader and followers) returns ErrClosed to each; messages arriving
// afterwards go to the remaining socket.
func TestReview2SocketCloseDuringRecvBatch(t *testing.T) {
	for round := 0; round < 20; round++ {
		m := kcm.NewMux(kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		other := s.Clone()
		_, peer := attachPeer(t, m)
		if round%2 == 1 {
			cfLeaderMode(t, s, peer)
		}
		errs := make(chan error, 3)
		go func() {
			ms := make([]kcm.Message, 8)
			k, err := s.RecvBatch(ms)
			kcm.ReleaseBatch(ms[:k])
			errs <- err
		}()
		go func() {
			msg, err := s.RecvMessage()
			msg.Release()
			errs <- err
		}()
		go func() {
			_, err := s.Recv(make([]byte, 10))
			errs <- err
		}()
		time.Sleep(time.Duration(round%4) * time.Millisecond)
		s.Close()
		for i := 0; i < 3; i++ {
			err := cfDo(t, 5*time.Second, "blocked receive", func() error { return <-errs })
			if !errors.Is(err, kcm.ErrClosed) {
				t.Fatalf("round %d: blocked receive: %v", round, err)
			}
		}
		peer.Write(msgOf(77, 30))
		if id := checkMsg(t, recvWithin(t, other, 5*time.Second)); id != 77 {
			t.Fatalf("got %d", id)
		}
		m.Close()
	}
}

// Spec 5: the proc dumps and Stats are race-free and well formed while
// every kind of traffic, attach, unattach and close goes on.
func TestReview2ProcUnderConcurrentTraffic(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 16 << 10, SendBuffer: 8 << 10})
	var peers []net.Conn
	var ps []*kcm.Psock
	for i := 0; i < 3; i++ {
		p, peer := attachPeer(t, m)
		ps = append(ps, p)
		peers = append(peers, peer)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := peer.Write(msgOf(uint32(i<<16|j), j%3000)); err != nil {
					return
				}
			}
		}()
		go func() { defer wg.Done(); io.Copy(io.Discard, peer) }()
	}
	for g := 0; g < 3; g++ {
		s := m.NewSocket(kcm.SocketType(g % 2))
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1000)
			for {
				if _, _, err := s.RecvMsg(buf, kcm.RecvFlags(g%2)); err != nil && !errors.Is(err, kcm.ErrTruncated) {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if err := s.Send(msgOf(uint32(j), j%5000)); err != nil {
					return
				}
			}
		}()
	}
	var dumps int
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		var b strings.Builder
		if err := m.WriteProc(&b); err != nil {
			t.Fatal(err)
		}
		if err := kcm.WriteProc(&b, m, m); err != nil {
			t.Fatal(err)
		}
		if err := m.WriteProcStats(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if !strings.HasPrefix(out, "*** KCM statistics (1 MUX) ****") || !strings.Contains(out, "(2 MUX)") {
			t.Fatalf("dump:\n%s", out)
		}
		for _, p := range m.Psocks() {
			p.Stats()
		}
		for _, s := range m.Sockets() {
			s.Stats()
		}
		m.Stats()
		if i == 50 {
			if c, err := ps[0].Unattach(); err == nil || errors.Is(err, kcm.ErrMidMessage) {
				c.Close()
			}
		}
		dumps++
	}
	if dumps < 10 {
		t.Fatalf("only %d dumps", dumps)
	}
	close(stop)
	m.Close()
	for _, peer := range peers {
		peer.Close()
	}
	wg.Wait()
	var b strings.Builder
	m.WriteProc(&b)
	if !strings.Contains(b.String(), "KCMs: 0, Psocks 0") {
		t.Fatalf("after close:\n%s", b.String())
	}
}

var errDeadline = errDeadlineExceeded()

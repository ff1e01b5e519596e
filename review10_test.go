package kcm_test

import (
	"errors"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Tests from the tenth review: each socket's share of the own queues
// (Config.Affinity).

// r10ID is a message id for the tests below: the target socket in the top
// 16 bits (bySocketID), then the psock, then the message's place in that
// psock's stream.
func r10ID(sock, psock, n int) uint32 { return affID(sock, psock<<12|n) }

// r10Order checks that a socket receives each psock's messages in stream
// order; it reports with Errorf, so receiving goroutines may use it.
type r10Order struct {
	last map[int]int // psock -> place of the last message received
}

func (o *r10Order) check(t testing.TB, s *kcm.Socket, id uint32) {
	t.Helper()
	if o.last == nil {
		o.last = map[int]int{}
	}
	psock, n := int(id>>12&0xf), int(id&0xfff)
	if last, ok := o.last[psock]; ok && n <= last {
		t.Errorf("socket %d got psock %d's message %d after its message %d: stream order broken", s.Index(), psock, n, last)
	}
	o.last[psock] = n
}

// Messages of one stream for three sockets, some steered to their own
// queues and, past each socket's share, later ones to the shared queue (a
// later, smaller one fitting the share again): every socket receives them
// in stream order, its own and the shared ones merged, and a peek of a
// steered message leaves the queues as they were. (RecvBuffer 1200: 300
// bytes for the own queues, a share of 100 each; far from the total.)
func TestAffinityShareFallbackMergesByStreamOrder(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 1200}, kcm.Datagram)
	c := m.NewSocket(kcm.Datagram)
	type w struct {
		s    *kcm.Socket
		n    int
		size int // 36: 40 bytes framed; 8: 12 bytes
	}
	stream := []w{
		{a, 0, 36}, // a's own: 40
		{b, 0, 36}, // b's own: 40
		{a, 1, 36}, // a's own: 80
		{c, 0, 36}, // c's own: 40
		{a, 2, 36}, // 120 > 100: shared
		{b, 1, 36}, // b's own: 80
		{a, 3, 8},  // 92: a's own again
		{b, 2, 36}, // 120 > 100: shared
		{c, 1, 36}, // c's own: 80
		{a, 4, 36}, // shared
	}
	var all []byte
	for _, x := range stream {
		all = append(all, msgOf(r10ID(x.s.Index(), 0, x.n), x.size)...)
	}
	if _, err := peer.Write(all); err != nil {
		t.Fatal(err)
	}
	waitRxMsgs(t, m, uint64(len(stream)))
	for _, x := range []struct {
		s    *kcm.Socket
		want int
	}{{a, 92}, {b, 80}, {c, 80}} {
		if got := ownRmem(m, x.s.Index()); got != x.want {
			t.Fatalf("socket %d's own queue holds %d bytes, want %d:\n%s", x.s.Index(), got, x.want, proc(m))
		}
	}
	queued, _ := m.Queued()
	pbuf := make([]byte, 64)
	n, _, err := a.RecvMsg(pbuf, kcm.Peek)
	if err != nil || n != 40 {
		t.Fatalf("peek on a: %d bytes, %v", n, err)
	}
	if got := checkMsg(t, pbuf[:n]); got != r10ID(a.Index(), 0, 0) {
		t.Fatalf("peek on a got %#x, want a's first message", got)
	}
	if got, _ := m.Queued(); got != queued || ownRmem(m, a.Index()) != 92 {
		t.Fatalf("after a peek: %d bytes queued (%d in a's own queue), want %d (92)", got, ownRmem(m, a.Index()), queued)
	}
	// b takes its own messages and the shared ones, by stream order.
	want := map[*kcm.Socket][]uint32{
		b: {r10ID(b.Index(), 0, 0), r10ID(a.Index(), 0, 2), r10ID(b.Index(), 0, 1), r10ID(b.Index(), 0, 2), r10ID(a.Index(), 0, 4)},
		a: {r10ID(a.Index(), 0, 0), r10ID(a.Index(), 0, 1), r10ID(a.Index(), 0, 3)},
		c: {r10ID(c.Index(), 0, 0), r10ID(c.Index(), 0, 1)},
	}
	for _, s := range []*kcm.Socket{b, a, c} {
		for i, id := range want[s] {
			if got := recvID(t, s); got != id {
				t.Fatalf("socket %d's receive %d got %#x, want %#x", s.Index(), i, got, id)
			}
		}
	}
	if got, _ := m.Queued(); got != 0 {
		t.Fatalf("%d bytes still queued", got)
	}
}

// The share is the quarter of RecvBuffer divided by the open sockets at
// the time a message is steered: Clone makes it smaller, Close larger
// again, and a socket that disables receiving still counts. Whatever the
// share did to them, a socket receives its stream in order. (RecvBuffer
// 400: 100 bytes for the own queues; messages of 12 bytes.)
func TestAffinityShareFollowsOpenSockets(t *testing.T) {
	m, a, b, peer := affinityPair(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 400}, kcm.Datagram)
	c, d := a.Clone(), a.Clone() // four sockets: a share of 25
	write := func(from, to int) {
		t.Helper()
		for n := from; n < to; n++ {
			if _, err := peer.Write(msgOf(r10ID(a.Index(), 0, n), 8)); err != nil {
				t.Fatal(err)
			}
		}
		waitRxMsgs(t, m, uint64(to))
	}
	write(0, 4) // two fit, two go to the shared queue
	if got := ownRmem(m, a.Index()); got != 24 {
		t.Fatalf("with four sockets a's own queue holds %d bytes, want 24 (its share is 25):\n%s", got, proc(m))
	}
	c.Close()
	d.Close()
	b.SetRecvDisabled(true) // two open sockets: a share of 50
	write(4, 7)             // two fit again, one goes to the shared queue
	if got := ownRmem(m, a.Index()); got != 48 {
		t.Fatalf("with two open sockets, one not receiving, a's own queue holds %d bytes, want 48 (its share is 50):\n%s", got, proc(m))
	}
	var o r10Order
	for n := range 7 {
		id := recvID(t, a)
		o.check(t, a, id)
		if id != r10ID(a.Index(), 0, n) {
			t.Fatalf("a got %#x, want its message %d", id, n)
		}
	}
	b.SetRecvDisabled(false)
	if got, _ := m.Queued(); got != 0 {
		t.Fatalf("%d bytes still queued", got)
	}
}

// Under load, with two psocks, messages of random sizes for three sockets
// (and some for any socket), receivers of different kinds and speeds, and
// sockets cloned and closed all the while (the share changes with every
// one): every message is received once, and every socket receives each
// psock's messages in stream order.
func TestAffinityShareStressStreamOrder(t *testing.T) {
	const psocks, perPsock = 2, 300
	m := newMux(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 3000})
	a := m.NewSocket(kcm.Datagram)
	b, c := a.Clone(), a.Clone()
	stable := []*kcm.Socket{a, b, c}
	targets := []int{a.Index(), b.Index(), c.Index(), 0xfff0} // the last: no such socket

	var wwg sync.WaitGroup
	for p := range psocks {
		_, peer := attachPeer(t, m)
		rng := rand.New(rand.NewSource(int64(p) + 1))
		var all []byte
		for n := range perPsock {
			all = append(all, msgOf(r10ID(targets[rng.Intn(len(targets))], p, n), 8+rng.Intn(150))...)
		}
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			if _, err := peer.Write(all); err != nil {
				t.Errorf("peer write: %v", err)
			}
		}()
	}

	var (
		mu    sync.Mutex
		seen  = map[uint32]bool{}
		total atomic.Int64
		done  = make(chan struct{})
	)
	record := func(s *kcm.Socket, id uint32) {
		mu.Lock()
		if seen[id] {
			t.Errorf("socket %d got %#x a second time", s.Index(), id)
		}
		seen[id] = true
		mu.Unlock()
		if total.Add(1) == psocks*perPsock {
			close(done)
			for _, s := range stable {
				s.Close() // the other receivers return ErrClosed
			}
		}
	}
	ended := func(s *kcm.Socket, err error) bool {
		if err == nil {
			return false
		}
		if !errors.Is(err, kcm.ErrClosed) {
			t.Errorf("socket %d: %v", s.Index(), err)
			for _, s := range stable {
				s.Close()
			}
		}
		return true
	}
	deadline := time.Now().Add(20 * time.Second)
	var rwg sync.WaitGroup
	rwg.Add(4)
	go func() { // a: one message at a time
		defer rwg.Done()
		var o r10Order
		a.SetReadDeadline(deadline)
		buf := make([]byte, 256)
		for {
			n, err := a.Recv(buf)
			if ended(a, err) {
				return
			}
			id := checkMsg(t, buf[:n])
			o.check(t, a, id)
			record(a, id)
		}
	}()
	go func() { // b: batches
		defer rwg.Done()
		var o r10Order
		b.SetReadDeadline(deadline)
		ms := make([]kcm.Message, 4)
		for {
			n, err := b.RecvBatch(ms)
			if ended(b, err) {
				return
			}
			for i := range ms[:n] {
				id := checkMsg(t, ms[i].Bytes())
				ms[i].Release()
				o.check(t, b, id)
				record(b, id)
			}
		}
	}()
	go func() { // c: a peek before each receive, and slower
		defer rwg.Done()
		var o r10Order
		c.SetReadDeadline(deadline)
		buf := make([]byte, 256)
		for {
			if _, _, err := c.RecvMsg(buf, kcm.Peek); ended(c, err) {
				return
			}
			runtime.Gosched()
			n, err := c.Recv(buf)
			if ended(c, err) {
				return
			}
			id := checkMsg(t, buf[:n])
			o.check(t, c, id)
			record(c, id)
		}
	}()
	go func() { // sockets come and go; now and then one takes a message
		defer rwg.Done()
		buf := make([]byte, 256)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			s := a.Clone()
			if i%4 == 0 {
				if n, _, err := s.RecvMsg(buf, kcm.DontWait); err == nil {
					record(s, checkMsg(t, buf[:n]))
				} else if !errors.Is(err, kcm.ErrWouldBlock) && !errors.Is(err, kcm.ErrClosed) {
					t.Errorf("clone: %v", err)
				}
			}
			s.Close()
			runtime.Gosched()
		}
	}()
	rwg.Wait()
	wwg.Wait()
	if got := total.Load(); got != psocks*perPsock {
		t.Fatalf("received %d messages, want %d", got, psocks*perPsock)
	}
}

// A message larger than a socket's share still waits in that socket's
// empty queue, but only while the own queues together stay within the
// quarter of RecvBuffer, and the psock pauses on the whole as before.
// (RecvBuffer 4096: 1024 bytes for the own queues, a share of 128 for each
// of eight sockets that do not receive; messages of 200 bytes, one for
// each socket in turn: the first five sockets' queues take one each.)
func TestAffinityOneMessageOverShareKeepsTotalBound(t *testing.T) {
	const bound, size, count = 4096, 200, 100
	m := newMux(t, kcm.Config{Affinity: bySocketID, RecvBuffer: bound})
	socks := []*kcm.Socket{m.NewSocket(kcm.Datagram)}
	for len(socks) < 8 {
		socks = append(socks, socks[0].Clone())
	}
	_, peer := attachPeer(t, m)
	var all []byte
	for n := range count {
		all = append(all, msgOf(r10ID(socks[n%len(socks)].Index(), 0, n), size-4)...)
	}
	go peer.Write(all) // it blocks once the psock pauses; cleanup closes peer
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxPause") })
	for i, s := range socks {
		want := 0
		if i < 5 {
			want = size
		}
		if got := ownRmem(m, s.Index()); got != want {
			t.Errorf("socket %d's own queue holds %d bytes, want %d", s.Index(), got, want)
		}
	}
	if held, _ := m.Queued(); held > bound+size || held < bound {
		t.Errorf("paused with %d bytes queued, want RecvBuffer (%d) up to one message more", held, bound)
	}
	if t.Failed() {
		t.Fatalf("dump:\n%s", proc(m))
	}
}

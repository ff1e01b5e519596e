package kcm_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the eighth review: Config.WriteTimeout.

// pacedRead reads n bytes from c, chunk bytes at each tick of every: a
// peer that is alive and reads steadily, at a bounded rate. The ticker is
// the peer's reading rate, the subject of the test, not synchronisation.
func pacedRead(c net.Conn, n, chunk int, every time.Duration) ([]byte, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, chunk)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for len(out) < n {
		<-tk.C
		k, err := io.ReadFull(c, buf[:min(chunk, n-len(out))])
		out = append(out, buf[:k]...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// TestWriteTimeoutBoundsMessagesNotQueues: Config.WriteTimeout says to
// choose it "longer than the slowest expected write of the largest
// message". Here every message is written in about a quarter of it to a
// live peer that reads steadily, yet the psock fails: the deadline is armed
// once for a writev of the whole queue (seven 1 MiB messages whose senders
// queued behind a write in progress), so a queue that builds up under load
// fails a healthy psock, and every message in it restarts elsewhere.
func TestWriteTimeoutBoundsStallsNotQueues(t *testing.T) {
	const wto = time.Second
	m := newMux(t, kcm.Config{WriteTimeout: wto})
	c, peer := stalledPair(t) // small buffers: a write ends as the peer reads
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	const size, count = 1 << 20, 7
	errs := make(chan error, count)
	s0 := m.NewSocket(kcm.Datagram)
	go func() { errs <- s0.Send(msgOf(0, size)) }()
	waitSmem(t, m, p.Index(), size) // s0 writes its own message
	for i := 1; i < count; i++ {
		s := m.NewSocket(kcm.Datagram)
		go func() { errs <- s.Send(msgOf(uint32(i), size)) }() // too large to copy: waits in the queue
	}
	waitSmem(t, m, p.Index(), count*size)
	start := time.Now()
	seen := make(map[uint32]bool)
	for i := range count {
		t0 := time.Now()
		// 32 KiB every 8 ms: about 4 MiB/s, a message in about 260 ms.
		b, err := pacedRead(peer, size+4, 32<<10, 8*time.Millisecond)
		if err != nil {
			t.Fatalf("peer: message %d cut after %v (%v into it; every earlier message took about a quarter of WriteTimeout %v): %v; psock: %v",
				i, time.Since(start).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), wto, err, p.Err())
		}
		if id := checkMsg(t, b); id >= count || seen[id] {
			t.Fatalf("peer: message %d is %d", i, id)
		} else {
			seen[id] = true
		}
		if d := time.Since(t0); d > wto/2 {
			t.Logf("message %d took %v to read (the reader fell behind its pace)", i, d)
		}
	}
	for range count {
		if err := waitErr(t, errs, "send"); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("psock left: %v", p.Err())
	default:
	}
}

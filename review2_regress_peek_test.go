package kcm_test

import (
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 3 (Peek, order): a peek must not consume. RecvMsg with Peek takes
// the message out of the mux queue, copies it with the lock released, and
// pushes it back (socket.go RecvMsg -> putBack): meanwhile another socket
// receives the next message, so one psock's messages come out of stream
// order (and a receive in that window may block or time out although a
// message is queued).
func TestReview2PeekDoesNotReorder(t *testing.T) {
	m := newMux(t, kcm.Config{})
	peeker := m.NewSocket(kcm.Datagram)
	taker := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	const n = 3000
	var stream []byte
	for i := 0; i < n; i++ {
		stream = append(stream, msgOf(uint32(i), 30)...)
	}
	go peer.Write(stream)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 100)
		for {
			select {
			case <-stop:
				return
			default:
			}
			peeker.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			peeker.RecvMsg(buf, kcm.Peek)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	buf := make([]byte, 100)
	for i := 0; i < n; i++ {
		taker.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := taker.Recv(buf)
		if err != nil {
			t.Fatal(err)
		}
		if id := checkMsg(t, buf[:k]); id != uint32(i) {
			t.Fatalf("got message %d, want %d: a peek let a later message overtake", id, i)
		}
	}
}

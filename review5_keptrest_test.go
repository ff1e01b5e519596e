package kcm_test

import (
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Two Read calls wait on one SeqPacket socket and a message longer than
// their buffers arrives: the call that takes its first piece keeps the
// rest for the socket, and the other call, already waiting, takes the next
// piece at once instead of waiting for another message.
func TestKeptRestWakesOtherReadOfSocket(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	type piece struct {
		n   int
		err error
		at  time.Duration
	}
	got := make(chan piece, 2)
	start := time.Now()
	read := func() {
		buf := make([]byte, 10)
		n, err := s.Read(buf)
		got <- piece{n, err, time.Since(start)}
	}
	go read()
	go read()
	waitBlockedReceives(t, 1) // one leads the psock, the other waits
	peer.Write(msgOf(1, 40))  // 44 bytes: more than both buffers
	for range 2 {
		p := <-got
		if p.err != nil || p.n != 10 {
			t.Fatalf("read: %d bytes, %v after %v; want a 10-byte piece at once", p.n, p.err, p.at.Round(time.Millisecond))
		}
	}
}

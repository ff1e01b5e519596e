package kcm_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Request/response on one psock, then a non-blocking receive: it must
// return ErrWouldBlock at once.
func TestConformanceProbeDontWaitAfterExchangeLoop(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for i := 0; i < 50; i++ {
		cfLeaderMode(t, s, peer)
		ch := make(chan error, 1)
		go func() { _, _, err := s.RecvMsg(make([]byte, 100), kcm.DontWait); ch <- err }()
		select {
		case err := <-ch:
			if !errors.Is(err, kcm.ErrWouldBlock) {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(time.Second):
			peer.Write(msgOf(1, 10)) // releases it
			t.Fatalf("exchange %d: RecvMsg(DontWait) blocked reading the psock", i)
		}
	}
}

// Request/response on one psock, then a receive with a short deadline: it
// must time out at the deadline.
func TestConformanceProbeDeadlineAfterExchangeLoop(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for i := 0; i < 50; i++ {
		cfLeaderMode(t, s, peer)
		s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		ch := make(chan error, 1)
		go func() { _, err := s.Recv(make([]byte, 100)); ch <- err }()
		select {
		case err := <-ch:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(time.Second):
			c0 := processCPU()
			time.Sleep(500 * time.Millisecond)
			cpu := processCPU() - c0
			peer.Write(msgOf(1, 10)) // releases it
			t.Fatalf("exchange %d: Recv did not return at its 20ms deadline; process used %v CPU in the next 500ms (spinning)", i, cpu)
		}
	}
}

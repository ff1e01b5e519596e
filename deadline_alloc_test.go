package kcm_test

import (
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A service that gives every exchange its own deadlines (SetDeadline
// before each Send and Recv, as net.Conn users do) allocates nothing per
// message: the write deadline is kept in an atomic, not behind a pointer
// to a copy of each time.Time.
func TestDeadlinesPerMessageDoNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation count")
	}
	req := frame(make([]byte, 1))
	c, srv := tcpPair(t)
	go kcmEcho(srv)
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(req))
	exchange := func() {
		s.SetDeadline(time.Now().Add(5 * time.Second))
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // buffers, timers and the echo server's warm-up
		exchange()
	}
	if a := testing.AllocsPerRun(500, exchange); a >= 0.1 {
		t.Fatalf("%.2f allocations per exchange with per-message deadlines, want 0", a)
	}
}

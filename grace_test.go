package kcm

import (
	"errors"
	"testing"
	"time"
)

// TestGraceTimerHonoursAssemblyDeadline: the grace timer of an idle psock
// fires no later than the deadline of the message it holds, also when it
// was already armed for its longest period (a busy psock's) before the
// message began. Otherwise the assembly deadline is enforced up to
// graceMax late.
func TestGraceTimerHonoursAssemblyDeadline(t *testing.T) {
	const timeout = 50 * time.Millisecond
	m, p, peer := attachedPsock(t, Config{MessageTimeout: timeout})
	s := m.NewSocket(Datagram)
	msg := []byte{0, 0, 0, 2, 'h', 'i'}
	buf := make([]byte, 16)

	m.mu.Lock()
	p.graceDelay = graceMax
	m.mu.Unlock()
	// The first message goes to a receive that already waits, so that
	// whoever reads it lets go of the psock after it (a message that
	// arrives first is queued, and the background reader goes on reading).
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv(buf)
		got <- err
	}()
	for waiting := false; !waiting; {
		m.mu.Lock()
		waiting = m.waiters.head != nil || p.rx == rxLed
		m.mu.Unlock()
		time.Sleep(time.Millisecond) // no event says "a receive waits"
	}
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	armed, at := p.graceArmed, p.graceAt
	m.mu.Unlock()
	if !armed || time.Until(time.Unix(0, at)) < timeout {
		t.Fatalf("grace timer armed %v, due in %v: the setup needs it armed for longer than %v", armed, time.Until(time.Unix(0, at)), timeout)
	}

	// A complete message and the start of the next in one write: the
	// receiver takes the first, the second must be complete by its
	// deadline, and nobody reads the psock.
	if _, err := peer.Write(append(append([]byte(nil), msg...), 0, 0, 0, 9, 'x')); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(buf); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	armed, at = p.graceArmed, p.graceAt
	dl := p.sp.deadline()
	m.mu.Unlock()
	if dl.IsZero() {
		t.Fatal("no message is being assembled")
	}
	if !armed || at > dl.UnixNano() {
		t.Fatalf("grace timer armed %v, due %v after the assembly deadline", armed, time.Unix(0, at).Sub(dl))
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the psock never timed out")
	}
	if !errors.Is(p.Err(), ErrMessageTimeout) {
		t.Fatalf("psock error %v, want ErrMessageTimeout", p.Err())
	}
}

package kcm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the fifth review: Config.Affinity after 69bb742.

type r5res struct {
	id  uint32
	err error
}

// r5recv starts a receive on s (with s's read deadline) and returns where
// its result arrives.
func r5recv(t *testing.T, s *kcm.Socket) <-chan r5res {
	ch := make(chan r5res, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := s.Recv(buf)
		if err != nil {
			ch <- r5res{badID, err}
			return
		}
		ch <- r5res{checkMsg(t, buf[:n]), nil}
	}()
	return ch
}

// A peek on a waits first, a receive on b second. One segment brings Y,
// steered to a, and Z, for any socket. Y goes to a's own queue and wakes
// the peek; Z, delivered before the peek ran, finds the peek still first
// in the wait list and is queued in the shared queue for it. The peek
// then looks at Y (earlier), puts it back into a's own queue and wakes
// only a's receives: Z waits in the shared queue while b's receive, which
// could take it, sleeps on.
func TestAffinityPeekOfOwnMessageStrandsSharedMessage(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: steerOrAny})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	peeked := make(chan error, 1)
	go func() {
		_, _, err := a.RecvMsg(make([]byte, 64), kcm.Peek)
		peeked <- err
	}()
	waitBlockedReceives(t, 1)
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := r5recv(t, b)
	waitBlockedReceives(t, 2)
	y, z := affID(a.Index(), 1), affID(anySock, 2)
	if _, err := peer.Write(append(msgOf(y, 20), msgOf(z, 20)...)); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, peeked, "a's peek"); err != nil {
		t.Fatalf("a's peek: %v", err)
	}
	start := time.Now()
	r := <-got
	if r.err != nil || r.id != z {
		t.Fatalf("b's receive: %#x, %v after %v; want %#x, which waits in the shared queue:\n%s",
			r.id, r.err, time.Since(start).Round(time.Millisecond), z, proc(m))
	}
	if got := recvID(t, a); got != y {
		t.Fatalf("a got %#x, want %#x", got, y)
	}
}

// Two receives wait on a, after a peek on b. One segment brings X for any
// socket (queued for b's peek, which is first), then Y1 and Y2 steered to
// a: with the shared queue not empty they go to a's own queue, and each
// wakes only the first of a's receives (a.ws[0], which stays listed until
// it runs). That receive takes one message; the other sleeps on while
// its socket's own queue holds a message that no other socket may take.
func TestAffinityOwnQueueWakesOnlyFirstReceiveOfSocket(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: steerOrAny})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	peeked := make(chan error, 1)
	go func() {
		_, _, err := b.RecvMsg(make([]byte, 64), kcm.Peek)
		peeked <- err
	}()
	waitBlockedReceives(t, 1)
	a.SetReadDeadline(time.Now().Add(2 * time.Second))
	r1 := r5recv(t, a)
	waitBlockedReceives(t, 2)
	r2 := r5recv(t, a)
	waitBlockedReceives(t, 3)
	x, y1, y2 := affID(anySock, 1), affID(a.Index(), 2), affID(a.Index(), 3)
	var seg []byte
	for _, id := range []uint32{x, y1, y2} {
		seg = append(seg, msgOf(id, 20)...)
	}
	if _, err := peer.Write(seg); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, ch := range []<-chan r5res{r1, r2} {
		r := <-ch
		if r.err != nil {
			t.Errorf("a's receive %d: %v after %v, with a's own messages waiting:\n%s",
				i+1, r.err, time.Since(start).Round(time.Millisecond), proc(m))
		}
	}
	// b's peek sees X, or nothing if a took it first; it ends with b.
	b.Close()
	if err := waitErr(t, peeked, "b's peek"); err != nil && !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("b's peek: %v", err)
	}
}

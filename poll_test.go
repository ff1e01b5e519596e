package kcm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm/internal/testconn"
)

// idleAll leaves every psock of m unread, with no grace timer, as a
// non-blocking receive that read them leaves them until their timers fire.
func idleAll(m *Mux) {
	for {
		m.mu.Lock()
		var wait chan struct{}
		for _, p := range m.psocks {
			if p.rx == rxIdle {
				if p.grace != nil {
					p.grace.Stop()
				}
				p.graceArmed = false // a timer that fired already does nothing
				continue
			}
			if p.rxWait == nil {
				p.rxWait = make(chan struct{})
			}
			wait = p.rxWait
			m.interruptLocked(p)
		}
		m.mu.Unlock()
		if wait == nil {
			return
		}
		<-wait
	}
}

// TestDontWaitPollsPsockAfterOneThatLeft: a non-blocking receive reads
// every psock whose bytes arrived, also when one it read before left the
// mux while it read (here at its peer's end): the list of psocks moves up
// under it, and the psock after the one that left was skipped, so the
// receive reported ErrWouldBlock with a message there.
func TestDontWaitPollsPsockAfterOneThatLeft(t *testing.T) {
	m := NewMux(Config{})
	t.Cleanup(func() { m.Close() })
	s := m.NewSocket(Datagram)
	length := ParserFunc(func(b []byte) (int, error) {
		if len(b) < 4 {
			return 0, nil
		}
		return testconn.FrameLen(b), nil
	})
	peer1, c1 := testconn.Pair(t, "unix")
	peer2, c2 := testconn.Pair(t, "unix")
	p1, err := m.Attach(c1, length)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Attach(c2, length); err != nil {
		t.Fatal(err)
	}
	idleAll(m)

	peer1.Close()
	msg := append(binary.BigEndian.AppendUint32(nil, 5), "hello"...)
	if _, err := peer2.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _, err := s.RecvMsg(buf, DontWait)
	if err != nil || string(buf[:n]) != string(msg) {
		t.Fatalf("RecvMsg(DontWait) = %q, %v; want the second psock's message", buf[:n], err)
	}
	<-p1.Done()
}

// TestDontWaitTakesWhatTheReaderItStoppedDelivered: a non-blocking
// receive that asks a busy background reader to let go looks at the mux
// again once it has, whoever reads the psock next: the reader delivered
// what it had read first. Here, with affinity and a receive of another
// socket waiting, the reader steered the call's message to the call's own
// socket and was started again for the waiting receive; the call reported
// ErrWouldBlock with its message queued for it. And a call whose socket
// closed meanwhile reports ErrClosed, as a blocked call does.
func TestDontWaitTakesWhatTheReaderItStoppedDelivered(t *testing.T) {
	for _, closing := range []bool{false, true} {
		t.Run(map[bool]string{false: "delivered", true: "closed"}[closing], func(t *testing.T) {
			testDontWaitAfterReaderLetGo(t, closing)
		})
	}
}

func testDontWaitAfterReaderLetGo(t *testing.T, closing bool) {
	hold, held := make(chan struct{}), make(chan struct{})
	var holdOnce, release sync.Once
	gate := ParserFunc(func(b []byte) (int, error) {
		if len(b) < 4 {
			return 0, nil
		}
		if bytes.Contains(b[4:], []byte("held")) {
			holdOnce.Do(func() { close(held); <-hold })
		}
		return testconn.FrameLen(b), nil
	})
	m := NewMux(Config{Affinity: func(msg []byte, _ *Psock) int { return int(msg[4]) }})
	t.Cleanup(func() { m.Close() })
	t.Cleanup(func() { release.Do(func() { close(hold) }) }) // runs first
	s, other := m.NewSocket(Datagram), m.NewSocket(Datagram)
	peer, c := testconn.Pair(t, "unix")
	p, err := m.Attach(c, gate)
	if err != nil {
		t.Fatal(err)
	}

	otherDone := make(chan error, 1)
	go func() {
		_, err := other.Recv(make([]byte, 64))
		otherDone <- err
	}()
	waitLocked(t, m, "the other socket's receive never waited", func() bool { return m.waiters.follower() != nil })
	m.mu.Unlock()
	msg := append(binary.BigEndian.AppendUint32(nil, 5), byte(s.Index()), 'h', 'e', 'l', 'd')
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	<-held // the background reader holds msg, parsed

	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		buf := make([]byte, 64)
		n, _, err := s.RecvMsg(buf, DontWait)
		done <- result{buf[:n], err}
	}()
	waitLocked(t, m, "the non-blocking receive never asked the reader to let go", func() bool { return p.rxWait != nil })
	m.mu.Unlock()
	if closing {
		s.Close()
	}
	release.Do(func() { close(hold) })
	r := <-done
	switch {
	case closing && !errors.Is(r.err, ErrClosed):
		t.Fatalf("RecvMsg(DontWait) on a socket closed meanwhile = %q, %v; want ErrClosed", r.b, r.err)
	case !closing && (r.err != nil || !bytes.Equal(r.b, msg)):
		t.Fatalf("RecvMsg(DontWait) = %q, %v; want the message the reader steered to the socket", r.b, r.err)
	}
	m.Close()
	if err := <-otherDone; closing && err != nil {
		t.Fatalf("other socket's receive: %v; want the message of the closed socket", err)
	}
}

// TestDontWaitPollIsBounded: a non-blocking receive that polls a psock
// ends after about Config.RecvBuffer bytes, also when every message it
// reads goes to another socket's receiver, which takes it at once, so the
// queue never fills: before, it went on for as long as the peer had sent.
// Nothing is lost: the receiver leads the psock once the poll lets go.
func TestDontWaitPollIsBounded(t *testing.T) {
	const (
		recvBuffer = 1024
		size       = 100 // bytes of each message, header included
		count      = 64
	)
	hold, held, polling := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var holdOnce, pollOnce, release sync.Once
	var m *Mux
	var p *Psock
	polled := 0            // messages parsed by the poll
	taken := func() bool { // by the other socket, which waits for the next
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.ready.len() == 0 && m.waiters.follower() != nil
	}
	gate := ParserFunc(func(b []byte) (int, error) {
		if len(b) < 4 {
			return 0, nil
		}
		holdOnce.Do(func() { close(held); <-hold })
		if p.noWait { // the poll reads p: its own goroutine set noWait
			polled++
			pollOnce.Do(func() { close(polling) })
			for deadline := time.Now().Add(5 * time.Second); !taken() && time.Now().Before(deadline); {
				runtime.Gosched()
			}
		}
		return testconn.FrameLen(b), nil
	})
	m = NewMux(Config{RecvBuffer: recvBuffer})
	t.Cleanup(func() { m.Close() })
	t.Cleanup(func() { release.Do(func() { close(hold) }) }) // runs first
	a, s := m.NewSocket(Datagram), m.NewSocket(Datagram)
	peer, c := testconn.Pair(t, "unix")
	var err error
	if p, err = m.Attach(c, gate); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	if _, _, err := s.RecvMsg(buf, DontWait); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("RecvMsg(DontWait) with nothing sent = %v; want ErrWouldBlock", err)
	}
	// That call left a background reader on the psock. It holds the first
	// message; the others wait in its buffer.
	msg := binary.BigEndian.AppendUint32(nil, size-4)
	msg = append(msg, bytes.Repeat([]byte{'m'}, size-4)...)
	if _, err := peer.Write(bytes.Repeat(msg, count)); err != nil {
		t.Fatal(err)
	}
	<-held

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, _, err := s.RecvMsg(buf, DontWait)
		done <- result{n, err}
	}()
	waitLocked(t, m, "the non-blocking receive never asked the reader to let go", func() bool { return p.rxWait != nil })
	m.mu.Unlock()
	release.Do(func() { close(hold) })

	var received atomic.Int32 // by the other socket
	go func() {
		<-polling
		rbuf := make([]byte, size)
		for {
			if _, err := a.Recv(rbuf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	r := <-done
	if r.err != nil && !errors.Is(r.err, ErrWouldBlock) {
		t.Fatalf("RecvMsg(DontWait) = %v; want a message or ErrWouldBlock", r.err)
	}
	want := int32(count)
	if r.err == nil {
		want--
	}
	waitLocked(t, m, "messages were lost", func() bool { return received.Load() >= want })
	m.mu.Unlock()
	if max := recvBuffer/size + 2; polled > max {
		t.Fatalf("the poll parsed %d messages (%d bytes); want at most %d, about RecvBuffer (%d bytes)", polled, polled*size, max, recvBuffer)
	}
}

package kcm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the fourth review: Config.Affinity and SendTo.

// anySock in the top 16 bits of an id means "any socket" (-1) for
// steerOrAny; other values are a socket index, as in bySocketID.
const anySock = 0xffff

func steerOrAny(msg []byte, _ *kcm.Psock) int {
	if len(msg) < 8 {
		return -1
	}
	i := int(binary.BigEndian.Uint32(msg[4:]) >> 16)
	if i == anySock {
		return -1
	}
	return i
}

// waitRxMsgs waits until the mux has parsed (and, under its lock,
// delivered) n messages.
func waitRxMsgs(t *testing.T, m *kcm.Mux, n uint64) {
	t.Helper()
	waitProc(t, m, func(string) bool { return m.Stats().RxMsgs >= n })
}

// waitBlockedReceives waits until n goroutines are blocked in a receive
// call of the package (one waiter each). The proc dump shows RxWait once
// per socket, so concurrent calls on one socket are counted in the
// goroutine dump.
func waitBlockedReceives(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		k := runtime.Stack(buf, true)
		if bytes.Count(buf[:k], []byte("kcm.(*waiter).wait(")) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %d blocked receive calls:\n%s", n, buf[:k])
		}
		time.Sleep(time.Millisecond)
	}
}

// A message steered to a socket's own queue must not overtake an earlier
// message of the same stream that waits in the shared queue: one socket,
// one psock, and it receives the stream out of order (spec 3: messages of
// one psock are handed out in stream order; within one socket, FIFO).
func TestAffinityOwnQueueDoesNotOvertakeEarlierMessage(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: steerOrAny})
	a := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	first, second := affID(anySock, 1), affID(a.Index(), 2)
	peer.Write(append(msgOf(first, 20), msgOf(second, 20)...))
	waitRxMsgs(t, m, 2)
	for _, want := range []uint32{first, second} {
		if got := recvID(t, a); got != want {
			t.Fatalf("the only socket got %#x, want %#x: stream order broken", got, want)
		}
	}
}

// With every message steered to the only socket, the bound of the own
// queues (a quarter of RecvBuffer, 100 bytes here) sends some to the
// shared queue; a later message that finds room in the own queue again
// must not overtake them.
func TestAffinityBoundFallbackKeepsStreamOrder(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: bySocketID, RecvBuffer: 400})
	a := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for seq := range 3 {
		peer.Write(msgOf(affID(a.Index(), seq), 36)) // 40 bytes: the third is over the bound
	}
	waitRxMsgs(t, m, 3)
	if got := recvID(t, a); got != affID(a.Index(), 0) {
		t.Fatalf("got %#x, want message 0", got)
	}
	peer.Write(msgOf(affID(a.Index(), 3), 36)) // fits in the own queue again
	waitRxMsgs(t, m, 4)
	for seq := 1; seq < 4; seq++ {
		if got := recvID(t, a); got != affID(a.Index(), seq) {
			t.Fatalf("got %#x, want message %d: one socket, one stream, out of order", got, seq)
		}
	}
}

// Messages released by a socket that closes or disables receiving go to
// the others "in order" — but they are appended behind later messages of
// the same stream already in the shared queue.
func TestAffinityReleasedQueueKeepsStreamOrder(t *testing.T) {
	for _, how := range []string{"close", "disable"} {
		t.Run(how, func(t *testing.T) {
			m := newMux(t, kcm.Config{Affinity: steerOrAny})
			a := m.NewSocket(kcm.Datagram)
			b := a.Clone()
			_, peer := attachPeer(t, m)
			first, second := affID(a.Index(), 1), affID(anySock, 2)
			peer.Write(append(msgOf(first, 20), msgOf(second, 20)...))
			waitRxMsgs(t, m, 2)
			if how == "close" {
				a.Close()
			} else {
				a.SetRecvDisabled(true)
			}
			for _, want := range []uint32{first, second} {
				if got := recvID(t, b); got != want {
					t.Fatalf("b got %#x, want %#x: one stream, one socket, out of order", got, want)
				}
			}
		})
	}
}

// A receive waiting on the named socket is handed its message although an
// earlier message of the same stream waits in the shared queue (put there
// for a waiting peek of another socket): the socket then receives the
// stream out of order.
func TestAffinityHandoffDoesNotOvertakeQueuedMessage(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: steerOrAny})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	peeked := make(chan error, 1)
	go func() {
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := b.RecvMsg(make([]byte, 64), kcm.Peek)
		peeked <- err
	}()
	waitProc(t, m, func(d string) bool { return strings.Count(d, "RxWait") == 1 })
	got := make(chan uint32, 1)
	go func() {
		a.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := a.Recv(buf)
		if err != nil {
			t.Errorf("a: %v", err)
			got <- badID
			return
		}
		got <- checkMsg(t, buf[:n])
	}()
	waitProc(t, m, func(d string) bool { return strings.Count(d, "RxWait") == 2 })
	first, second := affID(anySock, 1), affID(a.Index(), 2)
	peer.Write(append(msgOf(first, 20), msgOf(second, 20)...))
	seen := []uint32{<-got, recvID(t, a)} // b only peeks: a can take both
	if seen[0] != first || seen[1] != second {
		t.Fatalf("a received %#x then %#x, want %#x then %#x (stream order)", seen[0], seen[1], first, second)
	}
	// The peek may have seen the first message or not (a may take it
	// first); it must end with b.
	b.Close()
	if err := waitErr(t, peeked, "b's peek"); err != nil && !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("b's peek: %v", err)
	}
}

// A peek and a receive wait on one socket; a message steered to it wakes
// only the peek (first in the socket's list), which leaves it in the own
// queue without waking anyone: the receive hangs while its message waits.
func TestAffinityPeekDoesNotStrandReceiveOnSameSocket(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: bySocketID})
	a := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	a.SetReadDeadline(time.Now().Add(3 * time.Second))
	peeked := make(chan error, 1)
	go func() {
		_, _, err := a.RecvMsg(make([]byte, 64), kcm.Peek)
		peeked <- err
	}()
	waitBlockedReceives(t, 1)
	type res struct {
		id  uint32
		err error
	}
	got := make(chan res, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := a.Recv(buf)
		if err != nil {
			got <- res{badID, err}
			return
		}
		got <- res{checkMsg(t, buf[:n]), nil}
	}()
	waitBlockedReceives(t, 2)
	start := time.Now()
	want := affID(a.Index(), 1)
	peer.Write(msgOf(want, 20))
	if err := waitErr(t, peeked, "peek"); err != nil {
		t.Fatalf("peek: %v", err)
	}
	r := <-got
	if r.err != nil || r.id != want {
		t.Fatalf("receive waiting beside the peek: %#x, %v after %v; want %#x at once",
			r.id, r.err, time.Since(start).Round(time.Millisecond), want)
	}
}

// Config.RecvBuffer bounds the parsed messages waiting in the mux for a
// receiver; with Affinity the own queues take up to RecvBuffer and then the
// shared queue takes another RecvBuffer before the psock pauses.
func TestAffinityRecvBufferBoundsAllWaitingBytes(t *testing.T) {
	const bound, size, count = 4096, 104, 200
	m := newMux(t, kcm.Config{Affinity: bySocketID, RecvBuffer: bound})
	a := m.NewSocket(kcm.Datagram)
	a.Clone() // another socket: neither receives
	_, peer := attachPeer(t, m)
	var all []byte
	for seq := range count {
		all = append(all, msgOf(affID(a.Index(), seq), size-4)...)
	}
	if _, err := peer.Write(all); err != nil {
		t.Fatal(err)
	}
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxPause") })
	held := int(m.Stats().RxMsgs) * size // nothing was received
	if held > bound+size {
		t.Fatalf("the mux holds %d bytes of parsed messages (%d in a's own queue), RecvBuffer is %d:\n%s",
			held, ownRmem(m, a.Index()), bound, proc(m))
	}
}

// ownRmem returns the Rmem column of socket idx in the proc dump.
func ownRmem(m *kcm.Mux, idx int) int {
	for _, line := range strings.Split(proc(m), "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && f[0] == "kcm-"+strconv.Itoa(idx) {
			n, _ := strconv.Atoi(f[6])
			return n
		}
	}
	return -1
}

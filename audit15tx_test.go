package kcm_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Audit 15, transmit side.

// a15HeldWriter returns a mux whose only psock holds the write of the
// batch socket s ends (a message held with Batch, then a plain Send, run
// in a goroutine whose error comes on errA), until the test calls
// release (idempotent). While that write is held, the ending call keeps
// s's multi-call lock (the More/Batch path) taken. Release is also a
// cleanup, run before the mux's closing.
func a15HeldWriter(t *testing.T, cfg kcm.Config) (m *kcm.Mux, s *kcm.Socket, release func(), errA chan error) {
	t.Helper()
	m = newMux(t, cfg)
	c, peer := tcpPair(t)
	go func() { // the peer reads everything
		buf := make([]byte, 64<<10)
		for {
			if _, err := peer.Read(buf); err != nil {
				return
			}
		}
	}()
	sc, release := a15AttachHeld(t, m, c)
	s = m.NewSocket(kcm.Datagram)
	if err := s.SendMsg(msgOf(1, 20), kcm.Batch); err != nil {
		t.Fatal(err)
	}
	errA = make(chan error, 1)
	go func() { errA <- s.Send(msgOf(2, 20)) }()
	select {
	case <-sc.entered: // the batch's write is under way, and held
	case <-time.After(5 * time.Second):
		t.Fatal("the batch was not written")
	}
	return m, s, release, errA
}

// a15AttachHeld attaches c to m behind a stepConn that holds its first
// write until release (idempotent, and a cleanup run before the mux's
// closing) is called.
func a15AttachHeld(t *testing.T, m *kcm.Mux, c net.Conn) (sc *stepConn, release func()) {
	t.Helper()
	sc = newStepConn(c, 1)
	if _, err := m.Attach(sc, lenPrefix); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(sc.release) }) }
	t.Cleanup(release)
	return sc, release
}

// TestAudit15SendPastDeadlineWhileBatchWrites: SetWriteDeadline promises
// "A send called after it fails at once." A send on a socket whose
// previous call, ending a Batch, is still writing (the write has begun,
// so that call itself is rightly not cut) must still fail at once once
// the deadline has passed. Every call that takes the socket's multi-call
// path (More, Batch, SendBatch, and a plain Send while the socket is
// marked as holding messages) used to wait first for the socket's txmu,
// which the writing call held, and only then look at the deadline: it
// blocked for as long as the other write took (forever on a peer that
// stopped reading, with no WriteTimeout).
func TestAudit15SendPastDeadlineWhileBatchWrites(t *testing.T) {
	calls := []struct {
		name string
		call func(s *kcm.Socket) error
	}{
		{"More", func(s *kcm.Socket) error { return s.SendMsg(msgOf(3, 20), kcm.More) }},
		{"Batch", func(s *kcm.Socket) error { return s.SendMsg(msgOf(3, 20), kcm.Batch) }},
		{"Send", func(s *kcm.Socket) error { return s.Send(msgOf(3, 20)) }},
		{"SendBatch", func(s *kcm.Socket) error { return s.SendBatch([][]byte{msgOf(3, 20)}) }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			_, s, release, errA := a15HeldWriter(t, kcm.Config{})
			s.SetWriteDeadline(time.Now().Add(-time.Second))
			errB := make(chan error, 1)
			go func() { errB <- tc.call(s) }()
			var err error
			select {
			case err = <-errB:
			case <-time.After(2 * time.Second):
				t.Errorf("%s past the write deadline did not fail at once: blocked 2s behind the other call's write", tc.name)
				release()
				waitErr(t, errB, tc.name)
				waitErr(t, errA, "the batch's send")
				return
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s past the write deadline: %v, want os.ErrDeadlineExceeded", tc.name, err)
			}
			release()
			if err := waitErr(t, errA, "the batch's send"); err != nil {
				t.Errorf("the batch's send, its write begun before the deadline: %v", err)
			}
		})
	}
}

// TestAudit15SendDuringBatchWriteIsQueued: Send "returns once msg has been
// written to a connection or copied into the mux's queue"; a message that
// waits for a busy psock is copied when it is at most 64 KiB and the send
// buffer has room. A plain Send of 20 bytes on a socket whose earlier call
// (ending a Batch) is still writing must therefore be copied behind that
// write and return, as it does on any other socket. It used to wait, for
// as long as the other write took, for the socket's multi-call lock.
func TestAudit15SendDuringBatchWriteIsQueued(t *testing.T) {
	m, s, release, errA := a15HeldWriter(t, kcm.Config{})
	other := m.NewSocket(kcm.Datagram)
	if err := cfDo(t, 2*time.Second, "another socket's Send", func() error { return other.Send(msgOf(4, 20)) }); err != nil {
		t.Fatal(err)
	}
	errB := make(chan error, 1)
	go func() { errB <- s.Send(msgOf(3, 20)) }()
	var err error
	select {
	case err = <-errB:
		release()
	case <-time.After(2 * time.Second):
		t.Errorf("a 20-byte Send with an empty send buffer waited 2s behind the socket's other write instead of being copied")
		release()
		err = waitErr(t, errB, "Send")
	}
	if err != nil {
		t.Errorf("Send: %v", err)
	}
	if err := waitErr(t, errA, "the batch's send"); err != nil {
		t.Errorf("the batch's send: %v", err)
	}
}

// TestAudit15ReservationsBalanceUnderCloseRace: Reserved counts "times a
// socket reserved the psock for transmit", Unreserved "times a socket
// released its reservation" (stats.go); Socket.Close releases the
// socket's reservation. So once every socket of a mux is closed, each
// psock's Reserved equals its Unreserved, and the proc dump shows no
// reservation. Here sockets are closed while their own senders run on two
// psocks (the load-aware choice moves reservations between them): a send
// that passed its closed-check just before Close may reserve a psock again
// after Close released the socket's reservation; it must let go of it (it
// used to keep it for good, Reserved one more than Unreserved).
func TestAudit15ReservationsBalanceUnderCloseRace(t *testing.T) {
	for round := range 1000 {
		m := kcm.NewMux(kcm.Config{})
		var ps []*kcm.Psock
		for range 2 {
			p, peer := attachPeer(t, m)
			ps = append(ps, p)
			go io.Copy(io.Discard, peer)
		}
		var wg sync.WaitGroup
		var socks []*kcm.Socket
		for g := range 4 {
			s := m.NewSocket(kcm.Datagram)
			socks = append(socks, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					if err := s.Send(msgOf(uint32(g<<16|i), 100+i%3000)); err != nil {
						return
					}
				}
			}()
		}
		// Let the senders run (any time will do: Close races them).
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		for _, s := range socks {
			s.Close()
		}
		wg.Wait()
		for _, p := range ps {
			if st := p.Stats(); st.Reserved != st.Unreserved {
				t.Errorf("round %d: every socket closed, senders returned: psock %d Reserved %d, Unreserved %d",
					round, p.Index(), st.Reserved, st.Unreserved)
			}
		}
		m.Close()
		if st := m.Stats().Psocks; st.Reserved != st.Unreserved {
			t.Errorf("round %d: every socket closed and every psock gone: Reserved %d, Unreserved %d", round, st.Reserved, st.Unreserved)
		}
		if t.Failed() {
			return
		}
	}
}

// a15PsockSendQ returns the Send-Q column (messages queued, not yet taken by
// a writer) of psock idx in the mux's proc dump, or -1.
func a15PsockSendQ(m *kcm.Mux, idx int) int {
	f := strings.Fields(procLine(proc(m), fmt.Sprintf("psock-%d", idx)))
	if len(f) < 8 {
		return -1
	}
	n, err := strconv.Atoi(f[7])
	if err != nil {
		return -1
	}
	return n
}

// TestAudit15SenderNotHeldByOthersQueue: Socket.Close promises "Blocked
// calls on it return ErrClosed". Here sA's Send wrote its own message
// whole, then, as the psock's writer, went on to flush the messages
// another socket (sB) had queued meanwhile (less than the 1 MiB budget),
// and that write stalls: the peer stopped reading. Closing sA lets its
// call go (the mux writes the rest); it used to stay blocked until the
// peer read. A send with a write deadline leaves others' messages to the
// mux at once (SetWriteDeadline), so it returns once its own message is
// written.
func TestAudit15SenderNotHeldByOthersQueue(t *testing.T) {
	for _, how := range []string{"Close", "deadline"} {
		t.Run(how, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			var deadline func(*kcm.Socket)
			if how == "deadline" {
				deadline = func(sA *kcm.Socket) { sA.SetWriteDeadline(time.Now().Add(time.Hour)) }
			}
			_, peer, sA, errA := flusherStalled(t, m, deadline)
			if how == "Close" {
				sA.Close()
			}
			var err error
			returned := true
			select {
			case err = <-errA:
			case <-time.After(2 * time.Second):
				returned = false
			}
			if how == "deadline" && returned {
				// The mux writes sB's messages once the peer reads: all
				// of them, in order.
				for i := range flusherMsgs {
					if id := checkMsg(t, readMsg(t, peer)); id != uint32(10+i) {
						t.Fatalf("message %d after sA's, want %d", id, 10+i)
					}
				}
			}
			peer.SetReadDeadline(time.Time{})
			go io.Copy(io.Discard, peer)
			if !returned {
				t.Errorf("after %s, sA's Send (its message written whole) still blocked 2s writing sB's queue to a stalled peer", how)
				err = waitErr(t, errA, "sA's Send")
			}
			if err != nil && !errors.Is(err, kcm.ErrClosed) {
				t.Errorf("sA's Send: %v", err)
			}
		})
	}
}

// flusherMsgs are the copied messages (under 64 KiB each, 480 KiB in all)
// of flusherStalled's sB, with ids 10 and up.
const flusherMsgs, flusherSize = 8, 60 << 10

// flusherStalled makes sA's Send, its own 1 MiB message written, flush the
// copied messages sB queued meanwhile to p's peer, which stopped reading
// after sA's message: the call is stuck writing others' messages. before,
// if not nil, runs on sA first. The peer's reads have a 5 s deadline.
func flusherStalled(t *testing.T, m *kcm.Mux, before func(sA *kcm.Socket)) (p *kcm.Psock, peer net.Conn, sA *kcm.Socket, errA chan error) {
	t.Helper()
	p, peer = attachStalled(t, m)
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	if before != nil {
		before(sA)
	}
	own := msgOf(1, 1<<20)
	errA = make(chan error, 1)
	go func() { errA <- sA.Send(own) }()
	waitSmem(t, m, p.Index(), int64(len(own))) // sA writes its own message, stuck
	for i := range flusherMsgs {
		if err := sB.Send(msgOf(uint32(10+i), flusherSize)); err != nil {
			t.Fatal(err)
		}
	}
	// The peer takes sA's message, and nothing more: sA's write ends, and
	// sA goes on with sB's queue, which stalls.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if id := checkMsg(t, readMsg(t, peer)); id != 1 {
		t.Fatalf("first message %d, want sA's", id)
	}
	waitProc(t, m, func(string) bool {
		return a15PsockSendQ(m, p.Index()) == 0 && psockSmem(m, p.Index()) > 0
	})
	return p, peer, sA, errA
}

// TestAudit15SendBatchEmptyAndHuge: SendBatch skips empty messages and
// sends each other one atomically; a message larger than
// Config.SendBuffer is still sent (copied when nothing else is held,
// otherwise its sender waits uncopied). With no psock attached and with
// a busy psock alike, every non-empty message reaches the peer whole, on
// the mux's one psock in order, the socket counts exactly them, and the
// send buffer is empty again afterwards.
func TestAudit15SendBatchEmptyAndHuge(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprintf("busy=%v", busy), func(t *testing.T) {
			m := newMux(t, kcm.Config{SendBuffer: 4 << 10})
			s := m.NewSocket(kcm.SeqPacket)
			batch := [][]byte{nil, msgOf(1, 10<<10), {}, msgOf(2, 300<<10), msgOf(3, 100), nil, msgOf(4, 20<<10)}
			want := 0
			for _, b := range batch {
				want += len(b)
			}
			errc := make(chan error, 2)
			var peer net.Conn
			var release func()
			if busy {
				c, pr := tcpPair(t)
				peer = pr
				var sc *stepConn
				sc, release = a15AttachHeld(t, m, c)
				go func() { errc <- m.NewSocket(kcm.Datagram).Send(msgOf(0, 50)) }()
				<-sc.entered // psock 0 is busy writing message 0
			}
			go func() { errc <- s.SendBatch(batch) }()
			if busy {
				waitSendQ(t, m, s, 2) // message 1 copied, message 2 waits uncopied
				release()
			} else {
				waitSendQ(t, m, s, 2) // message 1 copied, message 2 waits uncopied
				_, peer = attachPeer(t, m)
			}
			peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			first := uint32(1)
			if busy {
				first = 0
			}
			for id := first; id <= 4; id++ {
				if got := checkMsg(t, readMsg(t, peer)); got != id {
					t.Fatalf("peer got message %d, want %d", got, id)
				}
			}
			for range cap(errc) - map[bool]int{true: 0, false: 1}[busy] {
				if err := waitErr(t, errc, "send"); err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.TxMsgs != 4 || st.TxBytes != uint64(want) {
				t.Errorf("socket stats %+v, want 4 messages, %d bytes", st, want)
			}
			waitProc(t, m, func(string) bool { _, send := m.Queued(); return send == 0 })
		})
	}
}

// TestAudit15ProcWhileSenderWaitsOnBusyPsock: while a sender waits,
// uncopied, in a busy psock's queue, the proc dump shows it as the
// socket's Send-Q and Smem (its messages not yet written whole, queued on
// a psock), without TxWait (that is for messages waiting for a psock),
// with the socket's reservation (Psck-0 / Rsvd-<i>), and the psock's
// Send-Q counts the queued message; once written, they return to 0.
func TestAudit15ProcWhileSenderWaitsOnBusyPsock(t *testing.T) {
	m, _, peer, sc, a, errA := writeHeld(t)
	s := m.NewSocket(kcm.Datagram)
	big := msgOf(2, 100<<10) // over 64 KiB: waits uncopied
	errB := make(chan error, 1)
	go func() { errB <- s.Send(big) }()
	waitSendQ(t, m, s, 1)
	d := proc(m)
	line := procLine(d, fmt.Sprintf("kcm-%d", s.Index()))
	f := strings.Fields(line)
	if len(f) < 9 || f[7] != "1" || f[8] != strconv.Itoa(len(big)) {
		t.Errorf("kcm-%d Send-Q, Smem = %v, want 1 and %d; dump:\n%s", s.Index(), f[7:9], len(big), d)
	}
	if strings.Contains(line, "TxWait") || !strings.Contains(line, "Psck-0") {
		t.Errorf("kcm-%d: want Psck-0 and no TxWait; dump:\n%s", s.Index(), d)
	}
	if q := a15PsockSendQ(m, 0); q != 1 {
		t.Errorf("psock-0 Send-Q %d, want 1; dump:\n%s", q, d)
	}
	if smem := psockSmem(m, 0); smem != int64(len(a)+len(big)) {
		t.Errorf("psock-0 Smem %d, want %d", smem, len(a)+len(big))
	}
	if !strings.Contains(procLine(d, "psock-0"), "Rsvd-") {
		t.Errorf("psock-0 shows no reservation; dump:\n%s", d)
	}
	close(sc.release)
	if err := waitErr(t, errA, "sA's send"); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, errB, "the waiting send"); err != nil {
		t.Fatal(err)
	}
	readIDs(t, peer, 1, 2)
	waitSendQ(t, m, s, 0)
	if q, smem := a15PsockSendQ(m, 0), psockSmem(m, 0); q != 0 || smem != 0 {
		t.Errorf("after the writes: psock-0 Send-Q %d, Smem %d, want 0, 0", q, smem)
	}
}

package kcm

// Review 19: socket write deadlines on the transmit side, fourth pass.

import (
	"encoding/binary"
	"testing"
	"time"
)

func r19Msg(size int, id byte) []byte {
	x := make([]byte, size)
	binary.BigEndian.PutUint32(x, uint32(size-4))
	x[4] = id
	return x
}

// TestReview19TakenKickAfterFlusherKick: a send of socket a, its own
// message written, flushes others' queue q holding b's uncopied message
// (taken). a.SetWriteDeadline (newDeadline's flusher case; a's Close is
// the same) sets closeKicked and flusherKicked; before the writer sees
// its write stopped, b's deadline passes and b's wait calls kickTaken,
// which returns at once because closeKicked is set. handKicked handed
// the write to finishKicked without copying b's message (it copied only
// for a kickTaken of its own): b, past its deadline, waited until
// finishKicked had written its message to a peer that may never read.
// handKicked now copies every expired waiter. Driven step by step.
func TestReview19TakenKickAfterFlusherKick(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	defer peer.Close()
	a, b := m.NewSocket(Datagram), m.NewSocket(Datagram)
	wb := getTxWaiter()
	wb.p.Store(p)
	wb.taken.Store(true)
	big := r19Msg(16<<20, 2) // more than the socket buffers hold: the peer does not read
	tx := &p.tx
	tx.mu.Lock()
	if tx.writing {
		t.Fatal("psock busy")
	}
	tx.writing, tx.flusher = true, a // a's send flushes others' queue
	q := []txEntry{{ext: big, w: wb, s: b}}
	tx.load.Add(int64(len(big)))
	tx.inflight = q
	tx.mu.Unlock()

	a.SetWriteDeadline(time.Now().Add(time.Hour)) // newDeadline: the flusher kick
	b.SetWriteDeadline(time.Now())                // b's wait: past, taken...
	tx.kickTaken(m, p, wb)                        // ...so it kicks
	// The write returns, stopped, no byte written.
	if !m.handKicked(p, q, nil, 0) {
		t.Fatal("the flusher's kick was not handed on")
	}
	if len(wb.done) != 1 {
		t.Errorf("b's sender, past its deadline, is not let go: its message is written by finishKicked to a peer that does not read, and it waits for that")
	}
}

// TestReview19BacklogWaiterCloseBehindBusyWrite: a backlog sender waiting
// uncopied is flushed (backlog.flushLocked: taken, w.p set) into the queue
// of a psock that is already writing, as handshakeDoneTxLocked does: it
// kicks a writer for messages SendTo queued during the handshake, then
// flushes the backlog behind them. The sender's socket closes: its wait
// cannot withdraw (taken, and its withdraw looks in the backlog), so it
// blocks in <-w.done; dropSocketLocked neither drops the entry (a
// waiter's) nor interrupts the write (not in inflight). The Send of a
// closed socket waits until the write under way ends, on a stalled peer
// for ever.
func TestReview19BacklogWaiterCloseBehindBusyWrite(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	defer peer.Close()
	b := m.NewSocket(Datagram)
	wb := getTxWaiter()
	tx := &p.tx
	tx.mu.Lock()
	if tx.writing {
		t.Fatal("psock busy")
	}
	tx.writing = true // another write under way (stalled)
	tx.mu.Unlock()
	m.mu.Lock()
	m.backlog.q = append(m.backlog.q, txEntry{ext: r19Msg(1<<20, 2), w: wb, s: b})
	m.backlog.flushLocked(p)
	m.mu.Unlock()

	b.Close()
	// b's wait: closed; withdraw (backlog) fails, taken: <-w.done.
	m.mu.Lock()
	withdrawn := false
	for i := range m.backlog.q {
		withdrawn = withdrawn || m.backlog.q[i].w == wb
	}
	m.mu.Unlock()
	released := len(wb.done) == 1
	tx.mu.Lock()
	tx.writing = false // the stalled write, for cleanup
	tx.mu.Unlock()
	if !released && !withdrawn {
		t.Errorf("b's Send, its socket closed, is not let go: it waits for the psock's write under way to end")
	}
}

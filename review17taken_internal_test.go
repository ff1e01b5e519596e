package kcm

import (
	"encoding/binary"
	"os"
	"testing"
	"time"
)

// TestReview17TakenKickLostToOthersClose: kickTaken and a Close of
// another socket whose sender waits in the same queue write (its
// holdsSender case of dropSocketLocked), both before the writer sees its
// write stopped, in either order: Close sets closeKicked with
// flusherKicked false (overriding kickTaken's true), or kickTaken finds
// closeKicked already set and does nothing. Either way handKicked does not
// hand the write on (it copied no waiter then), and completeQueue puts
// the unwritten messages back (stopped between two messages) with b's
// entry in the queue again: b, past its deadline, blocked in <-w.done
// after its one kickTaken, is not let go and waits for the next write of
// the queue (on a stalled peer: for ever). Stopped inside a message, the
// psock fails (ErrMidMessage) instead. The writer's steps are driven one
// by one: it holds p writing the queue q (b's and c's uncopied
// messages); its write returns, stopped, after both kicks.
func TestReview17TakenKickLostToOthersClose(t *testing.T) {
	for _, order := range []string{"kick-then-close", "close-then-kick"} {
		t.Run(order, func(t *testing.T) {
			m, p, peer := attachedPsock(t, Config{})
			b, c := m.NewSocket(Datagram), m.NewSocket(Datagram)
			msg := func(id byte) []byte {
				x := make([]byte, 1000)
				binary.BigEndian.PutUint32(x, 996)
				x[4] = id
				return x
			}
			wb, wc := getTxWaiter(), getTxWaiter()
			wb.p.Store(p)
			wc.p.Store(p)
			wb.taken.Store(true)
			wc.taken.Store(true)
			tx := &p.tx
			tx.mu.Lock()
			if tx.writing {
				t.Fatal("psock busy")
			}
			tx.writing = true
			q := []txEntry{{ext: msg(2), w: wb, s: b}, {ext: msg(3), w: wc, s: c}}
			tx.load.Add(2000)
			tx.inflight = q // the writer's queue write, under way
			tx.mu.Unlock()

			b.SetWriteDeadline(time.Now()) // b's wait: taken, so kickTaken
			if order == "kick-then-close" {
				tx.kickTaken(m, p, wb)
				c.Close()
			} else {
				c.Close()
				tx.kickTaken(m, p, wb)
			}
			// The write returns, stopped between the two messages.
			n, err := 0, error(os.ErrDeadlineExceeded)
			handed := m.handKicked(p, q, nil, n)
			released := len(wb.done) == 1
			if !handed {
				keep := m.completeQueue(p, q, nil, n, err)
				tx.mu.Lock()
				tx.queueWritten(q, nil, keep)
				released = released || len(wb.done) == 1
				// The writer goes on (here the peer reads, so it ends).
				m.flushQueuedLocked(p, msgCount{}, flushBudget)
			}
			if !released {
				t.Errorf("b's sender, past its deadline, is not let go after kickTaken (handKicked %v): it waits for the next write of the queue", handed)
			}
			_ = peer
		})
	}
}

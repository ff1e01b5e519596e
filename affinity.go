package kcm

import "fmt"

// Affinity (spec section 6): Config.Affinity names, for each message read,
// the socket that should receive it, so that for instance a reply reaches
// the socket whose goroutine sent the request. It is best effort and never
// holds up other sockets:
//
//   - the message goes to a receive call waiting on that socket, or waits
//     in a queue of the socket's own;
//   - with no open, receiving socket of that index, when the own queues
//     of all sockets would hold more than a quarter of Config.RecvBuffer,
//     or when the socket's own would hold more than its share of that
//     quarter (the quarter divided by the number of open sockets; an
//     empty own queue takes one message over its share, within the
//     quarter), it goes to whichever socket receives, as without
//     affinity (the psocks pause when the own and shared queues together
//     hold RecvBuffer, so sockets that do not receive cannot stop the
//     others');
//   - the messages waiting for a socket that closes or stops receiving go
//     to the shared queue.
//
// Order: every delivered message gets a sequence number (Message.seq), and
// a socket takes from its own queue and the shared one in that order, so
// it receives each psock's messages in stream order; released messages
// are merged into the shared queue by it. A message goes straight to a
// waiting receive only when nothing it could take is queued before it.

// sockAff is a socket's part in affinity steering, present on the sockets
// of a mux with Config.Affinity. Guarded by mux.mu.
type sockAff struct {
	own msgQueue  // messages steered to the socket, not yet received
	ws  []*waiter // its receive calls in the mux's wait list, in order
}

// steerLocked delivers msg to the socket Config.Affinity names, if it can
// take it, and reports whether it did.
func (m *Mux) steerLocked(msg Message) bool {
	i := m.affinityOf(msg)
	byIndex := m.cold.byIndex
	if i < 0 || i >= len(byIndex) {
		return false
	}
	t := byIndex[i]
	if t == nil || t.disabled || t.closed() {
		return false
	}
	a := t.aff
	if len(a.ws) > 0 && a.own.len() == 0 && m.ready.len() == 0 && !a.ws[0].peek && !t.hasKept {
		// Straight to a receive of t, when nothing t could take is
		// queued before msg.
		m.handLocked(a.ws[0], msg)
		return true
	}
	budget, count := m.cfg.RecvBuffer/4, m.maxQueued/4
	if m.ownBytes+len(msg.b) > budget || m.ownMsgs+1 > count ||
		a.own.len() > 0 && (a.own.bytes+len(msg.b) > budget/len(m.sockets) || a.own.len()+1 > count/len(m.sockets)) {
		// Best effort: the own queues hold at most a quarter of the
		// receive buffer, in bytes and in messages, so that sockets that
		// do not receive cannot hold up the others' messages (the psocks
		// pause on the whole), and each socket's at most its share of
		// that quarter (or one message), so that one socket that does not
		// receive cannot switch steering off for the others.
		return false
	}
	a.own.push(msg)
	m.ownBytes += len(msg.b)
	m.ownMsgs++
	if len(a.ws) > 0 {
		a.ws[0].signal() // it finds the message in its own queue
	}
	return true
}

// affinityOf calls Config.Affinity. A panic in it is a fault of the
// stream's contents, as in a parser: the message goes to any socket, and
// the psock fails once the complete messages read before the panic are
// delivered, with ErrParse (the error waits as a read error would).
func (m *Mux) affinityOf(msg Message) (i int) {
	defer func() {
		if r := recover(); r != nil {
			i = -1
			if p := msg.p; !p.pending {
				p.stats.interrupted.Add(1)
				p.pending = true
				p.pendingErr = fmt.Errorf("%w: affinity function panicked: %v", ErrParse, r)
			}
		}
	}()
	return m.cfg.Affinity(msg.b, msg.p)
}

// popOwnLocked moves up to len(out) messages for s into out: those
// steered to it and those in the shared queue, in the order they were
// delivered (seq), so that s receives each psock's messages in stream
// order.
func (m *Mux) popOwnLocked(s *Socket, out []Message) int {
	q := &s.aff.own
	n := 0
	for ; n < len(out); n++ {
		switch {
		case m.ownFirstLocked(q):
			msg := q.pop()
			m.ownBytes -= len(msg.b)
			m.ownMsgs--
			msg.own = true
			out[n] = msg
		case m.ready.len() > 0:
			out[n] = m.ready.pop()
		default:
			m.resumeIfRoomLocked()
			return n
		}
	}
	m.resumeIfRoomLocked()
	m.passWakeLocked(s)
	return n
}

// passWakeLocked passes a wake-up on after s took messages: with affinity
// a woken receive may take another message than the one it was woken for
// (an earlier one, by sequence), so the messages left in the queues wake
// the receives that can take them.
func (m *Mux) passWakeLocked(s *Socket) {
	m.wakeFollowerLocked()
	if a := s.aff; a != nil && a.own.len() > 0 {
		for _, w := range a.ws {
			w.signal()
		}
	}
}

// ownFirstLocked reports whether the head of the own queue q was
// delivered before the head of the shared queue (or that one is empty).
func (m *Mux) ownFirstLocked(q *msgQueue) bool {
	return q.len() > 0 && (m.ready.len() == 0 || before(q.q[q.head].seq, m.ready.q[m.ready.head].seq))
}

// before compares delivery sequence numbers, which wrap around.
func before(a, b uint32) bool { return int32(a-b) < 0 }

// pushOwnFrontLocked puts a peeked message back first in s's own queue and
// passes the wake-up on: the peek took it from those who may take it.
func (m *Mux) pushOwnFrontLocked(s *Socket, msg Message) {
	msg.own = false
	s.aff.own.pushFront(msg)
	m.ownBytes += len(msg.b)
	m.ownMsgs++
	m.passWakeLocked(s)
}

// releaseOwnLocked gives the messages steered to s, which closes or stops
// receiving, to the other sockets: into the shared queue, each where its
// delivery order puts it.
func (m *Mux) releaseOwnLocked(s *Socket) {
	if s.aff == nil || s.aff.own.len() == 0 {
		return
	}
	own := &s.aff.own
	var merged msgQueue
	for own.len() > 0 || m.ready.len() > 0 {
		if m.ownFirstLocked(own) {
			msg := own.pop()
			m.ownBytes -= len(msg.b)
			m.ownMsgs--
			merged.push(msg)
		} else {
			merged.push(m.ready.pop())
		}
	}
	m.ready = merged
	m.waiters.wakeAll() // they find the messages in the queue
}

// addWaiter and dropWaiter keep a socket's list of waiting calls.
func (a *sockAff) addWaiter(w *waiter) { a.ws = append(a.ws, w) }

func (a *sockAff) dropWaiter(w *waiter) {
	for i, x := range a.ws {
		if x == w {
			copy(a.ws[i:], a.ws[i+1:])
			a.ws[len(a.ws)-1] = nil
			a.ws = a.ws[:len(a.ws)-1]
			return
		}
	}
}

// dropOwnLocked discards the messages steered to s when the mux closes.
func (m *Mux) dropOwnLocked(s *Socket) {
	if s.aff == nil {
		return
	}
	q := &s.aff.own
	for q.len() > 0 {
		msg := q.pop()
		m.ownBytes -= len(msg.b)
		m.ownMsgs--
		msg.Release()
		m.stats.rxReadyDrops.Add(1)
	}
}

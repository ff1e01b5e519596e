package kcm

import "fmt"

// Affinity (spec section 6): Config.Affinity names, for each message read,
// the socket that should receive it, so that for instance a reply reaches
// the socket whose goroutine sent the request. It is best effort and never
// holds up other sockets:
//
//   - the message goes to a receive call waiting on that socket, or waits
//     in a queue of the socket's own that its next receive takes first;
//   - with no open, receiving socket of that index, or when the own
//     queues of all sockets already hold Config.RecvBuffer bytes, it goes
//     to whichever socket receives, as without affinity;
//   - the messages waiting for a socket that closes or stops receiving go
//     to the other sockets, in order.
//
// A socket's own queue is like the rest of a message it began reading: no
// other socket takes from it. Unlike such a rest it holds whole messages,
// which other sockets may take when it gives them up.

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
	if i < 0 || i >= len(m.byIndex) {
		return false
	}
	t := m.byIndex[i]
	if t == nil || t.disabled || t.closed() {
		return false
	}
	a := t.aff
	if len(a.ws) > 0 && a.own.len() == 0 && !a.ws[0].peek {
		w := a.ws[0]
		m.waiters.remove(w)
		w.msg = msg
		w.signal()
		return true
	}
	if m.ownBytes > 0 && m.ownBytes+len(msg.b) > m.cfg.RecvBuffer {
		return false // best effort: any socket may take it
	}
	a.own.push(msg)
	m.ownBytes += len(msg.b)
	if len(a.ws) > 0 {
		a.ws[0].signal() // it finds the message in its own queue
	}
	return true
}

// affinityOf calls Config.Affinity. A panic in it is a fault of the
// stream's contents, as in a parser: the message goes to any socket, and
// the psock's stream fails at its next message with ErrParse.
func (m *Mux) affinityOf(msg Message) (i int) {
	defer func() {
		if r := recover(); r != nil {
			i = -1
			if sp := &msg.p.sp; !sp.failed {
				sp.stats.interrupted.Add(1)
				sp.err = fmt.Errorf("%w: affinity function panicked: %v", ErrParse, r)
				sp.failed = true
			}
		}
	}()
	return m.cfg.Affinity(msg.b, msg.p)
}

// popOwnLocked moves up to len(out) of the messages steered to s into out.
func (m *Mux) popOwnLocked(s *Socket, out []Message) int {
	q := &s.aff.own
	n := 0
	for n < len(out) && q.len() > 0 {
		msg := q.pop()
		m.ownBytes -= len(msg.b)
		msg.own = true
		out[n] = msg
		n++
	}
	return n
}

// pushOwnFrontLocked puts a peeked message back first in s's own queue.
func (m *Mux) pushOwnFrontLocked(s *Socket, msg Message) {
	msg.own = false
	s.aff.own.pushFront(msg)
	m.ownBytes += len(msg.b)
}

// releaseOwnLocked gives the messages steered to s, which closes or stops
// receiving, to the other sockets, in order.
func (m *Mux) releaseOwnLocked(s *Socket) {
	if s.aff == nil {
		return
	}
	q := &s.aff.own
	for q.len() > 0 {
		msg := q.pop()
		m.ownBytes -= len(msg.b)
		m.deliverAnyLocked(msg)
	}
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
		msg.Release()
		m.stats.rxReadyDrops.Add(1)
	}
}

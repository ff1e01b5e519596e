package kcm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// The receive path. A message goes only to a goroutine blocked in a
// receive call or to the mux's bounded ready queue, never to a socket that
// is not receiving.
//
// Who reads a psock: when the mux has a single psock, a receiving goroutine
// reads it itself ("leads" it) and returns the first message it parses, so
// a request/response exchange costs no goroutine handoff. Receivers that
// arrive while it leads wait as followers and get the further messages it
// parses, or the lead when it returns. A psock that no receiver reads for
// graceDelay, and every psock of a mux with several, is read by a
// background goroutine that hands messages to followers or queues them.

// errInterrupted is how a reader learns that it must let go of a psock.
var errInterrupted = errors.New("kcm: read interrupted")

// waiter is one goroutine blocked in a receive call.
type waiter struct {
	s          *Socket
	ch         chan struct{}
	msg        Message // handed over by a reader
	lead       *Psock  // or: lead this psock
	peek       bool    // a Peek: it is never handed a message, only woken
	partial    bool    // the call takes pieces of at most limit bytes
	limit      int
	prev, next *waiter
	queued     bool
	timer      *time.Timer
}

func (w *waiter) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// wait blocks until signalled or until the deadline dl passes.
func (w *waiter) wait(dl time.Time) {
	if dl.IsZero() {
		<-w.ch
		return
	}
	d := time.Until(dl)
	if d <= 0 {
		return
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.ch:
	case <-w.timer.C:
	}
	w.timer.Stop()
}

// waitList is a FIFO of waiters, guarded by mux.mu.
type waitList struct{ head, tail *waiter }

func (l *waitList) push(w *waiter) {
	if a := w.s.aff; a != nil {
		a.addWaiter(w)
	}
	w.prev, w.next, w.queued = l.tail, nil, true
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (l *waitList) remove(w *waiter) {
	if !w.queued {
		return
	}
	if a := w.s.aff; a != nil {
		a.dropWaiter(w)
	}
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
}

// follower returns the first waiter that may take a message.
func (l *waitList) follower() *waiter {
	for w := l.head; w != nil; w = w.next {
		if !w.s.disabled && !w.s.closed() {
			return w
		}
	}
	return nil
}

func (l *waitList) wakeAll() {
	for w := l.head; w != nil; w = w.next {
		w.signal()
	}
}

func (l *waitList) wakeSocket(s *Socket) {
	for w := l.head; w != nil; w = w.next {
		if w.s == s {
			w.signal()
		}
	}
}

// rxMode says how a receive call consumes and counts messages.
type rxMode struct {
	limit    int  // bytes the caller takes from each message; < 0: all
	partial  bool // what does not fit stays for the next call
	peek     bool // a Peek: nothing is consumed, shared or counted
	dontWait bool // ErrWouldBlock instead of blocking
}

// recv returns up to len(out) messages for s, at least one unless err is
// set, counted in s's statistics before any is visible to the caller.
func (m *Mux) recv(s *Socket, out []Message, mode rxMode) (n int, err error) {
	m.mu.Lock()
	n, err = m.recvLocked(s, out, mode)
	if n > 0 {
		s.countLocked(out[:n], mode)
	}
	m.mu.Unlock()
	return n, err
}

// recvPiece copies the next message for s, or the next piece of it, into
// b; what does not fit stays with s for its next receive, kept before the
// mux lock is let go so that a concurrent receive on s continues the same
// message rather than overtaking it. eor says the bytes end a message.
func (m *Mux) recvPiece(s *Socket, b []byte, dontWait bool) (n int, eor bool, err error) {
	var one [1]Message
	mode := rxMode{limit: len(b), partial: true, dontWait: dontWait}
	m.mu.Lock()
	if _, err := m.recvLocked(s, one[:], mode); err != nil {
		m.mu.Unlock()
		return 0, false, err
	}
	s.countLocked(one[:], mode)
	msg := one[0]
	if len(msg.b) > len(b) {
		msg = m.splitLocked(s, msg, len(b))
	}
	eor = !msg.more
	m.mu.Unlock()
	n = copy(b, msg.b)
	msg.Release()
	return n, eor, nil
}

// splitLocked keeps the part of msg past its first n bytes on s, for the
// socket's next receive, and returns the first n bytes, marked as a piece.
// It is called in the lock section that takes msg for a call on s, so no
// later message can reach another call on s before the rest is kept.
func (m *Mux) splitLocked(s *Socket, msg Message, n int) Message {
	if !s.closed() { // else the rest is dropped: the socket closed meanwhile
		rest := msg
		rest.b, rest.rest, rest.more = msg.b[n:], true, false
		if msg.buf != nil {
			msg.buf.refs.Add(1) // the piece and the rest each hold one
		}
		s.keepRest(rest, msg.rest)
		m.wakeSocketLocked(s) // another call on s may take the rest
	}
	msg.b, msg.more = msg.b[:n], true
	return msg
}

// handLocked gives msg to the waiting receive w; a call that takes pieces
// gets what fits, and the rest is kept on its socket at once.
func (m *Mux) handLocked(w *waiter, msg Message) {
	m.waiters.remove(w)
	if w.partial && len(msg.b) > w.limit {
		msg = m.splitLocked(w.s, msg, w.limit)
	}
	w.msg = msg
	w.signal()
}

// peek copies the next message for s into b and leaves it first in line,
// all under the mux lock so no later message can overtake it. It returns
// the bytes copied, the message's length, and whether it is the rest of a
// message s began reading.
func (m *Mux) peek(s *Socket, b []byte, dontWait bool) (n, size int, err error) {
	var one [1]Message
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.recvLocked(s, one[:], rxMode{limit: len(b), peek: true, dontWait: dontWait}); err != nil {
		return 0, 0, err
	}
	msg := one[0]
	n = copy(b, msg.b)
	if msg.rest {
		s.keepRest(msg, true)
	} else if msg.own {
		m.pushOwnFrontLocked(s, msg)
	} else {
		m.ready.pushFront(msg)
		if w := m.waiters.follower(); w != nil {
			w.signal() // it finds the message in the queue
		}
	}
	return n, len(msg.b), nil
}

func (m *Mux) recvLocked(s *Socket, out []Message, mode rxMode) (int, error) {
	tried := false // a non-blocking receive reads the psock once
	for {
		if s.closed() {
			m.wakeFollowerLocked()
			return 0, ErrClosed
		}
		dl := s.readDeadline()
		if !dl.IsZero() && !time.Now().Before(dl) {
			m.wakeFollowerLocked()
			return 0, os.ErrDeadlineExceeded
		}
		if s.hasKept {
			out[0] = s.takeKept()
			m.wakeFollowerLocked() // in case it was woken for a queued message
			return 1, nil
		}
		if !s.disabled {
			if s.aff != nil && s.aff.own.len() > 0 {
				return m.popOwnLocked(s, out), nil
			}
			if m.ready.len() > 0 {
				n := m.popReadyLocked(out)
				m.wakeFollowerLocked()
				return n, nil
			}
			if p := m.leadableLocked(); p != nil && !tried {
				p.rx, p.leader = rxLed, s
				n, err := m.lead(p, s, out, mode)
				if n > 0 {
					return n, nil
				}
				tried = err == ErrWouldBlock
				continue
			}
		} else {
			m.wakeFollowerLocked() // it may have been woken for a message
		}
		if mode.dontWait {
			if !tried && !s.disabled {
				tried = true
				if m.pollLocked(s) {
					continue
				}
			}
			m.watchAllLocked()
			return 0, ErrWouldBlock
		}
		w := s.getWaiter()
		w.peek, w.limit, w.partial = mode.peek, mode.limit, mode.partial
		m.waiters.push(w)
		m.watchAllLocked()
		m.mu.Unlock()
		w.wait(dl)
		m.mu.Lock()
		m.waiters.remove(w)
		msg, p := w.msg, w.lead
		w.msg, w.lead = Message{}, nil
		s.putWaiter(w)
		if msg.b != nil {
			out[0] = msg
			return 1, nil
		}
		if p != nil && (m.ready.len() > 0 || s.hasKept || s.disabled || s.closed()) {
			// A message was put back (peeked) meanwhile: it goes first; or
			// the socket stopped receiving: someone else leads.
			m.releaseReadLocked(p)
			continue
		}
		if p != nil {
			mode.dontWait = false
			if n, _ := m.lead(p, s, out, mode); n > 0 {
				return n, nil
			}
		}
	}
}

// fastLeadLocked returns the psock s may lead right away when nothing
// else needs a look: the lone idle psock, with no queued message, no kept
// piece of one and no deadline.
func (m *Mux) fastLeadLocked(s *Socket) *Psock {
	if s.rdlSet || s.hasKept || s.disabled || s.closed() || m.ready.size > 0 {
		return nil
	}
	return m.leadableLocked()
}

// recvFast receives one message for s the short way: when the mux's lone
// psock can be led at once, the reads need no deadline, and the message
// fits in dst. It copies the message into dst, or with lent set lends it
// there. ok is false when no message was taken: the general path must
// serve the call (the psock may have failed meanwhile, which it sees).
//
// It exists for its stack. The frames above a read that waits are cold
// memory when the wait ends (the goroutine may wake on the other CPU),
// and each line of them costs a miss, so this path keeps them few and
// small: Recv, recvFast, then the connection's Read.
func (m *Mux) recvFast(s *Socket, dst []byte, lent *Message) (n int, ok bool) {
	m.mu.Lock()
	p := m.fastLeadLocked(s)
	if p == nil {
		m.mu.Unlock()
		return 0, false
	}
	p.rx, p.leader = rxLed, s
	m.mu.Unlock()
	sp := &p.sp
	fresh, room := 0, 0 // bytes of the last read and its space, when it began on an empty buffer
	for {
		size, err := sp.complete()
		if size > 0 {
			if lent == nil && size > len(dst) {
				m.endLead(p, nil) // truncated or kept in part: the general path
				return 0, false
			}
			if fresh > 0 && sp.direct == 0 && size < len(dst) {
				sp.predict(size, fresh, room)
			}
			b := sp.consume(size)
			if lent != nil {
				sp.take(lent, p, b)
			} else {
				// Copied before the psock is let go: no reference needed.
				copy(dst, b)
				sp.carved.add(1, size)
			}
			n = size
			break
		}
		if err == nil {
			if !p.plainRead() {
				m.endLead(p, nil)
				return 0, false
			}
			var rn int
			if lent == nil && sp.directInto(dst) {
				// Request/response traffic: read the reply where the
				// caller wants it, without the psock's buffer. No more
				// than the psock's buffer would take: what the read
				// brings beyond the message stays in the psock, and the
				// rest of the stream must stay with the connection (flow
				// control, Config.RecvBuffer).
				into := dst[:min(len(dst), sp.readSize())]
				rn, err = p.conn.Read(into)
				if rn > 0 {
					m.touchAfterRead(s, p, false)
					if err != nil {
						p.pending, p.pendingErr = true, err
					}
					if n = p.takeDirectRead(dst, rn, len(into)); n > 0 {
						break
					}
					continue
				}
			} else {
				empty := sp.start == sp.end
				space := sp.space()
				rn, err = p.conn.Read(space)
				if rn > 0 {
					m.touchAfterRead(s, p, lent != nil)
					p.commitRead(rn, err)
					fresh, room = 0, len(space)
					if empty {
						fresh = rn
					}
					continue
				}
			}
			if err == nil {
				continue
			}
			err = p.plainReadErr(err)
		}
		m.endLead(p, err)
		return 0, false
	}
	m.mu.Lock()
	if s.hasKept {
		m.yieldFastLocked(s, p, dst, n, lent)
		return 0, false
	}
	if m.waiters.head != nil {
		m.shareLocked(p)
	}
	m.releaseReadLocked(p)
	s.stats.rx.add(1, n)
	m.mu.Unlock()
	return n, true
}

// yieldFastLocked is recvFast's end when another call on s was handed part
// of a message while it read (a psock attached meanwhile): as in lead, that
// rest comes first and the message read goes to the queue
// (queueFirstLocked), for the general path to return them in turn. A
// copied message gets bytes of its own: the general path reuses dst. It
// lets go of p and of m.mu.
func (m *Mux) yieldFastLocked(s *Socket, p *Psock, dst []byte, n int, lent *Message) {
	var mine Message
	if lent != nil {
		mine, *lent = *lent, Message{}
	} else {
		mine.lend(append([]byte(nil), dst[:n]...), nil, p)
	}
	m.queueFirstLocked([]Message{mine})
	if m.waiters.head != nil {
		m.shareLocked(p)
	}
	m.releaseReadLocked(p)
	m.mu.Unlock()
}

// queueFirstLocked puts msgs, which a read for a socket brought while
// another call on that socket was handed part of a message, at the head of
// the shared queue, in order, and empties them: the socket's calls take
// the rest they keep first, and any socket may take msgs, as any queued
// message. No message of their psock can be queued before them: a lead
// starts only on an empty queue.
func (m *Mux) queueFirstLocked(msgs []Message) {
	for i := len(msgs) - 1; i >= 0; i-- {
		m.ready.pushFront(msgs[i])
		msgs[i] = Message{}
	}
	m.wakeFollowerLocked()
}

// touchAfterRead starts loading the lines the rest of a receive and the
// next send touch, as soon as a read returns, so that their misses overlap.
func (m *Mux) touchAfterRead(s *Socket, p *Psock, lend bool) {
	m.txOne.Load()
	s.state.Load()
	p.intr.Load()
	p.tx.stopped.Load()
	if lend {
		p.sp.buf.refs.Load() // for the message's Release
	}
}

// endLead lets go of a psock a fast receive led, after err if not nil.
func (m *Mux) endLead(p *Psock, err error) {
	m.mu.Lock()
	if err != nil {
		m.readFailedLocked(p, err)
	} else {
		m.releaseReadLocked(p)
	}
	m.mu.Unlock()
}

// popReadyLocked moves up to len(out) queued messages to out.
func (m *Mux) popReadyLocked(out []Message) int {
	n := 0
	for n < len(out) && m.ready.len() > 0 {
		out[n] = m.ready.pop()
		n++
	}
	m.resumeIfRoomLocked()
	return n
}

// fullLocked reports whether the queued messages fill the receive buffer:
// their bytes reach Config.RecvBuffer, or their number maxQueued, which
// bounds their bookkeeping alike (msgCost each) when they are small.
func (m *Mux) fullLocked() bool {
	return m.ready.bytes+m.ownBytes >= m.cfg.RecvBuffer || m.queuedMsgsLocked() >= m.maxQueued
}

// queuedMsgsLocked returns how many messages wait in the shared queue and
// the sockets' own queues.
func (m *Mux) queuedMsgsLocked() int { return m.ready.size + m.ownMsgs }

// minMaxQueued is the fewest messages a receive buffer holds, however
// small: tiny buffers are bounded by their bytes.
const minMaxQueued = 1024

// resumeIfRoomLocked restarts paused psocks once the queued messages take
// less than half the receive buffer.
func (m *Mux) resumeIfRoomLocked() {
	if m.nPaused > 0 && m.ready.bytes+m.ownBytes < m.cfg.RecvBuffer/2 && m.queuedMsgsLocked() < m.maxQueued/2 {
		m.resumeLocked()
	}
}

// resumeLocked restarts reading on psocks paused by a full queue.
func (m *Mux) resumeLocked() {
	for _, p := range m.psocks {
		if p.rx == rxPaused {
			m.nPaused--
			m.startReaderLocked(p)
		}
	}
}

// leadableLocked returns the mux's only receiving psock if nobody reads it.
func (m *Mux) leadableLocked() *Psock {
	if m.rxActive != 1 || m.affine {
		return nil
	}
	p := m.rxOne
	if p == nil || p.gone || p.unattaching {
		// The cached psock left: find the one that remains. (Caching it
		// spares the data path a look at the psock list's memory.)
		for _, q := range m.psocks {
			if !q.unattaching {
				p = q
				break
			}
		}
		m.rxOne = p
	}
	if p == nil || p.rx != rxIdle {
		return nil
	}
	return p
}

// watchAllLocked makes sure every psock is read while receivers wait.
func (m *Mux) watchAllLocked() {
	for _, p := range m.psocks {
		if p.rx == rxIdle {
			m.startReaderLocked(p)
		}
	}
}

func (m *Mux) startReaderLocked(p *Psock) {
	p.rx = rxBg
	p.parked.Store(false)
	m.wg.Add(1)
	go m.background(p)
}

// lead reads p for receiver s until s has at least one message. It is
// called and returns with m.mu held, p.rx == rxLed on entry. It returns 0
// when s must look at the mux again (p failed, was interrupted, or s's
// deadline passed), with ErrWouldBlock when noWait found nothing to read.
func (m *Mux) lead(p *Psock, s *Socket, out []Message, mode rxMode) (int, error) {
	sdl := s.readDeadline()
	p.noWait = mode.dontWait
	m.mu.Unlock()
	for {
		msg, ok, err := p.sp.next(p)
		if ok {
			out[0] = msg
			n := 1 + p.sp.nextBatch(p, out[1:])
			m.mu.Lock()
			p.noWait = false
			if s.hasKept {
				// Another call on s was handed part of a message while this
				// one read (a psock attached meanwhile): that rest comes
				// first, also for a peek (it is what the next receive gets),
				// and the messages read go to the queue.
				m.queueFirstLocked(out[:n])
				out[0], n = s.takeKept(), 1
			}
			if mode.partial && len(out[0].b) > mode.limit {
				out[0] = m.splitLocked(s, out[0], mode.limit) // before sharing
			}
			if !mode.peek { // a peeked message stays first in line
				m.shareLocked(p)
			}
			m.releaseReadLocked(p)
			return n, nil
		}
		if err == nil {
			if err = p.waitRead(sdl, true); err == nil {
				continue
			}
		}
		m.mu.Lock()
		m.readFailedLocked(p, err)
		if err == ErrWouldBlock {
			return 0, err
		}
		return 0, nil
	}
}

// pollLocked serves a non-blocking receive of s that found nothing
// queued: it reads, without waiting, the psocks that can be read so (TCP
// and Unix), and delivers what they bring, so that a message whose bytes
// arrived before the call is received, as the kernel, which parses on
// arrival, would. A psock's background reader that is busy, or waits
// although bytes arrived, is asked to let go first (it delivers what it
// read); one that waits with nothing to read is left alone. It reports
// whether it let go of m.mu (it read or waited), after which the receive
// must look at the mux again. Called and returns with m.mu held.
func (m *Mux) pollLocked(s *Socket) bool {
	// m.mu is let go below, and the list may change meanwhile (a psock
	// that leaves moves the next ones up): a copy, made then, is walked.
	ps, unlocked := m.psocks, false
	for i := 0; i < len(ps); i++ {
		p := ps[i]
		if p.raw == nil || p.gone || p.unattaching {
			continue
		}
		if p.rx == rxBg {
			// Peek first: a reader seen waiting after it has read no
			// byte since, so what arrived before the call is still there.
			if !p.readable() && p.parked.Load() {
				continue
			}
			if !unlocked {
				ps, unlocked = slices.Clone(ps), true
			}
			if p.rxWait == nil {
				p.rxWait = make(chan struct{})
			}
			ch := p.rxWait
			m.interruptLocked(p)
			m.mu.Unlock()
			<-ch
			m.mu.Lock()
			// The reader delivered what it had read, maybe to s (and s
			// may have closed): the call looks again, whoever reads next.
			if s.closed() || p.gone || p.unattaching {
				continue
			}
		}
		if p.rx != rxIdle {
			continue // paused, or read again (receives wait): not ours
		}
		if !unlocked {
			ps, unlocked = slices.Clone(ps), true
		}
		p.rx, p.leader, p.noWait = rxLed, s, true
		m.mu.Unlock()
		m.readAndDeliver(p, true)
	}
	return unlocked
}

// background is the goroutine that reads p when no receiver does.
func (m *Mux) background(p *Psock) {
	defer m.wg.Done()
	if p.hs != nil && !m.handshake(p) {
		return
	}
	m.readAndDeliver(p, false)
	m.mu.Unlock()
}

// handshake makes p's handshake, for its first background reader, before
// any read (see handshaker). Interrupts meanwhile set no deadline: the
// reader lets go once the handshake is done; an Unattach cancels it. It
// reports whether the reader goes on reading; when not, it let go of p
// (or p failed).
func (m *Mux) handshake(p *Psock) bool {
	err := p.hs.HandshakeContext(p.hsCtx) // set before the reader started
	m.mu.Lock()
	p.hsCancel()
	p.hs, p.hsCtx, p.hsCancel = nil, nil, nil
	p.hsFailed = err != nil
	var rerr error
	switch {
	case err != nil:
		rerr = fmt.Errorf("handshake: %w", err)
	case p.intr.Load():
		rerr = errInterrupted
	}
	if rerr != nil {
		m.readFailedLocked(p, rerr)
	}
	// After a failure, which stopped the transmit side: no sender may
	// claim it in between.
	m.handshakeDoneTxLocked(p, err == nil)
	m.mu.Unlock()
	return rerr == nil
}

// readAndDeliver reads p and delivers each message it brings, for its
// background reader or, with poll, for a non-blocking receive (p.noWait is
// set: the read ends where it would block). It is called without m.mu and
// returns with it held, p let go (see readerDoneLocked) or failed.
func (m *Mux) readAndDeliver(p *Psock, poll bool) {
	polled := 0 // bytes a poll delivered
	for {
		msg, ok, err := p.sp.next(p)
		if ok {
			polled += msg.Len()
			m.mu.Lock()
			p.publishRxLocked()
			handed := m.deliverLocked(msg)
			if p.intr.Load() || p.gone || p.unattaching || m.readerDoneLocked(handed, poll, polled) {
				p.noWait = false
				m.releaseReadLocked(p)
				return
			}
			m.mu.Unlock()
			continue
		}
		if err == nil {
			if err = p.waitRead(time.Time{}, poll); err == nil {
				continue
			}
		}
		m.mu.Lock()
		m.readFailedLocked(p, err) // ErrWouldBlock only ends a poll
		return
	}
}

// readerDoneLocked reports whether a reader that just delivered a message
// (handed to a receiver, or queued) must let go of its psock, besides
// being interrupted: when the queue is full (a background reader only once
// no receiver waits to empty it), and, for a background reader, when a
// receiver took the message and none waits, so that the next one leads.
// A poll also ends once it has delivered polled bytes as many as the queue
// holds: the receivers it hands messages to could otherwise keep it
// reading a fast peer, and a non-blocking call, for as long as the peer
// sends.
func (m *Mux) readerDoneLocked(handed, poll bool, polled int) bool {
	full := m.fullLocked()
	if poll {
		return full || polled >= m.cfg.RecvBuffer
	}
	return m.waiters.follower() == nil && (full || handed && m.rxActive == 1 && !m.affine)
}

// publishRxLocked moves the counts of messages its reader carved into the
// psock's counters; the reader calls it with mux.mu held, before any of the
// messages can reach the application.
func (p *Psock) publishRxLocked() {
	p.rxCount.add(int(p.sp.carved.msgs), int(p.sp.carved.bytes))
	p.sp.carved = msgCount{}
}

// deliverLocked hands msg to the socket Config.Affinity names, to the
// first follower, or queues it.
func (m *Mux) deliverLocked(msg Message) (handed bool) {
	if m.closed {
		msg.Release() // no socket can ever take it
		m.stats.rxReadyDrops.Add(1)
		return false
	}
	if m.affine {
		msg.seq = m.seq
		m.seq++
		if m.steerLocked(msg) {
			return true
		}
	}
	return m.deliverAnyLocked(msg)
}

// deliverAnyLocked hands msg to the first follower, or queues it.
func (m *Mux) deliverAnyLocked(msg Message) (handed bool) {
	if w := m.waiters.follower(); w != nil {
		m.waiters.remove(w)
		if w.peek || m.ready.len() > 0 || w.s.hasKept || (w.s.aff != nil && w.s.aff.own.len() > 0) {
			// Messages queued earlier go first, and a peek must find the
			// message where everyone else would: in the queue, so nothing
			// later can overtake it.
			m.ready.push(msg)
			w.signal()
			return false
		}
		m.handLocked(w, msg)
		return true
	}
	m.ready.push(msg)
	return false
}

// wakeFollowerLocked wakes the first follower when messages wait in the
// queue. A receive woken for a message may end without it (its deadline
// passed, its socket closed or stopped receiving) or take another one
// (affinity), and the wake-up must not end with it.
func (m *Mux) wakeFollowerLocked() {
	if m.ready.len() > 0 {
		if w := m.waiters.follower(); w != nil {
			w.signal()
		}
	}
}

// wakeSocketLocked wakes the receive calls waiting on s.
func (m *Mux) wakeSocketLocked(s *Socket) {
	if s.aff != nil {
		for _, w := range s.aff.ws {
			w.signal()
		}
		return
	}
	m.waiters.wakeSocket(s)
}

// shareLocked gives followers the complete messages a leader has buffered
// beyond its own.
func (m *Mux) shareLocked(p *Psock) {
	for {
		w := m.waiters.follower()
		if w == nil || w.peek || m.ready.len() > 0 || w.s.hasKept {
			return // a peek waits for the lead; queued messages and kept rests go first
		}
		msg, ok, _ := p.sp.next(p)
		if !ok {
			return
		}
		m.handLocked(w, msg)
	}
}

// waitRead reads more of p's stream. sdl is the receiving socket's
// deadline. It returns errInterrupted when the reader must let go.
func (p *Psock) waitRead(sdl time.Time, keep bool) error {
	if p.intr.Load() {
		return errInterrupted
	}
	asm := p.sp.deadline()
	if !asm.IsZero() && !time.Now().Before(asm) {
		// The deadline passed while nobody read the psock: what already
		// arrived counts, so take it in before judging.
		return p.lateRead(keep)
	}
	dl := earliest(sdl, asm)
	if !p.rdlValid || p.rdlSet || !dl.IsZero() {
		if err := p.setReadDeadline(dl); err != nil {
			return err
		}
		if p.intr.Load() {
			return errInterrupted
		}
	}
	err := p.fill(keep)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if p.intr.Load() {
		return errInterrupted
	}
	now := time.Now()
	if !asm.IsZero() && !now.Before(asm) {
		return p.lateRead(keep)
	}
	if !sdl.IsZero() && !now.Before(sdl) {
		return errInterrupted // the receiver's deadline: it reports the timeout
	}
	if !p.rdlSet {
		return err // not the mux's deadline: see plainReadErr
	}
	return nil
}

// plainReadErr sorts out the error of a plain read (no deadline of its
// own): errInterrupted, or the error. A timeout without an interrupt is
// the connection's own, which may repeat on every read (a tls.Conn whose
// handshake timed out): reading again would spin, so the psock fails.
func (p *Psock) plainReadErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && p.intr.Load() {
		return errInterrupted
	}
	return err
}

// plainRead reports whether the next read needs none of the deadline,
// pending-error and non-blocking handling.
func (p *Psock) plainRead() bool {
	return !p.intr.Load() && !p.sp.timed && p.rdlValid && !p.rdlSet && !p.pending && !p.noWait
}

// lateRead reads, without waiting, the bytes that arrived after the
// assembly deadline passed unread; with none, the message timed out.
// Connections without a raw descriptor cannot be read without blocking.
func (p *Psock) lateRead(keep bool) error {
	if p.raw != nil {
		if err := p.setReadDeadline(time.Time{}); err != nil {
			return err
		}
		if p.intr.Load() {
			return errInterrupted
		}
		err := p.fillNow(keep)
		if errors.Is(err, os.ErrDeadlineExceeded) && p.intr.Load() {
			return errInterrupted
		}
		if err != ErrWouldBlock {
			return err
		}
	}
	p.stats.msgTimeouts.Add(1)
	return fmt.Errorf("%w after %v", ErrMessageTimeout, p.sp.timeout)
}

// setReadDeadline sets dl on the connection unless it is set already.
func (p *Psock) setReadDeadline(dl time.Time) error {
	if p.rdlValid && dl.Equal(p.rdl) {
		return nil
	}
	if err := p.conn.SetReadDeadline(dl); err != nil {
		return err
	}
	p.rdl, p.rdlValid, p.rdlSet = dl, true, !dl.IsZero()
	return nil
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// readFailedLocked handles a reader's error: an interrupt just ends the
// read session; anything else makes the psock fail.
func (m *Mux) readFailedLocked(p *Psock, err error) {
	p.noWait = false
	p.publishRxLocked() // before a failure moves the counters to the mux
	if err != errInterrupted && err != ErrWouldBlock && !p.gone && !p.unattaching {
		switch {
		case err == io.EOF && p.sp.buffered() > 0:
			err = io.ErrUnexpectedEOF
		case err == io.EOF:
		case errors.Is(err, ErrParse), errors.Is(err, ErrMessageTimeout),
			errors.Is(err, ErrMessageTooBig), errors.Is(err, ErrBadLength):
			err = fmt.Errorf("kcm: psock %d: %w", p.index, err)
		default:
			err = fmt.Errorf("kcm: psock %d: read: %w", p.index, err)
		}
		m.failLocked(p, err)
	}
	m.releaseReadLocked(p)
}

// releaseReadLocked ends a read session on p and decides who reads next.
func (m *Mux) releaseReadLocked(p *Psock) {
	p.leader = nil
	p.releases++
	p.publishRxLocked()
	if p.intr.Load() {
		p.intr.Store(false)
		p.rdlValid = false // the interrupt moved the connection's deadline
	}
	if p.rxWait != nil {
		close(p.rxWait)
		p.rxWait = nil
	}
	if p.gone || p.unattaching {
		p.rx = rxStopped
		if p.gone {
			m.salvageLocked(p) // see failTxLocked
			p.sp.takeRest()
		}
		return
	}
	p.rx = rxIdle
	if w := m.waiters.follower(); w != nil {
		if m.rxActive == 1 && !m.affine {
			m.waiters.remove(w)
			p.rx, p.leader = rxLed, w.s
			w.lead = p
			w.signal()
			return
		}
		m.startReaderLocked(p)
		return
	}
	if m.ready.size > 0 && m.fullLocked() {
		p.rx = rxPaused
		m.nPaused++
		return
	}
	m.armGraceLocked(p)
}

// armGraceLocked starts the grace timer of an idle psock.
func (m *Mux) armGraceLocked(p *Psock) {
	// A message being assembled must be looked at again by its deadline,
	// also when the timer is already armed for later.
	dl := p.sp.deadline()
	if p.graceArmed && (dl.IsZero() || dl.UnixNano() >= p.graceAt) {
		return
	}
	p.graceArmed = true
	p.graceGen = p.releases
	if p.graceDelay == 0 {
		p.graceDelay = graceMin
	}
	now := time.Now()
	at := now.Add(p.graceDelay)
	if !dl.IsZero() && dl.Before(at) {
		at = dl
	}
	d := max(at.Sub(now), 0)
	p.graceAt = at.UnixNano()
	if p.grace == nil {
		p.grace = time.AfterFunc(d, func() { m.graceExpired(p) })
	} else {
		p.grace.Reset(d)
	}
}

// graceExpired starts a background reader on a psock that stayed unread,
// unless receivers kept using it, in which case it waits another period.
func (m *Mux) graceExpired(p *Psock) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !p.graceArmed || p.gone || p.unattaching || m.closed {
		return
	}
	p.graceArmed = false
	switch {
	case p.rx == rxLed:
		// A receiver is reading right now: the next release arms the timer
		// again, for longer. Without the doubling here a psock whose
		// receiver mostly waits in a read would wake every graceMin. (Not
		// re-armed from here: the reader owns the assembly state that
		// bounds the delay.)
		p.graceDelay = min(2*p.graceDelay, graceMax)
		return
	case p.rx != rxIdle:
		return
	case p.releases != p.graceGen:
		// Receivers keep coming back: look less often.
		p.graceDelay = min(2*p.graceDelay, graceMax)
		m.armGraceLocked(p)
		return
	}
	p.graceDelay = graceMin
	m.startReaderLocked(p)
}

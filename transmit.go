package kcm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The transmit path. A sender that finds its psock idle writes its message
// itself, with no copy and no handoff. Senders that find it busy append
// their message to the psock's queue (small messages are copied and the
// sender returns; large ones, or any once the send buffer is full, wait
// uncopied), and the writing goroutine flushes the whole queue in one
// writev before it lets go. A message is never interleaved with another:
// each psock has at most one writer.

const (
	// copyLimit is the largest message copied into a queue; a larger one
	// waits for its turn uncopied.
	copyLimit = 64 << 10
	// flushBudget bounds how much of other senders' data a sender writes
	// before a goroutine takes over, so no caller is held hostage.
	flushBudget = 1 << 20
	// coalesceLimit is the batch size up to which a batch of small messages
	// is copied into one buffer and written with one write.
	coalesceLimit = 64 << 10
)

// errRetry tells a waiting sender its message must go to another psock.
var errRetry = errors.New("kcm: retry on another psock")

// errLeaving tells a writer whose socket's deadline stopped its write that
// the psock is leaving meanwhile: the write fails as any other.
var errLeaving = errors.New("kcm: psock leaving")

// errRestart tells a waiting sender its psock failed before writing its
// message, which must go out again on another one (a retry, in TxRetries,
// once it does).
var errRestart = errors.New("kcm: restart on another psock")

// txEntry is one queued message.
type txEntry struct {
	off, n int       // the message is cbuf[off:off+n], unless ext is set
	ext    []byte    // the message, outside cbuf
	w      *txWaiter // the sender waiting for ext to be written, if any
	owned  bool      // the mux holds the bytes: they count in the send buffer
	pinned bool      // sent with SendTo: this psock or none
	s      *Socket   // the sending socket; nil for retried messages
}

func (e *txEntry) bytes(cbuf []byte) []byte {
	if e.ext != nil {
		return e.ext
	}
	return cbuf[e.off : e.off+e.n]
}

// expiredWaiter reports whether e's sender waits for it, uncopied, past
// its socket's write deadline.
func (e *txEntry) expiredWaiter() bool {
	return e.w != nil && e.s != nil && e.s.writeExpired()
}

// size is the message's length.
func (e *txEntry) size() int {
	if e.ext != nil {
		return len(e.ext)
	}
	return e.n
}

// txWaiter is a sender waiting for its uncopied message to be written.
type txWaiter struct {
	done chan error
	// taken: a writer has it, it can no longer be withdrawn. Atomic: a
	// backlog sender reads it under mux.mu, a psock's writer sets it under
	// its transmit lock.
	taken atomic.Bool
	timer *time.Timer
	// p is the psock whose queue holds it (nil in the backlog); atomic:
	// the backlog's flush sets it while its sender waits.
	p atomic.Pointer[Psock]
}

// wait blocks until the message is written or must be retried. While it
// is still queued, the socket's closing or the passing of its write
// deadline (which may change meanwhile) withdraws it: withdraw is called
// under mu to take it out. A message waiting in psock from's queue also
// moves, with errRetry, when another psock of m goes idle (from is nil for
// the backlog, which has nowhere to move to).
func (w *txWaiter) wait(s *Socket, mu *sync.Mutex, withdraw func() bool, m *Mux, from *Psock) error {
	for {
		sig := s.txSignal()
		var idle <-chan struct{}
		if from != nil {
			idle = m.txIdleSignal()
		}
		var give error
		dl := s.writeDeadline()
		switch {
		case s.closed():
			give = ErrClosed
		case !dl.IsZero() && !time.Now().Before(dl):
			give = os.ErrDeadlineExceeded
		}
		if give != nil {
			mu.Lock()
			if !w.taken.Load() && withdraw() {
				mu.Unlock()
				return give
			}
			mu.Unlock()
			p := w.p.Load()
			if give != os.ErrDeadlineExceeded || p == nil {
				return <-w.done // being written: it goes out whole
			}
			p.tx.kickTaken(m, p, w)
			// A kick may come to nothing (the deadline moved meanwhile, a
			// TLS write): look again at the next change of the deadline.
			select {
			case err := <-w.done:
				return err
			case <-sig:
				continue
			}
		}
		if from != nil && m.idleElsewhere(from) {
			// Another psock has nothing to write while this message waits
			// (perhaps behind a peer that stopped reading): move there.
			mu.Lock()
			if !w.taken.Load() && withdraw() {
				mu.Unlock()
				return errRetry
			}
			mu.Unlock()
		}
		var timeout <-chan time.Time
		if !dl.IsZero() {
			if w.timer == nil {
				w.timer = time.NewTimer(time.Until(dl))
			} else {
				w.timer.Reset(time.Until(dl))
			}
			timeout = w.timer.C
		}
		select {
		case err := <-w.done:
			if w.timer != nil {
				w.timer.Stop()
			}
			return err
		case <-timeout:
		case <-sig:
		case <-idle:
		}
	}
}

// txIdleSignal returns a channel closed at the next noteTxIdle.
func (m *Mux) txIdleSignal() <-chan struct{} {
	m.idleMu.Lock()
	defer m.idleMu.Unlock()
	if m.idleCh == nil {
		m.idleCh = make(chan struct{})
	}
	return m.idleCh
}

// noteTxIdle wakes the senders waiting in psock queues, if any, when p
// (nil: a psock just attached) has nothing to write, so that they can move
// to it.
func (m *Mux) noteTxIdle(p *Psock) {
	if m.txWaiting.Load() == 0 || (p != nil && p.tx.load.Load() != 0) {
		return
	}
	m.idleMu.Lock()
	defer m.idleMu.Unlock()
	if m.idleCh != nil {
		close(m.idleCh)
		m.idleCh = nil
	}
}

// idleElsewhere reports whether a psock other than p takes new messages
// and has nothing queued or being written.
func (m *Mux) idleElsewhere(p *Psock) bool {
	for _, q := range *m.txps.Load() {
		if q != p && q.tx.load.Load() == 0 {
			return true
		}
	}
	return false
}

var txWaiterPool = sync.Pool{New: func() any { return &txWaiter{done: make(chan error, 1)} }}

func getTxWaiter() *txWaiter {
	w := txWaiterPool.Get().(*txWaiter)
	w.taken.Store(false)
	w.p.Store(nil)
	return w
}

// txState is a psock's transmit side.
type txState struct {
	// Hot: the first cache line is all a message sent on an idle psock
	// needs.
	mu      sync.Mutex
	writing bool // a goroutine is writing; only it may write
	// closeKicked: a socket's close set the write deadline in the past to
	// stop the writer; the writer restores it.
	closeKicked bool
	hasSent     bool // sent is not zero (spares the writer a look at it)
	waitIdle    bool // idle is set
	// stopped: the psock is leaving, nothing more is written. Written
	// under mu; atomic so that a receive may load this line early, ahead
	// of the send that usually follows it.
	stopped atomic.Bool
	writer  *Socket   // the socket writing its own message, if any
	count   msgCount  // messages written, guarded by mu
	q       []txEntry // messages waiting for the writer

	cut   bool      // a write stopped in the middle of a message
	cutAt int       // bytes written of the message a batch write stopped in; the writer's
	wtoAt time.Time // the WriteTimeout deadline armed last; mu
	// ownStop: the writer's own write stopped at its socket's deadline,
	// decided where the timeout was seen (the deadline may move before
	// ownTimedOut looks again); the writer's.
	ownStop bool
	// dlArmed: a socket's write deadline is on the connection, to be taken
	// off when its writer lets go (without WriteTimeout, which re-arms
	// every write); mu. Only a writer whose socket has a deadline can find
	// it set, so the idle path looks at that instead, on a line it has.
	dlArmed  bool
	timed    bool      // writes have a deadline: see armWrite
	inflight []txEntry // the queue a writer is writing; guarded by mu
	// flusher is the socket whose send, its own message written, goes on
	// writing what others queued meanwhile (nil for a goroutine of the
	// mux's); mu. Its Close lets the send go: see dropSocketLocked.
	flusher *Socket
	// flusherKicked: the flusher's socket closed and interrupted its
	// write, which a goroutine of the mux's finishes (finishKicked); mu.
	flusherKicked bool
	sent          msgCount      // written by the current writer from its own batch, not yet in count
	idle          chan struct{} // closed when the writer stops, for Unattach
	load          atomic.Int64  // bytes queued or being written, for psock choice

	cbuf     []byte
	spareQ   []txEntry
	spareBuf []byte
	iov      net.Buffers // writer's scratch
	wbuf     []byte
}

// publishSent moves the current writer's counts into the psock's; only the
// writer calls it.
func (t *txState) publishSent() {
	t.mu.Lock()
	t.count.add(int(t.sent.msgs), int(t.sent.bytes))
	t.sent, t.hasSent = msgCount{}, false
	t.mu.Unlock()
}

// claim makes s the psock's writer if it is idle and not leaving.
func (t *txState) claim(s *Socket) bool {
	t.mu.Lock()
	ok := !t.stopped.Load() && !t.writing
	if ok {
		t.writing, t.writer = true, s
	}
	t.mu.Unlock()
	return ok
}

func (t *txState) enqueueCopy(b []byte, s *Socket) {
	off := len(t.cbuf)
	t.cbuf = append(t.cbuf, b...)
	t.q = append(t.q, txEntry{off: off, n: len(b), owned: true, s: s})
	t.load.Add(int64(len(b)))
}

// withdraw removes w's entry from the queue; t.mu is held.
func (t *txState) withdraw(w *txWaiter) bool {
	for i := range t.q {
		if t.q[i].w == w {
			t.load.Add(-int64(len(t.q[i].ext)))
			t.q = append(t.q[:i], t.q[i+1:]...)
			return true
		}
	}
	return false
}

// transmit sends one message from s, retrying on other psocks until it
// is written or queued. restart says b already failed on a psock: it
// counts in TxRetries when it goes out again, not when it is dropped.
func (m *Mux) transmit(s *Socket, b []byte, restart bool) error {
	for {
		// Checked again on each retry: a message handed back by a failed
		// or closing write is dropped with its socket, or at its deadline.
		if err := s.givenUp(); err != nil {
			return err
		}
		p := m.pickTx(s)
		if p == nil {
			err := m.backlog.add(s, b)
			switch err {
			case errRetry:
				continue
			case errRestart:
				// A waiting sender's message went from the backlog to a
				// psock that failed before writing it.
				restart = true
				continue
			case nil:
				if restart {
					m.stats.txRetries.Add(1)
				}
			}
			return err
		}
		t := &p.tx
		t.mu.Lock()
		if t.stopped.Load() {
			t.mu.Unlock()
			if err := m.closedErr(); err != nil {
				return err
			}
			continue
		}
		if !t.writing {
			t.writing, t.writer = true, s
			t.mu.Unlock()
			if restart {
				m.stats.txRetries.Add(1)
			}
			var err error
			restart, err = m.writeOwn(p, s, b, false)
			m.noteTxIdle(p)
			if !restart {
				return err
			}
			continue
		}
		// A restarted message counts once it is queued (copied) or
		// written, not when its sender gives up waiting in the queue.
		switch err := m.queueLocked(p, s, b, false); err {
		case nil:
			if restart {
				m.stats.txRetries.Add(1)
			}
			return nil
		case errRestart:
			restart = true
		case errRetry:
		default:
			return err
		}
	}
}

// transmitTo sends one message from s on p and no other psock (SendTo).
func (m *Mux) transmitTo(s *Socket, p *Psock, b []byte) error {
	if p == nil || p.mux != m {
		return fmt.Errorf("%w: the psock is not one of the socket's mux", ErrNotAttached)
	}
	if err := s.givenUp(); err != nil {
		return err
	}
	t := &p.tx
	t.mu.Lock()
	if t.stopped.Load() {
		t.mu.Unlock()
		return m.pinnedErr(p)
	}
	if !t.writing {
		t.writing, t.writer = true, s
		t.mu.Unlock()
		failed, err := m.writeOwn(p, s, b, true)
		if failed {
			return m.pinnedErr(p)
		}
		return err
	}
	return m.queueLocked(p, s, b, true)
}

// transmitBatchTo is transmitBatch on psock p alone (SendBatchTo): an
// idle p gets msgs in one write, a busy one each in its queue, where its
// writer joins them with whatever else waits, until p goes idle and takes
// the rest in one write. It returns how many of msgs, from the first, were
// written or queued.
func (m *Mux) transmitBatchTo(s *Socket, p *Psock, msgs [][]byte) (int, error) {
	if p == nil || p.mux != m {
		return 0, fmt.Errorf("%w: the psock is not one of the socket's mux", ErrNotAttached)
	}
	if err := s.givenUp(); err != nil {
		return 0, err
	}
	for i := range msgs {
		if p.tx.claim(s) {
			done, err := m.writeBatchTo(s, p, msgs[i:])
			return i + done, err
		}
		if err := m.transmitTo(s, p, msgs[i]); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// writeBatchTo writes msgs on p, which s holds for writing, and lets go
// of it; as writeOwn, pinned: a failure is not restarted elsewhere.
func (m *Mux) writeBatchTo(s *Socket, p *Psock, msgs [][]byte) (int, error) {
	done, cut, err := p.writeBatch(msgs)
	if err == nil {
		m.flushQueued(p, msgCount{})
		return done, nil
	}
	if p.ownTimedOut(err) {
		if n, err := m.batchStopped(p, s, msgs, done, true); err != errLeaving {
			return n, err
		}
	}
	if err := m.ownWriteFailed(p, s, len(msgs)-done, cut, err); err != nil {
		return done, err
	}
	return done, m.pinnedErr(p)
}

// queueLocked queues b from s on p, which another goroutine writes, and
// lets go of p.tx.mu: a small message is copied and queueLocked returns;
// another one waits until it is written, fails, or must go elsewhere
// (errRetry; never for a pinned one).
func (m *Mux) queueLocked(p *Psock, s *Socket, b []byte, pinned bool) error {
	t := &p.tx
	if len(b) <= copyLimit && m.backlog.reserve(len(b)) {
		t.enqueueCopy(b, s)
		t.q[len(t.q)-1].pinned = pinned
		t.mu.Unlock()
		return nil
	}
	w := getTxWaiter()
	w.p.Store(p)
	t.q = append(t.q, txEntry{ext: b, w: w, s: s, pinned: pinned})
	t.load.Add(int64(len(b)))
	t.mu.Unlock()
	from := p // a waiting sender moves to a psock that goes idle
	if pinned {
		from = nil
	} else {
		m.txWaiting.Add(1)
		defer m.txWaiting.Add(-1)
	}
	err := w.wait(s, &t.mu, func() bool { return t.withdraw(w) }, m, from)
	txWaiterPool.Put(w)
	return err
}

// pinnedErr is the error of a message sent to p that p did not write.
func (m *Mux) pinnedErr(p *Psock) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return pinnedLostLocked(p)
}

// pinnedLostLocked is the error of a message sent to p, which left the mux
// without writing it; mux.mu is held.
func pinnedLostLocked(p *Psock) error {
	if p.err == nil {
		return fmt.Errorf("kcm: psock %d: %w: it left before the message was written", p.index, ErrNotAttached)
	}
	return fmt.Errorf("kcm: psock %d: %w: it failed before the message was written: %w", p.index, ErrNotAttached, p.err)
}

// sendIdle writes b when the socket's psock is the mux's only one and
// nobody writes it: the common case, in small stack frames (see recvFast).
// ok is false when transmit must send b; restart, when b failed on it.
func (m *Mux) sendIdle(s *Socket, b []byte) (ok, restart bool, err error) {
	p := m.txOne.Load()
	if p == nil || s.txp.Load() != p {
		return false, false, nil
	}
	if !p.tx.claim(s) {
		return false, false, nil
	}
	restart, err = m.writeOwn(p, s, b, false)
	return !restart, restart, err
}

// writeOwn writes the caller's message b on p, which the caller holds for
// writing, then flushes what others queued meanwhile and lets go. retry
// says the write failed and b must go out, whole, on another psock; or,
// pinned to p (SendTo), nowhere.
func (m *Mux) writeOwn(p *Psock, s *Socket, b []byte, pinned bool) (retry bool, err error) {
	// Counted in the psock's load while it is written, so that a write
	// stuck on a peer that stopped reading steers other messages away.
	p.tx.load.Add(int64(len(b)))
	var n int
	if p.tx.timed || s.wdl.Load() != 0 && p.raw != nil {
		n, err = p.writeTimed(b)
	} else {
		n, err = p.conn.Write(b) // inline: the send fast path gets no extra frame
		if err != nil {
			n, err = p.writeOn(b, n, err)
		}
	}
	p.tx.load.Add(-int64(len(b)))
	if n == len(b) {
		m.flushQueued(p, msgCount{1, uint64(len(b))})
		return false, nil
	}
	if err == nil {
		err = io.ErrShortWrite // see write
	}
	if p.ownTimedOut(err) {
		if err := m.ownStopped(p, s, b, n, pinned); err != errLeaving {
			return false, err
		}
	}
	err = m.ownWriteFailed(p, s, 1, n > 0, err)
	return err == nil, err
}

// The write deadline of a socket bounds the writes of its own messages on
// a TCP or Unix connection, which kcm writes itself and can tell how far
// a write got (elsewhere an interrupted write may have put bytes on the
// stream kcm cannot count, and it breaks TLS): see armWrite. A write it
// stops before the first byte of a message leaves the stream intact and
// the message unsent, and the call fails with os.ErrDeadlineExceeded. One
// it stops inside a message cannot be undone: the rest of that message is
// copied and written by a goroutine of the mux's, and the message counts
// as sent, as one a send copied into a queue does.

// ownTimedOut reports whether err is the writer's socket's write deadline
// stopping its own write, neither its Close nor the psock's leaving.
func (p *Psock) ownTimedOut(err error) bool {
	stop := p.tx.ownStop
	p.tx.ownStop = false
	return errors.Is(err, os.ErrDeadlineExceeded) && (stop || p.ownExpired()) && p.deadlineOnly()
}

// ownStopped ends a write of s's own messages that its socket's write
// deadline stopped n bytes into msg (n < len(msg)). It returns
// os.ErrDeadlineExceeded when msg is unsent. Else the message is copied
// and becomes a queue write already under way, which a goroutine of the
// mux's finishes from byte n (finishKicked): it is written whole, or, if
// the psock fails first, sent again from its first byte elsewhere (on p
// alone when pinned, SendTo's, and lost with p), and ownStopped returns
// nil.
func (m *Mux) ownStopped(p *Psock, s *Socket, msg []byte, n int, pinned bool) error {
	if n == 0 {
		m.flushQueued(p, msgCount{})
		return os.ErrDeadlineExceeded
	}
	buf := append([]byte(nil), msg...)
	t := &p.tx
	t.mu.Lock()
	if t.stopped.Load() {
		// Leaving since ownTimedOut (an Unattach, a failure, the mux's
		// Close): the write ends as theirs.
		t.mu.Unlock()
		return errLeaving
	}
	// Counted in the send buffer as any copied message (a retry moves it
	// as one).
	m.backlog.queued.Add(int64(len(buf)))
	q := []txEntry{{n: len(buf), s: s, pinned: pinned, owned: true}}
	t.load.Add(int64(len(buf)))
	t.writer, t.inflight = nil, q // a copy now: the socket's Close lets it go out
	// The deadline that stopped the write (perhaps one SetWriteDeadline put
	// there, not taken off: dlArmed), or a Close's since ownTimedOut,
	// would stop the copy's write too.
	t.closeKicked, t.flusherKicked, t.dlArmed = false, false, false
	p.conn.SetWriteDeadline(time.Time{})
	m.wg.Add(1) // under t.mu, as handKicked
	t.mu.Unlock()
	go m.finishKicked(p, q, buf, n)
	return nil
}

// ownWriteFailed ends a write of s's own messages on p that failed with
// err, unwritten of them not written whole (cut: the stream stopped inside
// one), and lets go of p. It returns ErrClosed when Socket.Close cut the
// write, the mux's error when it closed, or nil: p failed, and the
// unwritten messages are to go out on another psock, or, pinned to p
// (SendTo), nowhere. Pinned messages count in TxAborts as unpinned ones
// do: the mux's closing drops them uncounted, as requeueLocked does
// queued ones.
func (m *Mux) ownWriteFailed(p *Psock, s *Socket, unwritten int, cut bool, err error) error {
	if s.closed() {
		m.writeCutByClose(p, cut)
		m.flushQueued(p, msgCount{})
		return ErrClosed
	}
	m.writeFailed(p, err, cut, nil, nil)
	closedErr := m.countAborts(p, unwritten)
	m.flushQueued(p, msgCount{})
	return closedErr
}

// countAborts counts n of the writer's own messages that failed on p and
// are to go out again elsewhere (or, sent with SendTo, are lost), unless
// the mux closed (its error is returned). The writer calls it while it
// still writes p: once it lets go, an Unattach may fold p's counters into
// the mux's. TxRetries counts them when they do go out again: their sender
// may give up first (its socket closes, or its write deadline passes).
func (m *Mux) countAborts(p *Psock, n int) error {
	if err := m.closedErr(); err != nil {
		return err
	}
	p.stats.txAborts.Add(uint64(n))
	return nil
}

// transmitBatch writes msgs together on one psock when one is idle: small
// messages are coalesced into one write, others go in one writev. Each
// message stays atomic; a failure restarts the unwritten ones elsewhere.
// It returns how many of msgs, from the first, were written or queued: on
// an error, those before the one that failed.
func (m *Mux) transmitBatch(s *Socket, msgs [][]byte) (int, error) {
	total := len(msgs)
	restart := false // msgs failed on a psock
	for len(msgs) > 0 {
		if restart {
			// As in transmit: a failed batch is dropped with its socket,
			// or at its deadline.
			if err := s.givenUp(); err != nil {
				return total - len(msgs), err
			}
		}
		p := m.pickTx(s)
		if p == nil {
			break
		}
		if !p.tx.claim(s) {
			break
		}
		if restart {
			m.stats.txRetries.Add(uint64(len(msgs)))
			restart = false
		}
		done, cut, err := p.writeBatch(msgs)
		if err != nil && p.ownTimedOut(err) {
			if n, err := m.batchStopped(p, s, msgs, done, false); err != errLeaving {
				return total - len(msgs) + n, err
			}
		}
		msgs = msgs[done:]
		if err == nil {
			m.flushQueued(p, msgCount{})
			return total, nil
		}
		if err := m.ownWriteFailed(p, s, len(msgs), cut, err); err != nil {
			return total - len(msgs), err
		}
		restart = true
	}
	for i, b := range msgs {
		if err := m.transmit(s, b, restart); err != nil {
			return total - len(msgs) + i, err
		}
	}
	return total, nil
}

// writeBatch writes msgs on p, which the caller holds for writing. It
// returns how many messages were completely written, and whether the write
// stopped inside a message.
func (p *Psock) writeBatch(msgs [][]byte) (done int, cut bool, err error) {
	t := &p.tx
	total := 0
	for _, b := range msgs {
		total += len(b)
	}
	t.load.Add(int64(total)) // see writeOwn
	defer t.load.Add(-int64(total))
	var n int
	if total <= coalesceLimit && total/len(msgs) < 512 {
		t.wbuf = t.wbuf[:0]
		for _, b := range msgs {
			t.wbuf = append(t.wbuf, b...)
		}
		n, err = p.write(t.wbuf)
	} else {
		t.iov = append(t.iov[:0], msgs...)
		n, err = p.writev()
	}
	sent := 0
	for _, b := range msgs {
		if sent+len(b) > n {
			break
		}
		sent += len(b)
		done++
	}
	t.sent.add(done, sent)
	t.hasSent = true
	if err != nil && done == len(msgs) {
		err = nil
	}
	t.cutAt = n - sent // bytes of msgs[done] written: see batchStopped
	return done, n > sent, err
}

// batchStopped ends a writeBatch of msgs that its socket's write deadline
// stopped after done of them, as ownStopped: it returns how many of msgs
// are sent or copied, and os.ErrDeadlineExceeded when some are not.
// (A write error after every message leaves done == len(msgs) with no
// error from writeBatch, so msgs[done] exists here.)
func (m *Mux) batchStopped(p *Psock, s *Socket, msgs [][]byte, done int, pinned bool) (int, error) {
	if err := m.ownStopped(p, s, msgs[done], p.tx.cutAt, pinned); err != nil {
		return done, err
	}
	if done+1 < len(msgs) {
		return done + 1, os.ErrDeadlineExceeded
	}
	return done + 1, nil
}

// flushQueued counts done, the caller's own messages, writes what other
// senders queued while the caller wrote, then lets go of the psock. The
// caller holds p for writing.
func (m *Mux) flushQueued(p *Psock, done msgCount) {
	t := &p.tx
	t.mu.Lock()
	if len(t.q) == 0 && !t.closeKicked && !t.waitIdle && !t.hasSent && (t.writer == nil || t.writer.wdl.Load() == 0) {
		// Nothing else to do: let go here, in a small frame that touches
		// only the first line of the transmit state.
		t.count.add(int(done.msgs), int(done.bytes))
		t.writer, t.writing = nil, false
		t.mu.Unlock()
		return
	}
	m.flushQueuedLocked(p, done, flushBudget)
}

// flushQueuedLocked is flushQueued's general case; it is called with
// p.tx.mu held and returns without it. The caller writes at most budget
// bytes of the queue; a queue that would take it past that goes to a
// goroutine of its own, so that no sender is held hostage by others' data
// (and a closing socket is not kept waiting for it).
func (m *Mux) flushQueuedLocked(p *Psock, done msgCount, budget int) {
	t := &p.tx
	for {
		t.count.add(int(done.msgs+t.sent.msgs), int(done.bytes+t.sent.bytes))
		t.sent, t.hasSent, done = msgCount{}, false, msgCount{}
		if t.writer != nil {
			t.flusher = t.writer // its own message is written
		}
		t.writer = nil
		if t.dlArmed {
			// Its socket's deadline, which no other write must meet.
			t.dlArmed = false
			if !t.closeKicked && !t.stopped.Load() {
				p.conn.SetWriteDeadline(time.Time{})
			}
		}
		if t.closeKicked {
			// A socket's close interrupted a write (or meant to: it may
			// have ended first): undo its deadline.
			t.closeKicked, t.flusherKicked = false, false
			p.conn.SetWriteDeadline(time.Time{})
		}
		if t.stopped.Load() || len(t.q) == 0 {
			t.writing, t.flusher = false, nil
			if t.waitIdle {
				close(t.idle)
				t.idle, t.waitIdle = nil, false
			}
			t.mu.Unlock()
			m.noteTxIdle(p)
			return
		}
		if t.load.Load() > int64(budget) || t.flusher != nil && (t.flusher.closed() || t.flusher.hasWriteDeadline()) {
			// Others' data past the budget, or a caller whose socket
			// closed, or who set a deadline on its calls: a goroutine of
			// the mux's goes on.
			t.flusher = nil
			m.wg.Add(1) // under t.mu, not stopped: before the mux's Close can wait
			t.mu.Unlock()
			go m.flushInBackground(p)
			return
		}
		q, buf := t.takeQueueLocked(m, p)
		if len(q) == 0 {
			t.spareQ, t.spareBuf = q, buf[:0]
			continue
		}
		t.inflight = q
		t.mu.Unlock()
		n, err := p.writeQueue(q, buf)
		if err != nil && m.handKicked(p, q, buf, n) {
			return
		}
		budget -= n
		keep := m.completeQueue(p, q, buf, n, err)
		t.mu.Lock()
		t.queueWritten(q, buf, keep)
	}
}

// queueWritten ends the queue write q over buf, completed: both become
// the writer's spare (buf unless messages put back still use it); t.mu is
// held.
func (t *txState) queueWritten(q []txEntry, buf []byte, keep bool) {
	t.inflight = nil // before clear: a socket's close reads it
	clear(q)
	t.spareQ = q[:0]
	if !keep {
		t.spareBuf = buf[:0]
	}
}

// takeQueueLocked takes the queue for writing: its waiting senders can no
// longer withdraw, except those of sockets closed meanwhile, which are
// dropped here (their Close may have looked before the queue was taken).
func (t *txState) takeQueueLocked(m *Mux, p *Psock) ([]txEntry, []byte) {
	q, buf := t.q, t.cbuf
	t.q, t.cbuf = t.spareQ[:0], t.spareBuf[:0]
	t.spareQ, t.spareBuf = nil, nil
	kept := q[:0]
	for _, e := range q {
		if e.w != nil {
			if e.s != nil && e.s.closed() {
				m.finishEntry(p, &e, ErrClosed)
				continue
			}
			e.w.taken.Store(true)
		}
		kept = append(kept, e)
	}
	clear(q[len(kept):])
	return kept, buf
}

// handKicked hands the queue write q (over buf) that the flusher's
// socket interrupted, n bytes written, to a goroutine of the mux's that
// finishes it where it stopped: the stream is intact, and the messages
// are others', whose senders returned or wait for them. It reports
// whether the write was such.
func (m *Mux) handKicked(p *Psock, q []txEntry, buf []byte, n int) bool {
	t := &p.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	// Not when the psock is leaving (an Unattach, a failure, the mux's
	// Close: their deadline stays, and the write ends as theirs), which
	// is decided under t.mu: the goroutine is counted before Close can
	// wait for the mux's goroutines.
	if !t.flusherKicked || t.stopped.Load() {
		return false
	}
	t.closeKicked, t.flusherKicked, t.flusher = false, false, nil
	p.conn.SetWriteDeadline(time.Time{})
	m.copyExpired(q) // waiters past their deadline go, whoever kicked
	m.wg.Add(1)
	go m.finishKicked(p, q, buf, n)
	return true
}

// kickTaken lets go a sender whose write deadline passed while its
// uncopied message w can no longer be withdrawn. Still queued (it came
// from the backlog), the message is copied in place. Held by a queue
// write, on a TCP or Unix connection the write is interrupted, and
// handKicked copies the message, releases its sender with nil, and has a
// goroutine of the mux's finish the write where it stopped; elsewhere
// (TLS) the sender waits for the write.
func (t *txState) kickTaken(m *Mux, p *Psock, w *txWaiter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.q {
		if t.q[i].w == w {
			m.copyEntry(&t.q[i])
			return
		}
	}
	if p.raw == nil || !t.writing || t.closeKicked || t.stopped.Load() || !holdsWaiter(t.inflight, w) {
		return
	}
	t.closeKicked, t.flusherKicked = true, true
	p.conn.SetWriteDeadline(aLongTimeAgo)
}

// holdsWaiter reports whether q holds w's message.
func holdsWaiter(q []txEntry, w *txWaiter) bool {
	for i := range q {
		if q[i].w == w {
			return true
		}
	}
	return false
}

// copyExpired copies the messages of q whose senders wait uncopied past
// their socket's write deadline, and lets those senders go: the copies go
// out whole, counted in the send buffer as any copied message. p.tx.mu is
// held.
func (m *Mux) copyExpired(q []txEntry) {
	for i := range q {
		if e := &q[i]; e.expiredWaiter() {
			m.copyEntry(e)
		}
	}
}

// copyEntry makes e's waiting sender's message a copy the mux holds and
// lets the sender go with nil; its psock's tx.mu is held.
func (m *Mux) copyEntry(e *txEntry) {
	w := e.w
	e.ext, e.w, e.owned = bytes.Clone(e.ext), nil, true
	m.backlog.queued.Add(int64(len(e.ext)))
	w.done <- nil
}

// finishKicked writes the rest of the queue write q after its first n
// bytes, completes it, and goes on with the queue as flushInBackground.
func (m *Mux) finishKicked(p *Psock, q []txEntry, buf []byte, n int) {
	defer m.wg.Done()
	t := &p.tx
	whole := p.queueIOV(q, buf)
	t.iov = whole
	skip := n
	for len(t.iov) > 0 && skip >= len(t.iov[0]) {
		skip -= len(t.iov[0])
		t.iov = t.iov[1:]
	}
	var more int
	var err error
	if len(t.iov) > 0 {
		t.iov[0] = t.iov[0][skip:]
		more, err = p.writev()
	}
	clear(whole) // the pieces skipped too: no reference to senders' messages stays
	t.iov = whole[:0]
	if err != nil && m.handKicked(p, q, buf, n+more) {
		return // kicked again (a waiting sender's deadline): another goroutine goes on
	}
	keep := m.completeQueue(p, q, buf, n+more, err)
	t.mu.Lock()
	t.queueWritten(q, buf, keep)
	m.flushQueuedLocked(p, msgCount{}, math.MaxInt)
}

func (m *Mux) flushInBackground(p *Psock) {
	defer m.wg.Done()
	p.tx.mu.Lock()
	m.flushQueuedLocked(p, msgCount{}, math.MaxInt)
}

// writeQueue writes queued entries with one write or writev: adjacent
// copied messages are one contiguous piece of buf.
func (p *Psock) writeQueue(q []txEntry, buf []byte) (int, error) {
	t := &p.tx
	t.iov = p.queueIOV(q, buf)
	if len(t.iov) == 1 {
		return p.write(t.iov[0])
	}
	return p.writev()
}

// queueIOV returns the pieces of the queue write q over buf, in the
// writer's scratch: adjacent copied messages are one contiguous piece.
func (p *Psock) queueIOV(q []txEntry, buf []byte) net.Buffers {
	iov := p.tx.iov[:0]
	start, end := -1, -1
	for i := range q {
		e := &q[i]
		if e.ext == nil {
			if start >= 0 && e.off != end { // a dropped message left a gap
				iov = append(iov, buf[start:end])
				start = -1
			}
			if start < 0 {
				start = e.off
			}
			end = e.off + e.n
			continue
		}
		if start >= 0 {
			iov = append(iov, buf[start:end])
			start = -1
		}
		iov = append(iov, e.ext)
	}
	if start >= 0 {
		iov = append(iov, buf[start:end])
	}
	return iov
}

// With Config.WriteTimeout, the deadline bounds a write's progress, not
// the whole write: a write that times out after the connection accepted
// some bytes gets a fresh deadline and goes on with the rest, so a long
// queue or batch written to a peer that reads steadily does not fail. A
// plain connection is intact after a write timeout; a TLS one is not (its
// writes fail from then on), so there any timeout fails the psock.

// write writes b on the connection, as one message or a coalesced run. A
// write that returns short with no error breaks io.Writer, but some
// wrappers do it: it is io.ErrShortWrite, a failure, for going on would
// leave the rest of a message out of the stream (net.Buffers.WriteTo goes
// on with the next piece).
func (p *Psock) write(b []byte) (int, error) {
	if p.tx.timed || p.ownDeadline() {
		return p.writeTimed(b)
	}
	n, err := p.conn.Write(b)
	if err != nil {
		n, err = p.writeOn(b, n, err)
	}
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return n, err
}

// writeOn goes on with a write of b that err stopped after n bytes, if
// err is a deadline a SetWriteDeadline put on the write under way
// (newDeadline) and then moved or cleared as it passed: the stream is
// intact, and nothing asked the write to stop. Any other err is returned.
func (p *Psock) writeOn(b []byte, n int, err error) (int, error) {
	for n < len(b) && errors.Is(err, os.ErrDeadlineExceeded) && p.raw != nil && !p.tx.timed {
		if p.ownExpired() {
			p.tx.ownStop = true // decided once: see ownTimedOut
			break
		}
		if !p.deadlineOnly() {
			break
		}
		var k int
		k, err = p.writeTimed(b[n:])
		n += k
	}
	return n, err
}

// deadlineOnly reports whether no Close or leaving stopped the writer: a
// timeout was a deadline's alone.
func (p *Psock) deadlineOnly() bool {
	t := &p.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.closeKicked && !t.stopped.Load()
}

// writeTimed is write under a WriteTimeout.
func (p *Psock) writeTimed(b []byte) (int, error) {
	total := 0
	for {
		armed := p.armWrite()
		n, err := p.conn.Write(b[total:])
		total += n
		if err == nil && total < len(b) {
			err = io.ErrShortWrite // see write
		}
		if !p.goOn(armed, n, err) {
			if armed && (p.disarm || !p.tx.timed) { // raw: a socket's deadline
				p.disarmWrite()
			}
			return total, err
		}
	}
}

// writev writes t.iov with one writev (more when a WriteTimeout passes
// with progress). WriteTo consumes the slice it is called on, so t.iov is
// set back to its whole backing array for reuse.
func (p *Psock) writev() (int, error) {
	if p.raw == nil {
		return p.writeJoined()
	}
	t := &p.tx
	whole := t.iov
	total := 0
	for {
		armed := (t.timed || p.ownDeadline()) && p.armWrite()
		n, err := t.iov.WriteTo(p.conn)
		total += int(n)
		if len(t.iov) == 0 || !p.goOn(armed, int(n), err) {
			if err == nil && len(t.iov) > 0 {
				err = io.ErrShortWrite // see write
			}
			if armed && !t.timed { // a socket's deadline
				p.disarmWrite()
			}
			clear(whole) // pieces left unwritten by an error too: see writeJoined
			t.iov = whole[:0]
			return total, err
		}
	}
}

// writeJoined is writev for connections without a writev of their own
// (TLS, wrappers, pipes), on which net.Buffers writes each piece with its
// own Write: for TLS one record and one system call per message. It
// copies the pieces together into writes of up to coalesceLimit bytes;
// a piece that large goes out on its own, uncopied.
func (p *Psock) writeJoined() (int, error) {
	t := &p.tx
	iov := t.iov
	t.iov = iov[:0]
	// Drop the references to the senders' messages, as net.Buffers does,
	// so that t.iov does not keep them reachable after their sends return.
	defer clear(iov)
	total := 0
	flush := func() error {
		if len(t.wbuf) == 0 {
			return nil
		}
		n, err := p.write(t.wbuf)
		total += n
		t.wbuf = t.wbuf[:0]
		return err
	}
	t.wbuf = t.wbuf[:0]
	for _, b := range iov {
		if len(t.wbuf)+len(b) > coalesceLimit {
			if err := flush(); err != nil {
				return total, err
			}
		}
		if len(b) >= coalesceLimit {
			n, err := p.write(b)
			total += n
			if err != nil {
				return total, err
			}
			continue
		}
		t.wbuf = append(t.wbuf, b...)
	}
	err := flush()
	return total, err
}

// goOn reports whether a write that returned n bytes and err must go on:
// it timed out under its WriteTimeout deadline after some progress, on a
// plain connection.
func (p *Psock) goOn(armed bool, n int, err error) bool {
	if err == nil || !armed || p.raw == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if t := &p.tx; t.writer != nil {
		// The writer's own messages, which its socket's deadline bounds.
		if p.ownExpired() {
			t.ownStop = true // decided once: see ownTimedOut
			return false
		}
		if !t.timed || time.Now().Before(t.wtoAt) {
			// Not WriteTimeout's: its socket's deadline, moved or cleared
			// as it fired (a kick's stays, and armWrite then refuses).
			return true
		}
	}
	return n > 0
}

// ownDeadline reports whether the write under way carries the own
// messages of a socket with a write deadline, which then bounds it (raw
// connections only). Only the writer calls it: it alone sets tx.writer.
func (p *Psock) ownDeadline() bool {
	w := p.tx.writer
	return w != nil && p.raw != nil && w.wdl.Load() != 0
}

// ownExpired reports whether the writer's socket's write deadline passed.
func (p *Psock) ownExpired() bool {
	w := p.tx.writer
	return w != nil && p.raw != nil && w.writeExpired()
}

// armWrite gives the next write Config.WriteTimeout to make progress and
// reports whether it did. A deadline a closing socket or an Unattach set
// to stop the writer stays: both set it under the transmit lock, or after
// marking the psock stopped under it, so one of the two always sees the
// other.
func (p *Psock) armWrite() bool {
	t := &p.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closeKicked || t.stopped.Load() {
		return false
	}
	var dl time.Time
	if t.timed {
		dl = time.Now().Add(p.wto)
		t.wtoAt = dl
	}
	if p.ownDeadline() {
		// The writer's socket's deadline, when it comes first.
		if sd := t.writer.writeDeadline(); !sd.IsZero() && (dl.IsZero() || sd.Before(dl)) {
			dl = sd
		}
		t.dlArmed = t.dlArmed || !t.timed
	}
	p.conn.SetWriteDeadline(dl)
	return true
}

// disarmWrite takes the deadline of a timed write off a connection kcm
// does not write itself (TLS, or a wrapper, which may hide a tls.Conn: an
// application's, or the prefixConn of an Unattach attached again), unless
// a closing socket or an Unattach set one since (see armWrite). A
// tls.Conn answers a peer's TLS 1.3 key update from inside Read, under
// whatever write deadline is on the connection; one long past fails that
// answer, and then the tls.Conn fails every later write and, not having
// taken the peer's new keys, every later read.
func (p *Psock) disarmWrite() {
	t := &p.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closeKicked && !t.stopped.Load() {
		p.conn.SetWriteDeadline(time.Time{})
		t.dlArmed = false
	}
}

// completeQueue accounts a queue write of n bytes: written messages are
// done, the rest go to other psocks when err is set. It reports whether
// queued messages still use buf, which must then not be reused.
func (m *Mux) completeQueue(p *Psock, q []txEntry, buf []byte, n int, err error) (keep bool) {
	sent, msgs, bytes := 0, 0, 0
	i := 0
	for ; i < len(q); i++ {
		size := len(q[i].bytes(buf))
		if sent+size > n {
			break
		}
		sent += size
		msgs++
		bytes += size
	}
	// Counted before their waiting senders learn that they went out: a
	// sender's next Stats must see its message.
	if msgs > 0 {
		p.tx.mu.Lock()
		p.tx.count.add(msgs, bytes)
		p.tx.mu.Unlock()
	}
	for j := range q[:i] {
		m.finishEntry(p, &q[j], nil)
	}
	if i == len(q) {
		return false
	}
	cut := n > sent
	if err == nil {
		err = io.ErrShortWrite
	}
	if m.closeInterrupted(p, err) {
		if !cut && p.raw != nil {
			if ok, keep := p.putBack(m, q[i:], buf); ok {
				return keep
			}
		} else {
			err = fmt.Errorf("%w: a closing socket interrupted the write", ErrMidMessage)
		}
	}
	m.writeFailed(p, err, cut, q[i:], buf)
	return false
}

// closeInterrupted reports whether err ended a queue write because a
// socket's close interrupted it (see dropSocketLocked).
func (m *Mux) closeInterrupted(p *Psock, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	p.tx.mu.Lock()
	defer p.tx.mu.Unlock()
	return p.tx.closeKicked
}

// putBack puts the unwritten messages of a queue write that a socket's
// close interrupted between two messages back at the head of the queue, in
// order: the psock's stream is intact, so it goes on. The closed sockets'
// messages are dropped, and their waiting senders return. It reports
// whether the messages put back still use buf.
func (p *Psock) putBack(m *Mux, rest []txEntry, buf []byte) (ok, keep bool) {
	t := &p.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		// The psock is leaving meanwhile (unattached, failed): its queue
		// went elsewhere, and so must these.
		return false, false
	}
	back := make([]txEntry, 0, len(rest))
	for _, e := range rest {
		if e.s != nil && e.s.closed() {
			m.finishEntry(p, &e, ErrClosed)
			continue
		}
		if e.expiredWaiter() {
			// A waiting sender past its deadline that a kick meant to
			// let go (kickTaken), its kick overtaken by a Close's.
			m.copyEntry(&e)
		}
		if e.ext == nil {
			e.ext = buf[e.off : e.off+e.n] // buf is not reused while it is queued
			keep = true
		}
		if e.w != nil {
			e.w.taken.Store(false) // it may be withdrawn again
		}
		back = append(back, e)
	}
	t.q = append(back, t.q...)
	return true, keep
}

// finishEntry ends a queued message: its sender is told err, its bytes
// leave the send buffer.
func (m *Mux) finishEntry(p *Psock, e *txEntry, err error) {
	size := e.size()
	p.tx.load.Add(-int64(size))
	if e.owned {
		m.backlog.unreserve(size)
	}
	if e.w != nil {
		e.w.done <- err
	}
}

// requeueLocked moves an unwritten message of a failed psock to another
// one, or to the backlog; with the mux closed it is dropped.
func (m *Mux) requeueLocked(from *Psock, e *txEntry, buf []byte) {
	if m.closed {
		m.finishEntry(from, e, ErrClosed)
		return
	}
	if e.pinned {
		// For this psock only: lost, and its waiting sender is told.
		from.stats.txAborts.Add(1)
		m.finishEntry(from, e, pinnedLostLocked(from))
		return
	}
	if e.w != nil {
		m.finishEntry(from, e, errRestart) // the sender retries itself
		return
	}
	m.stats.txRetries.Add(1)
	b := e.bytes(buf)
	from.tx.load.Add(-int64(len(b)))
	for {
		p := m.pickTx(nil)
		if p == nil {
			m.backlog.q = append(m.backlog.q, txEntry{ext: append([]byte(nil), b...), owned: true, s: e.s})
			return
		}
		t := &p.tx
		t.mu.Lock()
		if t.stopped.Load() {
			t.mu.Unlock()
			continue
		}
		t.enqueueCopy(b, e.s)
		m.kickLocked(p)
		t.mu.Unlock()
		return
	}
}

// kickLocked starts a writer goroutine for p's queue if nobody writes;
// p.tx.mu is held.
func (m *Mux) kickLocked(p *Psock) {
	if p.tx.writing || len(p.tx.q) == 0 {
		return
	}
	p.tx.writing = true
	m.wg.Add(1)
	go m.flushInBackground(p)
}

// writeCutByClose ends a write that the closing of its socket interrupted:
// a psock whose stream now holds part of a message leaves the mux; one
// that got no byte of it stays.
func (m *Mux) writeCutByClose(p *Psock, cut bool) {
	p.tx.publishSent()
	// An interrupted write on a connection kcm does not write itself (TLS)
	// may have left part of a record behind, and tls.Conn refuses to write
	// after a write timeout: such a psock cannot go on either.
	cut = cut || p.raw == nil
	if !cut {
		p.conn.SetWriteDeadline(time.Time{})
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !p.unattaching {
		m.failLocked(p, fmt.Errorf("kcm: psock %d: %w: its socket closed mid-message", p.index, ErrMidMessage))
		return
	}
	p.tx.mu.Lock()
	p.tx.cut = true
	p.tx.mu.Unlock()
}

// dropSocketLocked drops the messages of a closing socket that wait in
// the backlog or in psock queues. Copied messages being written go out
// whole; a write that holds a sender of the socket (its own message, or
// one too large to copy, in another writer's queue) is interrupted.
func (m *Mux) dropSocketLocked(s *Socket) {
	m.backlog.q = m.dropEntries(nil, m.backlog.q, nil, s)
	for _, p := range m.psocks {
		t := &p.tx
		t.mu.Lock()
		t.q = m.dropEntries(p, t.q, t.cbuf, s)
		switch {
		case t.writing && (t.writer == s || holdsSender(t.inflight, s)):
			// This socket's own message: the write must stop, also when
			// a flusher's close asked for it to be finished (handKicked).
			t.closeKicked, t.flusherKicked = true, false
			p.conn.SetWriteDeadline(aLongTimeAgo)
		case t.writing && t.flusher == s && p.raw != nil && !t.closeKicked && !t.stopped.Load():
			// Others' messages: the write is interrupted to let the call
			// go, and finished, where it stopped, by the mux (a TLS
			// connection is broken by an interrupted write: its flusher
			// goes on to the end of the write under way).
			t.closeKicked, t.flusherKicked = true, true
			p.conn.SetWriteDeadline(aLongTimeAgo)
		}
		t.mu.Unlock()
	}
}

// newDeadline lets socket s's new write deadline t reach a write of p
// under way for s (raw connections only: see armWrite): a write of its
// own messages gets t as the connection's deadline, and a send that
// writes others' messages leaves them to the mux at once, as with a
// deadline set before the send (the write is interrupted and finished,
// where it stopped, by a goroutine of the mux's: see handKicked).
func (t *txState) newDeadline(p *Psock, s *Socket, dl time.Time) {
	if p.raw == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closeKicked || t.stopped.Load() {
		return
	}
	switch {
	case t.dlArmed && (!t.writing || t.writer != s):
		// A deadline of s's own write that ended as s changed it (its
		// writer let go the idle way, seeing the new deadline): off.
		t.dlArmed = false
		p.conn.SetWriteDeadline(time.Time{})
	case !t.writing:
	case t.writer == s:
		// With WriteTimeout, the earlier of its deadline and this one.
		if t.timed && !t.wtoAt.IsZero() && (dl.IsZero() || t.wtoAt.Before(dl)) {
			dl = t.wtoAt
		}
		p.conn.SetWriteDeadline(dl)
		t.dlArmed = !t.timed && !dl.IsZero()
	case t.flusher == s && !dl.IsZero():
		t.closeKicked, t.flusherKicked = true, true
		p.conn.SetWriteDeadline(aLongTimeAgo)
	}
}

// holdsSender reports whether q has a message whose sender, of socket s,
// waits for it to be written.
func holdsSender(q []txEntry, s *Socket) bool {
	for i := range q {
		if q[i].s == s && q[i].w != nil {
			return true
		}
	}
	return false
}

// dropEntries removes s's copied messages from q, and its waiting senders
// that came from the backlog (others withdraw their own).
func (m *Mux) dropEntries(p *Psock, q []txEntry, cbuf []byte, s *Socket) []txEntry {
	out := q[:0]
	for i := range q {
		e := &q[i]
		if e.s == s && e.owned && e.w == nil {
			size := len(e.bytes(cbuf))
			m.backlog.unreserve(size)
			if p != nil {
				p.tx.load.Add(-int64(size))
			}
			continue
		}
		if p != nil && e.s == s && e.w != nil && e.w.taken.Load() {
			// A waiter the backlog's flush queued here (taken: its own
			// withdraw looks in the backlog): it is told here.
			m.finishEntry(p, e, ErrClosed)
			continue
		}
		out = append(out, *e)
	}
	clear(q[len(out):])
	return out
}

// writeFailed handles a write error on p: the psock fails, unless it is
// being unattached (the error is then the unattach's interrupt). head are
// messages of the failed write that did not go out whole; they are sent
// again on other psocks before the ones queued behind them.
func (m *Mux) writeFailed(p *Psock, err error, cut bool, head []txEntry, buf []byte) {
	p.tx.publishSent() // before a failure moves the counters to the mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed { // the closing drops them, uncounted: see countAborts
		for i := range head {
			if !head[i].pinned { // requeueLocked counts pinned ones
				p.stats.txAborts.Add(1)
			}
		}
	}
	if p.unattaching {
		p.tx.mu.Lock()
		p.tx.cut = p.tx.cut || cut || p.raw == nil // see writeCutByClose
		p.tx.mu.Unlock()
		for i := range head {
			m.requeueLocked(p, &head[i], buf)
		}
		return
	}
	m.failTxLocked(p, fmt.Errorf("kcm: psock %d: write: %w", p.index, err), head, buf)
}

// abortTxLocked stops p's transmit side for good and moves head, then its
// queue, to other psocks.
func (m *Mux) abortTxLocked(p *Psock, head []txEntry, headBuf []byte) {
	t := &p.tx
	t.mu.Lock()
	t.stopped.Store(true)
	q, buf := t.q, t.cbuf
	t.q, t.cbuf = nil, nil
	t.mu.Unlock()
	for i := range head {
		m.requeueLocked(p, &head[i], headBuf)
	}
	for i := range q {
		m.requeueLocked(p, &q[i], buf)
	}
}

// stopTx stops p's transmit side for Unattach: queued messages move to
// other psocks and a write in progress is interrupted. It returns a
// channel closed when that write ended, nil for none; see txStopped.
func (m *Mux) stopTx(p *Psock) (idle chan struct{}) {
	m.mu.Lock()
	m.abortTxLocked(p, nil, nil)
	t := &p.tx
	t.mu.Lock()
	if t.writing {
		t.idle, t.waitIdle = make(chan struct{}), true
		idle = t.idle
	}
	t.mu.Unlock()
	m.mu.Unlock()
	if idle != nil {
		p.conn.SetWriteDeadline(aLongTimeAgo)
	}
	return idle
}

// txStopped waits for the write stopTx interrupted (idle) to end, and
// reports whether a message was cut.
func (p *Psock) txStopped(idle chan struct{}) bool {
	if idle != nil {
		<-idle
	}
	p.tx.mu.Lock()
	defer p.tx.mu.Unlock()
	return p.tx.cut
}

// handshakeDoneTxLocked lets go of p's transmit side, which its handshake
// held (see handshaker), once the handshake ended (ok: it succeeded). The
// messages sent to p meanwhile go out, then the backlog, and p takes new
// messages. After a failed handshake p fails; cancelled by Unattach, it
// is leaving: either moves its queue elsewhere.
func (m *Mux) handshakeDoneTxLocked(p *Psock, ok bool) {
	t := &p.tx
	t.mu.Lock()
	t.writing = false
	if t.waitIdle {
		close(t.idle)
		t.idle, t.waitIdle = nil, false
	}
	ok = ok && !t.stopped.Load() && !p.gone && !p.unattaching
	if ok {
		m.kickLocked(p)
	}
	t.mu.Unlock()
	if ok {
		m.backlog.flushLocked(p)
		m.publishTxLocked()
		m.noteTxIdle(nil) // senders waiting on busy psocks may move to it
	}
}

// publishTxLocked updates the list of psocks that take new messages.
func (m *Mux) publishTxLocked() {
	ps := make([]*Psock, 0, len(m.psocks))
	for _, p := range m.psocks {
		if !p.unattaching && !p.gone && p.hs == nil { // see handshaker
			ps = append(ps, p)
		}
	}
	m.txps.Store(&ps)
	if len(ps) == 1 {
		m.txOne.Store(ps[0])
	} else {
		m.txOne.Store(nil)
	}
}

// pickTx chooses the psock for s's next message: s keeps the psock it
// reserved while that psock is no busier than any other, otherwise the
// least loaded psock is reserved.
func (m *Mux) pickTx(s *Socket) *Psock {
	if p := m.txOne.Load(); p != nil {
		if s != nil && s.txp.Load() != p {
			s.reserve(p)
		}
		return p
	}
	ps := *m.txps.Load()
	if len(ps) == 0 {
		return nil
	}
	var cur *Psock
	if s != nil {
		cur = s.txp.Load()
	}
	var best *Psock
	bestLoad := int64(-1)
	start := 0
	if s != nil {
		start = int(s.rot.Add(1))
	}
	for i := range ps {
		p := ps[(start+i)%len(ps)]
		l := p.tx.load.Load()
		if p == cur {
			l-- // ties go to the reserved psock
		}
		if bestLoad < 0 || l < bestLoad {
			best, bestLoad = p, l
		}
	}
	if s != nil && best != cur {
		s.reserve(best)
	}
	return best
}

func (m *Mux) closedErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// backlog holds messages sent while no psock takes messages, and accounts
// the send buffer of the whole mux. Its queue is guarded by mux.mu.
type backlog struct {
	m      *Mux
	queued atomic.Int64 // bytes the mux holds for senders, everywhere
	q      []txEntry
}

func (b *backlog) init(m *Mux) { b.m = m }

// reserve takes room for n bytes in the send buffer; a message larger than
// the buffer fits when nothing else is held.
func (b *backlog) reserve(n int) bool {
	limit := int64(b.m.cfg.SendBuffer)
	for {
		q := b.queued.Load()
		if q > 0 && q+int64(n) > limit {
			return false
		}
		if b.queued.CompareAndSwap(q, q+int64(n)) {
			return true
		}
	}
}

func (b *backlog) unreserve(n int) { b.queued.Add(-int64(n)) }

// add holds a message of s while no psock is attached. It returns errRetry
// if a psock appeared meanwhile, and errRestart when the message waited
// uncopied and the psock it was flushed to failed before writing it.
func (b *backlog) add(s *Socket, msg []byte) error {
	m := b.m
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if len(*m.txps.Load()) > 0 {
		m.mu.Unlock()
		return errRetry
	}
	if b.reserve(len(msg)) {
		b.q = append(b.q, txEntry{ext: append([]byte(nil), msg...), owned: true, s: s})
		m.mu.Unlock()
		return nil
	}
	w := getTxWaiter()
	b.q = append(b.q, txEntry{ext: msg, w: w, s: s})
	m.mu.Unlock()
	err := w.wait(s, &m.mu, func() bool {
		for i := range b.q {
			if b.q[i].w == w {
				b.q = append(b.q[:i], b.q[i+1:]...)
				return true
			}
		}
		return false
	}, m, nil)
	txWaiterPool.Put(w)
	return err
}

// flushLocked moves the backlog, in order, to a newly attached psock.
func (b *backlog) flushLocked(p *Psock) {
	if len(b.q) == 0 {
		return
	}
	t := &p.tx
	t.mu.Lock()
	for _, e := range b.q {
		if e.w != nil {
			e.w.taken.Store(true)
			e.w.p.Store(p)
		}
		t.q = append(t.q, e)
		t.load.Add(int64(len(e.ext)))
	}
	b.q = nil
	b.m.kickLocked(p)
	t.mu.Unlock()
}

// dropLocked discards the backlog when the mux closes.
func (b *backlog) dropLocked() {
	for _, e := range b.q {
		if e.owned {
			b.unreserve(len(e.ext))
		}
		if e.w != nil {
			e.w.done <- ErrClosed
		}
	}
	b.q = nil
}

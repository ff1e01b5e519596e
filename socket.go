package kcm

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Socket is the application's handle on a Mux: it sends and receives
// whole messages. Any socket of a mux may send or receive any message.
//
// *Socket implements net.Conn: Write sends one message, Read returns one
// message or, if b is too short, the next piece of it. All methods are safe
// for concurrent use; concurrent sends are each atomic.
type Socket struct {
	// The first cache line holds all a send or a receive touches
	// (without deadlines or pieces of messages kept for later).
	mux   *Mux
	stats socketCounters
	txp   atomic.Pointer[Psock] // the psock reserved for transmit
	state atomic.Uint32         // sockHeld, sockShut: for lock-free checks

	// Guarded by mux.mu.
	disabled bool
	rdlSet   bool // rdl is not the zero time
	hasKept  bool // partial or held holds a message

	// The write deadline as time since the mux's epoch (a monotonic
	// origin), 0 for none: an atomic that a per-message SetWriteDeadline
	// does not allocate.
	wdl atomic.Int64
	aff *sockAff // with Config.Affinity only

	// Guarded by mux.mu.
	rdl  time.Time
	kept []Message // rests of messages, taken first by the next receives: see keepRest
	free []*waiter

	typ   SocketType
	index int
	rot   atomic.Uint32

	kmu   sync.Mutex    // guards kch
	kch   chan struct{} // closed when the write deadline changes or the socket closes
	txmu  sync.Mutex    // builds multi-call messages and batches
	open  []byte        // a message being built with More
	batch [][]byte      // messages held by Batch

	// Pads the socket to 256 bytes: its size class then keeps sockets on
	// cache-line boundaries (TestHotFieldLayout).
	_ [16]byte
}

const (
	sockHeld uint32 = 1 << iota // open or batch hold something
	sockShut                    // closed; changes only under mux.mu
)

// closed reports whether the socket was closed.
func (s *Socket) closed() bool { return s.state.Load()&sockShut != 0 }

// shutLocked marks the socket closed; mux.mu is held.
func (s *Socket) shutLocked() { s.state.Or(sockShut) }

// readDeadline returns the receive deadline; mux.mu is held.
func (s *Socket) readDeadline() time.Time {
	if !s.rdlSet {
		return time.Time{}
	}
	return s.rdl
}

// Pieces a socket keeps, guarded by mux.mu: the rests of messages receive
// calls on it could not take whole. They are the socket's own (no other
// socket could make sense of them) and come before anything else in its
// next receives: the rest of the message a call just took first, the rest
// of a fresh message after the ones kept already (concurrent calls on one
// socket). The slice keeps its capacity, so keeping costs no allocation
// after the first.

// keepRest keeps rest, of a message just taken; first says it continues
// the message that was first in line.
func (s *Socket) keepRest(rest Message, first bool) {
	if first {
		s.kept = slices.Insert(s.kept, 0, rest)
	} else {
		s.kept = append(s.kept, rest)
	}
	s.hasKept = true
}

// takeKept returns the first piece s keeps; hasKept must be true.
func (s *Socket) takeKept() Message {
	msg := s.kept[0]
	copy(s.kept, s.kept[1:])
	s.kept[len(s.kept)-1] = Message{}
	s.kept = s.kept[:len(s.kept)-1]
	s.hasKept = len(s.kept) > 0
	return msg
}

// dropKept releases what s keeps, when it closes.
func (s *Socket) dropKept() {
	ReleaseBatch(s.kept)
	s.kept = s.kept[:0]
	s.hasKept = false
}

// Index returns the socket's index in its mux: the lowest free one when it
// was created.
func (s *Socket) Index() int { return s.index }

// Type returns the socket's type.
func (s *Socket) Type() SocketType { return s.typ }

// Mux returns the socket's mux.
func (s *Socket) Mux() *Mux { return s.mux }

// Clone returns a new socket of the same type on the same mux
// (SIOCKCMCLONE).
func (s *Socket) Clone() *Socket { return s.mux.NewSocket(s.typ) }

// Stats returns the socket's counters.
func (s *Socket) Stats() SocketStats {
	s.mux.mu.Lock()
	defer s.mux.mu.Unlock()
	return s.statsLocked()
}

func (s *Socket) statsLocked() SocketStats {
	return SocketStats{
		RxMsgs: s.stats.rx.msgs, RxBytes: s.stats.rx.bytes,
		TxMsgs: s.stats.txMsgs.Load(), TxBytes: s.stats.txBytes.Load(),
	}
}

// countLocked counts messages a receive call returns, as the call consumes
// them: bytes taken, and messages taken to their end (a truncated Datagram
// message counts as taken).
func (s *Socket) countLocked(ms []Message, mode rxMode) {
	if mode.limit < 0 {
		// Whole messages (RecvBatch): sum in registers, store once.
		msgs, bytes := 0, 0
		for i := range ms {
			bytes += len(ms[i].b)
			if !ms[i].more {
				msgs++
			}
		}
		s.stats.rx.add(msgs, bytes)
		return
	}
	for i := range ms {
		l := len(ms[i].b)
		if l > mode.limit {
			s.stats.rx.bytes += uint64(mode.limit)
			if !mode.partial {
				s.stats.rx.msgs++
			}
			continue
		}
		if ms[i].more { // a piece: the message counts with its last one
			s.stats.rx.bytes += uint64(l)
			continue
		}
		s.stats.rx.add(1, l)
	}
}

// Send sends msg as one message, written contiguously on one psock. It
// returns once msg has been written to a connection or copied into the
// mux's queue; msg may be reused when Send returns. A message that waits
// for a busy psock is copied only up to 64 KiB, and only while
// Config.SendBuffer has room; otherwise Send waits, uncopied, until it is
// written or the write deadline passes. With no psock attached, messages
// wait in the mux and go out, in order, on the first psock attached (a TLS
// connection attached before its handshake takes messages once its
// handshake is done). A
// zero-length msg sends nothing; it ends a batch opened with the Batch
// flag.
func (s *Socket) Send(msg []byte) error { return s.SendMsg(msg, 0) }

// SendMsg sends msg with flags: More keeps the message open so the next
// calls append to it, Batch holds complete messages until a send without
// Batch writes them all together. A call that fails (its socket open)
// leaves held what it did not send: the open message, without msg, and
// the batch's messages that did not go out wait for the next call that
// ends them, before what the socket's other calls held meanwhile (a call
// that ends held messages does not hold up the socket's other calls while
// it writes).
func (s *Socket) SendMsg(msg []byte, flags SendFlags) error {
	if flags == 0 && s.state.Load()&sockHeld == 0 {
		if len(msg) == 0 {
			return s.sendCheck() // no-op, but not on a closed socket
		}
		return s.sendOne(msg)
	}
	return s.sendHeld(msg, flags)
}

// sendHeld is SendMsg for a message built over several calls or held in
// a batch; out of line, so that a plain send runs in small frames.
//
//go:noinline
func (s *Socket) sendHeld(msg []byte, flags SendFlags) error {
	// A call refused at once changes nothing held, as a net.Conn Write
	// past its deadline writes nothing: what was built or held still goes
	// out whole with the call that ends it. It is refused before s.txmu,
	// which another call may hold (briefly: nobody writes under it).
	if err := s.sendCheck(); err != nil {
		return err
	}
	if flags&(More|Batch) == 0 {
		return s.endHeld([][]byte{msg})
	}
	s.txmu.Lock()
	defer s.releaseHeld()
	if flags&More != 0 {
		s.open = append(s.open, msg...)
		if s.open == nil {
			s.open = []byte{}
		}
		return nil
	}
	if s.open != nil {
		msg = append(s.open, msg...)
		s.open = nil
	}
	if len(msg) > 0 {
		s.batch = append(s.batch, append([]byte(nil), msg...))
	}
	return nil
}

// endHeld sends the messages s holds, then msgs, the first of which ends
// the open message. Empty messages are skipped. It takes them out of s
// under s.txmu, but sends without it, so that the socket's other calls
// (a plain send, a send past its deadline, one that holds a message) do
// not wait for the write; a send that fails gives back what it did not
// send, before what other calls held meanwhile.
func (s *Socket) endHeld(msgs [][]byte) error {
	s.txmu.Lock()
	all, held, open := s.batch, len(s.batch), s.open
	s.batch, s.open = nil, nil
	s.releaseHeld()
	ends := -1 // the index in all of the message that ends open
	if open != nil {
		var first []byte
		if len(msgs) > 0 {
			first, msgs = msgs[0], msgs[1:]
		}
		if b := append(open, first...); len(b) > 0 {
			ends = len(all)
			all = append(all, b)
		}
	}
	for _, b := range msgs {
		if len(b) > 0 {
			all = append(all, b)
		}
	}
	if len(all) == 0 {
		return nil
	}
	sent, err := s.sendBatch(all, false, nil)
	if err != nil && !s.closed() {
		// Likewise after a wait that failed: what was not sent stays held,
		// the open message without the bytes of the call that ended it.
		var batch [][]byte
		if sent < held {
			batch = all[sent:held:held]
		}
		if open == nil || (ends >= 0 && sent > ends) {
			open = nil
		}
		s.giveBack(batch, open)
	}
	return err
}

// giveBack holds again the messages of a batch and the open message that
// a call ending them did not send, before those other calls held while it
// tried: as if they had been held after it failed.
func (s *Socket) giveBack(batch [][]byte, open []byte) {
	if batch == nil && open == nil {
		return
	}
	s.txmu.Lock()
	defer s.releaseHeld()
	if batch != nil {
		s.batch = append(batch, s.batch...)
	}
	if open != nil {
		s.open = append(open, s.open...)
	}
}

// releaseHeld ends a call that holds s.txmu: it records whether s holds
// messages and lets go; on a socket closed meanwhile, whose Close found
// s.txmu taken, it frees them (see dropHeld).
func (s *Socket) releaseHeld() {
	s.noteHeld()
	s.txmu.Unlock()
	if s.closed() {
		s.dropHeld()
	}
}

// noteHeld records whether s holds messages, for SendMsg's fast check;
// s.txmu is held.
func (s *Socket) noteHeld() {
	if s.open != nil || s.batch != nil {
		s.state.Or(sockHeld)
	} else {
		s.state.And(^sockHeld)
	}
}

func (s *Socket) sendOne(msg []byte) error {
	if err := s.sendCheck(); err != nil {
		return err
	}
	ok, restart, err := s.mux.sendIdle(s, msg)
	if !ok {
		err = s.mux.transmit(s, msg, restart)
	}
	if err != nil {
		return s.opError("send", err)
	}
	s.stats.txMsgs.Add(1)
	s.stats.txBytes.Add(uint64(len(msg)))
	return nil
}

// SendTo sends msg, atomically, on psock p and on no other: the send of an
// unconnected socket (spec section 6), for instance a reply on the
// connection its request came from (Message.Psock). Like Send it returns
// once msg is written or queued in p, and msg may be reused then; it
// honours the write deadline and a closing socket alike. It fails with an
// error wrapping ErrNotAttached when p is not attached to the socket's mux
// or leaves it (fails or is unattached) before msg is written, and with
// ErrClosed when the mux closes first. Sent to a TLS psock attached
// before its handshake, msg waits in p's queue for the handshake. A
// message p had queued when SendTo returned nil is lost when p leaves,
// since no other connection leads to p's peer, and counted in p's
// TxAborts; the mux's closing drops it uncounted, as every queued
// message. SendTo sends msg alone: messages held with More or Batch stay
// held. A zero-length msg sends nothing, and p is not looked at.
func (s *Socket) SendTo(msg []byte, p *Psock) error {
	if err := s.sendCheck(); err != nil {
		return err
	}
	if len(msg) == 0 {
		return nil
	}
	if err := s.mux.transmitTo(s, p, msg); err != nil {
		return s.opError("send", err)
	}
	s.stats.txMsgs.Add(1)
	s.stats.txBytes.Add(uint64(len(msg)))
	return nil
}

// SendBatch sends several messages together (sendmmsg): on an idle psock
// small messages are coalesced into one write and larger ones go in one
// writev. Each message is atomic on its own. Empty messages are skipped.
// Like sendmmsg, it ends what SendMsg holds: messages held with Batch go
// before msgs, and a message open with More ends with the first of msgs.
// When it fails part way, the messages before the one that failed were
// sent (and count in Stats); the others were not.
func (s *Socket) SendBatch(msgs [][]byte) error {
	if s.state.Load()&sockHeld != 0 {
		return s.sendHeldBatch(msgs)
	}
	_, err := s.sendBatch(msgs, false, nil)
	return err
}

// SendBatchTo sends several messages on psock p and on no other, as
// SendTo does each: the batched send of an unconnected socket, a proxy
// relaying what arrived together, for one. On an idle p they go out
// together, as with SendBatch; on a busy one they wait in its queue, where
// its writer joins them with what else waits, until p goes idle and takes
// the rest together. Each message is atomic on
// its own and they go out in order. Empty messages are skipped; messages
// held with More or Batch stay held. When it fails part way (errors as
// SendTo's), the messages before the one that failed were sent (and count
// in Stats); the others were not.
func (s *Socket) SendBatchTo(msgs [][]byte, p *Psock) error {
	_, err := s.sendBatch(msgs, true, p)
	return err
}

// nonEmpty returns msgs without its empty messages (msgs itself when it
// has none), and their total length.
func nonEmpty(msgs [][]byte) ([][]byte, int) {
	n, bytes := 0, 0
	for _, b := range msgs {
		if len(b) > 0 {
			n++
			bytes += len(b)
		}
	}
	if n == len(msgs) {
		return msgs, bytes
	}
	kept := make([][]byte, 0, n)
	for _, b := range msgs {
		if len(b) > 0 {
			kept = append(kept, b)
		}
	}
	return kept, bytes
}

// sendHeldBatch is SendBatch on a socket that holds messages: they go
// first, as the messages of sendmmsg end an open message and a batch.
func (s *Socket) sendHeldBatch(msgs [][]byte) error {
	if err := s.sendCheck(); err != nil {
		return err // before s.txmu, as in sendHeld
	}
	return s.endHeld(msgs)
}

// sendBatch is SendBatch, or, pinned, SendBatchTo(msgs, to); it also
// returns how many messages, empty ones skipped, were sent: all of them
// unless it fails.
func (s *Socket) sendBatch(msgs [][]byte, pinned bool, to *Psock) (int, error) {
	if err := s.sendCheck(); err != nil {
		return 0, err
	}
	msgs, bytes := nonEmpty(msgs)
	n := len(msgs)
	if n == 0 {
		return 0, nil
	}
	var sent int
	var err error
	if pinned {
		sent, err = s.mux.transmitBatchTo(s, to, msgs)
	} else {
		sent, err = s.mux.transmitBatch(s, msgs)
	}
	if err != nil {
		n, bytes = sent, 0
		for _, b := range msgs[:sent] {
			bytes += len(b)
		}
	}
	s.stats.txMsgs.Add(uint64(n))
	s.stats.txBytes.Add(uint64(bytes))
	if err != nil {
		return sent, s.opError("send", err)
	}
	return sent, nil
}

func (s *Socket) sendCheck() error {
	if s.closed() {
		return s.opError("send", ErrClosed)
	}
	if s.wdl.Load() != 0 && s.writeExpired() { // no call without a deadline
		return os.ErrDeadlineExceeded
	}
	return nil
}

// givenUp is why a send from s stops before its message reaches a psock:
// the socket closed, or its write deadline passed; nil while neither.
func (s *Socket) givenUp() error {
	if s.closed() {
		return ErrClosed
	}
	if s.writeExpired() {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// txSignal returns a channel closed at the next change of the socket's
// write deadline or its closing, for senders waiting to be written.
func (s *Socket) txSignal() <-chan struct{} {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	if s.kch == nil {
		s.kch = make(chan struct{})
	}
	return s.kch
}

// kickSenders wakes the socket's waiting senders to look again.
func (s *Socket) kickSenders() {
	s.kmu.Lock()
	defer s.kmu.Unlock()
	if s.kch != nil {
		close(s.kch)
		s.kch = nil
	}
}

// hasWriteDeadline reports whether the socket has a write deadline.
func (s *Socket) hasWriteDeadline() bool { return s.wdl.Load() != 0 }

// writeExpired reports whether the socket's write deadline has passed.
func (s *Socket) writeExpired() bool {
	dl := s.wdl.Load()
	return dl != 0 && time.Since(s.mux.cold.epoch) >= time.Duration(dl)
}

func (s *Socket) writeDeadline() time.Time {
	if dl := s.wdl.Load(); dl != 0 {
		return s.mux.cold.epoch.Add(time.Duration(dl))
	}
	return time.Time{}
}

// reserve makes p the socket's transmit psock, counting the change. A
// sender may get here after its socket closed, or after p left the mux
// (pickTx loaded the psocks before): Close and the psock's removal mark
// what they do before they let go of reservations, and may have let go
// already, so a reservation of a left psock or by a closed socket is let
// go here (unless they took it meanwhile), or it would stay for good.
func (s *Socket) reserve(p *Psock) {
	m := s.mux
	if old := s.txp.Swap(p); old != p {
		if old != nil {
			m.countUnreserved(old)
		}
		m.countReserved(p)
	}
	if (s.closed() || p.removed.Load()) && s.txp.CompareAndSwap(p, nil) {
		m.countUnreserved(p)
	}
}

// Recv receives one message into b and returns its length. A Datagram
// socket discards what does not fit and returns len(b) with ErrTruncated;
// a SeqPacket socket keeps the rest for the next receive (RecvMsg reports
// where the message ends). Recv blocks until a message arrives, the read
// deadline passes or the socket closes. Like read(2), it may write to b
// beyond the bytes it returns, also when it returns an error: on
// request/response traffic the reply is read from the connection straight
// into b. RecvMsg and Read may too.
func (s *Socket) Recv(b []byte) (int, error) {
	if n, ok := s.mux.recvFast(s, b, nil); ok {
		return n, nil
	}
	n, _, err := s.recvMsg(b, 0)
	return n, err
}

// RecvMsg is Recv with flags: Peek leaves the message queued, first in
// the mux's line (so another socket's receive may take it before this
// socket's next one, where the kernel would keep it in the peeking
// socket's queue: the mux delivers to whichever socket receives), DontWait
// returns ErrWouldBlock instead of blocking. The returned flags report EOR
// when the bytes returned end a message and Trunc when a Datagram message
// was cut.
func (s *Socket) RecvMsg(b []byte, flags RecvFlags) (n int, rflags RecvFlags, err error) {
	if flags == 0 {
		if n, ok := s.mux.recvFast(s, b, nil); ok {
			return n, EOR, nil
		}
	}
	return s.recvMsg(b, flags)
}

// recvMsg is RecvMsg's general path, out of line for recvFast's sake.
//
//go:noinline
func (s *Socket) recvMsg(b []byte, flags RecvFlags) (n int, rflags RecvFlags, err error) {
	if flags&Peek != 0 {
		return s.peek(b, flags)
	}
	dontWait := flags&DontWait != 0
	if s.typ == SeqPacket {
		n, eor, err := s.mux.recvPiece(s, b, dontWait)
		if err != nil {
			return 0, 0, s.opError("recv", err)
		}
		if eor {
			rflags = EOR
		}
		return n, rflags, nil
	}
	var one [1]Message
	mode := rxMode{limit: len(b), dontWait: dontWait}
	if _, err := s.mux.recv(s, one[:], mode); err != nil {
		return 0, 0, s.opError("recv", err)
	}
	msg := &one[0]
	n = copy(b, msg.b)
	rflags = EOR
	if n < len(msg.b) {
		rflags |= Trunc
		err = s.opError("recv", ErrTruncated)
	}
	msg.Release()
	return n, rflags, err
}

func (s *Socket) peek(b []byte, flags RecvFlags) (int, RecvFlags, error) {
	n, size, err := s.mux.peek(s, b, flags&DontWait != 0)
	switch {
	case err != nil:
		return 0, 0, s.opError("recv", err)
	case n == size:
		return n, EOR, nil
	case s.typ == Datagram:
		return n, Trunc, nil
	}
	return n, 0, nil
}

// RecvMessage receives one message without copying it: the Message lends
// its bytes from a pooled buffer until Release. If the socket keeps the
// rest of a message that a Read or a SeqPacket receive did not take whole,
// that rest comes first, as a Message of its own.
func (s *Socket) RecvMessage() (msg Message, err error) {
	if _, ok := s.mux.recvFast(s, nil, &msg); !ok {
		err = s.recvMessage(&msg)
	}
	return msg, err
}

// recvMessage is RecvMessage's general path, kept out of line so that its
// frame is not on the fast path's stack (see recvFast).
//
//go:noinline
func (s *Socket) recvMessage(msg *Message) error {
	var one [1]Message
	if _, err := s.mux.recv(s, one[:], rxMode{limit: -1}); err != nil {
		return s.opError("recv", err)
	}
	*msg = one[0]
	return nil
}

// RecvBatch receives up to len(ms) messages without copying them, blocking
// only for the first. It returns how many it stored; release each, or all
// with ReleaseBatch. A rest the socket keeps (see RecvMessage) is returned
// alone.
func (s *Socket) RecvBatch(ms []Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	n, err := s.mux.recv(s, ms, rxMode{limit: -1})
	if err != nil {
		return 0, s.opError("recv", err)
	}
	return n, nil
}

// Read implements net.Conn: it returns one message, or the next piece of
// one that does not fit b, whatever the socket's type.
func (s *Socket) Read(b []byte) (int, error) {
	if n, ok := s.mux.recvFast(s, b, nil); ok {
		return n, nil
	}
	return s.read(b)
}

// read is Read's general path, out of line for recvFast's sake.
//
//go:noinline
func (s *Socket) read(b []byte) (int, error) {
	n, _, err := s.mux.recvPiece(s, b, false)
	if err != nil {
		return 0, s.opError("read", err)
	}
	return n, nil
}

// Write implements net.Conn: it sends b as one message.
func (s *Socket) Write(b []byte) (int, error) {
	if err := s.Send(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// SetRecvDisabled stops (true) or resumes (false) receiving on the socket
// (KCM_RECV_DISABLE). A disabled socket takes no new messages; whatever
// it would have taken goes to other sockets or waits in the mux, and is
// offered to it first when it is enabled again. The rest of a message it
// began reading stays its own and its receives still return it.
func (s *Socket) SetRecvDisabled(disabled bool) {
	m := s.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	s.disabled = disabled
	if disabled {
		m.releaseOwnLocked(s)
	}
	m.kickLeaderLocked(s)
	m.waiters.wakeSocket(s)
}

// kickLeaderLocked interrupts the psock read that s is leading, so it looks
// at the mux again.
func (m *Mux) kickLeaderLocked(s *Socket) {
	for _, p := range m.psocks {
		if p.rx == rxLed && p.leader == s {
			m.interruptLocked(p)
		}
	}
}

// Close closes the socket. Blocked calls on it return ErrClosed. Messages
// it has not received, those Config.Affinity steered to it included, stay
// with the mux for its other sockets; they are dropped when no socket
// remains. The rest of a message it began reading (SeqPacket or Read) is
// dropped: no other socket could make sense of it. Its messages not yet
// written are dropped, except copied ones a write already holds, which go
// out whole; a write of one of its uncopied messages is interrupted, and a
// psock whose stream it leaves mid-message (on TLS, any it interrupts)
// fails with ErrMidMessage.
func (s *Socket) Close() error {
	m := s.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.closed() {
		return nil
	}
	s.shutLocked()
	s.dropKept()
	s.dropHeld()
	m.releaseOwnLocked(s)
	if s.aff != nil {
		m.cold.byIndex[s.index] = nil
	}
	m.kickLeaderLocked(s)
	m.waiters.wakeSocket(s)
	m.dropSocketLocked(s)
	s.kickSenders()
	for i, o := range m.sockets {
		if o == s {
			m.sockets = append(m.sockets[:i], m.sockets[i+1:]...)
			break
		}
	}
	m.cold.sockIdx.free(s.index)
	if len(m.sockets) == 0 {
		m.dropReadyLocked()
	}
	if p := s.txp.Swap(nil); p != nil {
		m.countUnreserved(p)
	}
	return nil
}

// dropHeld frees what SendMsg holds, a message open with More and a
// batch: a closed socket never sends them. A sender that holds s.txmu
// meanwhile frees them when it lets go (releaseHeld).
func (s *Socket) dropHeld() {
	if s.txmu.TryLock() {
		s.open, s.batch = nil, nil
		s.noteHeld()
		s.txmu.Unlock()
	}
}

// SetDeadline sets the read and write deadlines (net.Conn).
func (s *Socket) SetDeadline(t time.Time) error {
	s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for receive calls, including those
// already blocked. An expired deadline returns an error that matches
// os.ErrDeadlineExceeded; the message stays queued. Zero means none.
func (s *Socket) SetReadDeadline(t time.Time) error {
	m := s.mux
	m.mu.Lock()
	defer m.mu.Unlock()
	s.rdl, s.rdlSet = t, !t.IsZero()
	m.kickLeaderLocked(s)
	m.waiters.wakeSocket(s)
	return nil
}

// SetWriteDeadline sets the deadline for sends, including those already
// waiting: for a psock, or uncopied for their turn on a busy psock. A send
// called after it fails at once. On a TCP or Unix connection it also
// bounds the writing of the send's own messages, also one under way: a
// write it stops before a message's first byte fails with
// os.ErrDeadlineExceeded, that message unsent; one it stops inside a
// message returns nil, for the message is never cut: its rest is copied
// and the mux finishes it (or, if the psock fails first, sends it again
// from its first byte elsewhere, as any copied message). On TLS and other
// connections, which an interrupted write breaks or leaves uncounted, a
// write under way goes on. A send that wrote its message on an idle psock
// may go on writing what other sends queued there meanwhile (up to 1 MiB,
// beyond which a goroutine of the mux's takes over); with a deadline set,
// also one set meanwhile, it leaves that to the mux at once. A send
// whose uncopied message another send's write of a psock's queue has
// taken returns nil at its deadline on those connections: the write is
// interrupted, the message copied, and the mux finishes the write.
// Zero means none. To reach a write under way it looks at every psock of
// the mux (a brief lock each): on a mux of many psocks, a deadline per
// message costs that much per message.
func (s *Socket) SetWriteDeadline(t time.Time) error {
	var dl time.Duration // none
	if !t.IsZero() {
		// Measured on the monotonic clock from here on, as net.Conn's
		// deadlines are; a deadline at the epoch itself moves 1 ns earlier.
		if dl = t.Sub(s.mux.cold.epoch); dl == 0 {
			dl = -1
		}
	}
	s.wdl.Store(int64(dl))
	s.kickSenders()
	// A write under way for s may be on any psock: its reserved one, one
	// it reserved before (another of its sends is still writing there),
	// or one of its SendTo's. So this costs a lock for every psock.
	for _, p := range *s.mux.txps.Load() {
		p.tx.newDeadline(p, s, t)
	}
	return nil
}

// Addr is the address of a kcm socket: its mux and index.
type Addr struct {
	Mux   *Mux // the socket's mux
	Index int  // the socket's index (Socket.Index)
}

// Network returns "kcm".
func (a Addr) Network() string { return "kcm" }

// String returns "kcm-<index>".
func (a Addr) String() string { return fmt.Sprintf("kcm-%d", a.Index) }

// LocalAddr returns the socket's Addr.
func (s *Socket) LocalAddr() net.Addr { return Addr{Mux: s.mux, Index: s.index} }

// RemoteAddr returns the remote address of the longest-attached psock that
// takes new messages, or nil when there is none.
func (s *Socket) RemoteAddr() net.Addr {
	ps := *s.mux.txps.Load()
	if len(ps) == 0 {
		return nil
	}
	return ps[0].conn.RemoteAddr()
}

// opError wraps err with the operation and socket, keeping errors.Is and
// the Timeout method of deadline errors.
func (s *Socket) opError(op string, err error) error {
	if err == os.ErrDeadlineExceeded {
		return err
	}
	return &OpError{Op: op, Socket: s.index, Err: err}
}

// OpError is the error returned by a Socket's methods, except when the
// socket's deadline expired: that is os.ErrDeadlineExceeded itself.
type OpError struct {
	Op     string // "send", "recv", "read"
	Socket int    // socket index
	Err    error  // the underlying error
}

// Error returns the operation, the socket and the underlying error.
func (e *OpError) Error() string { return fmt.Sprintf("kcm: %s on kcm-%d: %v", e.Op, e.Socket, e.Err) }

// Unwrap returns the underlying error.
func (e *OpError) Unwrap() error { return e.Err }

// Timeout reports whether the error is a deadline expiry.
func (e *OpError) Timeout() bool {
	t, ok := e.Err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}

func (s *Socket) getWaiter() *waiter {
	if n := len(s.free); n > 0 {
		w := s.free[n-1]
		s.free = s.free[:n-1]
		return w
	}
	return &waiter{s: s, ch: make(chan struct{}, 1)}
}

func (s *Socket) putWaiter(w *waiter) {
	w.peek = false
	select {
	case <-w.ch:
	default:
	}
	s.free = append(s.free, w)
}

package kcm

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// strparser reassembles messages from a psock's byte stream, like the
// kernel's strparser: it buffers bytes, asks the parser for the length of
// the message at the start of the buffered bytes, and carves complete
// messages out of the buffer without copying them.
//
// It is owned by whoever currently reads the psock; it has no lock.
type strparser struct {
	// Hot: touched for every message. The buffer's bytes are cached here
	// so that carving a message does not touch the buffer's header.
	parser     Parser // see callParser
	buf        *rbuf
	data       []byte   // buf.b
	start, end int      // buffered, unconsumed bytes are data[start:end]
	need       int      // total length of the message at start, 0 while unknown
	seen       int      // bytes the parser saw when it last returned 0
	max        int      // largest accepted message
	carved     msgCount // messages carved since the owner last published them
	failed     bool     // err is set
	timed      bool     // timeout is set
	lent       bool     // messages carved since start was last reset hold references
	guard      guard    // a batch's recover covers parser calls: see carveGuarded
	credit     int32    // references on buf the reader holds beyond its own, for lending
	direct     int32    // a read brought exactly one message of this length, in room to spare: see takeDirect
	colour     int32    // where reads start in an empty buffer; see newColour

	err      error         // sticky: once the stream is unparsable it stays so
	timeout  time.Duration // assembly deadline, 0 for none
	pool     *bufPool
	stats    *psockCounters
	since    time.Time // when the first byte of the message at start arrived
	lastRead time.Time // when the last read returned (kept only with a timeout)
}

// buffered returns the number of bytes read but not yet carved out.
func (sp *strparser) buffered() int { return sp.end - sp.start }

// next carves the next complete message out of the buffer, takes a
// reference on the buffer for it and counts it in carved. It returns ok=false when
// more bytes are needed, and an error when the stream cannot be parsed;
// the error aborts the psock and stays.
func (sp *strparser) next(p *Psock) (m Message, ok bool, err error) {
	b, ok, err := sp.carve()
	if !ok {
		return m, false, err
	}
	sp.take(&m, p, b)
	return m, true, nil
}

// take counts the message b that carve returned and lends it in *m. (It
// writes in place so that recvFast needs no Message of its own.)
func (sp *strparser) take(m *Message, p *Psock, b []byte) {
	sp.carved.add(1, len(b))
	sp.lend(1)
	m.lend(b, sp.buf, p)
}

// creditBatch is how many references a reader takes on its buffer at a
// time, so that lending a message costs no atomic operation.
const creditBatch = 1 << 20

// lend takes n references on the buffer for messages lent from it.
func (sp *strparser) lend(n int) {
	if int(sp.credit) < n {
		more := creditBatch + int32(n)
		sp.buf.refs.Add(more)
		sp.credit += more
	}
	sp.credit -= int32(n)
	sp.lent = true
}

// dropBuf gives back the reader's references on its buffer.
func (sp *strparser) dropBuf() {
	sp.buf.releaseN(1 + sp.credit)
	sp.buf, sp.data, sp.credit = nil, nil, 0
}

// nextBatch carves up to len(out) complete messages, with one reference
// and one counter update for all of them. It never reads.
func (sp *strparser) nextBatch(p *Psock, out []Message) int {
	n, bytes := sp.carveGuarded(p, out)
	if n > 0 {
		sp.lend(n)
		sp.carved.add(n, bytes)
	}
	return n
}

// carveGuarded carves up to len(out) messages into out, calling the parser
// under one recover for the whole batch (endGuard) instead of one a call:
// a third of the parser's cost for small messages. A panic ends the batch
// with the messages carved before it.
func (sp *strparser) carveGuarded(p *Psock, out []Message) (n, bytes int) {
	sp.guard = guardOn
	defer sp.endGuard()
	if sp.need == 0 && sp.seen == 0 && !sp.failed {
		// The common case, the messages whose bytes are all buffered, in a
		// loop of its own: the first message whose length the parser does
		// not return within the buffered bytes (more is needed, or an
		// error, which carve then records) ends it. start and the results
		// stay current for a parser's panic.
		data, buf := sp.data, sp.buf
		for n < len(out) && sp.start < sp.end {
			b := data[sp.start:sp.end]
			sp.guard = guardParsing
			l, err := parse(sp.parser, b)
			sp.guard = guardOn
			if err != nil || l <= 0 || l > len(b) || l > sp.max {
				break
			}
			out[n].lend(b[:l:l], buf, p)
			sp.start += l
			bytes += l
			n++
		}
		if n > 0 && sp.timed {
			sp.since = sp.lastRead // leftover bytes, if any, came with the last read
		}
	}
	for n < len(out) {
		b, ok, _ := sp.carve()
		if !ok {
			break
		}
		out[n].lend(b, sp.buf, p)
		bytes += len(b)
		n++
	}
	return n, bytes
}

// guard says whether carveGuarded's recover covers parser calls, and
// whether a parser is running: only its panics are recovered, kcm's own
// go on.
type guard uint8

const (
	guardOff guard = iota
	guardOn
	guardParsing
)

// endGuard ends carveGuarded. A parser panic fails the stream as
// callParser's error would have.
func (sp *strparser) endGuard() {
	parsing := sp.guard == guardParsing
	sp.guard = guardOff
	if parsing {
		if r := recover(); r != nil {
			sp.err, sp.failed = sp.judge(nil, 0, parserPanic(r)), true
		}
	}
}

// carve returns the bytes of the next complete message and consumes them.
func (sp *strparser) carve() (b []byte, ok bool, err error) {
	n, err := sp.complete()
	if n == 0 {
		return nil, false, err
	}
	return sp.consume(n), true, nil
}

// complete returns the length of the complete message at the start of the
// buffered bytes, or 0 while it is incomplete or the stream is unparsable.
func (sp *strparser) complete() (int, error) {
	if sp.failed {
		return 0, sp.err
	}
	avail := sp.end - sp.start
	if avail == 0 {
		return 0, nil
	}
	if sp.need == 0 {
		if avail == sp.seen {
			return 0, nil // the parser already found these bytes short
		}
		if err := sp.parse(); err != nil {
			sp.err, sp.failed = err, true
			return 0, err
		}
		if sp.need == 0 {
			return 0, nil
		}
	}
	if avail < sp.need {
		return 0, nil
	}
	return sp.need, nil
}

// consume takes the complete message of n bytes that complete reported.
func (sp *strparser) consume(n int) []byte {
	end := sp.start + n
	b := sp.data[sp.start:end:end]
	sp.start = end
	sp.need, sp.seen = 0, 0
	if sp.timed {
		sp.since = sp.lastRead // leftover bytes, if any, came with the last read
	}
	return b
}

func (sp *strparser) parse() error {
	b := sp.data[sp.start:sp.end]
	if sp.guard != guardOff {
		sp.guard = guardParsing
		n, err := parse(sp.parser, b)
		sp.guard = guardOn
		return sp.judge(b, n, err)
	}
	return sp.parseBytes(b)
}

// parseBytes asks the parser for the length of the message at the start of
// b, the unconsumed bytes, and records it in need (or, while b is short, its
// length in seen).
func (sp *strparser) parseBytes(b []byte) error {
	n, err := callParser(sp.parser, b)
	return sp.judge(b, n, err)
}

// judge records what the parser said about b, n or err, and returns the
// error that fails the stream, if any.
func (sp *strparser) judge(b []byte, n int, err error) error {
	switch {
	case err != nil:
		if sp.seen > 0 {
			sp.stats.unrecovIntr.Add(1)
		} else {
			sp.stats.interrupted.Add(1)
		}
		return fmt.Errorf("%w: %w", ErrParse, err)
	case n < 0:
		sp.stats.badHdrLen.Add(1)
		return fmt.Errorf("%w: parser returned %d", ErrBadLength, n)
	case n == 0:
		sp.stats.needMoreHdr.Add(1)
		if len(b) >= sp.max {
			sp.stats.msgTooBig.Add(1)
			return fmt.Errorf("%w: no length after %d bytes (limit %d)", ErrMessageTooBig, len(b), sp.max)
		}
		sp.seen = len(b)
		return nil
	case n > sp.max:
		sp.stats.msgTooBig.Add(1)
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrMessageTooBig, n, sp.max)
	case n <= sp.seen:
		sp.stats.badHdrLen.Add(1)
		return fmt.Errorf("%w: parser returned %d after needing more than %d bytes", ErrBadLength, n, sp.seen)
	}
	sp.need = n
	return nil
}

// callParser calls p, turning a panic into an error: a parser that chokes
// on bad input stops its psock, not the process.
func callParser(p Parser, b []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, parserPanic(r)
		}
	}()
	return parse(p, b)
}

// parse calls p's Parse through the interface, whose method table is
// shared by every psock: a method value would be a closure of its own per
// psock, one more cold line per message with hundreds of muxes busy. A
// ParserFunc is called directly, saving the method that would call it.
func parse(p Parser, b []byte) (int, error) {
	if f, ok := p.(ParserFunc); ok {
		return f(b)
	}
	return p.Parse(b)
}

var errParserPanic = errors.New("parser panicked")

func parserPanic(r any) error { return fmt.Errorf("%w: %v", errParserPanic, r) }

// space returns the free part of the buffer to read into, moving or
// growing the buffer so the message being assembled fits in one piece.
func (sp *strparser) space() []byte {
	if sp.buf == nil {
		sp.setBuf(sp.pool.get(max(sp.need, minBufSize)))
		return sp.data[sp.end:]
	}
	pending := sp.end - sp.start
	if pending == 0 && sp.unshared() {
		// Nobody else looks at the old bytes: reuse.
		sp.start, sp.end, sp.lent = int(sp.colour), int(sp.colour), false
	}
	want := sp.need
	if want == 0 {
		want = pending + minBufSize/4 // unknown length: ask for a useful amount of room
	}
	if len(sp.data)-sp.start >= want && len(sp.data)-sp.end >= min(want-pending, minBufSize/4) {
		return sp.data[sp.end:]
	}
	size := max(want, minBufSize)
	if sp.unshared() && size <= len(sp.data) {
		copy(sp.data, sp.data[sp.start:sp.end])
		sp.lent = false
	} else {
		old, rest, held := sp.buf, sp.data[sp.start:sp.end], 1+sp.credit
		sp.setBuf(sp.pool.get(size))
		copy(sp.data, rest)
		old.releaseN(held)
	}
	sp.start, sp.end = 0, pending
	return sp.data[sp.end:]
}

// takeDirect takes in the bytes b that a read put straight into room
// bytes of a receiver's buffer while nothing else was buffered. When b
// begins with a whole message, it counts the message, keeps the bytes
// after it and returns its length: the message stays where it is, b[:n],
// and the psock's buffer is not touched (nor held, when b was the message
// alone). Otherwise it keeps all of b, with what the parser said about it,
// and returns 0; the caller reads on as usual. It remembers whether b was
// exactly one message, the pattern of request/response traffic that makes
// the next read worth doing directly. Reads with an assembly deadline do
// not come here (see plainRead).
func (sp *strparser) takeDirect(b []byte, room int) int {
	err := sp.parseBytes(b)
	if err != nil {
		sp.err, sp.failed = err, true
	} else if n := sp.need; n > 0 && n <= len(b) {
		sp.need = 0
		sp.carved.add(1, n)
		sp.predict(n, len(b), room)
		if sp.direct > 0 {
			sp.dropIfEmpty() // reads go around the buffer now: give it back
		}
		sp.keep(b[n:])
		return n
	}
	sp.direct = 0
	sp.keep(b)
	return 0
}

// predict notes whether a read of rn bytes, into room bytes of space, was
// exactly one message of n bytes: request/response traffic, whose next
// read may go straight into a receiver's buffer. Only a read that left
// room counts: one that filled its space may have left more behind.
func (sp *strparser) predict(n, rn, room int) {
	sp.direct = 0
	if n == rn && rn < room && n <= math.MaxInt32 {
		sp.direct = int32(n)
	}
}

// directInto reports whether the next read, with nothing buffered, may go
// straight into dst: the last read was one whole message and dst has room
// to spare beyond one of that length, so that a read cut short by dst does
// not show the parser less than the buffered read would.
func (sp *strparser) directInto(dst []byte) bool {
	return sp.direct > 0 && len(dst) > int(sp.direct) && sp.start == sp.end
}

// readSize returns how many bytes a read into space() would be offered
// now, with nothing buffered, without taking a buffer.
func (sp *strparser) readSize() int {
	switch {
	case sp.buf == nil:
		return minBufSize - int(sp.colour)
	case sp.unshared():
		return len(sp.data) - int(sp.colour)
	case len(sp.data)-sp.end >= minBufSize/4:
		return len(sp.data) - sp.end
	}
	return minBufSize
}

// keep appends b to the buffered bytes.
func (sp *strparser) keep(b []byte) {
	for len(b) > 0 {
		k := copy(sp.space(), b)
		sp.commit(k)
		b = b[k:]
	}
}

// unshared reports whether no message lent from the buffer is still held.
func (sp *strparser) unshared() bool { return !sp.lent || sp.buf.refs.Load() == 1+sp.credit }

// setBuf makes b, fresh from the pool, the buffer to read into.
func (sp *strparser) setBuf(b *rbuf) {
	sp.buf, sp.data, sp.lent, sp.credit = b, b.b, false, 0
	sp.start, sp.end = 0, 0
	if sp.need == 0 {
		sp.start, sp.end = int(sp.colour), int(sp.colour)
	}
}

// newColour returns a read start offset for a psock's empty buffers.
// Pooled buffers are large allocations, aligned alike, so the first bytes
// of every psock's buffer would fall in the same few cache sets, and with
// hundreds of busy psocks evict each other on every message (the kernel's
// copy into the buffer and the parser's look at it both miss). Starting
// each psock at its own multiple of the line size within the first 8 KiB
// spreads them over 128 sets of each cache way.
func newColour() int32 { return rand.Int32N(colours) * 64 }

const colours = 128

// commit accounts n bytes read into the slice space returned.
func (sp *strparser) commit(n int) {
	if sp.timed && n > 0 {
		sp.lastRead = time.Now()
		if sp.end == sp.start {
			sp.since = sp.lastRead
		}
	}
	sp.end += n
}

// deadline returns when the message being assembled must be complete, or
// the zero time when there is none.
func (sp *strparser) deadline() time.Time {
	if !sp.timed || sp.end == sp.start {
		return time.Time{}
	}
	return sp.since.Add(sp.timeout)
}

// dropIfEmpty gives the buffer back when no bytes are pending, so an idle
// psock holds no memory.
func (sp *strparser) dropIfEmpty() {
	if sp.buf != nil && sp.start == sp.end {
		sp.dropBuf()
		sp.start, sp.end = 0, 0
	}
}

// takeRest returns a copy of every buffered, undelivered byte and resets
// the parser; the buffer goes back to its pool.
func (sp *strparser) takeRest() []byte {
	var rest []byte
	if sp.buf != nil {
		if sp.end > sp.start {
			rest = append([]byte(nil), sp.data[sp.start:sp.end]...)
		}
		sp.dropBuf()
	}
	sp.start, sp.end, sp.need, sp.seen = 0, 0, 0, 0
	return rest
}

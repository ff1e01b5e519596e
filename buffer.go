package kcm

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// Read buffers come from per-mux pools in size classes and are reference
// counted: the psock that reads into a buffer holds one reference, and every
// message carved out of it and lent to the application holds one more. A
// buffer goes back to its pool when the last reference is dropped, so an idle
// psock holds no buffer at all. The reader takes references for the messages
// it will lend in batches (strparser.lend), so that lending one costs no
// atomic operation; only Release does.
const (
	minBufSize   = 64 << 10
	bufClassStep = 2 // each class is 4x the previous one
	numBufClass  = 5 // 64 KiB .. 16 MiB; larger messages get their own allocation
)

type rbuf struct {
	b    []byte
	refs atomic.Int32
	pool *sync.Pool // nil when the buffer is not pooled
}

// release drops one reference and recycles the buffer after the last one.
func (b *rbuf) release() { b.releaseN(1) }

// releaseN drops n references.
func (b *rbuf) releaseN(n int32) {
	if b.refs.Add(-n) == 0 && b.pool != nil {
		b.pool.Put(b)
	}
}

// bufPool hands out read buffers by size class.
type bufPool struct {
	classes [numBufClass]sync.Pool
}

func newBufPool() *bufPool {
	bp := &bufPool{}
	for i := range bp.classes {
		size := minBufSize << (bufClassStep * i)
		pool := &bp.classes[i]
		pool.New = func() any { return &rbuf{b: make([]byte, size), pool: pool} }
	}
	return bp
}

// get returns a buffer of at least n bytes with one reference.
func (bp *bufPool) get(n int) *rbuf {
	for i := range bp.classes {
		if n <= minBufSize<<(bufClassStep*i) {
			b := bp.classes[i].Get().(*rbuf)
			b.refs.Store(1)
			return b
		}
	}
	b := &rbuf{b: make([]byte, n)}
	b.refs.Store(1)
	return b
}

// Message is a received message whose bytes are lent from a pooled buffer.
// The bytes stay valid until Release; call Release exactly once when done
// with them. The zero Message is empty and its Release is a no-op.
type Message struct {
	b    []byte
	buf  *rbuf
	p    *Psock
	seq  uint32 // delivery order, with Affinity: see popOwnLocked
	rest bool   // b is the unread rest of a message a socket began reading
	own  bool   // taken from its socket's own queue (affinity)
	more bool   // a piece whose rest its socket keeps: see splitLocked
}

// lend makes m the message b, lent from buf, received on p. It writes the
// fields one by one: assigning a composite literal builds it on the stack
// and copies it with 16-byte loads that its 8-byte stores cannot forward
// to, a stall per message (a fifth of RecvBatch's time for 64 B messages).
func (m *Message) lend(b []byte, buf *rbuf, p *Psock) {
	m.b, m.buf, m.p = b, buf, p
	m.seq, m.rest, m.own, m.more = 0, false, false, false
}

// Bytes returns the message, header included. The slice is valid until
// Release.
func (m *Message) Bytes() []byte { return m.b }

// Len returns the message length in bytes.
func (m *Message) Len() int { return len(m.b) }

// Psock returns the psock the message was received on.
func (m *Message) Psock() *Psock { return m.p }

// Release gives the message's buffer back and empties m; releasing an
// empty Message does nothing.
func (m *Message) Release() {
	if m.buf != nil {
		m.buf.release()
	}
	*m = Message{}
}

// ReleaseBatch releases every message of ms, as Release does, with one
// buffer update per run of messages that share a buffer (a batch received
// together usually shares one).
func ReleaseBatch(ms []Message) {
	for i := 0; i < len(ms); {
		buf := ms[i].buf
		j := i + 1
		for j < len(ms) && ms[j].buf == buf {
			j++
		}
		if buf != nil {
			buf.releaseN(int32(j - i))
		}
		clear(ms[i:j])
		i = j
	}
}

// msgQueue is a FIFO of messages: a growable ring.
type msgQueue struct {
	size, head int // size first: the receive path looks only at it
	bytes      int
	q          []Message
}

func (q *msgQueue) len() int { return q.size }

// msgCost is the bookkeeping of a queued message: its place in a queue.
const msgCost = int(unsafe.Sizeof(Message{}))

// maxIdleRing is the largest ring an empty queue keeps: a burst of many
// small messages does not hold its ring after it drained.
const maxIdleRing = 4096

func (q *msgQueue) push(m Message) {
	if q.size == len(q.q) {
		q.grow()
	}
	q.q[(q.head+q.size)%len(q.q)] = m
	q.size++
	q.bytes += len(m.b)
}

// pushFront puts a message back at the head, for peeked messages.
func (q *msgQueue) pushFront(m Message) {
	if q.size == len(q.q) {
		q.grow()
	}
	q.head = (q.head - 1 + len(q.q)) % len(q.q)
	q.q[q.head] = m
	q.size++
	q.bytes += len(m.b)
}

func (q *msgQueue) pop() Message {
	m := q.q[q.head]
	q.q[q.head] = Message{}
	q.head = (q.head + 1) % len(q.q)
	q.size--
	q.bytes -= len(m.b)
	if q.size == 0 && len(q.q) > maxIdleRing {
		q.q, q.head = nil, 0
	}
	return m
}

func (q *msgQueue) grow() {
	n := 2 * len(q.q)
	if n == 0 {
		n = 16
	}
	nq := make([]Message, n)
	for i := 0; i < q.size; i++ {
		nq[i] = q.q[(q.head+i)%len(q.q)]
	}
	q.q, q.head = nq, 0
}

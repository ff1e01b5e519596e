package kcm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/gokcm/kcm/internal/testconn"
)

// r9Parser is a 4-byte big-endian length prefix that records the length of
// every buffer it is called with.
type r9Parser struct {
	mu   sync.Mutex
	lens []int
}

func (r *r9Parser) Parse(b []byte) (int, error) {
	r.mu.Lock()
	r.lens = append(r.lens, len(b))
	r.mu.Unlock()
	if len(b) < 4 {
		return 0, nil
	}
	return testconn.FrameLen(b), nil
}

func (r *r9Parser) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lens
	r.lens = nil
	return l
}

func r9Msg(id byte, size int) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(size-4))
	for i := 4; i < size; i++ {
		b = append(b, id^byte(i))
	}
	return b
}

// r9Pipe attaches one end of a net.Pipe (each read gets at most one write,
// so splits are where the test puts them) and returns a socket, the
// psock, its parser and a channel whose writes the peer makes in order.
func r9Pipe(t *testing.T, cfg Config) (*Mux, *Psock, *Socket, *r9Parser, chan<- []byte) {
	t.Helper()
	m := NewMux(cfg)
	c, peer := net.Pipe()
	rp := &r9Parser{}
	p, err := m.Attach(c, rp)
	if err != nil {
		t.Fatal(err)
	}
	writes := make(chan []byte, 16)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for b := range writes {
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { m.Close(); close(writes); peer.Close(); <-wrote })
	return m, p, m.NewSocket(Datagram), rp, writes
}

// r9Lockstep makes request/response traffic: one whole message per read,
// which turns on the fast path's direct reads.
func r9Lockstep(t *testing.T, s *Socket, writes chan<- []byte) {
	t.Helper()
	buf := make([]byte, 64)
	for i := range 3 {
		msg := r9Msg(byte(i), 16)
		writes <- msg
		if n, err := s.Recv(buf); err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("lockstep %d: %q, %v", i, buf[:n], err)
		}
	}
}

// TestDirectReadShortBufferParsesLikeBuffered: a receive whose buffer is
// shorter than a message header must not change what the parser is
// called with, nor NeedMoreHdr. The buffered path reads the 30-byte
// message, which arrives in one piece, whole, and the parser sees its
// header at once; a read straight into a 2-byte buffer showed the parser 2
// bytes first and counted a NeedMoreHdr the stream never had.
//
// It failed after 16ce6b4: a read cut short by the caller's buffer cannot
// be made to look like the buffered read. Direct reads now need a buffer
// longer than the message that predicted them.
func TestDirectReadShortBufferParsesLikeBuffered(t *testing.T) {
	_, p, s, rp, writes := r9Pipe(t, Config{})
	r9Lockstep(t, s, writes)
	before := p.Stats().NeedMoreHdr
	rp.take()
	msg := r9Msg(9, 30)
	writes <- msg
	short := make([]byte, 2)
	if n, err := s.Recv(short); n != 2 || !errors.Is(err, ErrTruncated) || !bytes.Equal(short, msg[:2]) {
		t.Fatalf("Recv into 2 bytes: %d, %v, %x", n, err, short)
	}
	if calls := rp.take(); !slices.Equal(calls, []int{30}) {
		t.Errorf("parser called with %v bytes; want [30], the one read of the whole message", calls)
	}
	if got := p.Stats().NeedMoreHdr - before; got != 0 {
		t.Errorf("NeedMoreHdr grew by %d for a message that arrived whole; want 0", got)
	}
	// The stream goes on in step.
	r9Lockstep(t, s, writes)
}

// TestDirectReadKeepsPsockBufferBounded: a big receive buffer must not let
// one read take more of the stream than the psock's own buffer would.
// After request/response traffic the peer sends a burst of 1 MiB of small
// messages in one write; the receiver takes one message into a 2 MiB
// buffer. With RecvBuffer at 64 KiB the rest must stay with the peer (flow
// control), not in the psock: once the mux is full and the psock paused,
// it may hold no more than one read buffer's worth of bytes.
func TestDirectReadKeepsPsockBufferBounded(t *testing.T) {
	m, p, s, _, writes := r9Pipe(t, Config{RecvBuffer: 64 << 10})
	r9Lockstep(t, s, writes)
	var burst []byte
	for i := range 256 {
		burst = append(burst, r9Msg(byte(i), 4<<10)...)
	}
	writes <- burst
	big := make([]byte, 2<<20)
	if n, err := s.Recv(big); err != nil || !bytes.Equal(big[:n], burst[:4<<10]) {
		t.Fatalf("Recv: %d bytes, %v; want the burst's first message", n, err)
	}
	waitLocked(t, m, "the psock never paused", func() bool { return p.rx == rxPaused })
	held, size := p.sp.buffered(), len(p.sp.data)
	m.mu.Unlock()
	if held > minBufSize || size > minBufSize {
		t.Fatalf("paused psock holds %d bytes in a %d-byte buffer (RecvBuffer 64 KiB); want at most %d", held, size, minBufSize)
	}
	// Every message still arrives, in order.
	for i := 1; i < 256; i++ {
		n, err := s.Recv(big)
		if err != nil || !bytes.Equal(big[:n], burst[i*(4<<10):(i+1)*(4<<10)]) {
			t.Fatalf("message %d of the burst: %d bytes, %v", i, n, err)
		}
	}
}

// TestReadSizeIsSpace: the direct read's limit is exactly what a read into
// the psock's buffer would be offered, with nothing buffered: no buffer,
// a buffer of its own, one shared with a lent message (room left, or not).
func TestReadSizeIsSpace(t *testing.T) {
	var stats psockCounters
	sp := strparser{
		parser: ParserFunc(func(b []byte) (int, error) {
			if len(b) < 4 {
				return 0, nil
			}
			return testconn.FrameLen(b), nil
		}),
		max: 1 << 20, pool: newBufPool(), stats: &stats, colour: 3 * 64,
	}
	check := func(state string) {
		t.Helper()
		want := sp.readSize()
		if got := len(sp.space()); got != want {
			t.Fatalf("%s: readSize %d, space %d", state, want, got)
		}
	}
	fill := func(size int) Message {
		msg := r9Msg(1, size)
		sp.commit(copy(sp.space(), msg))
		m, ok, err := sp.next(nil)
		if !ok || err != nil || !bytes.Equal(m.b, msg) {
			t.Fatalf("carving a %d-byte message: %v, %v", size, ok, err)
		}
		return m
	}
	check("no buffer")
	m := fill(100)
	m.Release()
	check("own buffer")
	lent := fill(1000)
	check("shared, room left")
	for room := len(sp.data) - sp.end; room >= minBufSize/4; room = len(sp.data) - sp.end {
		more := fill(min(room-8000, 30000))
		more.Release()
	}
	check("shared, little room")
	lent.Release()
}

package kcm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 3 / zero-copy: a lent Message's bytes stay intact until Release,
// however much more the psock reads meanwhile and whatever else is
// released, through RecvMessage and RecvBatch, with one and with several
// psocks.
func TestReview2LentMessagesStayIntact(t *testing.T) {
	for _, npsocks := range []int{1, 3} {
		m := newMux(t, kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		const perPeer = 1500
		rng := rand.New(rand.NewSource(int64(npsocks)))
		for i := 0; i < npsocks; i++ {
			_, peer := attachPeer(t, m)
			var stream []byte
			for j := 0; j < perPeer; j++ {
				stream = append(stream, msgOf(uint32(i<<16|j), 1+rng.Intn(3000))...)
			}
			go writeChunked(peer, stream, rand.New(rand.NewSource(int64(i))))
		}
		var held []kcm.Message
		var releasedCopies [][]byte // verified copies of released messages
		batch := make([]kcm.Message, 7)
		total := npsocks * perPeer
		for len(held)+len(releasedCopies) < total {
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got []kcm.Message
			if rng.Intn(2) == 0 {
				msg, err := s.RecvMessage()
				if err != nil {
					t.Fatal(err)
				}
				got = []kcm.Message{msg}
			} else {
				n, err := s.RecvBatch(batch)
				if err != nil {
					t.Fatal(err)
				}
				got = append([]kcm.Message(nil), batch[:n]...)
				clear(batch)
			}
			for _, msg := range got {
				checkMsg(t, msg.Bytes())
				if rng.Intn(3) == 0 { // release a third right away
					releasedCopies = append(releasedCopies, append([]byte(nil), msg.Bytes()...))
					msg.Release()
				} else {
					held = append(held, msg)
				}
			}
			// Now and then release a random held message too.
			if len(held) > 0 && rng.Intn(4) == 0 {
				i := rng.Intn(len(held))
				releasedCopies = append(releasedCopies, append([]byte(nil), held[i].Bytes()...))
				held[i].Release()
				held = append(held[:i], held[i+1:]...)
			}
		}
		seen := map[uint32]bool{}
		for i := range held {
			id := checkMsg(t, held[i].Bytes())
			if seen[id] {
				t.Fatalf("message %x twice", id)
			}
			seen[id] = true
			if held[i].Psock() == nil {
				t.Fatal("message without psock")
			}
		}
		for _, b := range releasedCopies {
			id := checkMsg(t, b)
			if seen[id] {
				t.Fatalf("message %x twice", id)
			}
			seen[id] = true
		}
		if len(seen) != total {
			t.Fatalf("%d distinct messages, want %d", len(seen), total)
		}
		kcm.ReleaseBatch(held)
		for i := range held {
			if held[i].Len() != 0 {
				t.Fatal("ReleaseBatch did not empty the message")
			}
		}
	}
}

// Spec 3: messages whose total length sits on and around every read
// buffer class boundary (64 KiB, 256 KiB, 1 MiB, 4 MiB, 16 MiB) arrive
// intact, in order, through random chunking, while earlier ones are still
// held unreleased.
func TestReview2BufferClassBoundaries(t *testing.T) {
	m := newMux(t, kcm.Config{MaxMessageSize: 17 << 20})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	var sizes []int
	for _, b := range []int{64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		sizes = append(sizes, b-1, b, b+1)
	}
	sizes = append(sizes, 12, 64<<10) // and small ones after the big ones
	var total uint64
	var stream []byte
	for i, n := range sizes {
		stream = append(stream, msgOf(uint32(i), n-4)...) // n bytes, header included
		total += uint64(n)
	}
	go writeChunked(peer, stream, rand.New(rand.NewSource(9)))
	var held []kcm.Message
	defer func() { kcm.ReleaseBatch(held) }()
	for i, n := range sizes {
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		msg, err := s.RecvMessage()
		if err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, n, err)
		}
		if msg.Len() != n {
			t.Fatalf("message %d: %d bytes, want %d", i, msg.Len(), n)
		}
		if id := checkMsg(t, msg.Bytes()); id != uint32(i) {
			t.Fatalf("got %d want %d", id, i)
		}
		held = append(held, msg)
	}
	for i := range held {
		if id := checkMsg(t, held[i].Bytes()); id != uint32(i) {
			t.Fatalf("held message %d now says %d", i, id)
		}
	}
	st := p.Stats()
	if st.RxMsgs != uint64(len(sizes)) || st.RxBytes != total {
		t.Fatalf("psock rx %d msgs %d bytes, want %d %d", st.RxMsgs, st.RxBytes, len(sizes), total)
	}
	if ss := s.Stats(); ss.RxMsgs != uint64(len(sizes)) || ss.RxBytes != total {
		t.Fatalf("socket rx %d msgs %d bytes, want %d %d", ss.RxMsgs, ss.RxBytes, len(sizes), total)
	}
}

// Spec 3 (parser contract): a parser that needs more than 64 KiB of a
// message before it can tell the length (a delimiter-framed protocol) is
// called again as bytes arrive, always from the message start, and the
// messages come out whole. Parse must also give up at MaxMessageSize.
func TestReview2ParserNeedsLongHeader(t *testing.T) {
	newline := kcm.ParserFunc(func(b []byte) (int, error) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return i + 1, nil
		}
		return 0, nil
	})
	m := newMux(t, kcm.Config{MaxMessageSize: 1 << 20})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	p, err := m.Attach(c, newline)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	var stream []byte
	for i, n := range []int{70 << 10, 1, 300 << 10, 65535, 65536, 65537, 1 << 20} {
		b := bytes.Repeat([]byte{byte('a' + i)}, n-1)
		b = append(b, '\n')
		msgs = append(msgs, b)
		stream = append(stream, b...)
	}
	go writeChunked(peer, stream, rand.New(rand.NewSource(3)))
	for i, want := range msgs {
		got := recvWithin(t, s, 10*time.Second)
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	if st := p.Stats(); st.NeedMoreHdr == 0 {
		t.Fatal("NeedMoreHdr not counted")
	}
	// No delimiter within MaxMessageSize: the psock aborts, message too big.
	go peer.Write(bytes.Repeat([]byte{'z'}, 1<<20+10))
	err = waitDone(t, p)
	if !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("psock err %v, want ErrMessageTooBig", err)
	}
	if st := p.Stats(); st.MsgTooBig != 1 {
		t.Fatalf("MsgTooBig %d", st.MsgTooBig)
	}
}

// Spec 3: parsers returning absurd lengths (huge, negative, max int, or
// smaller than what they already saw) abort only their own psock with the
// right error and counter; nothing panics, and a healthy psock of the same
// mux keeps delivering.
func TestReview2BadLengthsAbortOnlyTheirPsock(t *testing.T) {
	cases := []struct {
		name    string
		parser  kcm.ParserFunc
		input   []byte
		want    error
		counter func(kcm.PsockStats) uint64
	}{
		{"huge", func(b []byte) (int, error) { return int(^uint(0) >> 2), nil }, []byte("x"), kcm.ErrMessageTooBig,
			func(s kcm.PsockStats) uint64 { return s.MsgTooBig }},
		{"maxint", func(b []byte) (int, error) { return int(^uint(0) >> 1), nil }, []byte("x"), kcm.ErrMessageTooBig,
			func(s kcm.PsockStats) uint64 { return s.MsgTooBig }},
		{"negative", func(b []byte) (int, error) { return -5, nil }, []byte("x"), kcm.ErrBadLength,
			func(s kcm.PsockStats) uint64 { return s.BadHdrLen }},
		{"shrinks", func(b []byte) (int, error) {
			if len(b) < 10 {
				return 0, nil
			}
			return 3, nil
		}, []byte("01234" + "56789abc"), kcm.ErrBadLength, func(s kcm.PsockStats) uint64 { return s.BadHdrLen }},
		{"panics-index", func(b []byte) (int, error) { return int(b[100]), nil }, []byte("x"), kcm.ErrParse,
			func(s kcm.PsockStats) uint64 { return s.Interrupted }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			_, good := attachPeer(t, m)
			c, peer := tcpPair(t)
			bad, err := m.Attach(c, tc.parser)
			if err != nil {
				t.Fatal(err)
			}
			// Deliver the bytes split so the "shrinks" parser sees five
			// bytes first (and asks for more), then all of them.
			split := min(5, len(tc.input))
			peer.Write(tc.input[:split])
			if split < len(tc.input) {
				for end := time.Now().Add(5 * time.Second); bad.Stats().NeedMoreHdr == 0; {
					if time.Now().After(end) {
						t.Fatal("parser never asked for more")
					}
					time.Sleep(time.Millisecond)
				}
				peer.Write(tc.input[split:])
			}
			err = waitDone(t, bad)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if got := tc.counter(bad.Stats()); got != 1 {
				t.Fatalf("counter %d, want 1 (%+v)", got, bad.Stats())
			}
			// The peer of the failed psock sees its connection closed.
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := peer.Read(make([]byte, 1)); err == nil {
				t.Fatal("failed psock's connection still open")
			}
			good.Write(msgOf(7, 100))
			if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 7 {
				t.Fatalf("got %d", id)
			}
			if n := len(m.Psocks()); n != 1 {
				t.Fatalf("%d psocks left, want 1", n)
			}
		})
	}
}

// Spec 3 (peer EOF, backpressure): a peer that sends many messages and
// closes while the psock is paused by a full receive queue: every message
// is still delivered, in order, then the psock fails with io.EOF.
func TestReview2EOFWhilePaused(t *testing.T) {
	m := newMux(t, kcm.Config{RecvBuffer: 8 << 10})
	s := m.NewSocket(kcm.Datagram)
	p, peer := attachPeer(t, m)
	const n = 400
	var stream []byte
	for i := 0; i < n; i++ {
		stream = append(stream, msgOf(uint32(i), 1000)...)
	}
	go func() {
		peer.Write(stream)
		peer.Close()
	}()
	// Let the psock fill the queue and pause.
	for deadlineAt := time.Now().Add(5 * time.Second); ; {
		if bytes.Contains([]byte(proc(m)), []byte("RxPause")) {
			break
		}
		if time.Now().After(deadlineAt) {
			t.Fatalf("psock never paused:\n%s", proc(m))
		}
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < n; i++ {
		if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != uint32(i) {
			t.Fatalf("got %d want %d", id, i)
		}
	}
	if err := waitDone(t, p); err != io.EOF {
		t.Fatalf("psock err %v, want io.EOF", err)
	}
	if st := p.Stats(); st.RxMsgs != n {
		t.Fatalf("RxMsgs %d", st.RxMsgs)
	}
	_ = binary.BigEndian
	_ = sync.Mutex{}
}

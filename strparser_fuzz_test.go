package kcm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand"
	"testing"
)

// FuzzReassembly feeds a stream of 2-byte-length-prefixed messages to the
// strparser in random chunks, keeping every message lent until the end,
// and checks the messages are exactly the reference split: no byte lost,
// duplicated or overwritten by buffer reuse, and the size limit enforced.
// Some chunks arrive the way recvFast reads request/response traffic,
// straight into a receiver's buffer (takeDirect); some messages are taken
// in batches as RecvBatch takes them (nextBatch). A length of panicLen
// makes the parser panic, which must fail the stream with ErrParse after
// the messages before it, in a batch or not.
func FuzzReassembly(f *testing.F) {
	f.Add(int64(1), []byte{0, 3, 'a', 'b', 'c', 0, 0, 0, 1, 'x'})
	f.Add(int64(7), bytes.Repeat([]byte{0, 200}, 300))
	f.Add(int64(3), append([]byte{0xff, 0xff}, make([]byte, 100)...))
	f.Add(int64(3), append(bytes.Repeat([]byte{0, 1, 'y'}, 4), 0xff, 0xfe, 0)) // a panic inside a batch
	f.Fuzz(func(t *testing.T, seed int64, stream []byte) {
		const limit = 40000
		want, wantErr := referenceSplit(stream, limit)
		rng := rand.New(rand.NewSource(seed))
		var stats psockCounters
		sp := strparser{
			parser: ParserFunc(func(b []byte) (int, error) {
				if len(b) < 2 {
					return 0, nil
				}
				if binary.BigEndian.Uint16(b) == panicLen {
					panic("fuzz")
				}
				return 2 + int(binary.BigEndian.Uint16(b)), nil
			}),
			max:   limit,
			pool:  newBufPool(),
			stats: &stats,
		}
		var got []Message
		var err error
		rest := stream
		for err == nil {
			var m Message
			var ok bool
			m, ok, err = sp.next(nil)
			if ok {
				got = append(got, m)
				if rng.Intn(2) == 0 {
					batch := make([]Message, rng.Intn(8))
					got = append(got, batch[:sp.nextBatch(nil, batch)]...)
				}
				continue
			}
			if err != nil || len(rest) == 0 {
				break
			}
			if sp.buffered() == 0 && rng.Intn(3) == 0 {
				// A read straight into a receiver's buffer (recvFast's
				// request/response path).
				dst := make([]byte, 1+rng.Intn(300))
				n := copy(dst, rest)
				rest = rest[n:]
				if k := sp.takeDirect(dst[:n], len(dst)); k > 0 {
					got = append(got, Message{b: dst[:k]})
				}
				continue
			}
			space := sp.space()
			n := min(len(space), len(rest), 1+rng.Intn(5000))
			copy(space, rest[:n])
			sp.commit(n)
			rest = rest[n:]
			if rng.Intn(4) == 0 {
				sp.dropIfEmpty()
			}
		}
		if (err != nil) != (wantErr != nil) || (err != nil && !errors.Is(err, wantErr)) {
			t.Fatalf("error %v, want %v", err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("%d messages, want %d", len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i].b, want[i]) {
				t.Fatalf("message %d differs", i)
			}
		}
		if sp.carved.msgs != uint64(len(got)) || sp.carved.bytes != uint64(consumed(want)) {
			t.Fatalf("carved %+v, want %d messages of %d bytes", sp.carved, len(got), consumed(want))
		}
		if err == nil && sp.buffered() != len(stream)-consumed(want) {
			t.Fatalf("%d bytes buffered, want %d", sp.buffered(), len(stream)-consumed(want))
		}
		for i := range got {
			got[i].Release()
		}
		sp.takeRest()
	})
}

// panicLen is the length field FuzzReassembly's parser panics on.
const panicLen = 0xfffe

func referenceSplit(stream []byte, limit int) ([][]byte, error) {
	var msgs [][]byte
	for len(stream) >= 2 {
		if binary.BigEndian.Uint16(stream) == panicLen {
			return msgs, ErrParse
		}
		n := 2 + int(binary.BigEndian.Uint16(stream))
		if n > limit {
			return msgs, ErrMessageTooBig
		}
		if len(stream) < n {
			break
		}
		msgs = append(msgs, stream[:n])
		stream = stream[n:]
	}
	return msgs, nil
}

func consumed(msgs [][]byte) int {
	n := 0
	for _, m := range msgs {
		n += len(m)
	}
	return n
}

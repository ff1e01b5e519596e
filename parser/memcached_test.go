package parser_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm/internal/peers"
	"github.com/gokcm/kcm/internal/prototest"
	"github.com/gokcm/kcm/parser"
)

// Memcached binary protocol opcodes used by the interop test.
const (
	mcGet    = 0x00
	mcSet    = 0x01
	mcDelete = 0x04
	mcNoop   = 0x0a
	mcGetQ   = 0x09
	mcGetK   = 0x0c
	mcSetQ   = 0x11
)

// mcRequest encodes a binary protocol request.
func mcRequest(op byte, opaque uint32, key, extras, value []byte) []byte {
	return peers.MemcachedRequest(op, opaque, key, extras, value)
}

func startMemcached(t *testing.T) string { return peers.Memcached(t) }

// TestMemcachedRealServer sends real binary-protocol requests (sets, gets,
// misses, quiet operations ended by a NOOP) to a real memcached, reads its
// raw replies, and checks that the Memcached built-in, fed those bytes in
// random chunks, delineates every reply exactly.
func TestMemcachedRealServer(t *testing.T) {
	addr := startMemcached(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	type reply struct {
		opaque uint32
		op     byte
	}
	var reqs []byte
	var want []reply // replies in order; quiet hits reply, quiet misses and quiet sets do not
	r := rand.New(rand.NewPCG(7, 8))
	opaque := uint32(0)
	add := func(op byte, key, extras, value []byte, replies bool) {
		opaque++
		reqs = append(reqs, mcRequest(op, opaque, key, extras, value)...)
		if replies {
			want = append(want, reply{opaque, op})
		}
	}
	flags := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0} // flags, expiry
	var stored []string
	for i := range 40 {
		key := []byte(fmt.Sprintf("key-%d", i))
		value := bytes.Repeat([]byte{byte('a' + i%26)}, r.IntN(3000))
		switch i % 4 {
		case 0, 1:
			add(mcSet, key, flags, value, true)
		default:
			add(mcSetQ, key, flags, value, false)
		}
		stored = append(stored, string(key))
	}
	add(mcNoop, nil, nil, nil, true)
	for i, k := range stored {
		switch i % 3 {
		case 0:
			add(mcGet, []byte(k), nil, nil, true)
		case 1:
			add(mcGetK, []byte(k), nil, nil, true)
		default:
			add(mcGetQ, []byte(k), nil, nil, true) // hit: replies
		}
	}
	add(mcGet, []byte("missing"), nil, nil, true)   // miss: error reply
	add(mcGetQ, []byte("missing"), nil, nil, false) // quiet miss: no reply
	add(mcDelete, []byte("key-0"), nil, nil, true)
	add(mcNoop, nil, nil, nil, true)

	if _, err := c.Write(reqs); err != nil {
		t.Fatal(err)
	}
	// Read until the final NOOP's reply, located with the parser itself;
	// the chunked re-parse below checks the boundaries independently.
	var raw []byte
	buf := make([]byte, 64<<10)
	p := parser.Memcached()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for count := 0; count < len(want); {
		n, err := c.Read(buf)
		if err != nil && err != io.EOF {
			t.Fatalf("read after %d replies: %v", count, err)
		}
		raw = append(raw, buf[:n]...)
		lens, _, perr := prototest.Split(p, raw, nil)
		if perr != nil {
			t.Fatal(perr)
		}
		count = len(lens)
		if err == io.EOF && count < len(want) {
			t.Fatalf("server closed after %d of %d replies", count, len(want))
		}
	}

	for round := range 50 {
		lens, rest, err := prototest.Split(p, raw, prototest.Chunks(r, len(raw)))
		if err != nil || rest != 0 || len(lens) != len(want) {
			t.Fatalf("round %d: %d replies (rest %d, err %v), want %d", round, len(lens), rest, err, len(want))
		}
		off := 0
		for i, n := range lens {
			m := raw[off : off+n]
			off += n
			if m[0] != 0x81 || m[1] != want[i].op || binary.BigEndian.Uint32(m[12:16]) != want[i].opaque {
				t.Fatalf("reply %d: magic %#x op %#x opaque %d; want 0x81, %#x, %d", i, m[0], m[1], binary.BigEndian.Uint32(m[12:16]), want[i].op, want[i].opaque)
			}
			if body := binary.BigEndian.Uint32(m[8:12]); int(body)+24 != n {
				t.Fatalf("reply %d: length %d, header says %d", i, n, body+24)
			}
		}
	}
}

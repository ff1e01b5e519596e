package prototest

import (
	"math/rand/v2"
	"testing"

	"github.com/gokcm/kcm"
)

// Form is one way of parsing a protocol, compared against its native
// parser.
type Form struct {
	Name string
	P    kcm.Parser
	// KernelInt says the form returns a BPF program's 32-bit result with
	// the kernel's int semantics (see Agree).
	KernelInt bool
}

// payloadSize picks a payload size for p: mostly small, sometimes at the
// encodings' boundaries, never above p.MaxPayload or 70000.
func payloadSize(r *rand.Rand, p Protocol) int {
	var n int
	switch r.IntN(10) {
	case 0:
		edges := []int{0, 1, 125, 126, 127, 128, 255, 256, 16383, 16384, 65535, 65536}
		n = edges[r.IntN(len(edges))]
	case 1:
		n = r.IntN(70000)
	default:
		n = r.IntN(64)
	}
	return min(n, p.MaxPayload)
}

// Stream returns a stream of count valid messages of p and their lengths.
func Stream(r *rand.Rand, p Protocol, count int) ([]byte, []int) {
	var s []byte
	var lens []int
	for range count {
		m := p.Gen(r, payloadSize(r, p))
		s = append(s, m...)
		lens = append(lens, len(m))
	}
	return s, lens
}

// Chunks returns random chunk sizes, often tiny so that headers arrive in
// pieces.
func Chunks(r *rand.Rand, total int) []int {
	var c []int
	for total > 0 {
		n := 1 + r.IntN(8)
		if r.IntN(4) == 0 {
			n = 1 + r.IntN(4096)
		}
		c = append(c, n)
		total -= n
	}
	return c
}

// CheckStreams delineates rounds random streams of p in random chunks with
// every form and fails t unless each finds exactly the generated messages.
func CheckStreams(t testing.TB, r *rand.Rand, p Protocol, forms []Form, rounds int) {
	t.Helper()
	for round := range rounds {
		stream, want := Stream(r, p, 1+r.IntN(20))
		chunks := Chunks(r, len(stream))
		for _, f := range forms {
			got, rest, err := Split(f.P, stream, chunks)
			if err != nil || rest != 0 || !equalInts(got, want) {
				t.Fatalf("%s/%s round %d: got %v (rest %d, err %v), want %v", p.Name, f.Name, round, got, rest, err, want)
			}
		}
	}
}

// CheckAgree fails t unless every form agrees with p.Native on b (see Agree).
func CheckAgree(t testing.TB, p Protocol, forms []Form, b []byte) {
	t.Helper()
	nat := Call(p.Native, b)
	for _, f := range forms {
		if got := Call(f.P, b); !Agree(nat, got, len(b), p.Need, f.KernelInt) {
			t.Fatalf("%s/%s on %x: got %v, native %v", p.Name, f.Name, b, got, nat)
		}
	}
}

// Inputs returns inputs that probe p's length handling: random bytes,
// truncated valid messages, and valid headers with random length bytes.
func Inputs(r *rand.Rand, p Protocol, count int) [][]byte {
	var in [][]byte
	for range count {
		var b []byte
		switch r.IntN(3) {
		case 0:
			b = fill(r, 0, r.IntN(24))
		case 1:
			m := p.Gen(r, payloadSize(r, p))
			b = m[:r.IntN(min(len(m), 24)+1)]
		default:
			m := p.Gen(r, r.IntN(16))
			b = m[:min(len(m), 24)]
			for range 1 + r.IntN(3) {
				b[r.IntN(len(b))] = []byte{0, 0x7f, 0x80, 0xff, byte(r.Uint32())}[r.IntN(5)]
			}
		}
		in = append(in, b)
	}
	return in
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

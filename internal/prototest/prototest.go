// Package prototest holds, for each built-in protocol of package parser, the
// equivalent forms of its parser (native, LengthField, classic BPF, eBPF
// program name), a generator of valid messages, and the stream driver and
// comparison rules the differential tests and fuzz targets of packages
// parser and bpf share. It is test support, not part of kcm's API.
package prototest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
	xbpf "golang.org/x/net/bpf"
)

// Protocol is one built-in protocol in all the forms that express it.
type Protocol struct {
	Name   string
	Native kcm.Parser
	// Field is the equivalent LengthField configuration; HasField is
	// false when the length cannot be expressed as one (WebSocket, MQTT).
	Field    parser.LengthField
	HasField bool
	// Classic is the equivalent classic BPF program, nil for protocols
	// whose length is not at a fixed offset (WebSocket, MQTT).
	Classic []xbpf.Instruction
	// EBPF is the program's name in bpf/testdata/parsers.o.
	EBPF string
	// Need is the number of bytes from which every form must answer; below
	// it, a form may still need more bytes where another answers already
	// (e.g. the kernel's load_word reads 4 bytes of HTTP/2's 3-byte length).
	Need int
	// Gen returns a valid message with about payload bytes of body.
	Gen func(r *rand.Rand, payload int) []byte
	// MaxPayload bounds payload for Gen.
	MaxPayload int
}

const (
	ebadmsg  = uint32(1<<32 - 74) // -EBADMSG as a BPF return value
	emsgsize = uint32(1<<32 - 90) // -EMSGSIZE
	neg      = 0x80000000
)

func ld(off uint32, size int) xbpf.Instruction { return xbpf.LoadAbsolute{Off: off, Size: size} }
func add(v uint32) xbpf.Instruction            { return xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: v} }
func ret(v uint32) xbpf.Instruction            { return xbpf.RetConstant{Val: v} }
func jge(v uint32, skip uint8) xbpf.Instruction {
	return xbpf.JumpIf{Cond: xbpf.JumpGreaterOrEqual, Val: v, SkipTrue: skip}
}
func jlt(v uint32, skip uint8) xbpf.Instruction {
	return xbpf.JumpIf{Cond: xbpf.JumpLessThan, Val: v, SkipTrue: skip}
}
func jgt(v uint32, skip uint8) xbpf.Instruction {
	return xbpf.JumpIf{Cond: xbpf.JumpGreaterThan, Val: v, SkipTrue: skip}
}

var retA = xbpf.RetA{}

// fill returns a message of hdr header bytes followed by n random bytes.
func fill(r *rand.Rand, hdr, n int) []byte {
	b := make([]byte, hdr+n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Protocols returns every built-in protocol, in parser's documentation
// order.
func Protocols() []Protocol {
	return []Protocol{
		{
			Name: "http2", Native: parser.HTTP2(), EBPF: "http2", Need: 4, MaxPayload: 1<<24 - 1,
			Field: parser.LengthField{Size: 3, Adjust: 6}, HasField: true,
			Classic: []xbpf.Instruction{ld(0, 4), xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 8}, add(9), retA},
			Gen: func(r *rand.Rand, n int) []byte {
				b := fill(r, 9, n)
				b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
				return b
			},
		},
		{
			Name: "thrift", Native: parser.Thrift(), EBPF: "thrift", Need: 4, MaxPayload: math.MaxInt32,
			Field: parser.LengthField{Size: 4, MaxLength: atMost(math.MaxInt32 + 4)}, HasField: true,
			Classic: []xbpf.Instruction{ld(0, 4), jge(neg, 2), add(4), retA, ret(ebadmsg)},
			Gen:     be32At(0, 4, 0),
		},
		{
			Name: "dns", Native: parser.DNS(), EBPF: "dns", Need: 2, MaxPayload: 65535,
			Field: parser.LengthField{Size: 2}, HasField: true,
			Classic: []xbpf.Instruction{ld(0, 2), add(2), retA},
			Gen: func(r *rand.Rand, n int) []byte {
				b := fill(r, 2, n)
				binary.BigEndian.PutUint16(b, uint16(n))
				return b
			},
		},
		{
			Name: "memcached", Native: parser.Memcached(), EBPF: "memcached", Need: 12, MaxPayload: math.MaxInt32,
			Field: parser.LengthField{Offset: 8, Size: 4, Adjust: 12}, HasField: true,
			Classic: []xbpf.Instruction{ld(8, 4), add(24), retA},
			Gen:     be32At(8, 24, 0),
		},
		{
			Name: "kafka", Native: parser.Kafka(), EBPF: "kafka", Need: 4, MaxPayload: math.MaxInt32,
			Field: parser.LengthField{Size: 4, MaxLength: atMost(math.MaxInt32 + 4)}, HasField: true,
			Classic: []xbpf.Instruction{ld(0, 4), jge(neg, 2), add(4), retA, ret(ebadmsg)},
			Gen:     be32At(0, 4, 0),
		},
		{
			Name: "postgres", Native: parser.Postgres(), EBPF: "postgres", Need: 5, MaxPayload: math.MaxInt32 - 4,
			Field:    parser.LengthField{Offset: 1, Size: 4, IncludesHeader: true, Adjust: 1, MaxLength: atMost(math.MaxInt32 + 1)},
			HasField: true,
			Classic:  []xbpf.Instruction{ld(1, 4), jge(neg, 3), jlt(4, 2), add(1), retA, ret(ebadmsg)},
			Gen:      be32At(1, 5, 4),
		},
		{
			Name: "postgres_startup", Native: parser.PostgresStartup(), EBPF: "postgres_startup", Need: 4,
			MaxPayload: parser.PostgresMaxStartup - 8,
			Field:      parser.LengthField{Size: 4, IncludesHeader: true, MinLength: 8, MaxLength: parser.PostgresMaxStartup},
			HasField:   true,
			Classic:    []xbpf.Instruction{ld(0, 4), jlt(8, 2), jgt(parser.PostgresMaxStartup, 2), retA, ret(ebadmsg), ret(emsgsize)},
			Gen:        be32At(0, 8, 8),
		},
		{
			Name: "mongo", Native: parser.Mongo(), EBPF: "mongo", Need: 4, MaxPayload: math.MaxInt32 - 16,
			Field:    parser.LengthField{Size: 4, LittleEndian: true, IncludesHeader: true, MinLength: 16, MaxLength: math.MaxInt32},
			HasField: true,
			Classic: []xbpf.Instruction{
				xbpf.LoadAbsolute{Off: 3, Size: 1}, xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftLeft, Val: 8}, xbpf.TAX{},
				xbpf.LoadAbsolute{Off: 2, Size: 1}, xbpf.ALUOpX{Op: xbpf.ALUOpOr}, xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftLeft, Val: 8}, xbpf.TAX{},
				xbpf.LoadAbsolute{Off: 1, Size: 1}, xbpf.ALUOpX{Op: xbpf.ALUOpOr}, xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftLeft, Val: 8}, xbpf.TAX{},
				xbpf.LoadAbsolute{Off: 0, Size: 1}, xbpf.ALUOpX{Op: xbpf.ALUOpOr},
				jge(neg, 2), jlt(16, 1), retA, ret(ebadmsg),
			},
			Gen: func(r *rand.Rand, n int) []byte {
				b := fill(r, 16, n)
				binary.LittleEndian.PutUint32(b, uint32(16+n))
				return b
			},
		},
		{
			Name: "tls", Native: parser.TLSRecord(), EBPF: "tls", Need: 5, MaxPayload: parser.TLSMaxRecord,
			Field:    parser.LengthField{Offset: 3, Size: 2, MaxLength: 5 + parser.TLSMaxRecord},
			HasField: true,
			Classic:  []xbpf.Instruction{ld(3, 2), jgt(parser.TLSMaxRecord, 2), add(5), retA, ret(emsgsize)},
			Gen: func(r *rand.Rand, n int) []byte {
				b := fill(r, 5, n)
				binary.BigEndian.PutUint16(b[3:], uint16(n))
				return b
			},
		},
		{
			Name: "rds", Native: parser.RDS(), EBPF: "rds", Need: 20, MaxPayload: math.MaxInt32 - 40,
			Field: parser.LengthField{Offset: 16, Size: 4, Adjust: 20}, HasField: true,
			Classic: []xbpf.Instruction{ld(16, 4), add(40), retA},
			Gen: func(r *rand.Rand, n int) []byte {
				b := fill(r, 40, n)
				binary.BigEndian.PutUint32(b[16:], uint32(n))
				return b
			},
		},
		{
			Name: "sockperf", Native: parser.Sockperf(), EBPF: "sockperf", Need: 14, MaxPayload: math.MaxInt32 - 14,
			Field:    parser.LengthField{Offset: 10, Size: 4, IncludesHeader: true, MaxLength: math.MaxInt32},
			HasField: true,
			Classic:  []xbpf.Instruction{ld(10, 4), jge(neg, 2), jlt(14, 1), retA, ret(ebadmsg)},
			Gen:      be32At(10, 14, 14),
		},
		{
			Name: "grpc", Native: parser.GRPC(), EBPF: "grpc", Need: 5, MaxPayload: math.MaxInt32,
			Field: parser.LengthField{Offset: 1, Size: 4}, HasField: true,
			Classic: []xbpf.Instruction{ld(1, 4), add(5), retA},
			Gen:     be32At(1, 5, 0),
		},
		{
			// Not a LengthField or classic program: the header size depends
			// on the first length byte and the mask bit.
			Name: "websocket", Native: parser.WebSocket(), EBPF: "websocket", MaxPayload: math.MaxInt32,
			Gen: func(r *rand.Rand, n int) []byte {
				mask := r.IntN(2)
				var h []byte
				switch {
				case n < 126:
					h = []byte{0x82, byte(mask<<7 | n)}
				case n < 65536:
					h = []byte{0x82, byte(mask<<7 | 126), byte(n >> 8), byte(n)}
				default:
					h = binary.BigEndian.AppendUint64([]byte{0x82, byte(mask<<7 | 127)}, uint64(n))
				}
				if mask == 1 {
					h = append(h, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()))
				}
				return append(h, fill(r, 0, n)...)
			},
		},
		{
			// Not a LengthField (varint limited to 4 bytes) or classic
			// program (variable offsets).
			Name: "mqtt", Native: parser.MQTT(), EBPF: "mqtt", MaxPayload: parser.MQTTMaxRemaining,
			Gen: func(r *rand.Rand, n int) []byte {
				h := []byte{0x30}
				for v := n; ; {
					c := byte(v & 0x7f)
					v >>= 7
					if v == 0 {
						h = append(h, c)
						break
					}
					h = append(h, c|0x80)
				}
				return append(h, fill(r, 0, n)...)
			},
		},
	}
}

// be32At generates messages with a hdr-byte header whose big-endian uint32
// at off holds the payload length plus incl.
func be32At(off, hdr, incl int) func(*rand.Rand, int) []byte {
	return func(r *rand.Rand, n int) []byte {
		b := fill(r, hdr, n)
		binary.BigEndian.PutUint32(b[off:], uint32(n+incl))
		return b
	}
}

// Result is one parser answer.
type Result struct {
	N   int
	Err error
}

func (r Result) String() string {
	if r.Err != nil {
		return "error(" + r.Err.Error() + ")"
	}
	return fmt.Sprint(r.N)
}

// Call runs p on b.
func Call(p kcm.Parser, b []byte) Result {
	n, err := p.Parse(b)
	return Result{n, err}
}

// Agree reports whether other, the answer of another form of the protocol,
// agrees with native on an input of n bytes. Errors agree with errors
// whatever their sentinel. Below need bytes one side may still say "need
// more". kernelInt says other maps a 32-bit program result with the kernel's
// int semantics: then a native length of 2^31 or more can only be matched by
// an error or by the same length modulo 2^32 (the program's arithmetic
// wrapped), which is what the kernel would do with the same program.
func Agree(native, other Result, n, need int, kernelInt bool) bool {
	if native.Err != nil || other.Err != nil {
		if native.Err != nil && other.Err != nil {
			return true
		}
		if n < need && (native == Result{} || other == Result{}) {
			return true
		}
		if kernelInt && strconv.IntSize == 32 && other.Err == nil && errors.Is(native.Err, kcm.ErrMessageTooBig) {
			return true // a native length of 2^31 or more, which no int holds here
		}
		return kernelInt && native.Err == nil && int64(native.N) >= 1<<31
	}
	if native.N == other.N {
		return true
	}
	if n < need && (native.N == 0 || other.N == 0) {
		return true
	}
	if kernelInt && int64(native.N) >= 1<<31 {
		return uint32(native.N) == uint32(other.N)
	}
	return false
}

// ErrContradiction is returned by Split when a parser returned a length not
// larger than the bytes seen by an earlier call that returned 0.
var ErrContradiction = errors.New("prototest: length contradicts earlier need-more")

// Split delineates stream with p the way a kcm psock does, delivering the
// stream in chunks of the given sizes (the last chunk takes the rest), and
// returns the message lengths found. It stops at the first parser error, or
// with ErrContradiction, and reports trailing bytes of an incomplete message
// as rest.
func Split(p kcm.Parser, stream []byte, chunks []int) (lens []int, rest int, err error) {
	var (
		start, end int // buffered message bytes are stream[start:end]
		want       int // known length of the current message, 0 if unknown
		seenAtZero int // bytes seen when the parser last returned 0
	)
	ci := 0
	for end < len(stream) {
		step := len(stream) - end
		if ci < len(chunks) {
			step = min(max(chunks[ci], 1), step)
			ci++
		}
		end += step
		for start < end {
			if want == 0 {
				n, err := p.Parse(stream[start:end])
				if err != nil {
					return lens, end - start, err
				}
				if n == 0 {
					seenAtZero = end - start
					break
				}
				if n <= seenAtZero {
					return lens, end - start, fmt.Errorf("%w: %d after %d bytes", ErrContradiction, n, seenAtZero)
				}
				want = n
			}
			if end-start < want {
				break
			}
			lens = append(lens, want)
			start += want
			want, seenAtZero = 0, 0
		}
	}
	return lens, end - start, nil
}

// atMost returns v, or the largest int where int is narrower (32-bit
// platforms), so that the tables build everywhere.
func atMost(v int64) int { return int(min(v, math.MaxInt)) }

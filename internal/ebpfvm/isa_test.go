package ebpfvm

// Review against the eBPF instruction-set specification
// (Documentation/bpf/standardization/instruction-set.rst, RFC 9669). The
// expected values below are derived from the specification, not from the
// interpreter: a small reference model of the ALU and jump semantics is
// compared with Run on edge and random operands, and named cases pin the
// points the specification calls out (zero extension of 32-bit results,
// shift masks, division and modulo by zero, sign extension of immediates,
// byte swaps, two-slot 64-bit immediates, the frame pointer, bounds, step
// limit, load-time rejection of what is not supported).

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// lddw encodes a 64-bit immediate load (two slots).
func lddw(d uint8, v uint64) []byte {
	return prog(ins(0x18, d, 0, 0, int32(uint32(v))), ins(0, 0, 0, 0, int32(uint32(v>>32))))
}

// mov64 is r(d) = r(s), 64-bit.
func mov64(d, s uint8) []byte { return ins(0xbf, d, s, 0, 0) }

// refALU is the specification's result of ALU operation op (the BPF_OP
// nibble) on dst and src, where src is the register value or the immediate
// already extended as the specification says for the class.
func refALU(is64 bool, op uint8, dst, src uint64) uint64 {
	if !is64 {
		d, s := uint32(dst), uint32(src)
		var r uint32
		switch op {
		case 0x0:
			r = d + s
		case 0x1:
			r = d - s
		case 0x2:
			r = d * s
		case 0x3:
			if s == 0 {
				r = 0
			} else {
				r = d / s
			}
		case 0x4:
			r = d | s
		case 0x5:
			r = d & s
		case 0x6:
			r = d << (s & 31)
		case 0x7:
			r = d >> (s & 31)
		case 0x8:
			r = -d
		case 0x9:
			if s == 0 {
				r = d // dst unchanged in its low half, upper half zeroed
			} else {
				r = d % s
			}
		case 0xa:
			r = d ^ s
		case 0xb:
			r = s
		case 0xc:
			r = uint32(int32(d) >> (s & 31))
		default:
			panic(op)
		}
		return uint64(r) // 32-bit results are zero-extended
	}
	switch op {
	case 0x0:
		return dst + src
	case 0x1:
		return dst - src
	case 0x2:
		return dst * src
	case 0x3:
		if src == 0 {
			return 0
		}
		return dst / src
	case 0x4:
		return dst | src
	case 0x5:
		return dst & src
	case 0x6:
		return dst << (src & 63)
	case 0x7:
		return dst >> (src & 63)
	case 0x8:
		return -dst
	case 0x9:
		if src == 0 {
			return dst
		}
		return dst % src
	case 0xa:
		return dst ^ src
	case 0xb:
		return src
	case 0xc:
		return uint64(int64(dst) >> (src & 63))
	}
	panic(op)
}

// refJmp is the specification's branch condition of jump op on dst, src
// (64-bit values; for JMP32 only the low halves count).
func refJmp(is64 bool, op uint8, dst, src uint64) bool {
	if !is64 {
		d, s := uint32(dst), uint32(src)
		switch op {
		case 0x1:
			return d == s
		case 0x2:
			return d > s
		case 0x3:
			return d >= s
		case 0x4:
			return d&s != 0
		case 0x5:
			return d != s
		case 0x6:
			return int32(d) > int32(s)
		case 0x7:
			return int32(d) >= int32(s)
		case 0xa:
			return d < s
		case 0xb:
			return d <= s
		case 0xc:
			return int32(d) < int32(s)
		case 0xd:
			return int32(d) <= int32(s)
		}
		panic(op)
	}
	switch op {
	case 0x1:
		return dst == src
	case 0x2:
		return dst > src
	case 0x3:
		return dst >= src
	case 0x4:
		return dst&src != 0
	case 0x5:
		return dst != src
	case 0x6:
		return int64(dst) > int64(src)
	case 0x7:
		return int64(dst) >= int64(src)
	case 0xa:
		return dst < src
	case 0xb:
		return dst <= src
	case 0xc:
		return int64(dst) < int64(src)
	case 0xd:
		return int64(dst) <= int64(src)
	}
	panic(op)
}

var edge64 = []uint64{
	0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 0x7f, 0x80, 0xff, 0x8000, 0xffff,
	0x7fffffff, 0x80000000, 0x80000001, 0xffffffff, 0x1_0000_0000, 0x1_0000_0001,
	0x1_0000_001f, 0x1_0000_0020, 0xffff_ffff_0000_0000, 0xffff_ffff_0000_0001,
	0xffff_ffff_ffff_ffe0, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000,
	0x8000_0000_0000_0001, 1<<64 - 2, 1<<64 - 1, 0x0123_4567_89ab_cdef,
	0xfedc_ba98_7654_3210,
}

var edge32 = []int32{0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 65, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff,
	math.MaxInt32, math.MinInt32, math.MinInt32 + 1, -1, -2, -31, -32, -33, -63, -64, -65, 0x12345678}

func operands(r *rand.Rand, n int) [][2]uint64 {
	var out [][2]uint64
	for _, a := range edge64 {
		for _, b := range edge64 {
			out = append(out, [2]uint64{a, b})
		}
	}
	for range n {
		out = append(out, [2]uint64{r.Uint64(), r.Uint64()})
		out = append(out, [2]uint64{r.Uint64() >> r.IntN(64), r.Uint64() >> r.IntN(64)})
	}
	return out
}

// dsts returns edge and random destination values for immediate forms.
func dsts(r *rand.Rand, n int) []uint64 {
	out := append([]uint64(nil), edge64...)
	for range n {
		out = append(out, r.Uint64(), r.Uint64()>>r.IntN(64))
	}
	return out
}

func imms(r *rand.Rand, n int) []int32 {
	out := append([]int32(nil), edge32...)
	for range n {
		out = append(out, int32(r.Uint32()), int32(r.Uint32()>>r.IntN(32)))
	}
	return out
}

// TestISAALUModel compares every ALU and ALU64 operation, register and
// immediate source, with the reference model: 32-bit results zero-extended,
// shifts masked (&31, &63), ARSH signed, DIV/MOD unsigned with x/0 = 0 and
// x%0 = x (low half, zero-extended, for ALU), ALU64 immediates
// sign-extended to 64 bits and ALU immediates taken as 32 bits. It also
// checks that the source register is left alone.
func TestISAALUModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ops := []uint8{0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0xa, 0xb, 0xc}
	pairs := operands(r, 300)
	ks := imms(r, 100)
	ds := dsts(r, 80)
	fails := 0
	check := func(name string, raw []byte, want uint64) {
		t.Helper()
		p, err := Load(raw)
		if err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		got, err := p.Run(nil)
		if err != nil || got != want {
			fails++
			if fails <= 40 {
				t.Errorf("%s = %#x, %v; want %#x", name, got, err, want)
			}
		}
	}
	for _, is64 := range []bool{false, true} {
		cls := uint8(clsALU)
		if is64 {
			cls = clsALU64
		}
		for _, op := range ops {
			code := op<<4 | cls
			for _, pr := range pairs {
				a, b := pr[0], pr[1]
				// Register source: r1 op= r2; return r1 (or r2, to see it unchanged).
				check(fmt.Sprintf("alu%d op %#x r1=%#x r2=%#x", map[bool]int{false: 32, true: 64}[is64], op, a, b),
					prog(lddw(1, a), lddw(2, b), ins(code|srcX, 1, 2, 0, 0), mov64(0, 1), exit),
					refALU(is64, op, a, b))
				check(fmt.Sprintf("alu%d op %#x src unchanged", map[bool]int{false: 32, true: 64}[is64], op),
					prog(lddw(1, a), lddw(2, b), ins(code|srcX, 1, 2, 0, 0), mov64(0, 2), exit), b)
			}
			for _, a := range ds {
				for _, k := range ks {
					src := uint64(int64(k)) // sign-extended for ALU64
					if !is64 {
						src = uint64(uint32(k))
					}
					check(fmt.Sprintf("alu%d op %#x imm r1=%#x imm=%d", map[bool]int{false: 32, true: 64}[is64], op, a, k),
						prog(lddw(1, a), ins(code, 1, 0, 0, k), mov64(0, 1), exit),
						refALU(is64, op, a, src))
				}
			}
		}
		// NEG.
		for _, pr := range pairs {
			check(fmt.Sprintf("neg%v %#x", is64, pr[0]),
				prog(lddw(1, pr[0]), ins(0x80|cls, 1, 0, 0, 0), mov64(0, 1), exit),
				refALU(is64, 0x8, pr[0], 0))
		}
	}
	if fails > 40 {
		t.Errorf("... %d failures in all", fails)
	}
}

// TestISAJmpModel compares every conditional JMP and JMP32 jump, register
// and immediate source, with the reference model: JMP immediates
// sign-extended to 64 bits, JMP32 comparing low halves (signed and
// unsigned).
func TestISAJmpModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ops := []uint8{0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xa, 0xb, 0xc, 0xd}
	pairs := operands(r, 300)
	ks := imms(r, 100)
	ds := dsts(r, 80)
	fails := 0
	check := func(name string, raw []byte, want bool) {
		t.Helper()
		p, err := Load(raw)
		if err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		got, err := p.Run(nil)
		if err != nil || (got == 1) != want {
			fails++
			if fails <= 40 {
				t.Errorf("%s: taken = %v (r0 %#x, %v); want %v", name, got == 1, got, err, want)
			}
		}
	}
	// slots: 0-1 lddw r1, 2-3 lddw r2, 4 jcc +2, 5 r0 = 0, 6 exit, 7 r0 = 1, 8 exit
	tail := prog(movImm(0, 0), exit, movImm(0, 1), exit)
	for _, is64 := range []bool{false, true} {
		cls := uint8(clsJMP32)
		if is64 {
			cls = clsJMP
		}
		for _, op := range ops {
			code := op<<4 | cls
			for _, pr := range pairs {
				a, b := pr[0], pr[1]
				check(fmt.Sprintf("jmp%v op %#x r1=%#x r2=%#x", is64, op, a, b),
					prog(lddw(1, a), lddw(2, b), ins(code|srcX, 1, 2, 2, 0), tail), refJmp(is64, op, a, b))
			}
			for _, a := range ds {
				for _, k := range ks {
					check(fmt.Sprintf("jmp%v op %#x imm r1=%#x imm=%d", is64, op, a, k),
						prog(lddw(1, a), lddw(2, 0), ins(code, 1, 0, 2, k), tail), refJmp(is64, op, a, uint64(int64(k))))
				}
			}
		}
	}
	if fails > 40 {
		t.Errorf("... %d failures in all", fails)
	}
}

// TestISANamed pins the points the brief names, one case each, with the
// specification's value.
func TestISANamed(t *testing.T) {
	const m1 = 1<<64 - 1
	hi := lddw(1, 0xdead_beef_0000_0005) // r1 with a non-zero upper half
	tests := []struct {
		name string
		raw  []byte
		want uint64
	}{
		// ALU32 results are zero-extended.
		{"add32 zext", prog(hi, ins(0x04, 1, 0, 0, 1), mov64(0, 1), exit), 6},
		{"mov32 reg zext", prog(hi, ins(0xbc, 0, 1, 0, 0), exit), 5},
		{"mov32 imm -1 zext", prog(ins(0xb4, 0, 0, 0, -1), exit), 0xffffffff},
		{"neg32 zext", prog(hi, ins(0x84, 1, 0, 0, 0), mov64(0, 1), exit), 0xfffffffb},
		{"div32 by zero reg -> 0", prog(hi, movImm(2, 0), ins(0x3c, 1, 2, 0, 0), mov64(0, 1), exit), 0},
		{"mod32 by zero reg keeps low half, zero-extended", prog(hi, movImm(2, 0), ins(0x9c, 1, 2, 0, 0), mov64(0, 1), exit), 5},
		{"mod32 by zero imm keeps low half, zero-extended", prog(hi, ins(0x94, 1, 0, 0, 0), mov64(0, 1), exit), 5},
		{"mod32 by 2^32 in reg (low half 0) keeps low half", prog(hi, lddw(2, 1<<32), ins(0x9c, 1, 2, 0, 0), mov64(0, 1), exit), 5},
		{"div32 by 2^32 in reg (low half 0) -> 0", prog(hi, lddw(2, 1<<32), ins(0x3c, 1, 2, 0, 0), mov64(0, 1), exit), 0},
		{"div64 by zero -> 0", prog(hi, movImm(2, 0), ins(0x3f, 1, 2, 0, 0), mov64(0, 1), exit), 0},
		{"mod64 by zero unchanged", prog(hi, movImm(2, 0), ins(0x9f, 1, 2, 0, 0), mov64(0, 1), exit), 0xdead_beef_0000_0005},
		{"div64 imm -1 is unsigned 2^64-1", prog(lddw(1, m1), ins(0x37, 1, 0, 0, -1), mov64(0, 1), exit), 1},
		{"div64 unsigned INT64_MIN / -1", prog(lddw(1, 1<<63), movImm(2, -1), ins(0x3f, 1, 2, 0, 0), mov64(0, 1), exit), 0},
		{"mod64 unsigned INT64_MIN % -1", prog(lddw(1, 1<<63), movImm(2, -1), ins(0x9f, 1, 2, 0, 0), mov64(0, 1), exit), 1 << 63},
		{"div32 imm -1 is 0xffffffff", prog(ins(0xb4, 1, 0, 0, -2), ins(0x34, 1, 0, 0, -1), mov64(0, 1), exit), 0},
		// Shifts are masked.
		{"lsh64 by 64 reg", prog(movImm(1, 3), movImm(2, 64), ins(0x6f, 1, 2, 0, 0), mov64(0, 1), exit), 3},
		{"lsh64 by 65 imm", prog(movImm(1, 3), ins(0x67, 1, 0, 0, 65), mov64(0, 1), exit), 6},
		{"rsh64 by -1 imm (63)", prog(lddw(1, 1<<63), ins(0x77, 1, 0, 0, -1), mov64(0, 1), exit), 1},
		{"lsh32 by 32 reg", prog(movImm(1, 3), movImm(2, 32), ins(0x6c, 1, 2, 0, 0), mov64(0, 1), exit), 3},
		{"lsh32 by 33 imm", prog(movImm(1, 3), ins(0x64, 1, 0, 0, 33), mov64(0, 1), exit), 6},
		{"rsh32 by 2^32+1 reg", prog(ins(0xb4, 1, 0, 0, -1), lddw(2, 1<<32|1), ins(0x7c, 1, 2, 0, 0), mov64(0, 1), exit), 0x7fffffff},
		{"rsh32 zext of upper", prog(hi, ins(0x74, 1, 0, 0, 0), mov64(0, 1), exit), 5},
		// ARSH is signed.
		{"arsh64 by 63", prog(lddw(1, 1<<63), ins(0xc7, 1, 0, 0, 63), mov64(0, 1), exit), m1},
		{"arsh64 by 64 reg (0)", prog(lddw(1, 1<<63), movImm(2, 64), ins(0xcf, 1, 2, 0, 0), mov64(0, 1), exit), 1 << 63},
		{"arsh32 uses bit 31 not 63", prog(lddw(1, 0x0000_0000_8000_0000), ins(0xc4, 1, 0, 0, 4), mov64(0, 1), exit), 0xf8000000},
		{"arsh32 ignores bit 63", prog(lddw(1, 0x8000_0000_4000_0000), ins(0xc4, 1, 0, 0, 4), mov64(0, 1), exit), 0x04000000},
		{"arsh32 by 32 reg (0)", prog(ins(0xb4, 1, 0, 0, -8), movImm(2, 32), ins(0xcc, 1, 2, 0, 0), mov64(0, 1), exit), 0xfffffff8},
		// Immediates: ALU64 sign-extends, ALU uses 32 bits.
		{"and64 imm -2", prog(lddw(1, m1), ins(0x57, 1, 0, 0, -2), mov64(0, 1), exit), m1 - 1},
		{"or64 imm min32", prog(movImm(1, 0), ins(0x47, 1, 0, 0, math.MinInt32), mov64(0, 1), exit), 0xffff_ffff_8000_0000},
		{"xor32 imm -1", prog(lddw(1, m1), ins(0xa4, 1, 0, 0, -1), mov64(0, 1), exit), 0},
		{"add64 imm -1", prog(movImm(1, 0), ins(0x07, 1, 0, 0, -1), mov64(0, 1), exit), m1},
		{"mul64 imm -1", prog(movImm(1, 2), ins(0x27, 1, 0, 0, -1), mov64(0, 1), exit), m1 - 1},
		{"mul32 high product dropped", prog(lddw(1, 0x1_0001_0000), ins(0x24, 1, 0, 0, 0x10000), mov64(0, 1), exit), 0},
		// NEG.
		{"neg64", prog(movImm(1, 5), ins(0x87, 1, 0, 0, 0), mov64(0, 1), exit), m1 - 4},
		{"neg64 INT64_MIN", prog(lddw(1, 1<<63), ins(0x87, 1, 0, 0, 0), mov64(0, 1), exit), 1 << 63},
		{"neg32 INT32_MIN", prog(ins(0xb4, 1, 0, 0, math.MinInt32), ins(0x84, 1, 0, 0, 0), mov64(0, 1), exit), 0x80000000},
		// Byte swaps (END, class ALU): le is truncation on a little-endian
		// ISA, be swaps; 16 and 32 zero-extend.
		{"le16", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xd4, 1, 0, 0, 16), mov64(0, 1), exit), 0xcdef},
		{"le32", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xd4, 1, 0, 0, 32), mov64(0, 1), exit), 0x89abcdef},
		{"le64", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xd4, 1, 0, 0, 64), mov64(0, 1), exit), 0x0123_4567_89ab_cdef},
		{"be16", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xdc, 1, 0, 0, 16), mov64(0, 1), exit), 0xefcd},
		{"be32", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xdc, 1, 0, 0, 32), mov64(0, 1), exit), 0xefcdab89},
		{"be64", prog(lddw(1, 0x0123_4567_89ab_cdef), ins(0xdc, 1, 0, 0, 64), mov64(0, 1), exit), 0xefcd_ab89_6745_2301},
		// JMP32 compares low halves; JMP sign-extends its immediate.
		{"jeq32 ignores upper", prog(hi, movImm(0, 0), ins(0x16, 1, 0, 1, 5), exit, movImm(0, 1), exit), 1},
		{"jgt32 unsigned imm -1", prog(movImm(1, 1), movImm(0, 0), ins(0x26, 1, 0, 1, -1), exit, movImm(0, 1), exit), 0},
		{"jslt32 low half negative", prog(lddw(1, 0x0000_0001_8000_0000), movImm(0, 0), ins(0xc6, 1, 0, 1, 0), exit, movImm(0, 1), exit), 1},
		{"jslt64 same value positive", prog(lddw(1, 0x0000_0001_8000_0000), movImm(0, 0), ins(0xc5, 1, 0, 1, 0), exit, movImm(0, 1), exit), 0},
		{"jeq64 imm -1 sign-extended", prog(lddw(1, m1), movImm(0, 0), ins(0x15, 1, 0, 1, -1), exit, movImm(0, 1), exit), 1},
		{"jeq64 imm -1 vs 0xffffffff", prog(lddw(1, 0xffffffff), movImm(0, 0), ins(0x15, 1, 0, 1, -1), exit, movImm(0, 1), exit), 0},
		{"jset32 ignores upper", prog(lddw(1, 1<<32), lddw(2, 1<<32), movImm(0, 0), ins(0x4e, 1, 2, 1, 0), exit, movImm(0, 1), exit), 0},
		{"jset64 sees upper", prog(lddw(1, 1<<32), lddw(2, 1<<32), movImm(0, 0), ins(0x4d, 1, 2, 1, 0), exit, movImm(0, 1), exit), 1},
		{"ja backwards", prog(ins(0x05, 0, 0, 2, 0), movImm(0, 7), exit, ins(0x05, 0, 0, -3, 0)), 7},
		// LD_IMM64.
		{"lddw full 64 bits", prog(lddw(0, 0x8000_0000_ffff_ffff), exit), 0x8000_0000_ffff_ffff},
		{"lddw low slot imm not sign-extended", prog(lddw(0, 0x0000_0000_8000_0000), exit), 0x8000_0000},
		{"jump over lddw", prog(movImm(0, 1), ins(0x05, 0, 0, 2, 0), lddw(0, 9), exit), 1},
		// Stack: all 512 bytes, both ends; ST DW sign-extends its immediate.
		{"stack lowest byte", prog(ins(0x72, 10, 0, -512, 0x5a), ins(0x71, 0, 10, -512, 0), exit), 0x5a},
		{"stack highest dw", prog(ins(0x7a, 10, 0, -8, -1), ins(0x79, 0, 10, -8, 0), exit), m1},
		{"stack via copy of r10", prog(mov64(2, 10), ins(0x07, 2, 0, 0, -512), ins(0x62, 2, 0, 0, 0x01020304), ins(0x69, 0, 2, 2, 0), exit), 0x0102},
		{"ldx w zero-extends", prog(ins(0x7a, 10, 0, -8, -1), ins(0x61, 0, 10, -8, 0), exit), 0xffffffff},
		{"stx b truncates", prog(lddw(1, 0x1234), ins(0x7a, 10, 0, -8, 0), ins(0x73, 10, 1, -8, 0), ins(0x79, 0, 10, -8, 0), exit), 0x34},
		// r1 is the context, r10 the frame pointer, on entry; stack starts zeroed.
		{"stack starts zeroed", prog(ins(0x79, 0, 10, -512, 0), exit), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := run(t, tt.raw, []byte{1, 2, 3, 4})
			if err != nil || got != tt.want {
				t.Fatalf("Run = %#x, %v; want %#x", got, err, tt.want)
			}
		})
	}
}

// TestISAFaults checks out-of-bounds accesses fail cleanly (an error, no
// panic) at and around every boundary.
func TestISAFaults(t *testing.T) {
	type tc struct {
		name string
		raw  []byte
		err  error
	}
	var tests []tc
	for _, sz := range []struct {
		ld, st uint8
		n      int16
	}{{0x71, 0x73, 1}, {0x69, 0x6b, 2}, {0x61, 0x63, 4}, {0x79, 0x7b, 8}} {
		for _, off := range []int16{-513, -512 - sz.n + 1, 1 - sz.n, 0, 1, 0x7fff, -0x8000} {
			ok := off >= -512 && off+sz.n <= 0
			if ok {
				continue
			}
			tests = append(tests,
				tc{fmt.Sprintf("ldx%d fp%+d", sz.n, off), prog(ins(sz.ld, 0, 10, off, 0), exit), ErrFault},
				tc{fmt.Sprintf("stx%d fp%+d", sz.n, off), prog(ins(sz.st, 10, 0, off, 0), exit), ErrFault})
		}
		for _, off := range []int16{-1, CtxSize - sz.n + 1, CtxSize} {
			tests = append(tests, tc{fmt.Sprintf("ctx ldx%d %+d", sz.n, off), prog(ins(sz.ld, 0, 1, off, 0), exit), ErrFault})
		}
		for _, a := range []uint64{0, 1<<64 - 1, math.MaxUint64 - uint64(sz.n) + 2, stackBase - 1, ctxBase - 1, stackBase + StackSize} {
			tests = append(tests, tc{fmt.Sprintf("ldx%d abs %#x", sz.n, a), prog(lddw(2, a), ins(sz.ld, 0, 2, 0, 0), mov64(3, 10), exit), ErrFault})
		}
	}
	tests = append(tests,
		tc{"r10 plus large reg", prog(lddw(2, 1<<63), mov64(3, 10), ins(0x0f, 3, 2, 0, 0), ins(0x79, 0, 3, -8, 0), exit), ErrFault},
		tc{"helper len 2^32-1", prog(mov64(3, 10), ins(0x07, 3, 0, 0, -8), movImm(4, -1), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
		tc{"helper dst fp", prog(mov64(3, 10), movImm(4, 1), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
		tc{"helper dst below stack", prog(mov64(3, 10), ins(0x07, 3, 0, 0, -513), movImm(4, 2), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
		tc{"helper dst wraps", prog(mov64(3, 10), lddw(5, 1<<64-8), ins(0x0f, 3, 5, 0, 0), lddw(4, 16), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			if v, err := run(t, tt.raw, []byte{1, 2, 3, 4}); !errors.Is(err, tt.err) {
				t.Fatalf("Run = %#x, %v; want %v", v, err, tt.err)
			}
		})
	}
}

// TestISAPacketLoads checks LD_ABS/LD_IND (network order, zero-extended
// into r0, out of range ends the program with 0) and bpf_skb_load_bytes at
// the packet's end.
func TestISAPacketLoads(t *testing.T) {
	pkt := []byte{0x81, 0x82, 0x83, 0x84, 0x85}
	tests := []struct {
		name string
		raw  []byte
		want uint64
	}{
		{"ldabs w last fit", prog(lddw(0, 1<<63), ins(0x20, 0, 0, 0, 1), exit), 0x82838485},
		{"ldabs h last fit", prog(ins(0x28, 0, 0, 0, 3), exit), 0x8485},
		{"ldabs b last", prog(ins(0x30, 0, 0, 0, 4), exit), 0x85},
		{"ldabs b past", prog(ins(0x30, 0, 0, 0, 5), movImm(0, 9), exit), 0},
		{"ldabs w one short", prog(ins(0x20, 0, 0, 0, 2), movImm(0, 9), exit), 0},
		{"ldabs imm min32", prog(ins(0x30, 0, 0, 0, math.MinInt32), movImm(0, 9), exit), 0},
		{"ldind wraps 32 bits", prog(lddw(2, 0xffff_ffff_0000_0003), ins(0x50, 0, 2, 0, 1), exit), 0x85},
		{"ldind negative sum", prog(movImm(2, 1), ins(0x50, 0, 2, 0, -2), movImm(0, 9), exit), 0},
		{"ldind reg -1 imm 1", prog(movImm(2, -1), ins(0x50, 0, 2, 0, 1), exit), 0x81},
		{"ldind huge", prog(lddw(2, 0x7fff_ffff), ins(0x48, 0, 2, 0, 0x7fff_ffff), movImm(0, 9), exit), 0},
		{"skb_load_bytes exact end", prog(mov64(3, 10), ins(0x07, 3, 0, 0, -8), movImm(2, 1), movImm(4, 4),
			ins(0x85, 0, 0, 0, 26), ins(0x61, 6, 10, -8, 0), ins(0x0f, 0, 6, 0, 0), exit), 0x85848382},
		{"skb_load_bytes offset 2^31", prog(mov64(3, 10), ins(0x07, 3, 0, 0, -8), lddw(2, 0x8000_0000), movImm(4, 1),
			ins(0x85, 0, 0, 0, 26), exit), 1<<64 - 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := run(t, tt.raw, pkt)
			if err != nil || got != tt.want {
				t.Fatalf("Run = %#x, %v; want %#x", got, err, tt.want)
			}
		})
	}
}

// TestISAStepLimit checks that exactly MaxSteps instructions may run.
func TestISAStepLimit(t *testing.T) {
	var raw []byte
	for range 9 {
		raw = append(raw, movImm(0, 1)...)
	}
	raw = append(raw, exit...) // 10 instructions executed
	p, err := Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	p.MaxSteps = 10
	if v, err := p.Run(nil); err != nil || v != 1 {
		t.Fatalf("MaxSteps 10, 10 executed: %v, %v", v, err)
	}
	p.MaxSteps = 9
	if _, err := p.Run(nil); !errors.Is(err, ErrStepLimit) {
		t.Fatalf("MaxSteps 9, 10 executed: %v; want ErrStepLimit", err)
	}
	// A backwards conditional loop hits the limit with an error, not a hang.
	p, err = Load(prog(movImm(0, 0), ins(0x07, 0, 0, 0, 1), ins(0x55, 0, 0, -2, 0), exit))
	if err != nil {
		t.Fatal(err)
	}
	p.MaxSteps = 1000
	if _, err := p.Run(nil); !errors.Is(err, ErrStepLimit) {
		t.Fatalf("loop: %v; want ErrStepLimit", err)
	}
}

// TestISALoadRejects checks that what the interpreter does not implement
// (ISA v4 additions, atomics, reserved encodings) and malformed instructions
// are rejected by Load, and that r10 cannot be written by any instruction
// that writes a destination register.
func TestISALoadRejects(t *testing.T) {
	for name, raw := range map[string][]byte{
		"sdiv64 off=1":          prog(ins(0x3f, 1, 2, 1, 0), exit),
		"smod32 off=1":          prog(ins(0x94, 1, 0, 1, 3), exit),
		"sdiv32 imm off=1":      prog(ins(0x34, 1, 0, 1, -1), exit),
		"movsx64 8":             prog(ins(0xbf, 1, 2, 8, 0), exit),
		"movsx64 16":            prog(ins(0xbf, 1, 2, 16, 0), exit),
		"movsx64 32":            prog(ins(0xbf, 1, 2, 32, 0), exit),
		"movsx32 8":             prog(ins(0xbc, 1, 2, 8, 0), exit),
		"ldxsx b":               prog(ins(0x91, 0, 10, -8, 0), exit),
		"ldxsx h":               prog(ins(0x89, 0, 10, -8, 0), exit),
		"ldxsx w":               prog(ins(0x81, 0, 10, -8, 0), exit),
		"bswap64 16":            prog(ins(0xd7, 1, 0, 0, 16), exit),
		"bswap64 64":            prog(ins(0xd7, 1, 0, 0, 64), exit),
		"alu64 end X reserved":  prog(ins(0xdf, 1, 0, 0, 16), exit),
		"gotol":                 prog(ins(0x06, 0, 0, 0, 0), exit),
		"end width 8":           prog(ins(0xd4, 1, 0, 0, 8), exit),
		"end width 0":           prog(ins(0xdc, 1, 0, 0, 0), exit),
		"neg X":                 prog(ins(0x8f, 1, 2, 0, 0), exit),
		"alu K with src":        prog(ins(0x07, 1, 2, 0, 1), exit),
		"lddw second slot op":   prog(ins(0x18, 0, 0, 0, 0), ins(0x18, 0, 0, 0, 0), exit),
		"lddw second slot regs": prog(ins(0x18, 0, 0, 0, 0), ins(0, 1, 0, 0, 0), exit),
		"lddw second slot off":  prog(ins(0x18, 0, 0, 0, 0), ins(0, 0, 0, 1, 0), exit),
		"lddw r10":              prog(lddw(10, 0), exit),
		"ldx to r10":            prog(ins(0x79, 10, 10, -8, 0), exit),
		"neg r10":               prog(ins(0x87, 10, 0, 0, 0), exit),
		"end r10":               prog(ins(0xdc, 10, 0, 0, 16), exit),
		"add32 r10":             prog(ins(0x04, 10, 0, 0, 0), exit),
		"jump into 2nd slot":    prog(ins(0x15, 0, 0, 2, 0), exit, lddw(0, 1), exit),
		"ends with lddw":        prog(lddw(0, 1)),
		"ja in jmp32":           prog(ins(0x06, 0, 0, 0, 0), exit),
		"call in jmp32":         prog(ins(0x86, 0, 0, 0, 26), exit),
		"exit in jmp32":         prog(ins(0x96, 0, 0, 0, 0)),
		"callx":                 prog(ins(0x8d, 0, 1, 0, 0), exit),
		"atomic add w":          prog(ins(0xc3, 10, 1, -8, 0), exit),
		"ld mem":                prog(ins(0x60, 0, 1, 0, 0), exit),
		"ld imm w":              prog(ins(0x00, 0, 0, 0, 0), exit),
		"ldx imm mode":          prog(ins(0x19, 0, 1, 0, 0), exit),
		"st atomic":             prog(ins(0xda, 10, 0, -8, 0), exit),
		"register 15":           prog(ins(0xbf, 0, 15, 0, 0), exit),
	} {
		p, err := Load(raw)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Load error %v, want ErrInvalid", name, err)
			if err == nil {
				if v, err := p.Run(nil); err != nil {
					t.Errorf("%s: rejected only at run: %v, %v", name, v, err)
				}
			}
		}
	}
}

// TestISAOpcodeTable tries every opcode byte with well-formed fields and
// checks Load accepts exactly the instructions of the supported subset
// (RFC 9669 base32/base64, divmul32/64, packet loads, JMP32 conditionals;
// not atomics, v4 additions, callx or reserved encodings), and that each
// accepted one runs without panicking.
func TestISAOpcodeTable(t *testing.T) {
	want := map[uint8]bool{
		0x18: true, 0x20: true, 0x28: true, 0x30: true, 0x40: true, 0x48: true, 0x50: true,
		0x61: true, 0x69: true, 0x71: true, 0x79: true,
		0x62: true, 0x6a: true, 0x72: true, 0x7a: true,
		0x63: true, 0x6b: true, 0x73: true, 0x7b: true,
		0x05: true, 0x85: true, 0x95: true,
		0xd4: true, 0xdc: true, 0x84: true, 0x87: true,
	}
	for _, cls := range []uint8{clsALU, clsALU64} {
		for op := uint8(0); op <= 0xc; op++ {
			if op == 0x8 {
				continue
			}
			want[op<<4|cls], want[op<<4|cls|srcX] = true, true
		}
	}
	for _, cls := range []uint8{clsJMP, clsJMP32} {
		for _, op := range []uint8{0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0xa, 0xb, 0xc, 0xd} {
			want[op<<4|cls], want[op<<4|cls|srcX] = true, true
		}
	}
	for c := 0; c < 256; c++ {
		code := uint8(c)
		var first []byte
		switch {
		case code == 0x18:
			first = lddw(1, 5)
		case code == 0x85:
			first = prog(mov64(3, 10), ins(0x07, 3, 0, 0, -8), movImm(4, 4), ins(code, 0, 0, 0, 26))
		case code&0xf0 == 0xd0 && (code&7 == clsALU || code&7 == clsALU64):
			first = ins(code, 1, 0, 0, 16)
		case code&7 == clsLDX || code&7 == clsST || code&7 == clsSTX:
			first = ins(code, 10, 10, -8, 1)
			if code&7 == clsST {
				first = ins(code, 10, 0, -8, 1)
			}
			if code&7 == clsLDX {
				first = ins(code, 1, 10, -8, 1)
			}
		case code&7 == clsALU || code&7 == clsALU64:
			src := uint8(0)
			if code&srcX != 0 && code>>4 != 0x8 {
				src = 2
			}
			first = ins(code, 1, src, 0, 3)
		default:
			src := uint8(0)
			if code&srcX != 0 {
				src = 2
			}
			first = ins(code, 1, src, 0, 3)
		}
		raw := prog(first, exit)
		p, err := Load(raw)
		if got := err == nil; got != want[code] {
			t.Errorf("opcode %#02x: accepted = %v (%v), want %v", code, got, err, want[code])
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("opcode %#02x: error %v does not wrap ErrInvalid", code, err)
		}
		if err == nil {
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("opcode %#02x: Run panicked: %v", code, r)
					}
				}()
				if _, err := p.Run([]byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil && !errors.Is(err, ErrFault) {
					t.Errorf("opcode %#02x: Run: %v", code, err)
				}
			}()
		}
	}
}

// FuzzISAModel runs one ALU, ALU64, JMP or JMP32 instruction on fuzzed
// operands and compares it with the reference model.
func FuzzISAModel(f *testing.F) {
	f.Add(uint8(0x9c), uint64(0xdead_beef_0000_0005), uint64(1<<32), int32(0))
	f.Add(uint8(0xc4), uint64(0x8000_0000), uint64(0), int32(-1))
	f.Add(uint8(0xc6), uint64(0x1_8000_0000), uint64(0), int32(0))
	f.Fuzz(func(t *testing.T, code uint8, a, b uint64, k int32) {
		cls, op, x := code&7, code>>4, code&srcX != 0
		var raw []byte
		var want uint64
		switch {
		case (cls == clsALU || cls == clsALU64) && (op <= 0xc && op != 0x8 || op == 0x8 && !x):
			src := b
			if !x {
				src = uint64(int64(k))
				if cls == clsALU {
					src = uint64(uint32(k))
				}
			}
			i := ins(code, 1, 0, 0, k)
			if x && op != 0x8 {
				i = ins(code, 1, 2, 0, k)
			}
			raw = prog(lddw(1, a), lddw(2, b), i, mov64(0, 1), exit)
			want = refALU(cls == clsALU64, op, a, src)
		case (cls == clsJMP || cls == clsJMP32) && op >= 0x1 && op <= 0xd && op != 0x8 && op != 0x9:
			src := b
			i := ins(code, 1, 2, 2, k)
			if !x {
				src = uint64(int64(k))
				i = ins(code, 1, 0, 2, k)
			}
			raw = prog(lddw(1, a), lddw(2, b), i, movImm(0, 0), exit, movImm(0, 1), exit)
			if refJmp(cls == clsJMP, op, a, src) {
				want = 1
			}
		default:
			return
		}
		p, err := Load(raw)
		if err != nil {
			t.Fatalf("opcode %#02x: Load: %v", code, err)
		}
		if got, err := p.Run(nil); err != nil || got != want {
			t.Fatalf("opcode %#02x a=%#x b=%#x imm=%d: Run = %#x, %v; want %#x", code, a, b, k, got, err, want)
		}
	})
}

// Package ebpfvm is a small, safe interpreter for eBPF socket-filter
// programs, the kind kernel KCM runs as its message parser.
//
// Load validates raw bytecode once (known opcodes, register numbers, jump
// targets, helper ids, no fall-through off the end) and decodes it into a
// compact form with absolute jump targets; Run executes it against a packet.
// Every memory access is bounds-checked at run time against the 512-byte
// stack and a read-only __sk_buff context, packet bytes are read only through
// LD_ABS/LD_IND and the bpf_skb_load_bytes helper, and each run is capped at
// a number of executed instructions, so no program can crash or hang its
// caller. There is no verifier beyond that: programs the kernel would reject
// may run here, but they can only produce a wrong answer or an error.
package ebpfvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// Errors. Load errors wrap ErrInvalid; Run errors wrap ErrFault or
// ErrStepLimit.
var (
	// ErrInvalid reports bytecode rejected by Load.
	ErrInvalid = errors.New("ebpf: invalid program")
	// ErrFault reports a memory access outside the stack and context, or a
	// bad helper argument, at run time.
	ErrFault = errors.New("ebpf: memory access fault")
	// ErrStepLimit reports a run that executed more instructions than its
	// program's step limit (a loop that does not end in time).
	ErrStepLimit = errors.New("ebpf: instruction limit exceeded")
)

const (
	// StackSize is the size of the program stack, as in the kernel.
	StackSize = 512
	// CtxSize is the size of the __sk_buff context the program sees.
	CtxSize = 192
	// MaxInsns is the largest program Load accepts (the kernel's limit for
	// privileged programs).
	MaxInsns = 1_000_000
	// DefaultMaxSteps is the default cap on executed instructions per run.
	DefaultMaxSteps = 1_000_000

	// HelperSkbLoadBytes is the id of bpf_skb_load_bytes, the only helper.
	HelperSkbLoadBytes = 26

	// Virtual addresses of the stack (r10 points at its end) and the
	// context (r1 on entry). They are far apart and far from small
	// integers, so an address computed from a scalar almost never lands in
	// either, and when it does the access is still bounded.
	stackBase = 0x0000_1000_0000_0000
	ctxBase   = 0x0000_2000_0000_0000

	efault = 14 // errno for a failed bpf_skb_load_bytes
)

// Program is a validated, decoded eBPF program. It is immutable after Load
// (except MaxSteps, which must be set before concurrent use) and safe for
// concurrent Run calls.
type Program struct {
	insns     []insn
	usesStack bool
	// MaxSteps caps the instructions one Run may execute; Load sets it to
	// DefaultMaxSteps.
	MaxSteps int
}

// insn is one decoded instruction. For jumps off is the absolute target.
type insn struct {
	op       uint8
	dst, src uint8
	off      int32
	imm      int64
}

// Opcode classes, sizes and modes of the eBPF instruction encoding.
const (
	clsLD    = 0x00
	clsLDX   = 0x01
	clsST    = 0x02
	clsSTX   = 0x03
	clsALU   = 0x04
	clsJMP   = 0x05
	clsJMP32 = 0x06
	clsALU64 = 0x07

	srcX = 0x08

	sizeW  = 0x00
	sizeH  = 0x08
	sizeB  = 0x10
	sizeDW = 0x18

	modeIMM = 0x00
	modeABS = 0x20
	modeIND = 0x40
	modeMEM = 0x60
)

// Decoded operations. The ALU and JMP groups are laid out so that an
// operation's index is base + 2*code + (1 if register source).
const (
	opInvalid uint8 = iota
	opExit
	opCall
	opJA
	opLDDW
	opLDABSB
	opLDABSH
	opLDABSW
	opLDINDB
	opLDINDH
	opLDINDW
	opLDXB
	opLDXH
	opLDXW
	opLDXDW
	opSTXB
	opSTXH
	opSTXW
	opSTXDW
	opSTB
	opSTH
	opSTW
	opSTDW
	opLE16
	opLE32
	opLE64
	opBE16
	opBE32
	opBE64
	opNeg64
	opNeg32
	// 64-bit ALU: K then X for each of add sub mul div or and lsh rsh mod
	// xor mov arsh.
	opALU64
	opALU32 = opALU64 + 2*numALU
	// Conditional jumps: K then X for each of jeq jgt jge jset jne jsgt
	// jsge jlt jle jslt jsle, first 64-bit, then 32-bit.
	opJMP64  = opALU32 + 2*numALU
	opJMP32  = opJMP64 + 2*numJMP
	opLast   = opJMP32 + 2*numJMP
	numALU   = 12
	numJMP   = 11
	aluAdd   = 0
	aluSub   = 1
	aluMul   = 2
	aluDiv   = 3
	aluOr    = 4
	aluAnd   = 5
	aluLsh   = 6
	aluRsh   = 7
	aluMod   = 8
	aluXor   = 9
	aluMov   = 10
	aluArsh  = 11
	jmpEq    = 0
	jmpGt    = 1
	jmpGe    = 2
	jmpSet   = 3
	jmpNe    = 4
	jmpSgt   = 5
	jmpSge   = 6
	jmpLt    = 7
	jmpLe    = 8
	jmpSlt   = 9
	jmpSle   = 10
	maxReg   = 10
	frameReg = 10
)

// aluCode maps the BPF_OP nibble of an ALU instruction to our ALU index.
var aluCode = [16]int8{
	0x0: aluAdd, 0x1: aluSub, 0x2: aluMul, 0x3: aluDiv, 0x4: aluOr, 0x5: aluAnd,
	0x6: aluLsh, 0x7: aluRsh, 0x8: -1 /* neg */, 0x9: aluMod, 0xa: aluXor,
	0xb: aluMov, 0xc: aluArsh, 0xd: -1 /* end */, 0xe: -2, 0xf: -2,
}

// jmpCode maps the BPF_OP nibble of a JMP instruction to our jump index.
var jmpCode = [16]int8{
	0x0: -1 /* ja */, 0x1: jmpEq, 0x2: jmpGt, 0x3: jmpGe, 0x4: jmpSet, 0x5: jmpNe,
	0x6: jmpSgt, 0x7: jmpSge, 0x8: -1 /* call */, 0x9: -1 /* exit */, 0xa: jmpLt,
	0xb: jmpLe, 0xc: jmpSlt, 0xd: jmpSle, 0xe: -2, 0xf: -2,
}

// Load validates raw little-endian eBPF bytecode (8 bytes per instruction
// slot, 16 for a 64-bit immediate load) and decodes it. The error wraps
// ErrInvalid and names the offending instruction.
// HeaderOffset reports whether k, a constant packet load offset, is one
// at which the kernel reads the packet's network or link-layer header
// (SKF_NET_OFF or SKF_LL_OFF plus a header's length at most) rather than
// its data: a program that does parses something a message does not have.
// Other negative offsets are out of range there (the load fails, as here).
func HeaderOffset(k int32) bool {
	const skfNetOff, skfLLOff, maxHeader = -0x100000, -0x200000, 0x10000
	return k >= skfNetOff && k < skfNetOff+maxHeader || k >= skfLLOff && k < skfLLOff+maxHeader
}

func Load(raw []byte) (*Program, error) {
	if len(raw) == 0 || len(raw)%8 != 0 {
		return nil, fmt.Errorf("%w: bytecode length %d is not a positive multiple of 8", ErrInvalid, len(raw))
	}
	n := len(raw) / 8
	if n > MaxInsns {
		return nil, fmt.Errorf("%w: %d instructions, limit %d", ErrInvalid, n, MaxInsns)
	}
	p := &Program{insns: make([]insn, n), MaxSteps: DefaultMaxSteps}
	filler := make([]bool, n) // second slots of 64-bit immediate loads
	for i := 0; i < n; i++ {
		s := raw[8*i : 8*i+8]
		code := s[0]
		dst, src := s[1]&0x0f, s[1]>>4
		off := int16(binary.LittleEndian.Uint16(s[2:4]))
		imm := int32(binary.LittleEndian.Uint32(s[4:8]))
		in := insn{dst: dst, src: src, off: int32(off), imm: int64(imm)}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: instruction %d (opcode %#02x): %s", ErrInvalid, i, code, fmt.Sprintf(format, args...))
		}
		if dst > maxReg || src > maxReg {
			return nil, bad("register r%d/r%d out of range", dst, src)
		}
		if dst == frameReg || src == frameReg {
			p.usesStack = true
		}
		writesDst := true
		switch cls := code & 0x07; cls {
		case clsALU, clsALU64:
			op := code >> 4
			if op == 0x8 { // neg
				if code&srcX != 0 || src != 0 {
					return nil, bad("neg with a source operand")
				}
				in.op = pick(cls == clsALU64, opNeg64, opNeg32)
				break
			}
			if op == 0xd { // byte swap
				if cls == clsALU64 {
					return nil, bad("unconditional byte swap (BPF v4) is not supported")
				}
				if src != 0 {
					return nil, bad("byte swap with a source register")
				}
				var base uint8 = opLE16
				if code&srcX != 0 {
					base = opBE16
				}
				switch imm {
				case 16:
					in.op = base
				case 32:
					in.op = base + 1
				case 64:
					in.op = base + 2
				default:
					return nil, bad("byte swap width %d", imm)
				}
				break
			}
			a := aluCode[op]
			if a < 0 {
				return nil, bad("unknown ALU operation")
			}
			if off != 0 {
				return nil, bad("ALU offset %d (signed division and sign-extending moves of BPF v4 are not supported)", off)
			}
			x := code&srcX != 0
			if !x && src != 0 {
				return nil, bad("immediate ALU operation with source register r%d", src)
			}
			base := opALU32
			if cls == clsALU64 {
				base = opALU64
			}
			in.op = base + 2*uint8(a) + b2u(x)
		case clsJMP, clsJMP32:
			writesDst = false
			op := code >> 4
			switch op {
			case 0x0: // ja
				if cls == clsJMP32 || code&srcX != 0 {
					return nil, bad("long jump (BPF v4) is not supported")
				}
				in.op = opJA
			case 0x8: // call
				if cls == clsJMP32 || code&srcX != 0 {
					return nil, bad("malformed call")
				}
				switch src {
				case 0:
				case 1:
					return nil, bad("bpf-to-bpf calls are not supported")
				default:
					return nil, bad("kfunc calls are not supported")
				}
				if imm != HelperSkbLoadBytes {
					return nil, bad("helper %d is not supported (only bpf_skb_load_bytes, %d)", imm, HelperSkbLoadBytes)
				}
				in.op = opCall
			case 0x9: // exit
				if cls == clsJMP32 || code&srcX != 0 {
					return nil, bad("malformed exit")
				}
				in.op = opExit
			default:
				j := jmpCode[op]
				if j < 0 {
					return nil, bad("unknown jump operation")
				}
				x := code&srcX != 0
				base := opJMP64
				if cls == clsJMP32 {
					base = opJMP32
				}
				in.op = base + 2*uint8(j) + b2u(x)
			}
		case clsLD:
			mode, size := code&0xe0, code&0x18
			switch {
			case mode == modeIMM && size == sizeDW:
				if i+1 >= n {
					return nil, bad("64-bit immediate load without its second slot")
				}
				s2 := raw[8*i+8 : 8*i+16]
				if s2[0] != 0 || s2[1] != 0 || s2[2] != 0 || s2[3] != 0 {
					return nil, bad("malformed second slot of a 64-bit immediate load")
				}
				if src != 0 {
					return nil, bad("map or pseudo 64-bit load (src %d): maps are not supported", src)
				}
				in.op = opLDDW
				in.imm = int64(binary.LittleEndian.Uint32(s2[4:8]))<<32 | int64(uint32(imm))
				p.insns[i] = in
				filler[i+1] = true
				i++
				if dst == frameReg {
					return nil, bad("write to the read-only frame pointer r10")
				}
				continue
			case mode == modeABS || mode == modeIND:
				var sz uint8
				switch size {
				case sizeB:
					sz = 0
				case sizeH:
					sz = 1
				case sizeW:
					sz = 2
				default:
					return nil, bad("64-bit packet load")
				}
				if mode == modeABS {
					if HeaderOffset(imm) {
						return nil, bad("packet load in the network or link-layer header (SKF_NET_OFF, SKF_LL_OFF), which a message does not have")
					}
					in.op = opLDABSB + sz
				} else {
					in.op = opLDINDB + sz
				}
				in.dst = 0 // result goes to r0
				writesDst = false
			default:
				return nil, bad("unknown load mode")
			}
		case clsLDX, clsST, clsSTX:
			if code&0xe0 != modeMEM {
				return nil, bad("atomic or unknown memory mode is not supported")
			}
			sz := [4]uint8{2, 1, 0, 3}[(code&0x18)>>3] // W, H, B, DW -> log2(bytes)
			switch cls {
			case clsLDX:
				in.op = opLDXB + sz
			case clsSTX:
				in.op = opSTXB + sz
				writesDst = false
			case clsST:
				if src != 0 {
					return nil, bad("store immediate with source register")
				}
				in.op = opSTB + sz
				writesDst = false
			}
		}
		if writesDst && dst == frameReg {
			return nil, bad("write to the read-only frame pointer r10")
		}
		p.insns[i] = in
	}
	// Resolve jump targets and check them.
	for i := range p.insns {
		in := &p.insns[i]
		if filler[i] || !(in.op == opJA || in.op >= opJMP64) {
			continue
		}
		t := i + 1 + int(in.off)
		if t < 0 || t >= n || filler[t] {
			return nil, fmt.Errorf("%w: instruction %d: jump to %d out of the program", ErrInvalid, i, t)
		}
		in.off = int32(t)
	}
	if last := p.insns[n-1]; filler[n-1] || (last.op != opExit && last.op != opJA) {
		return nil, fmt.Errorf("%w: last instruction is not exit or an unconditional jump", ErrInvalid)
	}
	return p, nil
}

func pick(c bool, a, b uint8) uint8 {
	if c {
		return a
	}
	return b
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Run executes the program on pkt, which the program sees as the packet
// (LD_ABS, LD_IND, bpf_skb_load_bytes) with __sk_buff.len == len(pkt). It
// returns r0 at exit, or 0 when a packet load was out of range (the kernel's
// behaviour). Faults and the step limit return an error.
func (p *Program) Run(pkt []byte) (uint64, error) {
	if p.usesStack {
		var stack [StackSize]byte
		return p.run(pkt, stack[:])
	}
	return p.run(pkt, nil)
}

func (p *Program) run(pkt []byte, stack []byte) (uint64, error) {
	var r [16]uint64
	r[1] = ctxBase
	r[10] = stackBase + uint64(len(stack))
	insns := p.insns
	steps := p.MaxSteps
	plen := uint64(len(pkt))
	for pc := 0; ; {
		if steps <= 0 {
			return 0, fmt.Errorf("%w: more than %d instructions executed", ErrStepLimit, p.MaxSteps)
		}
		steps--
		in := &insns[pc]
		pc++
		d, s := in.dst&15, in.src&15
		switch in.op {
		case opExit:
			return r[0], nil
		case opJA:
			pc = int(in.off)
		case opLDDW:
			r[d] = uint64(in.imm)
			pc++
		case opCall:
			r[0] = skbLoadBytes(pkt, stack, r[2], r[3], r[4])
			if r[0] == faultRet {
				return 0, fmt.Errorf("%w: bpf_skb_load_bytes destination [%#x, +%d) outside the stack", ErrFault, r[3], uint32(r[4]))
			}

		case opLDABSB, opLDABSH, opLDABSW, opLDINDB, opLDINDH, opLDINDW:
			o := uint64(uint32(in.imm))
			if in.op >= opLDINDB {
				o = uint64(uint32(r[s]) + uint32(in.imm))
			}
			o = uint64(int64(int32(uint32(o)))) // negative offsets are out of range
			switch (in.op - opLDABSB) % 3 {
			case 0:
				if o >= plen {
					return 0, nil
				}
				r[0] = uint64(pkt[o])
			case 1:
				if o >= plen || plen-o < 2 {
					return 0, nil
				}
				r[0] = uint64(binary.BigEndian.Uint16(pkt[o:]))
			default:
				if o >= plen || plen-o < 4 {
					return 0, nil
				}
				r[0] = uint64(binary.BigEndian.Uint32(pkt[o:]))
			}

		case opLDXB, opLDXH, opLDXW, opLDXDW:
			sz := uint64(1) << (in.op - opLDXB)
			a := r[s] + uint64(int64(in.off))
			if o := a - stackBase; o < uint64(len(stack)) && o+sz <= uint64(len(stack)) {
				r[d] = loadLE(stack[o:], sz)
			} else if o := a - ctxBase; o < CtxSize && o+sz <= CtxSize {
				if packetPointer(o, sz) {
					return 0, fmt.Errorf("%w: read of __sk_buff data, data_end or data_meta at offset %d (instruction %d): socket filters have no direct packet access (the kernel refuses to load such a program); use load_word or bpf_skb_load_bytes", ErrFault, o, pc-1)
				}
				r[d] = ctxLoad(o, sz, plen)
			} else {
				return 0, fmt.Errorf("%w: load of %d bytes at %#x (instruction %d)", ErrFault, sz, a, pc-1)
			}
		case opSTXB, opSTXH, opSTXW, opSTXDW, opSTB, opSTH, opSTW, opSTDW:
			var sz, v uint64
			if in.op >= opSTB {
				sz, v = uint64(1)<<(in.op-opSTB), uint64(in.imm)
			} else {
				sz, v = uint64(1)<<(in.op-opSTXB), r[s]
			}
			a := r[d] + uint64(int64(in.off))
			o := a - stackBase
			if !(o < uint64(len(stack)) && o+sz <= uint64(len(stack))) {
				return 0, fmt.Errorf("%w: store of %d bytes at %#x (instruction %d): only the stack is writable", ErrFault, sz, a, pc-1)
			}
			storeLE(stack[o:], sz, v)

		case opLE16:
			r[d] = uint64(uint16(r[d]))
		case opLE32:
			r[d] = uint64(uint32(r[d]))
		case opLE64:
		case opBE16:
			r[d] = uint64(bits.ReverseBytes16(uint16(r[d])))
		case opBE32:
			r[d] = uint64(bits.ReverseBytes32(uint32(r[d])))
		case opBE64:
			r[d] = bits.ReverseBytes64(r[d])
		case opNeg64:
			r[d] = -r[d]
		case opNeg32:
			r[d] = uint64(-uint32(r[d]))

		// 64-bit ALU.
		case opALU64 + 2*aluAdd:
			r[d] += uint64(in.imm)
		case opALU64 + 2*aluAdd + 1:
			r[d] += r[s]
		case opALU64 + 2*aluSub:
			r[d] -= uint64(in.imm)
		case opALU64 + 2*aluSub + 1:
			r[d] -= r[s]
		case opALU64 + 2*aluMul:
			r[d] *= uint64(in.imm)
		case opALU64 + 2*aluMul + 1:
			r[d] *= r[s]
		case opALU64 + 2*aluDiv:
			r[d] = div64(r[d], uint64(in.imm))
		case opALU64 + 2*aluDiv + 1:
			r[d] = div64(r[d], r[s])
		case opALU64 + 2*aluOr:
			r[d] |= uint64(in.imm)
		case opALU64 + 2*aluOr + 1:
			r[d] |= r[s]
		case opALU64 + 2*aluAnd:
			r[d] &= uint64(in.imm)
		case opALU64 + 2*aluAnd + 1:
			r[d] &= r[s]
		case opALU64 + 2*aluLsh:
			r[d] <<= uint64(in.imm) & 63
		case opALU64 + 2*aluLsh + 1:
			r[d] <<= r[s] & 63
		case opALU64 + 2*aluRsh:
			r[d] >>= uint64(in.imm) & 63
		case opALU64 + 2*aluRsh + 1:
			r[d] >>= r[s] & 63
		case opALU64 + 2*aluMod:
			r[d] = mod64(r[d], uint64(in.imm))
		case opALU64 + 2*aluMod + 1:
			r[d] = mod64(r[d], r[s])
		case opALU64 + 2*aluXor:
			r[d] ^= uint64(in.imm)
		case opALU64 + 2*aluXor + 1:
			r[d] ^= r[s]
		case opALU64 + 2*aluMov:
			r[d] = uint64(in.imm)
		case opALU64 + 2*aluMov + 1:
			r[d] = r[s]
		case opALU64 + 2*aluArsh:
			r[d] = uint64(int64(r[d]) >> (uint64(in.imm) & 63))
		case opALU64 + 2*aluArsh + 1:
			r[d] = uint64(int64(r[d]) >> (r[s] & 63))

		// 32-bit ALU: operate on the low halves, zero-extend the result.
		case opALU32 + 2*aluAdd:
			r[d] = uint64(uint32(r[d]) + uint32(in.imm))
		case opALU32 + 2*aluAdd + 1:
			r[d] = uint64(uint32(r[d]) + uint32(r[s]))
		case opALU32 + 2*aluSub:
			r[d] = uint64(uint32(r[d]) - uint32(in.imm))
		case opALU32 + 2*aluSub + 1:
			r[d] = uint64(uint32(r[d]) - uint32(r[s]))
		case opALU32 + 2*aluMul:
			r[d] = uint64(uint32(r[d]) * uint32(in.imm))
		case opALU32 + 2*aluMul + 1:
			r[d] = uint64(uint32(r[d]) * uint32(r[s]))
		case opALU32 + 2*aluDiv:
			r[d] = uint64(div32(uint32(r[d]), uint32(in.imm)))
		case opALU32 + 2*aluDiv + 1:
			r[d] = uint64(div32(uint32(r[d]), uint32(r[s])))
		case opALU32 + 2*aluOr:
			r[d] = uint64(uint32(r[d]) | uint32(in.imm))
		case opALU32 + 2*aluOr + 1:
			r[d] = uint64(uint32(r[d]) | uint32(r[s]))
		case opALU32 + 2*aluAnd:
			r[d] = uint64(uint32(r[d]) & uint32(in.imm))
		case opALU32 + 2*aluAnd + 1:
			r[d] = uint64(uint32(r[d]) & uint32(r[s]))
		case opALU32 + 2*aluLsh:
			r[d] = uint64(uint32(r[d]) << (uint32(in.imm) & 31))
		case opALU32 + 2*aluLsh + 1:
			r[d] = uint64(uint32(r[d]) << (uint32(r[s]) & 31))
		case opALU32 + 2*aluRsh:
			r[d] = uint64(uint32(r[d]) >> (uint32(in.imm) & 31))
		case opALU32 + 2*aluRsh + 1:
			r[d] = uint64(uint32(r[d]) >> (uint32(r[s]) & 31))
		case opALU32 + 2*aluMod:
			r[d] = uint64(mod32(uint32(r[d]), uint32(in.imm)))
		case opALU32 + 2*aluMod + 1:
			r[d] = uint64(mod32(uint32(r[d]), uint32(r[s])))
		case opALU32 + 2*aluXor:
			r[d] = uint64(uint32(r[d]) ^ uint32(in.imm))
		case opALU32 + 2*aluXor + 1:
			r[d] = uint64(uint32(r[d]) ^ uint32(r[s]))
		case opALU32 + 2*aluMov:
			r[d] = uint64(uint32(in.imm))
		case opALU32 + 2*aluMov + 1:
			r[d] = uint64(uint32(r[s]))
		case opALU32 + 2*aluArsh:
			r[d] = uint64(uint32(int32(uint32(r[d])) >> (uint32(in.imm) & 31)))
		case opALU32 + 2*aluArsh + 1:
			r[d] = uint64(uint32(int32(uint32(r[d])) >> (uint32(r[s]) & 31)))

		// 64-bit conditional jumps; immediates are sign-extended.
		case opJMP64 + 2*jmpEq:
			if r[d] == uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpEq + 1:
			if r[d] == r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpGt:
			if r[d] > uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpGt + 1:
			if r[d] > r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpGe:
			if r[d] >= uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpGe + 1:
			if r[d] >= r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSet:
			if r[d]&uint64(in.imm) != 0 {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSet + 1:
			if r[d]&r[s] != 0 {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpNe:
			if r[d] != uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpNe + 1:
			if r[d] != r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSgt:
			if int64(r[d]) > in.imm {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSgt + 1:
			if int64(r[d]) > int64(r[s]) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSge:
			if int64(r[d]) >= in.imm {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSge + 1:
			if int64(r[d]) >= int64(r[s]) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpLt:
			if r[d] < uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpLt + 1:
			if r[d] < r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpLe:
			if r[d] <= uint64(in.imm) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpLe + 1:
			if r[d] <= r[s] {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSlt:
			if int64(r[d]) < in.imm {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSlt + 1:
			if int64(r[d]) < int64(r[s]) {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSle:
			if int64(r[d]) <= in.imm {
				pc = int(in.off)
			}
		case opJMP64 + 2*jmpSle + 1:
			if int64(r[d]) <= int64(r[s]) {
				pc = int(in.off)
			}

		// 32-bit conditional jumps compare the low halves.
		case opJMP32 + 2*jmpEq:
			if uint32(r[d]) == uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpEq + 1:
			if uint32(r[d]) == uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpGt:
			if uint32(r[d]) > uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpGt + 1:
			if uint32(r[d]) > uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpGe:
			if uint32(r[d]) >= uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpGe + 1:
			if uint32(r[d]) >= uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSet:
			if uint32(r[d])&uint32(in.imm) != 0 {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSet + 1:
			if uint32(r[d])&uint32(r[s]) != 0 {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpNe:
			if uint32(r[d]) != uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpNe + 1:
			if uint32(r[d]) != uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSgt:
			if int32(r[d]) > int32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSgt + 1:
			if int32(r[d]) > int32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSge:
			if int32(r[d]) >= int32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSge + 1:
			if int32(r[d]) >= int32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpLt:
			if uint32(r[d]) < uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpLt + 1:
			if uint32(r[d]) < uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpLe:
			if uint32(r[d]) <= uint32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpLe + 1:
			if uint32(r[d]) <= uint32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSlt:
			if int32(r[d]) < int32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSlt + 1:
			if int32(r[d]) < int32(r[s]) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSle:
			if int32(r[d]) <= int32(in.imm) {
				pc = int(in.off)
			}
		case opJMP32 + 2*jmpSle + 1:
			if int32(r[d]) <= int32(r[s]) {
				pc = int(in.off)
			}
		default:
			// Unreachable: Load accepts only the operations above.
			return 0, fmt.Errorf("%w: instruction %d: undecoded operation %d", ErrInvalid, pc-1, in.op)
		}
	}
}

// faultRet is returned by skbLoadBytes for a destination outside the stack;
// no real return value of the helper has this form.
const (
	faultRet  = 1<<64 - 1
	negEfault = 1<<64 - efault // -EFAULT as a 64-bit register value
)

// skbLoadBytes implements bpf_skb_load_bytes(skb, offset, to, len): copy len
// packet bytes from offset to the stack at to. It returns 0, or -EFAULT after
// zeroing the destination when the packet is too short, as the kernel does.
func skbLoadBytes(pkt, stack []byte, off, to, n uint64) uint64 {
	o, l := uint64(uint32(off)), uint64(uint32(n))
	d := to - stackBase
	if l == 0 || d >= uint64(len(stack)) || l > uint64(len(stack))-d {
		return faultRet
	}
	dst := stack[d : d+l]
	if uint64(int64(int32(uint32(o)))) != o || o > uint64(len(pkt)) || l > uint64(len(pkt))-o {
		clear(dst)
		return negEfault
	}
	copy(dst, pkt[o:o+l])
	return 0
}

// packetPointer reports whether a context read of sz bytes at offset o
// touches __sk_buff's data and data_end (offsets 76 to 83) or data_meta
// (140 to 143): direct packet pointers, which socket filters cannot use.
// Reading them as zero would make a program that needs them wait for more
// bytes forever.
func packetPointer(o, sz uint64) bool {
	return (o < 84 && o+sz > 76) || (o < 144 && o+sz > 140)
}

// ctxLoad reads sz bytes at offset o of the context: a little-endian
// __sk_buff whose len (offset 0) is plen and whose other fields are zero.
func ctxLoad(o, sz, plen uint64) uint64 {
	if o >= 4 {
		return 0
	}
	v := uint64(uint32(plen)) >> (8 * o)
	if sz < 8 {
		v &= 1<<(8*sz) - 1
	}
	return v
}

func loadLE(b []byte, sz uint64) uint64 {
	switch sz {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	default:
		return binary.LittleEndian.Uint64(b)
	}
}

func storeLE(b []byte, sz, v uint64) {
	switch sz {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(v))
	default:
		binary.LittleEndian.PutUint64(b, v)
	}
}

// Division by zero yields 0 and modulo by zero leaves the dividend, as in
// the kernel.
func div64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return a % b
}

func div32(a, b uint32) uint32 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mod32(a, b uint32) uint32 {
	if b == 0 {
		return a
	}
	return a % b
}

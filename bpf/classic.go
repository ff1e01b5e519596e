package bpf

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/ebpfvm"
	xbpf "golang.org/x/net/bpf"
)

// Errors. Run-time errors of a program wrap ErrProgram (and, for eBPF
// faults and runaway loops, ErrFault or ErrStepLimit as well); load errors
// wrap ErrInvalidProgram. Test with errors.Is.
var (
	// ErrProgram is wrapped by every error a program causes while parsing:
	// a negative return value (the kernel's error return), a memory fault,
	// or too many instructions.
	ErrProgram = errors.New("bpf: parser program failed")

	// ErrInvalidProgram is wrapped by the errors of Classic and LoadObject
	// for programs that cannot be run: malformed, unknown opcodes, jumps out
	// of the program, unsupported helpers, maps or calls.
	ErrInvalidProgram = errors.New("bpf: invalid parser program")

	// ErrFault is wrapped (beside ErrProgram) when an eBPF program accessed
	// memory outside its stack and read-only context, or read the direct
	// packet pointers of its context (see LoadObject).
	ErrFault = ebpfvm.ErrFault

	// ErrStepLimit is wrapped (beside ErrProgram) when an eBPF program ran
	// more than MaxSteps instructions in one call.
	ErrStepLimit = ebpfvm.ErrStepLimit
)

// MaxSteps is the most instructions one eBPF parser call may execute.
const MaxSteps = ebpfvm.DefaultMaxSteps

// maxClassicInsns is the kernel's limit on classic programs (BPF_MAXINSNS).
const maxClassicInsns = 4096

// Classic returns a parser that runs the classic BPF program prog, as kernel
// KCM runs a classic program converted by the kernel: the packet is the
// message's bytes so far, and the return value is mapped as described in the
// package documentation. A load beyond the buffered bytes makes the program
// return 0, "need more".
//
// The program is validated when Classic is called: each instruction is
// assembled (as for loading into a kernel) and the program that runs is the
// disassembly of that bytecode, so it cannot change afterwards and an
// instruction value the kernel could not load (an unknown opcode, a bad load
// size, a scratch slot above 15, a jump past the end, a constant division by
// zero, an extension other than the packet length, a last instruction other
// than a return) is rejected with an error wrapping ErrInvalidProgram.
// RawInstruction values are accepted and decoded. Programs the kernel's
// bpf_check_classic refuses are refused too, also where the x/net/bpf
// virtual machine would run them: an opcode outside the kernel's table
// (x/net/bpf decodes some, ignoring bits it does not look at), a constant
// shift by 32 or more, an absolute load at an ancillary offset (SKF_AD_OFF
// and above; the packet length is LoadExtension{Num: ExtLen},
// BPF_LD|BPF_LEN), a jump past the end, a load of a scratch slot not
// stored on every path to it. Two programs the kernel loads are refused:
// BPF_LDX|BPF_LEN (the length into X), which x/net/bpf cannot run (load it
// into A and use TAX), and a constant load in the network or link-layer
// header (SKF_NET_OFF, SKF_LL_OFF), which a message does not have.
//
// The program runs in the x/net/bpf virtual machine. NegateA, which it
// lacks, runs as a multiplication by 2^32-1 (the same value modulo 2^32).
// Two run-time cases differ from the kernel, which no length parser
// meets: a shift by X of 32 or more gives 0 (the kernel shifts by X
// modulo 32), and an indirect load whose X+k exceeds 2^32 is out of
// range (the kernel wraps the sum to 32 bits).
//
// The parser is safe for concurrent use and does not allocate on success.
func Classic(prog []xbpf.Instruction) (kcm.Parser, error) {
	if len(prog) > maxClassicInsns {
		return nil, fmt.Errorf("%w: %d instructions, limit %d", ErrInvalidProgram, len(prog), maxClassicInsns)
	}
	own := make([]xbpf.Instruction, len(prog))
	for i, ins := range prog {
		if ins == nil {
			return nil, fmt.Errorf("%w: instruction %d is nil", ErrInvalidProgram, i)
		}
		raw, err := ins.Assemble()
		if err != nil {
			return nil, fmt.Errorf("%w: instruction %d (%v): %w", ErrInvalidProgram, i, ins, err)
		}
		if err := kernelRejects(raw, len(prog)-i-1); err != nil {
			return nil, fmt.Errorf("%w: instruction %d (%v): %w", ErrInvalidProgram, i, ins, err)
		}
		switch d := raw.Disassemble().(type) {
		case xbpf.RawInstruction:
			return nil, fmt.Errorf("%w: instruction %d: unknown opcode %#04x", ErrInvalidProgram, i, d.Op)
		case xbpf.NegateA:
			own[i] = xbpf.ALUOpConstant{Op: xbpf.ALUOpMul, Val: math.MaxUint32}
		default:
			own[i] = d
		}
	}
	if err := uninitScratch(prog); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProgram, err)
	}
	vm, err := xbpf.NewVM(own)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProgram, err)
	}
	return classicParser{vm}, nil
}

// Classic BPF opcode fields (linux/bpf_common.h).
const (
	opClass  = 0x07
	opLoad   = 0x00
	opALU    = 0x04
	opJump   = 0x05
	opMode   = 0xe0
	opAbs    = 0x20
	opALUOp  = 0xf0
	opLsh    = 0x60
	opRsh    = 0x70
	opSrcX   = 0x08
	skfAdOff = 0xfffff000 // SKF_AD_OFF, where ancillary loads begin
	opLdxMsh = 0xb1       // BPF_LDX|BPF_B|BPF_MSH
	opLdxLen = 0x81       // BPF_LDX|BPF_W|BPF_LEN
	opLdMem  = 0x60       // BPF_LD|BPF_MEM
	opLdxMem = 0x61
	opSt     = 0x02
	opStx    = 0x03
)

// kernelCodes are the opcodes the kernel's bpf_check_classic accepts
// (chk_code_allowed in net/core/filter.c); x/net/bpf decodes others too,
// ignoring the bits it does not look at.
var kernelCodes = [256]bool{
	// BPF_ALU: ADD SUB MUL DIV OR AND LSH RSH MOD XOR, K and X; NEG.
	0x04: true, 0x0c: true, 0x14: true, 0x1c: true, 0x24: true, 0x2c: true,
	0x34: true, 0x3c: true, 0x44: true, 0x4c: true, 0x54: true, 0x5c: true,
	0x64: true, 0x6c: true, 0x74: true, 0x7c: true, 0x94: true, 0x9c: true,
	0xa4: true, 0xac: true, 0x84: true,
	// BPF_LD: W/H/B ABS, W/H/B IND, W LEN, IMM, MEM.
	0x20: true, 0x28: true, 0x30: true, 0x40: true, 0x48: true, 0x50: true,
	0x80: true, 0x00: true, 0x60: true,
	// BPF_LDX: W LEN, B MSH, IMM, MEM.
	0x81: true, 0xb1: true, 0x01: true, 0x61: true,
	// BPF_ST, BPF_STX, BPF_MISC TAX and TXA, BPF_RET K and A.
	0x02: true, 0x03: true, 0x07: true, 0x87: true, 0x06: true, 0x16: true,
	// BPF_JMP: JA; JEQ, JGT, JGE, JSET with K and X.
	0x05: true, 0x15: true, 0x1d: true, 0x25: true, 0x2d: true, 0x35: true,
	0x3d: true, 0x45: true, 0x4d: true,
}

// kernelRejects returns why the kernel's bpf_check_classic refuses raw,
// which has rest instructions after it, where x/net/bpf would run it: a
// constant shift by 32 or more, an absolute load at an ancillary offset
// (x/net/bpf reads SKF_AD_OFF+1, of any size, as the packet length, which
// the kernel loads with BPF_LEN only), and a jump past the end (x/net/bpf
// compares its 32-bit offset as an int, negative on 32-bit platforms).
func kernelRejects(raw xbpf.RawInstruction, rest int) error {
	op, k := raw.Op, raw.K
	switch {
	case op >= uint16(len(kernelCodes)) || !kernelCodes[op]:
		return fmt.Errorf("opcode %#04x is not one the kernel loads", op)
	case op == opLdxLen:
		// The kernel loads the packet length into X; x/net/bpf decodes
		// it as a load into A, and has no load of it into X.
		return errors.New("BPF_LDX|BPF_LEN (the length into X) is not supported; load it into A (BPF_LD|BPF_LEN) and use TAX")
	case (op&opClass == opLoad && op&opMode == opAbs || op == opLdxMsh) && ebpfvm.HeaderOffset(int32(k)):
		return fmt.Errorf("packet load at offset %d: the kernel reads the network or link-layer header there (SKF_NET_OFF, SKF_LL_OFF), which a message does not have", int32(k))
	case op&opClass == opALU && op&opSrcX == 0 && (op&opALUOp == opLsh || op&opALUOp == opRsh) && k >= 32:
		return fmt.Errorf("shift by %d", k)
	case op&opClass == opLoad && op&opMode == opAbs && k >= skfAdOff:
		return fmt.Errorf("ancillary load SKF_AD_OFF%+d is not supported (the packet length is BPF_LD|BPF_LEN)", int32(k-skfAdOff))
	case op == opJump && // BPF_JA: 0 in the operation bits
		uint64(k) >= uint64(rest):
		return errors.New("jump past the end")
	}
	return nil
}

// uninitScratch returns why the kernel's check on scratch memory refuses
// prog (check_load_and_stores in net/core/filter.c): a load of a slot that
// is not stored on every path to it. Jumps go forward only, so one pass in
// order suffices: the slots known stored at an instruction are those
// stored on the way from every jump to it and from the one before it (as
// in the kernel, also when that one returns).
func uninitScratch(prog []xbpf.Instruction) error {
	stored := make([]uint16, len(prog)+1) // slots known stored on the jumps to pc
	for i := range stored {
		stored[i] = 0xffff
	}
	valid := uint16(0)
	for pc, ins := range prog {
		raw, _ := ins.Assemble() // checked by the caller
		valid &= stored[pc]
		op, k := raw.Op, raw.K
		switch {
		case op == opSt || op == opStx:
			valid |= 1 << (k & 0xf)
		case op == opLdMem || op == opLdxMem:
			if valid&(1<<(k&0xf)) == 0 {
				return fmt.Errorf("instruction %d loads scratch slot M[%d], not stored on every path to it", pc, k)
			}
		case op == opJump: // BPF_JA
			flow(stored, pc+1+int(k), valid)
			valid = 0xffff
		case op&opClass == opJump:
			flow(stored, pc+1+int(raw.Jt), valid)
			flow(stored, pc+1+int(raw.Jf), valid)
			valid = 0xffff
		}
	}
	return nil
}

// flow records that the slots valid are stored on a jump to to (a jump
// past the end is refused elsewhere).
func flow(stored []uint16, to int, valid uint16) {
	if to >= 0 && to < len(stored) {
		stored[to] &= valid
	}
}

type classicParser struct{ vm *xbpf.VM }

func (p classicParser) Parse(b []byte) (n int, err error) {
	if strconv.IntSize == 32 {
		// x/net/bpf reads a load offset of 2^31 or more as a negative
		// int there, and indexes the packet with it. The kernel reads
		// such an offset as out of range: the program returns 0.
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(runtime.Error); !ok {
					panic(r)
				}
				n, err = 0, nil
			}
		}()
	}
	n, err = p.vm.Run(b)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrProgram, err)
	}
	return result(uint32(n))
}

// result maps a program's 32-bit return value to the parser contract with
// the kernel's int semantics.
func result(v uint32) (int, error) {
	if int32(v) < 0 {
		return 0, fmt.Errorf("%w: returned %d", ErrProgram, int32(v))
	}
	return int(v), nil
}

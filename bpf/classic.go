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
// virtual machine would run them: a constant shift by 32 or more, an
// absolute load at an ancillary offset (SKF_AD_OFF and above; the packet
// length is LoadExtension{Num: ExtLen}, BPF_LD|BPF_LEN), a jump past the
// end.
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
)

// kernelRejects returns why the kernel's bpf_check_classic refuses raw,
// which has rest instructions after it, where x/net/bpf would run it: a
// constant shift by 32 or more, an absolute load at an ancillary offset
// (x/net/bpf reads SKF_AD_OFF+1, of any size, as the packet length, which
// the kernel loads with BPF_LEN only), and a jump past the end (x/net/bpf
// compares its 32-bit offset as an int, negative on 32-bit platforms).
func kernelRejects(raw xbpf.RawInstruction, rest int) error {
	op, k := raw.Op, raw.K
	switch {
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

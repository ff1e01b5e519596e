package bpf

import (
	"errors"
	"fmt"
	"math"

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
// RawInstruction values are accepted and decoded. NegateA, which the x/net/bpf
// virtual machine lacks, runs as a multiplication by 2^32-1 (the same value
// modulo 2^32).
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

type classicParser struct{ vm *xbpf.VM }

func (p classicParser) Parse(b []byte) (int, error) {
	n, err := p.vm.Run(b)
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

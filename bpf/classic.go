package bpf

import (
	"errors"
	"fmt"

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
	// memory outside its stack and read-only context.
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
// return 0, "need more". The program is validated (and assembled, to check it
// would load into a kernel); errors wrap ErrInvalidProgram.
//
// The parser is safe for concurrent use and does not allocate on success.
func Classic(prog []xbpf.Instruction) (kcm.Parser, error) {
	if len(prog) > maxClassicInsns {
		return nil, fmt.Errorf("%w: %d instructions, limit %d", ErrInvalidProgram, len(prog), maxClassicInsns)
	}
	for i, ins := range prog {
		if _, ok := ins.(xbpf.NegateA); ok {
			// x/net/bpf's VM does not implement it.
			return nil, fmt.Errorf("%w: instruction %d: NegateA is not supported", ErrInvalidProgram, i)
		}
	}
	vm, err := xbpf.NewVM(prog)
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

package bpf

import (
	"errors"
	"testing"

	xbpf "golang.org/x/net/bpf"
)

// TestClassicKernelSemantics pins what the kernel's run of a classic
// program (converted to eBPF by bpf_convert_filter) does where a naive
// reading of the instructions could differ: offsets of 2^31 and above are
// negative, so out of range; division and modulo by X == 0 end the
// program with 0; jumps compare unsigned. (Two documented differences
// remain, see Classic: shifts by X of 32 or more, and X+k past 2^32.)
func TestClassicKernelSemantics(t *testing.T) {
	ret := xbpf.RetA{}
	a := func(v uint32) xbpf.Instruction { return xbpf.LoadConstant{Dst: xbpf.RegA, Val: v} }
	x := func(v uint32) xbpf.Instruction { return xbpf.LoadConstant{Dst: xbpf.RegX, Val: v} }
	in := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	tests := []struct {
		name string
		prog []xbpf.Instruction
		want int
	}{
		{"lsh X 31", []xbpf.Instruction{a(3), x(31), xbpf.ALUOpX{Op: xbpf.ALUOpShiftLeft}, xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 31}, ret}, 1},
		{"ind X+k negative", []xbpf.Instruction{x(1), xbpf.LoadIndirect{Off: 0xfffffffc, Size: 1}, xbpf.RetConstant{Val: 9}}, 0},
		{"ind X+k 2^31", []xbpf.Instruction{x(0x7fffffff), xbpf.LoadIndirect{Off: 1, Size: 1}, xbpf.RetConstant{Val: 9}}, 0},
		{"ind X+k 2^32-1", []xbpf.Instruction{x(0x7fffffff), xbpf.LoadIndirect{Off: 0x80000000, Size: 1}, xbpf.RetConstant{Val: 9}}, 0},
		{"abs 2^31", []xbpf.Instruction{xbpf.LoadAbsolute{Off: 0x80000000, Size: 4}, xbpf.RetConstant{Val: 9}}, 0},
		{"abs 2^31-1", []xbpf.Instruction{xbpf.LoadAbsolute{Off: 0x7fffffff, Size: 2}, xbpf.RetConstant{Val: 9}}, 0},
		{"msh 2^32-1", []xbpf.Instruction{xbpf.LoadMemShift{Off: 0xffffffff}, xbpf.RetConstant{Val: 9}}, 0},
		{"msh 2^31", []xbpf.Instruction{xbpf.LoadMemShift{Off: 0x80000000}, xbpf.RetConstant{Val: 9}}, 0},
		{"mod X 0", []xbpf.Instruction{a(5), xbpf.ALUOpX{Op: xbpf.ALUOpMod}, xbpf.RetConstant{Val: 9}}, 0},
		{"negate", []xbpf.Instruction{a(0xfffffffb), xbpf.NegateA{}, ret}, 5},
		{"jgt K above 2^31 is unsigned", []xbpf.Instruction{a(1), xbpf.JumpIf{Cond: xbpf.JumpGreaterThan, Val: 0x80000000, SkipTrue: 1}, xbpf.RetConstant{Val: 7}, xbpf.RetConstant{Val: 8}}, 7},
		{"jlt X", []xbpf.Instruction{a(1), x(2), xbpf.JumpIfX{Cond: xbpf.JumpLessThan, SkipTrue: 1}, xbpf.RetConstant{Val: 7}, xbpf.RetConstant{Val: 8}}, 8},
		{"jset", []xbpf.Instruction{a(6), xbpf.JumpIf{Cond: xbpf.JumpBitsNotSet, Val: 1, SkipTrue: 1}, xbpf.RetConstant{Val: 7}, xbpf.RetConstant{Val: 8}}, 8},
		{"ja", []xbpf.Instruction{xbpf.Jump{Skip: 1}, xbpf.RetConstant{Val: 7}, xbpf.RetConstant{Val: 8}}, 8},
		{"ldx len, stx, txa", []xbpf.Instruction{xbpf.LoadExtension{Num: xbpf.ExtLen}, xbpf.TAX{}, xbpf.StoreScratch{Src: xbpf.RegX, N: 3}, a(0), xbpf.LoadScratch{Dst: xbpf.RegX, N: 3}, xbpf.TXA{}, ret}, 8},
	}
	for _, tt := range tests {
		p, err := Classic(tt.prog)
		if err != nil {
			t.Errorf("%s: Classic: %v", tt.name, err)
			continue
		}
		if n, err := p.Parse(in); n != tt.want || err != nil {
			t.Errorf("%s: Parse = %d, %v; want %d", tt.name, n, err, tt.want)
		}
	}
}

// TestClassicRejectsKernelInvalid checks programs the kernel's
// bpf_check_classic refuses: constant shifts by 32 or more, absolute loads
// at an unknown ancillary offset, and (on every platform, 32-bit included)
// jumps whose 32-bit offset leaves the program.
func TestClassicRejectsKernelInvalid(t *testing.T) {
	for name, prog := range map[string][]xbpf.Instruction{
		"lsh K 32":     {xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftLeft, Val: 32}, xbpf.RetA{}},
		"rsh K 2^32-1": {xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 0xffffffff}, xbpf.RetA{}},
		"ja 2^32-1":    {xbpf.Jump{Skip: 0xffffffff}, xbpf.RetA{}},
		"ja 1 at end":  {xbpf.Jump{Skip: 1}, xbpf.RetA{}},
		// x/net/bpf decodes an absolute load at SKF_AD_OFF+1, of any
		// size, as its packet-length extension; the kernel has no
		// ancillary load there (the length is BPF_LD|BPF_LEN).
		"ldb SKF_AD_OFF+1":    {xbpf.LoadAbsolute{Off: 0xfffff001, Size: 1}, xbpf.RetA{}},
		"raw ld SKF_AD_OFF+1": {xbpf.RawInstruction{Op: 0x20, K: 0xfffff001}, xbpf.RetA{}},
	} {
		if _, err := Classic(prog); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: %v, want ErrInvalidProgram", name, err)
		}
	}
	if _, err := Classic([]xbpf.Instruction{xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftLeft, Val: 31}, xbpf.RetA{}}); err != nil {
		t.Errorf("lsh K 31: %v", err)
	}
}

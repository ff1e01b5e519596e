package bpf

// Audit 17: load-time validation, "need more" at short input, ancillary and
// negative-offset loads, byte order of objects. Tests that expose a bug are
// skipped with "BUG: ..."; the others add coverage.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	xbpf "golang.org/x/net/bpf"
)

// kernelClassicCodes is the table of chk_code_allowed in the kernel's
// net/core/filter.c: the only opcodes bpf_check_classic accepts.
var kernelClassicCodes = map[uint16]bool{
	// BPF_ALU | op | BPF_K/BPF_X, and BPF_ALU | BPF_NEG.
	0x04: true, 0x0c: true, 0x14: true, 0x1c: true, 0x24: true, 0x2c: true,
	0x34: true, 0x3c: true, 0x94: true, 0x9c: true, 0x54: true, 0x5c: true,
	0x44: true, 0x4c: true, 0xa4: true, 0xac: true, 0x64: true, 0x6c: true,
	0x74: true, 0x7c: true, 0x84: true,
	// BPF_LD: W/H/B ABS, W LEN, W/H/B IND, IMM, MEM.
	0x20: true, 0x28: true, 0x30: true, 0x80: true, 0x40: true, 0x48: true,
	0x50: true, 0x00: true, 0x60: true,
	// BPF_LDX: W LEN, B MSH, IMM, MEM.
	0x81: true, 0xb1: true, 0x01: true, 0x61: true,
	// BPF_ST, BPF_STX, BPF_MISC TAX/TXA, BPF_RET K/A.
	0x02: true, 0x03: true, 0x07: true, 0x87: true, 0x06: true, 0x16: true,
	// BPF_JMP: JA, JEQ/JGE/JGT/JSET K and X.
	0x05: true, 0x15: true, 0x1d: true, 0x35: true, 0x3d: true, 0x25: true,
	0x2d: true, 0x45: true, 0x4d: true,
}

// opcodeProbe is a program around one raw instruction (K = 1, jt = jf =
// 0) that the kernel loads whenever the opcode is allowed: M[1] is stored
// first (check_load_and_stores), and a jump by 1 lands on a return.
func opcodeProbe(op uint16) []xbpf.Instruction {
	return []xbpf.Instruction{
		xbpf.RawInstruction{Op: 0x02, K: 1}, // st M[1]
		xbpf.RawInstruction{Op: op, K: 1},
		xbpf.RetA{},
		xbpf.RetA{},
	}
}

// TestAudit17ClassicKernelOpcodesAccepted: every opcode the kernel's
// chk_code_allowed allows loads in Classic.
func TestAudit17ClassicKernelOpcodesAccepted(t *testing.T) {
	for op := range kernelClassicCodes {
		if op == 0x81 {
			continue // BPF_LDX|BPF_LEN: refused, see TestAudit17ClassicLdxLen
		}
		if _, err := Classic(opcodeProbe(op)); err != nil {
			t.Errorf("opcode %#02x (kernel allows it): %v", op, err)
		}
	}
}

// TestAudit17ClassicRefusesKernelInvalidOpcodes: Classic's doc promises
// that "an instruction value the kernel could not load (an unknown
// opcode, ...) is rejected with an error wrapping ErrInvalidProgram". The
// kernel's bpf_check_classic (net/core/filter.c) refuses every opcode
// chk_code_allowed does not list; x/net/bpf's RawInstruction.Disassemble
// ignores bits it does not look at and decodes 13 of them into runnable
// instructions: BPF_JMP|BPF_JA|BPF_X (0x0d) as ja, BPF_LDX|BPF_ABS and
// BPF_LDX|BPF_IND (0x21 0x29 0x31 0x41 0x49 0x51) as loads into A,
// BPF_ALU|BPF_NEG|BPF_X (0x8c) as neg, and BPF_MSH of any class and size
// (0xa0 0xa1 0xa8 0xa9 0xb0) as ldx 4*([k]&0xf). kernelRejects does not
// look at the opcode table.
func TestAudit17ClassicRefusesKernelInvalidOpcodes(t *testing.T) {
	for op := uint16(0); op < 256; op++ {
		if kernelClassicCodes[op] {
			continue
		}
		if _, err := Classic(opcodeProbe(op)); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("opcode %#02x (%v), refused by the kernel: Classic error %v, want ErrInvalidProgram",
				op, xbpf.RawInstruction{Op: op, K: 1}.Disassemble(), err)
		}
	}
}

// TestAudit17ClassicLdxLen: BPF_LDX|BPF_W|BPF_LEN (0x81, "ldx #len" in
// bpf_asm) loads the packet length into X: bpf_convert_filter
// (net/core/filter.c) turns it into BPF_LDX_MEM(BPF_W, BPF_REG_X,
// BPF_REG_CTX, offsetof(struct sk_buff, len)). x/net/bpf's Disassemble
// decodes every BPF_LEN load as LoadExtension{Num: ExtLen}, which writes
// A, and its VM has no load of the length into X: Classic used to accept
// it and compute a wrong length (X stayed 0, A was overwritten); it now
// refuses it, with an error that says how to write the same program.
func TestAudit17ClassicLdxLen(t *testing.T) {
	in := []byte{0, 0, 0, 4, 1, 2, 3, 4}
	for _, tt := range []struct {
		name string
		prog []xbpf.Instruction
		want int
	}{
		// X = len; A = 7; A = X: the kernel returns 8.
		{"ldx len, txa", []xbpf.Instruction{
			xbpf.RawInstruction{Op: 0x81},
			xbpf.LoadConstant{Dst: xbpf.RegA, Val: 7},
			xbpf.TXA{},
			xbpf.RetA{},
		}, 8},
		// A length parser that uses X = len: A = [0] + 4; if A > X
		// (need more) return 0, else return A. The kernel returns 8.
		{"header vs ldx len", []xbpf.Instruction{
			xbpf.LoadAbsolute{Off: 0, Size: 4},
			xbpf.RawInstruction{Op: 0x81},
			xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 4},
			xbpf.JumpIfX{Cond: xbpf.JumpGreaterThan, SkipTrue: 1},
			xbpf.RetA{},
			xbpf.RetConstant{Val: 0},
		}, 8},
	} {
		_ = in
		if _, err := Classic(tt.prog); !errors.Is(err, ErrInvalidProgram) || !strings.Contains(err.Error(), "BPF_LDX|BPF_LEN") {
			t.Errorf("%s: Classic: %v; want ErrInvalidProgram naming BPF_LDX|BPF_LEN (the kernel would return %d)", tt.name, err, tt.want)
		}
	}
}

// TestAudit17ClassicUninitScratch: bpf_check_classic ends with
// check_load_and_stores (net/core/filter.c), which returns -EINVAL when a
// BPF_LD|BPF_MEM or BPF_LDX|BPF_MEM may read a scratch slot no BPF_ST or
// BPF_STX wrote on every path to it. Classic's doc: "Programs the
// kernel's bpf_check_classic refuses are refused too". Classic accepts
// them and the x/net/bpf VM reads the slot as 0.
func TestAudit17ClassicUninitScratch(t *testing.T) {
	for name, prog := range map[string][]xbpf.Instruction{
		"ld M[3] first": {
			xbpf.LoadScratch{Dst: xbpf.RegA, N: 3},
			xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 4},
			xbpf.RetA{},
		},
		"ldx M[0] first": {
			xbpf.LoadScratch{Dst: xbpf.RegX, N: 0},
			xbpf.TXA{},
			xbpf.RetA{},
		},
		"stored on one branch only": {
			xbpf.LoadAbsolute{Off: 0, Size: 1},
			xbpf.JumpIf{Cond: xbpf.JumpEqual, Val: 1, SkipTrue: 1},
			xbpf.StoreScratch{Src: xbpf.RegA, N: 2},
			xbpf.LoadScratch{Dst: xbpf.RegA, N: 2},
			xbpf.RetA{},
		},
		"other slot stored": {
			xbpf.StoreScratch{Src: xbpf.RegA, N: 1},
			xbpf.LoadScratch{Dst: xbpf.RegA, N: 2},
			xbpf.RetA{},
		},
	} {
		if _, err := Classic(prog); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: Classic error %v; want ErrInvalidProgram (kernel: check_load_and_stores -EINVAL)", name, err)
		}
	}
}

// TestAudit17ClassicScratchStoredOnAllPaths: the counterpart that the
// kernel accepts loads and runs.
func TestAudit17ClassicScratchStoredOnAllPaths(t *testing.T) {
	p, err := Classic([]xbpf.Instruction{
		xbpf.LoadAbsolute{Off: 0, Size: 1},
		xbpf.JumpIf{Cond: xbpf.JumpEqual, Val: 1, SkipTrue: 2},
		xbpf.StoreScratch{Src: xbpf.RegA, N: 2},
		xbpf.Jump{Skip: 1},
		xbpf.StoreScratch{Src: xbpf.RegA, N: 2},
		xbpf.LoadScratch{Dst: xbpf.RegA, N: 2},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 1},
		xbpf.RetA{},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []byte{1, 5} {
		if n, err := p.Parse([]byte{b}); n != int(b)+1 || err != nil {
			t.Errorf("Parse(%x) = %d, %v; want %d", b, n, err, b+1)
		}
	}
	if n, err := p.Parse(nil); n != 0 || err != nil {
		t.Errorf("Parse(empty) = %d, %v; want 0 (need more)", n, err)
	}
}

// Negative offsets of the kernel's packet loads (linux/filter.h).
const (
	skfNetOff = -0x100000 // SKF_NET_OFF: relative to the network header
	skfLLOff  = -0x200000 // SKF_LL_OFF: relative to the link-layer header
)

// ebpfProg marshals insns and loads them as a parser.
func ebpfProg(t *testing.T, insns asm.Instructions) (*ebpfParser, error) {
	t.Helper()
	var raw bytes.Buffer
	if err := insns.Marshal(&raw, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	return newEBPF(raw.Bytes(), "test")
}

// TestAudit17NegativeOffsetLoads: a packet load at an offset in
// [SKF_LL_OFF, 0) is not out of range in the kernel: both the classic
// program (converted to eBPF) and an eBPF LD_ABS call
// bpf_skb_load_helper_{8,16,32}, which for a negative offset calls
// bpf_internal_load_pointer_neg_helper (net/core/filter.c) and reads the
// skb's network header (k >= SKF_NET_OFF) or MAC header (k >= SKF_LL_OFF).
// On a KCM skb (a clone of the TCP skb) that is the IP header. kcm cannot
// read those bytes; it treats the load as past the buffered bytes and
// returns 0, "need more", on every call, so the psock waits for bytes that
// cannot help (until the peer stops sending or MaxMessageSize). Classic's
// doc promises only that "a load beyond the buffered bytes makes the
// program return 0"; the ancillary range just above (SKF_AD_OFF) is
// refused at load for the same reason. The constant-offset cases (LD_ABS,
// LDX_MSH) are decidable at load and should be refused like it.
func TestAudit17NegativeOffsetLoads(t *testing.T) {
	for _, k := range []int32{skfNetOff, skfNetOff + 9, skfLLOff, skfLLOff + 12} {
		for name, prog := range map[string][]xbpf.Instruction{
			"ldb":  {xbpf.LoadAbsolute{Off: uint32(k), Size: 1}, xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 1}, xbpf.RetA{}},
			"ldh":  {xbpf.LoadAbsolute{Off: uint32(k), Size: 2}, xbpf.RetA{}},
			"ld":   {xbpf.LoadAbsolute{Off: uint32(k), Size: 4}, xbpf.RetA{}},
			"ldxb": {xbpf.LoadMemShift{Off: uint32(k)}, xbpf.TXA{}, xbpf.RetA{}},
		} {
			if _, err := Classic(prog); !errors.Is(err, ErrInvalidProgram) {
				t.Errorf("classic %s %#x: Classic error %v; want ErrInvalidProgram", name, uint32(k), err)
			}
		}
		for _, sz := range []asm.Size{asm.Byte, asm.Half, asm.Word} {
			_, err := ebpfProg(t, asm.Instructions{
				asm.LoadAbs(k, sz),
				asm.Add.Imm(asm.R0, 1),
				asm.Return(),
			})
			if !errors.Is(err, ErrInvalidProgram) {
				t.Errorf("eBPF LD_ABS %v %d: error %v; want ErrInvalidProgram", sz, k, err)
			}
		}
	}
}

// TestAudit17NeedMoreAtShortInput: a length program that reads past the
// buffered bytes returns (0, nil) on every prefix shorter than what it
// reads, for classic (LD_ABS, LD_IND, LDX_MSH) and eBPF (LD_ABS, LD_IND,
// bpf_skb_load_bytes checked by the program), and the length once the
// header is there. A length not larger than the bytes read is returned
// as is (the psock judges it against earlier calls).
func TestAudit17NeedMoreAtShortInput(t *testing.T) {
	type form struct {
		name string
		need int // bytes the program reads
		p    interface{ Parse([]byte) (int, error) }
	}
	var forms []form
	addClassic := func(name string, need int, prog []xbpf.Instruction) {
		p, err := Classic(prog)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		forms = append(forms, form{name, need, p})
	}
	addEBPF := func(name string, need int, insns asm.Instructions) {
		p, err := ebpfProg(t, insns)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		forms = append(forms, form{name, need, p})
	}
	// Each computes byte 5 (a "length" of 2) after reading 6 bytes.
	addClassic("classic ld [2]; ldh [4]", 6, []xbpf.Instruction{
		xbpf.LoadAbsolute{Off: 2, Size: 4},
		xbpf.LoadAbsolute{Off: 4, Size: 2},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpAnd, Val: 0xff},
		xbpf.RetA{},
	})
	addClassic("classic ldx #3; ld [x+2]", 6, []xbpf.Instruction{
		xbpf.LoadConstant{Dst: xbpf.RegX, Val: 3},
		xbpf.LoadIndirect{Off: 2, Size: 1},
		xbpf.RetA{},
	})
	addClassic("classic ldxb 4*([5]&0xf)", 6, []xbpf.Instruction{
		xbpf.LoadMemShift{Off: 5},
		xbpf.TXA{},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 2},
		xbpf.RetA{},
	})
	addEBPF("ebpf ld_abs w [2]", 6, asm.Instructions{
		asm.LoadAbs(2, asm.Word),
		asm.And.Imm(asm.R0, 0xff),
		asm.Return(),
	})
	addEBPF("ebpf ld_ind h [r7+3]", 6, asm.Instructions{
		asm.Mov.Imm(asm.R7, 1),
		asm.LoadInd(asm.R0, asm.R7, 3, asm.Half),
		asm.And.Imm(asm.R0, 0xff),
		asm.Return(),
	})
	addEBPF("ebpf skb_load_bytes 6", 6, asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R4, 6),
		asm.FnSkbLoadBytes.Call(),
		asm.JSGE.Imm(asm.R0, 0, "ok"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.LoadMem(asm.R0, asm.RFP, -3, asm.Byte).WithSymbol("ok"),
		asm.Return(),
	})
	in := []byte{9, 9, 9, 9, 9, 2, 9, 9}
	for _, f := range forms {
		for n := 0; n <= len(in); n++ {
			got, err := f.p.Parse(in[:n])
			want := 0
			if n >= f.need {
				want = 2
			}
			if got != want || err != nil {
				t.Errorf("%s on %d bytes: %d, %v; want %d, nil", f.name, n, got, err, want)
			}
		}
	}
}

// TestAudit17EBPFReturnMapping: r0 is returned as the kernel's u32
// (bpf_prog_run), read as int by KCM's parse callback: the upper 32 bits of
// r0 are dropped, 0x80000000 and above are errors.
func TestAudit17EBPFReturnMapping(t *testing.T) {
	for _, tt := range []struct {
		r0   int64
		want int
		err  bool
	}{
		{0x1_0000_0005, 5, false},
		{0x7fff_ffff, 0x7fff_ffff, false},
		{-0x1_0000_0000, 0, false}, // 0xffffffff00000000
		{0x8000_0000, 0, true},
		{-1, 0, true},
		{0x0000_0001_ffff_fff2, 0, true}, // u32 -14: -EFAULT
	} {
		p, err := ebpfProg(t, asm.Instructions{asm.LoadImm(asm.R0, tt.r0, asm.DWord), asm.Return()})
		if err != nil {
			t.Fatal(err)
		}
		n, err := p.Parse(nil)
		if n != tt.want || (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrProgram)) {
			t.Errorf("r0 = %#x: %d, %v; want %d, error %v", tt.r0, n, err, tt.want, tt.err)
		}
	}
}

// TestAudit17EBPFLoadRejects: what LoadObject's doc says is rejected is
// rejected by newEBPF with ErrInvalidProgram, named instruction included:
// maps, bpf-to-bpf calls, other helpers, a write to r10.
func TestAudit17EBPFLoadRejects(t *testing.T) {
	exit := []byte{0x95, 0, 0, 0, 0, 0, 0, 0}
	cat := func(slots ...[]byte) []byte { return bytes.Join(slots, nil) }
	marshal := func(insns ...asm.Instruction) []byte {
		var raw bytes.Buffer
		if err := asm.Instructions(insns).Marshal(&raw, binary.LittleEndian); err != nil {
			t.Fatal(err)
		}
		return raw.Bytes()
	}
	for name, raw := range map[string][]byte{
		"map fd load":    marshal(asm.LoadMapPtr(asm.R1, 3), asm.Mov.Imm(asm.R0, 0), asm.Return()),
		"map value load": marshal(asm.LoadMapValue(asm.R1, 3, 0), asm.Mov.Imm(asm.R0, 0), asm.Return()),
		"helper 1":       marshal(asm.FnMapLookupElem.Call(), asm.Return()),
		"helper 68":      marshal(asm.FnSkbLoadBytesRelative.Call(), asm.Return()),
		"bpf-to-bpf":     cat([]byte{0x85, 0x10, 0, 0, 1, 0, 0, 0}, exit, []byte{0xb7, 0, 0, 0, 1, 0, 0, 0}, exit),
		"write r10":      marshal(asm.Mov.Imm(asm.RFP, 0), asm.Return()),
		"fall off end":   marshal(asm.Mov.Imm(asm.R0, 0)),
		"ld_abs dw":      cat([]byte{0x38, 0, 0, 0, 0, 0, 0, 0}, exit),
		"atomic add":     marshal(asm.StoreXAdd(asm.RFP, asm.R0, asm.Word), asm.Return()),
		"jump into lddw": cat([]byte{0x05, 0, 2, 0, 0, 0, 0, 0}, []byte{0xb7, 0, 0, 0, 0, 0, 0, 0},
			[]byte{0x18, 0, 0, 0, 1, 0, 0, 0}, make([]byte, 8), exit),
	} {
		if _, err := newEBPF(raw, "test"); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: %v; want ErrInvalidProgram", name, err)
		}
	}
}

// clangObject compiles src with clang for target (bpf, bpfel, bpfeb) into
// a temporary object, or skips the test when clang is not installed.
func clangObject(t *testing.T, target, src string) string {
	t.Helper()
	cc, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang not installed")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "p.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	o := filepath.Join(dir, "p.o")
	if out, err := exec.Command(cc, "-O2", "-g0", "-target", target, "-c", c, "-o", o).CombinedOutput(); err != nil {
		t.Skipf("clang -target %s: %v\n%s", target, err, out)
	}
	return o
}

// topByteSrc reads the first 4 bytes into a u32 in memory and returns its
// top byte + 4: 8 on 04 00 00 00 for a big-endian target, 4 for a
// little-endian one.
const topByteSrc = `
#define SEC(name) __attribute__((section(name), used))
typedef unsigned int __u32;
struct __sk_buff { __u32 len; };
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;
SEC("socket")
int top_byte(struct __sk_buff *skb)
{
	__u32 v;
	if (bpf_skb_load_bytes(skb, 0, &v, 4) < 0)
		return 0;
	return (v >> 24) + 4;
}
char _license[] SEC("license") = "GPL";
`

// TestAudit17BigEndianObject: clang -target bpfeb builds an object for a
// big-endian kernel (s390x, ...). On such a kernel, top_byte returns 8 on
// 04 00 00 00 (the u32 in memory is 0x04000000); on a little-endian host
// the kernel's loaders refuse the object (cilium/ebpf NewProgram: "can't
// load big endian program on little endian"; libbpf: endianness mismatch).
// LoadObject ignores ProgramSpec.ByteOrder: the interpreter's memory is
// always little-endian, so the object loads and returns 4, a wrong length
// with no error at load or run time.
func TestAudit17BigEndianObject(t *testing.T) {
	obj := clangObject(t, "bpfeb", topByteSrc)
	p, err := LoadObject(obj, "top_byte")
	if errors.Is(err, ErrInvalidProgram) {
		return // refusing a foreign byte order is fine
	}
	if err != nil {
		t.Fatalf("LoadObject: %v", err)
	}
	if n, err := p.Parse([]byte{4, 0, 0, 0}); n != 8 || err != nil {
		t.Errorf("bpfeb top_byte(04 00 00 00) = %d, %v; want 8 (as on a big-endian kernel) or a load error", n, err)
	}
}

// TestAudit17LittleEndianObject: the same source built for bpfel (and with
// BTF, -g) loads and returns 4, as on a little-endian kernel.
func TestAudit17LittleEndianObject(t *testing.T) {
	obj := clangObject(t, "bpfel", topByteSrc)
	p, err := LoadObject(obj, "top_byte")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Parse([]byte{4, 0, 0, 0}); n != 4 || err != nil {
		t.Errorf("bpfel top_byte(04 00 00 00) = %d, %v; want 4", n, err)
	}
	if n, err := p.Parse([]byte{4, 0, 0}); n != 0 || err != nil {
		t.Errorf("bpfel top_byte(04 00 00) = %d, %v; want 0 (need more)", n, err)
	}
}

// TestAudit17ObjectGlobalsRefused: a program reading a constant table
// (.rodata) or a global (.bss) is refused at load with ErrInvalidProgram,
// and a write to __sk_buff.cb (allowed by the kernel for socket filters,
// documented read-only here) fails at run time with ErrFault.
func TestAudit17ObjectGlobalsRefused(t *testing.T) {
	obj := clangObject(t, "bpfel", `
#define SEC(name) __attribute__((section(name), used))
typedef unsigned int __u32;
struct __sk_buff { __u32 len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex, tc_index, cb[5]; };
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");
static const __u32 tbl[4] = {4, 8, 12, 16};
SEC("socket/rodata")
int rodata(struct __sk_buff *skb) { return tbl[load_byte(skb, 0) & 3]; }
__u32 counter;
SEC("socket/global")
int global(struct __sk_buff *skb) { counter++; return load_word(skb, 0) + 4; }
SEC("socket/cb")
int cbw(struct __sk_buff *skb) { skb->cb[0] = load_word(skb, 0); return skb->cb[0] + 4; }
char _license[] SEC("license") = "GPL";
`)
	for _, name := range []string{"rodata", "global"} {
		if _, err := LoadObject(obj, name); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: %v; want ErrInvalidProgram", name, err)
		}
	}
	p, err := LoadObject(obj, "cbw")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Parse([]byte{0, 0, 0, 4}); n != 0 || !errors.Is(err, ErrFault) || !errors.Is(err, ErrProgram) {
		t.Errorf("cb write: %d, %v; want ErrFault", n, err)
	}
}

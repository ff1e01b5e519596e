package bpf

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm/internal/prototest"
	"github.com/gokcm/kcm/parser"
	xbpf "golang.org/x/net/bpf"
)

const object = "testdata/parsers.o"

// forms returns the native, LengthField, classic BPF and eBPF forms of p
// that exist: LengthField and classic BPF only for lengths at a fixed
// offset (not WebSocket or MQTT); eBPF for every protocol.
func forms(t testing.TB, p prototest.Protocol) []prototest.Form {
	t.Helper()
	fs := []prototest.Form{{Name: "native", P: p.Native}}
	if p.HasField {
		lf, err := parser.NewLengthField(p.Field)
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, prototest.Form{Name: "lengthfield", P: lf},
			prototest.Form{Name: "literal", P: p.Field}) // no NewLengthField
	}
	if p.Classic != nil {
		c, err := Classic(p.Classic)
		if err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		fs = append(fs, prototest.Form{Name: "classic", P: c, KernelInt: true})
	}
	e, err := LoadObject(object, p.EBPF)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	return append(fs, prototest.Form{Name: "ebpf", P: e, KernelInt: true})
}

// TestDifferential checks that, for each protocol, the native built-in, the
// LengthField configuration, the classic BPF program and the eBPF object
// delineate the same random streams in random chunks, and agree on probing
// inputs (random, truncated and corrupted headers).
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range prototest.Protocols() {
		t.Run(p.Name, func(t *testing.T) {
			fs := forms(t, p)
			prototest.CheckStreams(t, r, p, fs, 100)
			for _, b := range prototest.Inputs(r, p, 2000) {
				prototest.CheckAgree(t, p, fs[1:], b)
			}
		})
	}
}

func TestSeedPrograms(t *testing.T) {
	h2, err := LoadObject(object, "http2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{[]byte{0, 0, 4}, 0}, // load_word needs 4 bytes
		{[]byte{0, 0, 4, 1}, 13},
		{[]byte{0xff, 0xff, 0xff, 0}, 1<<24 - 1 + 9},
	} {
		if n, err := h2.Parse(tt.in); n != tt.want || err != nil {
			t.Errorf("http2 on %x = %d, %v; want %d", tt.in, n, err, tt.want)
		}
	}
	rds, err := LoadObject(object, "socket/rds") // by section name
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 20)
	b[19] = 7
	if n, err := rds.Parse(b); n != 47 || err != nil {
		t.Errorf("rds = %d, %v; want 47", n, err)
	}
	if n, err := rds.Parse(b[:19]); n != 0 || err != nil {
		t.Errorf("rds on 19 bytes = %d, %v; want 0", n, err)
	}
	// The kernel's int mapping: 0xfffffff0 + 40 wraps to 24 in 32 bits.
	b[16], b[17], b[18], b[19] = 0xff, 0xff, 0xff, 0xf0
	if n, err := rds.Parse(b); n != 24 || err != nil {
		t.Errorf("rds wrapped = %d, %v; want 24 (as the kernel)", n, err)
	}
	// 0x7ffffff0 + 40 is negative as an int: an error.
	b[16] = 0x7f
	if _, err := rds.Parse(b); !errors.Is(err, ErrProgram) {
		t.Errorf("rds negative: %v, want ErrProgram", err)
	}
}

// TestSeedProgramsOnFrames runs the kernel KCM seed programs over real
// frames: HTTP/2 frames as nghttp2 sends them after the connection preface
// (SETTINGS, SETTINGS ACK, WINDOW_UPDATE, HEADERS, DATA with END_STREAM),
// and RDS-framed messages, each stream cut at every byte.
func TestSeedProgramsOnFrames(t *testing.T) {
	h2 := [][]byte{
		unhex("000012 04 00 00000000 0003 00000064 0004 40000000 0002 00000000"),
		unhex("000000 04 01 00000000"),
		unhex("000004 08 00 00000000 3fff0001"),
		unhex("00001e 01 04 00000001 8286 84 41 8aa0e41d139d09b8f01e07 7a88 25b650c3cbbab87f 53 03 2a2f2a"),
		unhex("000005 00 01 00000001 68656c6c6f"),
	}
	rds := [][]byte{
		append(unhex("0000000000000001 0000000000000000 00000003 4000 4001 00 00 00000000 0000 0000000000000000"), 'a', 'b', 'c'),
		unhex("0000000000000002 0000000000000001 00000000 4000 4001 00 00 00000000 0000 0000000000000000"),
	}
	for _, tt := range []struct {
		program string
		msgs    [][]byte
	}{{"http2", h2}, {"rds", rds}} {
		p, err := LoadObject(object, tt.program)
		if err != nil {
			t.Fatal(err)
		}
		var stream []byte
		var want []int
		for _, m := range tt.msgs {
			stream = append(stream, m...)
			want = append(want, len(m))
		}
		for cut := range len(stream) + 1 {
			got, rest, err := prototest.Split(p, stream, []int{cut})
			if err != nil || rest != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s cut at %d: %v (rest %d, err %v), want %v", tt.program, cut, got, rest, err, want)
			}
		}
	}
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestClassicReturnMapping(t *testing.T) {
	for _, tt := range []struct {
		ret  uint32
		want int
		err  bool
	}{
		{0, 0, false}, {1, 1, false}, {0x7fffffff, 0x7fffffff, false},
		{0x80000000, 0, true}, {0xffffffff, 0, true}, {0xffffffb6, 0, true},
	} {
		p, err := Classic([]xbpf.Instruction{xbpf.RetConstant{Val: tt.ret}})
		if err != nil {
			t.Fatal(err)
		}
		n, err := p.Parse([]byte{1})
		if n != tt.want || (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrProgram)) {
			t.Errorf("ret %#x: %d, %v; want %d, error %v", tt.ret, n, err, tt.want, tt.err)
		}
	}
	// A load past the buffered bytes is "need more".
	p, err := Classic([]xbpf.Instruction{xbpf.LoadAbsolute{Off: 100, Size: 4}, xbpf.RetConstant{Val: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Parse(make([]byte, 103)); n != 0 || err != nil {
		t.Errorf("short load: %d, %v; want 0, nil", n, err)
	}
	if n, err := p.Parse(make([]byte, 104)); n != 5 || err != nil {
		t.Errorf("full load: %d, %v; want 5, nil", n, err)
	}
}

// TestClassicPrograms runs classic programs beyond the protocol ones:
// every kind of packet load past the buffered bytes gives "need more",
// NegateA and raw instructions run, the packet-length extension is the
// number of bytes buffered, and the program cannot change after Classic.
func TestClassicPrograms(t *testing.T) {
	ret := xbpf.RetA{}
	tests := []struct {
		name string
		prog []xbpf.Instruction
		in   []byte
		want int
		err  bool
	}{
		{"ld abs past end", []xbpf.Instruction{xbpf.LoadAbsolute{Off: 2, Size: 2}, ret}, []byte{1, 2, 3}, 0, false},
		{"ld abs byte", []xbpf.Instruction{xbpf.LoadAbsolute{Off: 2, Size: 1}, ret}, []byte{1, 2, 3}, 3, false},
		{"ld ind past end", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegX, Val: 1}, xbpf.LoadIndirect{Off: 1, Size: 2}, ret}, []byte{1, 2, 3}, 0, false},
		{"ld ind", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegX, Val: 1}, xbpf.LoadIndirect{Off: 1, Size: 2}, ret}, []byte{1, 2, 3, 4}, 0x0304, false},
		{"msh past end", []xbpf.Instruction{xbpf.LoadMemShift{Off: 5}, xbpf.TXA{}, ret}, []byte{1, 2, 3}, 0, false},
		{"msh", []xbpf.Instruction{xbpf.LoadMemShift{Off: 0}, xbpf.TXA{}, ret}, []byte{0x45}, 20, false},
		{"len", []xbpf.Instruction{xbpf.LoadExtension{Num: xbpf.ExtLen}, ret}, []byte{1, 2, 3}, 3, false},
		{"negate to error", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegA, Val: 5}, xbpf.NegateA{}, ret}, nil, 0, true},
		{"negate twice", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegA, Val: 5}, xbpf.NegateA{}, xbpf.NegateA{}, ret}, nil, 5, false},
		{"raw", []xbpf.Instruction{xbpf.RawInstruction{Op: 0x28, K: 0}, xbpf.RawInstruction{Op: 0x04, K: 2}, xbpf.RawInstruction{Op: 0x16}}, []byte{0, 7}, 9, false},
		{"x division by zero", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegA, Val: 5}, xbpf.ALUOpX{Op: xbpf.ALUOpDiv}, ret}, nil, 0, false},
		{"ret constant error", []xbpf.Instruction{xbpf.RetConstant{Val: 1<<32 - 74}}, nil, 0, true},
		{"scratch", []xbpf.Instruction{xbpf.LoadConstant{Dst: xbpf.RegA, Val: 6}, xbpf.StoreScratch{Src: xbpf.RegA, N: 15}, xbpf.LoadConstant{Dst: xbpf.RegA, Val: 0}, xbpf.LoadScratch{Dst: xbpf.RegA, N: 15}, ret}, nil, 6, false},
	}
	for _, tt := range tests {
		p, err := Classic(tt.prog)
		if err != nil {
			t.Errorf("%s: Classic: %v", tt.name, err)
			continue
		}
		n, err := p.Parse(tt.in)
		if n != tt.want || (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrProgram)) {
			t.Errorf("%s: Parse(%x) = %d, %v; want %d, error %v", tt.name, tt.in, n, err, tt.want, tt.err)
		}
	}

	prog := []xbpf.Instruction{xbpf.LoadAbsolute{Off: 0, Size: 1}, ret}
	p, err := Classic(prog)
	if err != nil {
		t.Fatal(err)
	}
	prog[0] = xbpf.LoadConstant{Dst: xbpf.RegA, Val: 1 << 31}
	if n, err := p.Parse([]byte{9}); n != 9 || err != nil {
		t.Errorf("after the caller changed its slice: %d, %v; want 9", n, err)
	}
}

func TestClassicInvalid(t *testing.T) {
	for name, prog := range map[string][]xbpf.Instruction{
		"empty":         nil,
		"no return":     {xbpf.LoadAbsolute{Off: 0, Size: 4}},
		"jump past end": {xbpf.Jump{Skip: 5}, xbpf.RetA{}},
		"divide by 0":   {xbpf.ALUOpConstant{Op: xbpf.ALUOpDiv, Val: 0}, xbpf.RetA{}},
		"bad size":      {xbpf.LoadAbsolute{Off: 0, Size: 3}, xbpf.RetA{}},
		"ret X":         {xbpf.RawInstruction{Op: 0x0e}},
		"unknown op":    {xbpf.RawInstruction{Op: 0xff}, xbpf.RetA{}},
		"bad alu op":    {xbpf.ALUOpConstant{Op: 0xf0, Val: 1}, xbpf.RetA{}},
		"bad jump test": {xbpf.JumpIf{Cond: 99}, xbpf.RetA{}},
		"scratch 16":    {xbpf.StoreScratch{Src: xbpf.RegA, N: 16}, xbpf.RetA{}},
		"extension":     {xbpf.LoadExtension{Num: xbpf.ExtRand}, xbpf.RetA{}},
		"nil":           {nil, xbpf.RetA{}},
		"jump if past":  {xbpf.JumpIf{Cond: xbpf.JumpEqual, SkipFalse: 1}, xbpf.RetA{}},
		"too long":      make([]xbpf.Instruction, 5000),
	} {
		if _, err := Classic(prog); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: %v, want ErrInvalidProgram", name, err)
		}
	}
}

const invalidObject = "testdata/invalid.o"

func TestLoadObjectErrors(t *testing.T) {
	if _, err := LoadObject(object, "nope"); !errors.Is(err, ErrNoProgram) || !strings.Contains(err.Error(), "http2") {
		t.Errorf("unknown program: %v (want ErrNoProgram listing the programs)", err)
	}
	if _, err := LoadObject("testdata/missing.o", "http2"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := LoadObject("testdata/parsers.c", "http2"); err == nil {
		t.Errorf("not an ELF file: no error")
	}
	for _, tt := range []struct {
		program string
		err     error
		says    string
	}{
		{"with_map", ErrInvalidProgram, "maps"},
		{"socket/map", ErrInvalidProgram, "maps"},
		{"random", ErrInvalidProgram, "helper 7"},
		{"call", ErrInvalidProgram, "bpf-to-bpf"},
		{"xdp_prog", ErrInvalidProgram, "socket filter"},
		{"xdp", ErrInvalidProgram, "socket filter"},
		{"socket/twin", ErrNoProgram, "2 programs"},
		{"field", ErrNoProgram, "no program"}, // a static function, not a program
	} {
		if _, err := LoadObject(invalidObject, tt.program); !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: %v; want %v saying %q", tt.program, err, tt.err, tt.says)
		}
	}
}

// TestLoadObjectNames loads programs by function and by section name: a
// section holding one program names it, one holding two does not.
func TestLoadObjectNames(t *testing.T) {
	in := []byte{0, 0, 0, 1}
	for _, tt := range []struct {
		path, program string
		want          int
	}{
		{object, "rds", 0}, // needs 20 bytes
		{object, "socket/dns", 2},
		{object, "dns", 2},
		{invalidObject, "twin_a", 5},
		{invalidObject, "twin_b", 9},
	} {
		p, err := LoadObject(tt.path, tt.program)
		if err != nil {
			t.Errorf("%s: %v", tt.program, err)
			continue
		}
		if n, err := p.Parse(in); n != tt.want || err != nil {
			t.Errorf("%s on %x: %d, %v; want %d", tt.program, in, n, err, tt.want)
		}
	}
}

// TestLoadObjectLoop runs a program that loops until the first byte is 0xff:
// it ends, and on other bytes it fails with ErrStepLimit instead of hanging.
func TestLoadObjectLoop(t *testing.T) {
	p, err := LoadObject(invalidObject, "loop")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Parse(nil); n != 0 || err != nil {
		t.Errorf("empty: %d, %v; want 0 (load out of range)", n, err)
	}
	if n, err := p.Parse([]byte{0xff}); n != 0 || err != nil {
		t.Errorf("0xff: %d, %v; want 0", n, err)
	}
	start := time.Now()
	n, err := p.Parse([]byte{0})
	if n != 0 || !errors.Is(err, ErrStepLimit) || !errors.Is(err, ErrProgram) {
		t.Errorf("looping: %d, %v; want ErrStepLimit and ErrProgram", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("looping program stopped after %v", d)
	}
}

// TestNoAllocs checks that no form of any protocol allocates on a valid
// message or on a need-more call (the eBPF programs that use the stack,
// such as mongo's, included).
func TestNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, p := range prototest.Protocols() {
		b := p.Gen(r, 40)
		for _, f := range forms(t, p) {
			if n, err := f.P.Parse(b); n != len(b) || err != nil {
				t.Fatalf("%s/%s: Parse = %d, %v; want %d", p.Name, f.Name, n, err, len(b))
			}
			if n := testing.AllocsPerRun(100, func() { f.P.Parse(b); f.P.Parse(b[:1]) }); n != 0 {
				t.Errorf("%s/%s: %v allocations per call", p.Name, f.Name, n)
			}
		}
	}
}

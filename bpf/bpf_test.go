package bpf

import (
	"errors"
	"math/rand/v2"
	"testing"

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
		fs = append(fs, prototest.Form{Name: "lengthfield", P: lf})
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

func TestClassicInvalid(t *testing.T) {
	for name, prog := range map[string][]xbpf.Instruction{
		"empty":         nil,
		"no return":     {xbpf.LoadAbsolute{Off: 0, Size: 4}},
		"jump past end": {xbpf.Jump{Skip: 5}, xbpf.RetA{}},
		"divide by 0":   {xbpf.ALUOpConstant{Op: xbpf.ALUOpDiv, Val: 0}, xbpf.RetA{}},
		"bad size":      {xbpf.LoadAbsolute{Off: 0, Size: 3}, xbpf.RetA{}},
		"negate":        {xbpf.NegateA{}, xbpf.RetA{}},
		"too long":      make([]xbpf.Instruction, 5000),
	} {
		if _, err := Classic(prog); !errors.Is(err, ErrInvalidProgram) {
			t.Errorf("%s: %v, want ErrInvalidProgram", name, err)
		}
	}
}

func TestLoadObjectErrors(t *testing.T) {
	if _, err := LoadObject(object, "nope"); !errors.Is(err, ErrNoProgram) {
		t.Errorf("unknown program: %v", err)
	}
	if _, err := LoadObject("testdata/missing.o", "http2"); err == nil {
		t.Errorf("missing file: no error")
	}
	if _, err := LoadObject("testdata/parsers.c", "http2"); err == nil {
		t.Errorf("not an ELF file: no error")
	}
}

func TestNoAllocs(t *testing.T) {
	b := []byte{0, 0, 4, 1, 0, 0, 0, 0, 0}
	for _, p := range prototest.Protocols()[:1] {
		for _, f := range forms(t, p) {
			if n := testing.AllocsPerRun(100, func() { f.P.Parse(b); f.P.Parse(b[:1]) }); n != 0 {
				t.Errorf("%s: %v allocations per call", f.Name, n)
			}
		}
	}
}

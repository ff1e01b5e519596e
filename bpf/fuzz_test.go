package bpf

import (
	"testing"

	"github.com/gokcm/kcm/internal/prototest"
	xbpf "golang.org/x/net/bpf"
)

func fuzzSeeds(f *testing.F) {
	for i := range prototest.Protocols() {
		f.Add(append([]byte{byte(i)}, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
		f.Add([]byte{byte(i), 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0})
	}
}

// FuzzClassic selects a protocol with the first byte and checks that its
// classic BPF program, run through the kernel-int mapping, agrees with the
// native parser on the rest. With the first byte's top bit set, the rest is
// instead taken as a raw classic program (8 bytes per instruction) and run
// on itself: it must load or be rejected, and run without panicking.
func FuzzClassic(f *testing.F) {
	fuzzSeeds(f)
	protos := prototest.Protocols()
	var withClassic []prototest.Protocol
	var forms []prototest.Form
	for _, p := range protos {
		if p.Classic != nil {
			c, err := Classic(p.Classic)
			if err != nil {
				f.Fatal(err)
			}
			withClassic = append(withClassic, p)
			forms = append(forms, prototest.Form{Name: "classic", P: c, KernelInt: true})
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		if in[0]&0x80 != 0 {
			var raw []xbpf.RawInstruction
			for b := in[1:]; len(b) >= 8; b = b[8:] {
				raw = append(raw, xbpf.RawInstruction{
					Op: uint16(b[0]) | uint16(b[1])<<8, Jt: b[2], Jf: b[3],
					K: uint32(b[4]) | uint32(b[5])<<8 | uint32(b[6])<<16 | uint32(b[7])<<24,
				})
			}
			prog, ok := xbpf.Disassemble(raw)
			if !ok {
				return
			}
			if p, err := Classic(prog); err == nil {
				p.Parse(in)
			}
			return
		}
		i := int(in[0]) % len(withClassic)
		prototest.CheckAgree(t, withClassic[i], forms[i:i+1], in[1:])
	})
}

// FuzzEBPF selects a protocol with the first byte and checks that its eBPF
// program from testdata/parsers.o, run by the interpreter, agrees with the
// native parser on the rest. (internal/ebpfvm's FuzzLoadRun fuzzes the
// loader and interpreter with arbitrary bytecode.)
func FuzzEBPF(f *testing.F) {
	fuzzSeeds(f)
	protos := prototest.Protocols()
	forms := make([]prototest.Form, len(protos))
	for i, p := range protos {
		e, err := LoadObject(object, p.EBPF)
		if err != nil {
			f.Fatal(err)
		}
		forms[i] = prototest.Form{Name: "ebpf", P: e, KernelInt: true}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		i := int(in[0]) % len(protos)
		prototest.CheckAgree(t, protos[i], forms[i:i+1], in[1:])
	})
}

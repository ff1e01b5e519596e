package bpf

import (
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
	xbpf "golang.org/x/net/bpf"
)

// BenchmarkParse measures one parse of a 9-byte HTTP/2 frame header (a
// SETTINGS frame with 18 bytes of payload) through kcm.Parser, the way a
// psock calls it, by each form of the HTTP/2 parser.
func BenchmarkParse(b *testing.B) {
	hdr := []byte{0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}
	lf, err := parser.NewLengthField(parser.LengthField{Size: 3, Adjust: 6})
	if err != nil {
		b.Fatal(err)
	}
	classic, err := Classic([]xbpf.Instruction{
		xbpf.LoadAbsolute{Off: 0, Size: 4},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpShiftRight, Val: 8},
		xbpf.ALUOpConstant{Op: xbpf.ALUOpAdd, Val: 9},
		xbpf.RetA{},
	})
	if err != nil {
		b.Fatal(err)
	}
	ebpf, err := LoadObject(object, "http2")
	if err != nil {
		b.Fatal(err)
	}
	for _, bm := range []struct {
		name string
		p    kcm.Parser
	}{
		{"native", parser.HTTP2()},
		{"lengthfield", lf},
		{"classic", classic},
		{"ebpf", ebpf},
	} {
		b.Run(bm.name, func(b *testing.B) {
			p := bm.p
			b.ReportAllocs()
			for b.Loop() {
				if n, err := p.Parse(hdr); n != 27 || err != nil {
					b.Fatalf("Parse = %d, %v", n, err)
				}
			}
		})
	}
}

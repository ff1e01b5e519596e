package parser_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/prototest"
	"github.com/gokcm/kcm/parser"
)

// BenchmarkLengthField measures one parse of a 9-byte HTTP/2 frame header
// through kcm.Parser by the LengthField form of the HTTP/2 parser, built
// by NewLengthField (a pointer) and as a plain struct value.
func BenchmarkLengthField(b *testing.B) {
	hdr := []byte{0x00, 0x00, 0x12, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00}
	cfg := parser.LengthField{Size: 3, Adjust: 6}
	for _, bm := range []struct {
		name string
		p    kcm.Parser
	}{{"new", mustField(b, cfg)}, {"value", cfg}} {
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

// BenchmarkBuiltins measures one parse of a complete message header by each
// built-in through kcm.Parser.
func BenchmarkBuiltins(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, proto := range prototest.Protocols() {
		msg := proto.Gen(r, 100)
		b.Run(proto.Name, func(b *testing.B) {
			p := proto.Native
			b.ReportAllocs()
			for b.Loop() {
				if n, err := p.Parse(msg); n != len(msg) || err != nil {
					b.Fatalf("Parse = %d, %v; want %d", n, err, len(msg))
				}
			}
		})
	}
}

package parser_test

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
)

func mustField(t testing.TB, cfg parser.LengthField) *parser.LengthField {
	t.Helper()
	f, err := parser.NewLengthField(cfg)
	if err != nil {
		t.Fatalf("NewLengthField(%+v): %v", cfg, err)
	}
	return f
}

func TestLengthField(t *testing.T) {
	tests := []struct {
		name string
		cfg  parser.LengthField
		in   []byte
		want int
		err  error
	}{
		{"empty", parser.LengthField{Size: 2}, nil, 0, nil},
		{"short", parser.LengthField{Size: 2}, []byte{0}, 0, nil},
		{"u8", parser.LengthField{Size: 1}, []byte{5}, 6, nil},
		{"be16", parser.LengthField{Size: 2}, []byte{1, 2}, 0x102 + 2, nil},
		{"le16", parser.LengthField{Size: 2, LittleEndian: true}, []byte{1, 2}, 0x201 + 2, nil},
		{"be24", parser.LengthField{Size: 3}, []byte{1, 2, 3}, 0x10203 + 3, nil},
		{"le24", parser.LengthField{Size: 3, LittleEndian: true}, []byte{1, 2, 3}, 0x30201 + 3, nil},
		{"be32", parser.LengthField{Size: 4}, []byte{0, 1, 2, 3}, 0x10203 + 4, nil},
		{"le32", parser.LengthField{Size: 4, LittleEndian: true}, []byte{3, 2, 1, 0}, 0x10203 + 4, nil},
		{"be64", parser.LengthField{Size: 8}, []byte{0, 0, 0, 0, 0, 1, 0, 0}, 0x10000 + 8, nil},
		{"le64", parser.LengthField{Size: 8, LittleEndian: true}, []byte{0, 0, 1, 0, 0, 0, 0, 0}, 0x10000 + 8, nil},
		{"offset", parser.LengthField{Offset: 2, Size: 2}, []byte{9, 9, 0, 3}, 2 + 2 + 3, nil},
		{"offset short", parser.LengthField{Offset: 2, Size: 2}, []byte{9, 9, 0}, 0, nil},
		{"adjust", parser.LengthField{Size: 3, Adjust: 6}, []byte{0, 0, 4}, 4 + 9, nil},
		{"negative adjust", parser.LengthField{Size: 2, Adjust: -2, IncludesHeader: false}, []byte{0, 5}, 5, nil},
		{"includes header", parser.LengthField{Size: 4, IncludesHeader: true}, []byte{0, 0, 0, 10}, 10, nil},
		{"includes header too small", parser.LengthField{Size: 4, IncludesHeader: true}, []byte{0, 0, 0, 3}, 0, kcm.ErrBadLength},
		{"header exactly", parser.LengthField{Size: 4, IncludesHeader: true}, []byte{0, 0, 0, 4}, 4, nil},
		{"below min", parser.LengthField{Size: 4, IncludesHeader: true, MinLength: 8}, []byte{0, 0, 0, 7}, 0, kcm.ErrBadLength},
		{"max ok", parser.LengthField{Size: 2, MaxLength: 12}, []byte{0, 10}, 12, nil},
		{"max exceeded", parser.LengthField{Size: 2, MaxLength: 12}, []byte{0, 11}, 0, kcm.ErrMessageTooBig},
		{"huge be64", parser.LengthField{Size: 8}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, kcm.ErrMessageTooBig},
		{"huge be64 negative adjust", parser.LengthField{Size: 8, Adjust: -100}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, kcm.ErrMessageTooBig},
		{"max int", parser.LengthField{Size: 8, IncludesHeader: true}, binary.BigEndian.AppendUint64(nil, math.MaxInt), math.MaxInt, nil},
		{"max int + 1", parser.LengthField{Size: 8}, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8}, 0, kcm.ErrMessageTooBig},
		{"negative total", parser.LengthField{Size: 1, Adjust: -10}, []byte{2}, 0, kcm.ErrBadLength},
		{"varint 1", parser.LengthField{Size: parser.Varint}, []byte{5}, 6, nil},
		{"varint 2", parser.LengthField{Size: parser.Varint}, []byte{0x96, 0x01}, 150 + 2, nil},
		{"varint partial", parser.LengthField{Size: parser.Varint}, []byte{0x96}, 0, nil},
		{"varint offset", parser.LengthField{Offset: 1, Size: parser.Varint}, []byte{0x30, 0x80, 0x01}, 128 + 3, nil},
		{"varint includes header", parser.LengthField{Size: parser.Varint, IncludesHeader: true}, []byte{0x80, 0x01}, 128, nil},
		{"varint below header", parser.LengthField{Size: parser.Varint, IncludesHeader: true}, []byte{0x81, 0x00}, 0, kcm.ErrBadLength},
		{"varint 10 bytes", parser.LengthField{Size: parser.Varint, IncludesHeader: true}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 0, kcm.ErrMessageTooBig},
		{"varint overflow", parser.LengthField{Size: parser.Varint}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, 0, kcm.ErrBadLength},
		{"varint too long", parser.LengthField{Size: parser.Varint}, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, kcm.ErrBadLength},
		{"varint max", parser.LengthField{Size: parser.Varint, MaxLength: 100}, []byte{98}, 99, nil},
		{"varint max exceeded", parser.LengthField{Size: parser.Varint, MaxLength: 100}, []byte{100}, 0, kcm.ErrMessageTooBig},
		{"varint max exceeded by header", parser.LengthField{Size: parser.Varint, MaxLength: 101}, []byte{0xe4, 0x00}, 0, kcm.ErrMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Built by NewLengthField, used as a struct value, and
			// through kcm.Parser by value and by pointer: all the same.
			var lit kcm.Parser = tt.cfg
			for i, parse := range []func([]byte) (int, error){
				mustField(t, tt.cfg).Parse, tt.cfg.Parse, lit.Parse, (&tt.cfg).Parse,
			} {
				got, err := parse(tt.in)
				if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
					t.Fatalf("form %d: Parse(%x) = %d, %v; want %d, %v", i, tt.in, got, err, tt.want, tt.err)
				}
			}
		})
	}
}

func TestLengthFieldInvalidConfig(t *testing.T) {
	for _, cfg := range []parser.LengthField{
		{},
		{Size: 5},
		{Size: 16},
		{Size: -2},
		{Size: 2, Offset: -1},
		{Size: 2, Offset: parser.MaxOffset + 1},
		{Size: parser.Varint, Offset: -1},
		{Size: 2, Adjust: parser.MaxAdjust + 1},
		{Size: 2, Adjust: -parser.MaxAdjust - 1},
		{Size: 2, Adjust: math.MaxInt},
		{Size: 2, Adjust: math.MinInt},
		{Size: parser.Varint, Adjust: math.MinInt},
		{Size: 2, MinLength: -1},
		{Size: 2, MaxLength: -1},
		{Size: parser.Varint, MinLength: -1},
		{Size: 2, MaxLength: 1}, // below the 2-byte header
		{Size: 2, MinLength: 10, MaxLength: 9},
		{Size: 2, Adjust: 100, MaxLength: 50}, // every message too big
		{Size: parser.Varint, Adjust: 50, MaxLength: 50},
		{Size: parser.Varint, Offset: 4, MaxLength: 4},
	} {
		if f, err := parser.NewLengthField(cfg); !errors.Is(err, parser.ErrConfig) || f != nil {
			t.Errorf("NewLengthField(%+v) = %v, %v; want ErrConfig", cfg, f, err)
		}
		if err := cfg.Validate(); !errors.Is(err, parser.ErrConfig) {
			t.Errorf("%+v.Validate() = %v; want ErrConfig", cfg, err)
		}
		// Used without NewLengthField, Parse reports the same error on
		// any input, even before the field is complete.
		for _, in := range [][]byte{nil, {0}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
			if n, err := cfg.Parse(in); n != 0 || !errors.Is(err, parser.ErrConfig) {
				t.Errorf("%+v.Parse(%x) = %d, %v; want ErrConfig", cfg, in, n, err)
			}
		}
	}
}

// TestLengthFieldLiteral checks the documented use of a LengthField struct
// literal without NewLengthField, by value and by pointer.
func TestLengthFieldLiteral(t *testing.T) {
	n, err := parser.LengthField{Offset: 2, Size: 4, MaxLength: 1 << 20}.Parse([]byte{0, 1, 0, 0, 0, 3, 'a'})
	if n != 9 || err != nil {
		t.Fatalf("literal Parse = %d, %v; want 9", n, err)
	}
	p := &parser.LengthField{Size: 2, LittleEndian: true, IncludesHeader: true}
	if n, err := p.Parse([]byte{1}); n != 0 || err != nil {
		t.Fatalf("pointer Parse short = %d, %v; want 0", n, err)
	}
	if n, err := p.Parse([]byte{1, 0}); n != 0 || !errors.Is(err, kcm.ErrBadLength) {
		t.Fatalf("pointer Parse below header = %d, %v; want ErrBadLength", n, err)
	}
	var kp kcm.Parser = parser.LengthField{Size: 1, Adjust: -1, MaxLength: 10}
	if n, err := kp.Parse([]byte{10}); n != 10 || err != nil {
		t.Fatalf("kcm.Parser value Parse = %d, %v; want 10", n, err)
	}
	if n, err := kp.Parse([]byte{11}); n != 0 || !errors.Is(err, kcm.ErrMessageTooBig) {
		t.Fatalf("kcm.Parser value Parse above max = %d, %v; want ErrMessageTooBig", n, err)
	}
	if err := (parser.LengthField{Size: 8, Adjust: -parser.MaxAdjust, IncludesHeader: true, MinLength: 9}).Validate(); err != nil {
		t.Fatalf("Validate of a valid configuration: %v", err)
	}
}

func TestLengthFieldNoAllocs(t *testing.T) {
	f := mustField(t, parser.LengthField{Size: 3, Adjust: 6})
	v := mustField(t, parser.LengthField{Size: parser.Varint})
	b := []byte{0, 1, 0, 4, 0, 0, 0, 1}
	var lit kcm.Parser = parser.LengthField{Offset: 1, Size: 4, LittleEndian: true, MaxLength: 1 << 20}
	if n := testing.AllocsPerRun(100, func() {
		f.Parse(b)
		f.Parse(b[:1])
		v.Parse([]byte{0x80, 0x01})
		lit.Parse(b)
		lit.Parse(b[:1])
	}); n != 0 {
		t.Fatalf("Parse allocates %v times per call", n)
	}
}

package parser_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/prototest"
	"github.com/gokcm/kcm/parser"
)

// FuzzLengthField builds a LengthField from fuzzed settings and checks Parse
// against a big-integer reference on fuzzed input: no panic, need-more only
// while the field is incomplete, and the exact length or error class.
func FuzzLengthField(f *testing.F) {
	f.Add(uint8(0), uint8(3), false, int64(6), false, uint32(0), uint32(0), []byte{0, 0, 4, 1, 0, 0, 0, 0, 0})
	f.Add(uint8(1), uint8(4), false, int64(1), true, uint32(0), uint32(0), []byte{'Q', 0, 0, 0, 9})
	f.Add(uint8(0), uint8(4), true, int64(0), true, uint32(16), uint32(1000), []byte{20, 0, 0, 0})
	f.Add(uint8(2), uint8(8), false, int64(-5), false, uint32(0), uint32(0), []byte{1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(1), uint8(0), false, int64(0), false, uint32(0), uint32(300), []byte{0x30, 0x96, 0x01})
	f.Add(uint8(0x80), uint8(0x86), false, int64(math.MinInt64), false, uint32(0), uint32(0), []byte{1, 2})
	f.Fuzz(func(t *testing.T, off, sizeSel uint8, le bool, adjust int64, incl bool, minLen, maxLen uint32, b []byte) {
		// The top bits of off and sizeSel select out-of-range offsets
		// and sizes, to check that Parse on an unvalidated struct
		// reports exactly the configurations Validate rejects.
		sizes := []int{parser.Varint, 1, 2, 3, 4, 8, 0, 5, 9, -2}
		offset := int(off % 16)
		if off&0x80 != 0 {
			offset = []int{-1, parser.MaxOffset, parser.MaxOffset + 1, math.MaxInt, math.MinInt}[int(off)%5]
		}
		size := sizes[int(sizeSel&0x7f)%6]
		if sizeSel&0x80 != 0 {
			size = sizes[int(sizeSel&0x7f)%len(sizes)]
		}
		cfg := parser.LengthField{
			Offset: offset, Size: size, LittleEndian: le,
			Adjust: int(adjust), IncludesHeader: incl, MinLength: int(int32(minLen)), MaxLength: int(int32(maxLen)),
		}
		verr := cfg.Validate()
		lf, err := parser.NewLengthField(cfg)
		if (verr == nil) != (err == nil) {
			t.Fatalf("%+v: Validate %v but NewLengthField %v", cfg, verr, err)
		}
		n, perr := cfg.Parse(b)
		if verr != nil {
			if !errors.Is(verr, parser.ErrConfig) || !errors.Is(err, parser.ErrConfig) {
				t.Fatalf("%+v: errors %v, %v do not wrap ErrConfig", cfg, verr, err)
			}
			if n != 0 || !errors.Is(perr, parser.ErrConfig) {
				t.Fatalf("%+v invalid (%v) but Parse(%x) = %d, %v", cfg, verr, b, n, perr)
			}
			return
		}
		wantN, wantErr := referenceLengthField(cfg, b)
		for _, got := range []prototest.Result{{N: n, Err: perr}, prototest.Call(lf, b)} {
			if got.N != wantN || !errors.Is(got.Err, wantErr) || (got.Err == nil) != (wantErr == nil) {
				t.Fatalf("%+v on %x: got %v; want %d, %v", cfg, b, got, wantN, wantErr)
			}
		}
	})
}

// referenceLengthField computes the LengthField answer with big integers.
func referenceLengthField(cfg parser.LengthField, b []byte) (int, error) {
	v := new(big.Int)
	var hdr int
	if cfg.Size == parser.Varint {
		var u uint64
		n := 0
		for i, c := range b[min(cfg.Offset, len(b)):] {
			if i == 10 {
				return 0, kcm.ErrBadLength
			}
			if i == 9 && c > 1 {
				return 0, kcm.ErrBadLength
			}
			u |= uint64(c&0x7f) << (7 * i)
			if c < 0x80 {
				n = i + 1
				break
			}
		}
		if n == 0 {
			return 0, nil
		}
		v.SetUint64(u)
		hdr = cfg.Offset + n
	} else {
		hdr = cfg.Offset + cfg.Size
		if len(b) < hdr {
			return 0, nil
		}
		var buf [8]byte
		f := b[cfg.Offset:hdr]
		if cfg.LittleEndian {
			copy(buf[:], f)
			v.SetUint64(binary.LittleEndian.Uint64(buf[:]))
		} else {
			copy(buf[8-cfg.Size:], f)
			v.SetUint64(binary.BigEndian.Uint64(buf[:]))
		}
	}
	total := new(big.Int).Add(v, big.NewInt(int64(cfg.Adjust)))
	if !cfg.IncludesHeader {
		total.Add(total, big.NewInt(int64(hdr)))
	}
	maxLen := big.NewInt(math.MaxInt)
	if cfg.MaxLength > 0 {
		maxLen = big.NewInt(int64(cfg.MaxLength))
	}
	if total.Cmp(maxLen) > 0 {
		return 0, kcm.ErrMessageTooBig
	}
	if total.Cmp(big.NewInt(int64(max(hdr, cfg.MinLength)))) < 0 {
		return 0, kcm.ErrBadLength
	}
	return int(total.Int64()), nil
}

// FuzzBuiltin selects a built-in with the first input byte and checks it on
// the rest: no panic, no length below the bytes needed to compute it, and
// the same answer as its LengthField form where it has one.
func FuzzBuiltin(f *testing.F) {
	protos := prototest.Protocols()
	for i := range protos {
		f.Add(append([]byte{byte(i)}, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
		f.Add([]byte{byte(i), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	fields := make([]*parser.LengthField, len(protos))
	for i, p := range protos {
		if p.HasField {
			fields[i] = mustField(f, p.Field)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		i := int(in[0]) % len(protos)
		p, b := protos[i], in[1:]
		n, err := p.Native.Parse(b)
		if err == nil && n < 0 {
			t.Fatalf("%s: negative length %d", p.Name, n)
		}
		if err != nil && !errors.Is(err, kcm.ErrBadLength) && !errors.Is(err, kcm.ErrMessageTooBig) {
			t.Fatalf("%s: error %v wraps neither ErrBadLength nor ErrMessageTooBig", p.Name, err)
		}
		// A length must lie beyond the bytes the parser needed: asking it
		// again with fewer bytes than it returned must not give a
		// different length.
		if n > 0 && n <= len(b) {
			if m, err := p.Native.Parse(b[:n]); m != n || err != nil {
				t.Fatalf("%s: %d on %x but %d, %v on its own %d bytes", p.Name, n, b, m, err, n)
			}
		}
		if fields[i] != nil {
			prototest.CheckAgree(t, p, []prototest.Form{{Name: "lengthfield", P: fields[i]}}, b)
		}
	})
}

// FuzzStreamBuiltins checks the built-ins that parse one direction of a
// protocol in phases (HTTP2Server, PostgresFrontend) against their parts:
// no panic, the answer of the part the first bytes select, and no prefix
// that contradicts a later answer.
func FuzzStreamBuiltins(f *testing.F) {
	f.Add(false, []byte(parser.HTTP2Preface+"\x00\x00\x00\x04\x01\x00\x00\x00\x00"))
	f.Add(false, []byte("PRI * HTTP/1.1\r\n"))
	f.Add(true, []byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f})
	f.Add(true, []byte{'p', 0, 0, 0, 5, 0})
	f.Fuzz(func(t *testing.T, pg bool, b []byte) {
		p, ref := parser.HTTP2Server(), func(b []byte) prototest.Result {
			if k := min(len(b), len(parser.HTTP2Preface)); string(b[:k]) == parser.HTTP2Preface[:k] {
				if k == len(parser.HTTP2Preface) {
					return prototest.Result{N: k}
				}
				return prototest.Result{}
			}
			return prototest.Call(parser.HTTP2(), b)
		}
		if pg {
			p, ref = parser.PostgresFrontend(), func(b []byte) prototest.Result {
				if len(b) > 0 && b[0] == 0 {
					return prototest.Call(parser.PostgresStartup(), b)
				}
				return prototest.Call(parser.Postgres(), b)
			}
		}
		got, want := prototest.Call(p, b), ref(b)
		if got.N != want.N || (got.Err == nil) != (want.Err == nil) {
			t.Fatalf("%x: got %v, want %v", b, got, want)
		}
		if got.Err != nil || got.N == 0 {
			return
		}
		for k := range min(len(b), got.N) {
			if r := prototest.Call(p, b[:k]); r.Err != nil || (r.N != 0 && r.N != got.N) {
				t.Fatalf("%x: prefix %d gives %v, the whole %d", b, k, r, got.N)
			}
		}
	})
}

package ebpfvm

import (
	"encoding/binary"
	"errors"
	"testing"
)

// ins encodes one instruction slot.
func ins(op uint8, dst, src uint8, off int16, imm int32) []byte {
	b := []byte{op, dst | src<<4, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint16(b[2:], uint16(off))
	binary.LittleEndian.PutUint32(b[4:], uint32(imm))
	return b
}

func prog(slots ...[]byte) []byte {
	var b []byte
	for _, s := range slots {
		b = append(b, s...)
	}
	return b
}

var (
	exit = ins(0x95, 0, 0, 0, 0)
)

func movImm(d uint8, v int32) []byte { return ins(0xb7, d, 0, 0, v) }

func run(t *testing.T, raw []byte, pkt []byte) (uint64, error) {
	t.Helper()
	p, err := Load(raw)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	p.MaxSteps = 10000
	return p.Run(pkt)
}

func TestRun(t *testing.T) {
	pkt := []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06}
	tests := []struct {
		name string
		raw  []byte
		want uint64
	}{
		{"mov exit", prog(movImm(0, 7), exit), 7},
		{"ld_abs w", prog(ins(0x20, 0, 0, 0, 1), exit), 0x02030405},
		{"ld_abs h", prog(ins(0x28, 0, 0, 0, 4), exit), 0x0506},
		{"ld_abs b", prog(ins(0x30, 0, 0, 0, 5), exit), 0x06},
		{"ld_abs out of range", prog(ins(0x20, 0, 0, 0, 3), movImm(0, 9), exit), 0},
		{"ld_abs negative", prog(ins(0x30, 0, 0, 0, -1), movImm(0, 9), exit), 0},
		{"ld_ind", prog(movImm(2, 2), ins(0x48, 0, 2, 0, 1), exit), 0x0405},
		{"ctx len", prog(ins(0x61, 0, 1, 0, 0), exit), 6},
		{"ctx other field", prog(ins(0x61, 0, 1, 8, 0), exit), 0},
		{"ctx napi_id, after data_end", prog(ins(0x61, 0, 1, 84, 0), exit), 0},
		{"stack round trip", prog(movImm(3, -2), ins(0x7b, 10, 3, -8, 0), ins(0x79, 0, 10, -8, 0), exit), 0xfffffffffffffffe},
		{"st imm", prog(ins(0x62, 10, 0, -4, 0x1234), ins(0x61, 0, 10, -4, 0), exit), 0x1234},
		{"skb_load_bytes", prog(
			ins(0xbf, 3, 10, 0, 0), ins(0x07, 3, 0, 0, -4), // r3 = fp - 4
			movImm(2, 1), movImm(4, 4), ins(0x85, 0, 0, 0, 26),
			ins(0x61, 0, 10, -4, 0), exit), 0x05040302},
		{"skb_load_bytes short", prog(
			ins(0x62, 10, 0, -4, 99), ins(0xbf, 3, 10, 0, 0), ins(0x07, 3, 0, 0, -4),
			movImm(2, 4), movImm(4, 4), ins(0x85, 0, 0, 0, 26),
			ins(0x61, 6, 10, -4, 0), ins(0x0f, 0, 6, 0, 0), exit), 1<<64 - 14}, // -EFAULT + zeroed buffer
		{"div by zero", prog(movImm(0, 5), ins(0x37, 0, 0, 0, 0), exit), 0},
		{"mod by zero", prog(movImm(0, 5), movImm(1, 0), ins(0x9f, 0, 1, 0, 0), exit), 5},
		{"alu32 wraps", prog(movImm(0, -1), ins(0x04, 0, 0, 0, 1), exit), 0},
		{"alu64 sign extends", prog(movImm(0, -1), exit), 1<<64 - 1},
		{"arsh32", prog(ins(0xb4, 0, 0, 0, -8), ins(0xc4, 0, 0, 0, 1), exit), 0xfffffffc},
		{"be16", prog(ins(0x18, 0, 0, 0, 0x11223344), ins(0, 0, 0, 0, 0x55667788), ins(0xdc, 0, 0, 0, 16), exit), 0x4433},
		{"lddw", prog(ins(0x18, 0, 0, 0, 0x11223344), ins(0, 0, 0, 0, 0x55667788), exit), 0x5566778811223344},
		{"jump taken", prog(movImm(0, 1), ins(0x15, 0, 0, 1, 1), movImm(0, 2), exit), 1},
		{"jmp32 signed", prog(movImm(1, -1), movImm(0, 3), ins(0xc6, 1, 0, 1, 0), movImm(0, 4), exit), 3},
		{"loop", prog(movImm(0, 0), ins(0x07, 0, 0, 0, 1), ins(0xa5, 0, 0, -2, 10), exit), 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := run(t, tt.raw, pkt)
			if err != nil || got != tt.want {
				t.Fatalf("Run = %#x, %v; want %#x", got, err, tt.want)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		err  error
	}{
		{"infinite loop", prog(ins(0x05, 0, 0, -1, 0)), ErrStepLimit},
		{"stack overflow", prog(ins(0x79, 0, 10, 0, 0), exit), ErrFault},
		{"stack underflow", prog(ins(0x79, 0, 10, -520, 0), exit), ErrFault},
		{"wild load", prog(movImm(1, 12345), ins(0x61, 0, 1, 0, 0), exit), ErrFault},
		{"ctx write", prog(ins(0x62, 1, 0, 0, 1), exit), ErrFault},
		{"ctx past end", prog(ins(0x79, 0, 1, CtxSize-4, 0), exit), ErrFault},
		{"ctx data", prog(ins(0x61, 0, 1, 76, 0), exit), ErrFault},
		{"ctx data_end", prog(ins(0x61, 0, 1, 80, 0), exit), ErrFault},
		{"ctx data_meta", prog(ins(0x61, 0, 1, 140, 0), exit), ErrFault},
		{"ctx data, 8 bytes from tc_classid", prog(ins(0x79, 0, 1, 72, 0), exit), ErrFault},
		{"helper dst outside stack", prog(movImm(3, 0), movImm(4, 4), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
		{"helper too long", prog(ins(0xbf, 3, 10, 0, 0), ins(0x07, 3, 0, 0, -4), movImm(4, 8), ins(0x85, 0, 0, 0, 26), exit), ErrFault},
		{"computed stack address without stack", prog(ins(0x18, 2, 0, 0, 0), ins(0, 0, 0, 0, stackBase>>32), ins(0x79, 0, 2, 0, 0), exit), ErrFault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := run(t, tt.raw, []byte{1, 2, 3}); !errors.Is(err, tt.err) {
				t.Fatalf("Run error %v, want %v", err, tt.err)
			}
		})
	}
}

func TestLoadInvalid(t *testing.T) {
	for name, raw := range map[string][]byte{
		"empty":              nil,
		"partial":            exit[:7],
		"unknown opcode":     prog(ins(0xff, 0, 0, 0, 0), exit),
		"register 11":        prog(ins(0xb7, 11, 0, 0, 0), exit),
		"write r10":          prog(movImm(10, 0), exit),
		"jump out":           prog(ins(0x05, 0, 0, 5, 0), exit),
		"jump backwards out": prog(ins(0x05, 0, 0, -3, 0), exit),
		"jump into lddw":     prog(ins(0x05, 0, 0, 1, 0), ins(0x18, 0, 0, 0, 0), ins(0, 0, 0, 0, 0), exit),
		"falls off end":      prog(movImm(0, 1)),
		"cond jump last":     prog(ins(0x15, 0, 0, -1, 0)),
		"helper 1":           prog(ins(0x85, 0, 0, 0, 1), exit),
		"bpf2bpf call":       prog(ins(0x85, 0, 1, 0, 1), exit, exit),
		"map load":           prog(ins(0x18, 1, 1, 0, 3), ins(0, 0, 0, 0, 0), exit),
		"lddw truncated":     prog(exit, ins(0x18, 0, 0, 0, 0)),
		"ld_abs dw":          prog(ins(0x38, 0, 0, 0, 0), exit),
		"atomic":             prog(ins(0xdb, 10, 0, -8, 0), exit),
		"sdiv":               prog(ins(0x3f, 0, 1, 1, 0), exit),
	} {
		if _, err := Load(raw); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Load error %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzLoadRun loads arbitrary bytecode and runs whatever loads on an
// arbitrary packet: Load and Run must never panic, and Run must end within
// its step limit.
func FuzzLoadRun(f *testing.F) {
	f.Add(prog(ins(0x20, 0, 0, 0, 0), ins(0x77, 0, 0, 0, 8), ins(0x07, 0, 0, 0, 9), exit), []byte{0, 0, 4, 1})
	f.Add(prog(ins(0x05, 0, 0, -1, 0)), []byte{})
	f.Add(prog(ins(0xbf, 3, 10, 0, 0), ins(0x07, 3, 0, 0, -4), movImm(2, 0), movImm(4, 4), ins(0x85, 0, 0, 0, 26), ins(0x61, 0, 10, -4, 0), exit), []byte{1, 2, 3, 4})
	f.Add(prog(ins(0x61, 0, 1, 0, 0), ins(0x7b, 10, 0, -8, 0), ins(0x79, 0, 10, -8, 0), exit), []byte{1})
	f.Fuzz(func(t *testing.T, raw, pkt []byte) {
		p, err := Load(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load error %v does not wrap ErrInvalid", err)
			}
			return
		}
		p.MaxSteps = 10000
		if _, err := p.Run(pkt); err != nil && !errors.Is(err, ErrFault) && !errors.Is(err, ErrStepLimit) {
			t.Fatalf("Run error %v wraps neither ErrFault nor ErrStepLimit", err)
		}
	})
}

package kcm

import (
	"net"
	"strconv"
	"testing"
	"unsafe"
)

// TestHotFieldLayout keeps the data path's fields where the layout
// comments put them, measured on real allocations (the runtime may put a
// header before an object, so offsets alone do not say where lines start):
// a psock's receive-path fields in three cache lines from a line boundary,
// its transmit state's hot fields in one line of their own, and the mux's
// and the socket's hot fields in their first lines. kcmperf's rr
// -instances 200 loses several percent when they spread.
func TestHotFieldLayout(t *testing.T) {
	if strconv.IntSize != 64 {
		t.Skip("the hot field groups are laid out for 64-bit platforms")
	}
	const line = 64
	c1, c2 := net.Pipe()
	defer c2.Close()
	m := NewMux(Config{})
	defer m.Close()
	p, err := m.Attach(c1, ParserFunc(func(b []byte) (int, error) { return 0, nil }))
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(Datagram)
	addr := func(f unsafe.Pointer) uintptr { return uintptr(f) }

	rx := addr(unsafe.Pointer(&p.conn))
	if rx%line != 0 {
		t.Errorf("Psock receive fields start at %#x, %d bytes past a cache line", rx, rx%line)
	}
	if end := addr(unsafe.Pointer(&p.sp.credit)) + unsafe.Sizeof(p.sp.credit); end > rx+3*line {
		t.Errorf("Psock receive fields end %d bytes past their start, past three cache lines", end-rx)
	}
	tx := addr(unsafe.Pointer(&p.tx))
	if tx%line != 0 {
		t.Errorf("Psock.tx at %#x, %d bytes past a cache line", tx, tx%line)
	}
	if end := addr(unsafe.Pointer(&p.tx.q)) + unsafe.Sizeof(p.tx.q); end > tx+line {
		t.Errorf("txState hot fields end %d bytes past its start, past one cache line", end-tx)
	}
	if mp := addr(unsafe.Pointer(m)); mp%line != 0 {
		t.Errorf("Mux at %#x, %d bytes past a cache line", mp, mp%line)
	} else if end := addr(unsafe.Pointer(&m.ready.size)) + unsafe.Sizeof(m.ready.size); end > mp+line {
		t.Errorf("Mux hot fields end at %d, past one cache line", end-mp)
	}
	if sp := addr(unsafe.Pointer(s)); sp%line != 0 {
		t.Errorf("Socket at %#x, %d bytes past a cache line", sp, sp%line)
	} else if end := addr(unsafe.Pointer(&s.wdl)) + unsafe.Sizeof(s.wdl); end > sp+line {
		t.Errorf("Socket hot fields end at %d, past one cache line", end-sp)
	}
}

// TestSizeClassesKeepLines: the mux, socket and psock sizes fall in size
// classes whose slots start on cache lines, so that every allocation is
// aligned as TestHotFieldLayout checks on one (a size class of 480 bytes,
// for instance, would put every other mux half a line off). The psock's
// runtime header (8 bytes before objects over 512 bytes with pointers) is
// counted.
func TestSizeClassesKeepLines(t *testing.T) {
	if strconv.IntSize != 64 {
		t.Skip("the hot field groups are laid out for 64-bit platforms")
	}
	for _, c := range []struct {
		name   string
		size   uintptr
		header uintptr
	}{
		{"Mux", unsafe.Sizeof(Mux{}), 0},
		{"Socket", unsafe.Sizeof(Socket{}), 0},
		{"Psock", unsafe.Sizeof(Psock{}), 8},
	} {
		// Go's size classes up to 1 KiB (runtime/sizeclasses.go).
		classes := []uintptr{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
			288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024}
		for _, class := range classes {
			if c.size+c.header <= class {
				if class%64 != 0 {
					t.Errorf("%s: %d bytes (+%d header) fall in the %d-byte size class, which is not a multiple of a cache line", c.name, c.size, c.header, class)
				}
				break
			}
		}
	}
}

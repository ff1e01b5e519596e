package kcm

import (
	"net"
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

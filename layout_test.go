package kcm

import (
	"testing"
	"unsafe"
)

// TestHotFieldLayout keeps the data path's fields where the layout
// comments put them: a psock's receive-path fields in its first three
// cache lines and its transmit state starting a line of its own (psocks
// are allocated on a cache-line boundary), the transmit state's hot
// fields in its first line, and the mux's and the socket's in their first
// lines. kcmperf's rr -instances 200 loses several
// percent when they spread.
func TestHotFieldLayout(t *testing.T) {
	const line = 64
	var p Psock
	if off := unsafe.Offsetof(p.tx); off%line != 0 {
		t.Errorf("Psock.tx at offset %d, not on a cache line", off)
	}
	if end := unsafe.Offsetof(p.sp) + unsafe.Offsetof(p.sp.credit) + unsafe.Sizeof(p.sp.credit); end > 3*line {
		t.Errorf("Psock receive fields end at %d, past three cache lines", end)
	}
	if end := unsafe.Offsetof(p.tx.q) + unsafe.Sizeof(p.tx.q); end > line {
		t.Errorf("txState hot fields end at %d, past one cache line", end)
	}
	var m Mux
	if end := unsafe.Offsetof(m.ready) + unsafe.Offsetof(m.ready.size) + unsafe.Sizeof(m.ready.size); end > line {
		t.Errorf("Mux hot fields end at %d, past one cache line", end)
	}
	var s Socket
	if end := unsafe.Offsetof(s.wdl) + unsafe.Sizeof(s.wdl); end > line {
		t.Errorf("Socket hot fields end at %d, past one cache line", end)
	}
	if size := unsafe.Sizeof(p); size%line != 0 && size > 768 {
		t.Errorf("Psock is %d bytes: its size class may not keep it line-aligned", size)
	}
}

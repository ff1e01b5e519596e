package kcm_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gokcm/kcm"
)

// procLine returns the line of object obj ("kcm-0", "psock-1") in the
// mux's /proc/net/kcm dump d, or "".
func procLine(d, obj string) string {
	for _, line := range strings.Split(d, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == obj {
			return line
		}
	}
	return ""
}

// Spec 5: a socket whose messages wait for a psock shows TxWait (the
// kernel's tx_wait), with their count and bytes as Send-Q and Smem, and
// stops showing it once a psock takes them.
func TestProcTxWaitWhileNoPsockTakesMessages(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s, idle := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	for i := range 2 { // held in the mux: no psock
		if err := s.Send(msgOf(uint32(i+1), 10)); err != nil {
			t.Fatal(err)
		}
	}
	d := proc(m)
	if !strings.Contains(procLine(d, fmt.Sprintf("kcm-%d", s.Index())), "TxWait") ||
		strings.Contains(procLine(d, fmt.Sprintf("kcm-%d", idle.Index())), "TxWait") {
		t.Fatalf("only kcm-%d waits for a psock; dump:\n%s", s.Index(), d)
	}
	// Send-Q and Smem (columns 8 and 9) are the socket's unsent messages.
	for sock, want := range map[*kcm.Socket][2]string{s: {"2", "28"}, idle: {"0", "0"}} {
		f := strings.Fields(procLine(d, fmt.Sprintf("kcm-%d", sock.Index())))
		if len(f) < 9 || f[7] != want[0] || f[8] != want[1] {
			t.Fatalf("kcm-%d Send-Q, Smem = %v; want %v; dump:\n%s", sock.Index(), f[7:9], want, d)
		}
	}
	_, peer := attachPeer(t, m) // the attach hands it the held message
	if d := proc(m); strings.Contains(d, "TxWait") {
		t.Fatalf("TxWait after a psock took the message; dump:\n%s", d)
	}
	for want := uint32(1); want <= 2; want++ {
		if id := checkMsg(t, readMsg(t, peer)); id != want {
			t.Fatalf("peer read message %d, want %d", id, want)
		}
	}
}

// Spec 5: a psock being unattached while its transmit side stops shows
// Done (the kernel's done), with TxStop and RxStop.
func TestProcDoneWhileUnattaching(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	sc := newStepConn(c, 1)
	p, err := m.Attach(sc, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	sent := make(chan error, 1)
	go func() { sent <- s.Send(msgOf(1, 100)) }()
	<-sc.entered // the write is held
	if d := proc(m); strings.Contains(procLine(d, "psock-0"), "Done") {
		t.Fatalf("Done while attached; dump:\n%s", d)
	}
	un := make(chan error, 1)
	go func() { _, err := p.Unattach(); un <- err }()
	<-sc.kicked // Unattach stopped the transmit side and waits for the write
	d := proc(m)
	line := procLine(d, "psock-0")
	for _, flag := range []string{"Done", "TxStop", "RxStop"} {
		if !strings.Contains(line, flag) {
			t.Errorf("psock-0 lacks %s while unattaching; dump:\n%s", flag, d)
		}
	}
	sc.release <- struct{}{}
	if err := waitErr(t, un, "Unattach"); !errors.Is(err, kcm.ErrMidMessage) {
		t.Fatalf("unattach: %v, want ErrMidMessage (its write was cut)", err)
	}
	s.Close()
	waitErr(t, sent, "Send")
}

// A socket made on a closed mux is closed, and not one of the mux's
// sockets: Sockets and the dump leave it out, its calls fail with
// ErrClosed.
func TestNewSocketOnClosedMux(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	m.Close()
	s := m.NewSocket(kcm.Datagram)
	if got := m.Sockets(); len(got) != 0 {
		t.Fatalf("Sockets() = %v on a closed mux; want none", got)
	}
	if d := proc(m); !strings.Contains(d, "KCMs: 0,") {
		t.Fatalf("dump counts the socket of a closed mux:\n%s", d)
	}
	if err := s.Send(msgOf(1, 10)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Send: %v, want ErrClosed", err)
	}
	if _, err := s.Recv(make([]byte, 10)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("Recv: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

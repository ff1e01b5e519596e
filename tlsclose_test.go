package kcm

import (
	"errors"
	"os"
	"testing"
	"time"
)

// closeBound is how long a Mux.Close may take below when the peer of a TLS
// psock stopped reading: tls.Conn.Close alone would wait 5 s for its
// close_notify to find room in the send buffer.
const closeBound = 2 * time.Second

// fillTLS writes to c until its send buffer is full and a write times out,
// then clears the deadline: afterwards nothing is being written, yet any
// further write, close_notify included, blocks.
func fillTLS(t *testing.T, c interface {
	Write([]byte) (int, error)
	SetWriteDeadline(time.Time) error
}) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	chunk := make([]byte, 16<<10)
	for {
		if _, err := c.Write(chunk); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
	}
	c.SetWriteDeadline(time.Time{})
}

// Mux.Close on a TLS psock whose send buffer is full, with nothing being
// written, returns without waiting for the close_notify that cannot go out.
func TestCloseDoesNotWaitForTLSGoodbye(t *testing.T) {
	cli, srv := r11TLSPair(t)
	defer srv.Close()
	fillTLS(t, cli)
	m := NewMux(Config{})
	p, err := m.Attach(cli, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m.Close()
	if d := time.Since(start); d > closeBound {
		t.Fatalf("Mux.Close took %v", d)
	}
	if !errors.Is(p.Err(), ErrClosed) {
		t.Fatalf("psock error %v, want ErrClosed", p.Err())
	}
}

// A TLS psock that fails (here a write timeout on a peer that stopped
// reading) is closed at once, without a close_notify: the mux's Close
// right after does not wait for one.
func TestFailedTLSPsockClosesAtOnce(t *testing.T) {
	m := NewMux(Config{WriteTimeout: 100 * time.Millisecond})
	defer m.Close()
	cli, srv := r11TLSPair(t)
	defer srv.Close()
	p, err := m.Attach(cli, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(Datagram)
	s.SendBatch(r11Batch300(0)) // what the failed psock did not write waits for another
	<-p.Done()
	if !errors.Is(p.Err(), os.ErrDeadlineExceeded) {
		t.Fatalf("psock error %v, want a write timeout", p.Err())
	}
	start := time.Now()
	m.Close()
	if d := time.Since(start); d > closeBound {
		t.Fatalf("Mux.Close took %v", d)
	}
}

package kcm

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// TestRequestResponseHoldsNoBuffer: once replies come one whole message per
// read, the fast path reads them straight into the receiver's buffer, and
// the psock gives its own read buffer back instead of holding 64 KiB it no
// longer reads into.
func TestRequestResponseHoldsNoBuffer(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(Datagram)
	echo := make(chan error, 1)
	go func() {
		hdr := make([]byte, 4)
		for {
			if _, err := io.ReadFull(peer, hdr); err != nil {
				echo <- err
				return
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr))
			if _, err := io.ReadFull(peer, body); err != nil {
				echo <- err
				return
			}
			if _, err := peer.Write(append(hdr, body...)); err != nil {
				echo <- err
				return
			}
		}
	}()
	buf := make([]byte, 64)
	observed := false
	for i := 0; i < 200 && !observed; i++ {
		req := binary.BigEndian.AppendUint32(nil, 3)
		req = append(req, byte(i), byte(i>>8), 'q')
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
		n, err := s.Recv(buf)
		if err != nil || !bytes.Equal(buf[:n], req) {
			t.Fatalf("exchange %d: %q, %v", i, buf[:n], err)
		}
		if i < 2 {
			continue // the first reply is read the buffered way
		}
		// The psock is idle between exchanges, unless its grace timer
		// already gave it to a background reader: then look next time.
		m.mu.Lock()
		if p.rx == rxIdle {
			observed = true
			if !p.sp.direct || p.sp.buf != nil {
				t.Errorf("after %d exchanges: direct=%v, buffer held=%v; want direct reads and no buffer", i+1, p.sp.direct, p.sp.buf != nil)
			}
		}
		m.mu.Unlock()
	}
	if !observed {
		t.Fatal("the psock was never idle between exchanges")
	}
	peer.Close()
	<-echo
}

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
	var direct, held bool
	for i := 0; i < 200; i++ {
		req := binary.BigEndian.AppendUint32(nil, 3)
		req = append(req, byte(i), byte(i>>8), 'q')
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
		n, err := s.Recv(buf)
		if err != nil || !bytes.Equal(buf[:n], req) {
			t.Fatalf("exchange %d: %q, %v", i, buf[:n], err)
		}
		// The psock is idle between exchanges, unless its grace timer
		// gave it to a background reader (a loaded machine): then it is
		// not ours to look at, and neither path is the fast one.
		m.mu.Lock()
		if p.rx == rxIdle {
			direct, held = p.sp.direct > 0, p.sp.buf != nil
		}
		m.mu.Unlock()
		if direct && !held {
			break
		}
	}
	if !direct || held {
		t.Fatalf("after 200 exchanges: direct=%v, buffer held=%v; want direct reads and no buffer", direct, held)
	}
	peer.Close()
	<-echo
}

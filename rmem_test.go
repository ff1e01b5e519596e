package kcm_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A flood of tiny messages that nobody receives is bounded by the number of
// queued messages as well as by their bytes: each takes a queue entry many
// times its size, so RecvBuffer's bytes alone would let a peer pin
// megabytes of bookkeeping with a few hundred KiB of stream. The psock
// pauses with at most RecvBuffer/48 messages queued (here 1365, where
// 64 KiB of 4-byte messages would be 16384), and nothing is lost: every
// message arrives, in order, once a socket receives.
func TestTinyMessagesBoundedByCount(t *testing.T) {
	const recvBuffer = 64 << 10
	m := newMux(t, kcm.Config{RecvBuffer: recvBuffer})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	const n = 30000
	var stream []byte
	for i := range n {
		stream = append(stream, frame([]byte{byte(i), byte(i >> 8)})...) // 6-byte messages
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := peer.Write(stream)
		wrote <- err
	}()
	waitProc(t, m, func(d string) bool { return strings.Contains(procLine(d, "psock-0"), "RxPause") })
	recv, _ := m.Queued()
	queued := recv / 6
	if max := recvBuffer/48 + 64; queued > max {
		t.Errorf("paused with %d messages queued (%d bytes), want at most about %d", queued, recv, max)
	}
	if queued < 1024 {
		t.Errorf("paused with %d messages queued, want at least 1024 (a small buffer is bounded by bytes)", queued)
	}
	buf := make([]byte, 16)
	for i := range n {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := s.Recv(buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := frame([]byte{byte(i), byte(i >> 8)}); !bytes.Equal(buf[:k], want) {
			t.Fatalf("message %d is %x, want %x", i, buf[:k], want)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

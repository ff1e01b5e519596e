package kcm_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// cfDo runs f in a goroutine and fails the test if it does not return
// within d; it returns f's error. A call that hangs is reported instead of
// hanging the test binary (the goroutine stays blocked until cleanup
// unblocks it, e.g. by closing the mux).
func cfDo(t *testing.T, d time.Duration, what string, f func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
		return nil
	}
}

// cfLeaderMode brings a single-psock mux into the state where the next
// receive reads the psock itself: one message is received through the
// background reader, which then lets go of the psock.
func cfLeaderMode(t *testing.T, s *kcm.Socket, peer interface{ Write([]byte) (int, error) }) {
	t.Helper()
	msg := msgOf(1000, 16)
	if _, err := peer.Write(msg); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, s, 5*time.Second)
}

// proc returns the mux's /proc/net/kcm dump.
func proc(m *kcm.Mux) string {
	var b strings.Builder
	m.WriteProc(&b)
	return b.String()
}

// recordingParser is lenPrefix that records the length of every buffer it
// is called with, to check when the mux calls its parser.
type recordingParser struct {
	mu   sync.Mutex
	lens []int
}

func (r *recordingParser) Parse(b []byte) (int, error) {
	r.mu.Lock()
	r.lens = append(r.lens, len(b))
	r.mu.Unlock()
	return lenPrefix(b)
}

// calls returns the lengths recorded so far.
func (r *recordingParser) calls() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.lens...)
}

// reset forgets the recorded calls.
func (r *recordingParser) reset() {
	r.mu.Lock()
	r.lens = nil
	r.mu.Unlock()
}

package kcm_test

import (
	"fmt"
	"strconv"
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
// receive reads the psock itself: one message is received, and the receive
// is waiting before the message is written, so that whoever reads it (the
// receiver itself or the background reader, which hands it over) lets go
// of the psock afterwards. (A message that arrives before anyone waits is
// queued by the background reader, which then keeps reading.) The psock's
// grace timer may still start a background reader later.
func cfLeaderMode(t *testing.T, s *kcm.Socket, peer interface{ Write([]byte) (int, error) }) {
	t.Helper()
	s.SetReadDeadline(time.Time{}) // a deadline sends receives the general way
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv(make([]byte, 64))
		got <- err
	}()
	waitProc(t, s.Mux(), func(d string) bool {
		return strings.Contains(d, "RxWait") || strings.Contains(d, "RxLed-")
	})
	if _, err := peer.Write(msgOf(1000, 16)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
	}
}

// proc returns the mux's /proc/net/kcm dump.
func proc(m *kcm.Mux) string {
	var b strings.Builder
	m.WriteProc(&b)
	return b.String()
}

// waitSendQ waits until s has n messages not yet written whole, its
// Send-Q in the dump: a sender that waits for room or for a psock counts
// once its message is in a queue.
func waitSendQ(t *testing.T, m *kcm.Mux, s *kcm.Socket, n int) {
	t.Helper()
	obj, want := fmt.Sprintf("kcm-%d", s.Index()), strconv.Itoa(n)
	waitProc(t, m, func(d string) bool {
		f := strings.Fields(procLine(d, obj))
		return len(f) > 7 && f[7] == want
	})
}

// waitReceiving waits until a receive call of s waits for a message
// (RxWait) or reads a psock for one (RxLed-<s>).
func waitReceiving(t *testing.T, m *kcm.Mux, s *kcm.Socket) {
	t.Helper()
	waitProc(t, m, func(d string) bool {
		return strings.Contains(procLine(d, fmt.Sprintf("kcm-%d", s.Index())), "RxWait") ||
			strings.Contains(d, fmt.Sprintf("RxLed-%d ", s.Index()))
	})
}

// waitProc waits until the mux's /proc/net/kcm dump satisfies ok. The
// dump is the only outside view of who leads and who waits, so it is
// polled.
func waitProc(t *testing.T, m *kcm.Mux, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(proc(m)) {
		if time.Now().After(deadline) {
			t.Fatalf("mux never reached the state; dump:\n%s", proc(m))
		}
		time.Sleep(time.Millisecond)
	}
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

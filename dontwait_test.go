package kcm_test

import (
	"errors"
	"net"
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
)

// A non-blocking receive gets a message whose bytes arrived before the
// call, as in the kernel, which parses on arrival: also when a background
// reader, not the receive, reads the psock (with Config.Affinity, or with
// several psocks) and has not looked at the bytes yet. It failed with
// ErrWouldBlock most of the time with affinity: only an idle lone psock of
// a mux without affinity was read by the call.
func TestDontWaitGetsArrivedMessage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    kcm.Config
		psocks int
	}{
		{"plain", kcm.Config{}, 1},
		{"affinity", kcm.Config{Affinity: bySocketID}, 1},
		{"two psocks", kcm.Config{}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, tc.cfg)
			a := m.NewSocket(kcm.Datagram)
			b := a.Clone()
			var peers []net.Conn
			for range tc.psocks {
				peer, c := testconn.Pair(t, "unix")
				if _, err := m.Attach(c, lenPrefix); err != nil {
					t.Fatal(err)
				}
				peers = append(peers, peer)
			}
			buf := make([]byte, 64)
			for i := range 200 {
				want := affID(a.Index(), i)
				if _, err := peers[i%len(peers)].Write(msgOf(want, 20)); err != nil {
					t.Fatal(err)
				}
				n, _, err := a.RecvMsg(buf, kcm.DontWait)
				if err != nil {
					t.Fatalf("message %d, arrived: RecvMsg(DontWait): %v", i, err)
				}
				if got := checkMsg(t, buf[:n]); got != want {
					t.Fatalf("got message %#x, want %#x", got, want)
				}
				if _, _, err := a.RecvMsg(buf, kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
					t.Fatalf("after message %d: RecvMsg(DontWait) = %v, want ErrWouldBlock", i, err)
				}
			}
			if tc.cfg.Affinity == nil {
				return
			}
			// Steering holds: b's message is not a's, even when a's
			// non-blocking receive is the one that reads it.
			want := affID(b.Index(), 0)
			peers[0].Write(msgOf(want, 20))
			if _, _, err := a.RecvMsg(buf, kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
				t.Fatalf("a's receive with b's message arrived: %v, want ErrWouldBlock", err)
			}
			n, _, err := b.RecvMsg(buf, kcm.DontWait)
			if err != nil || checkMsg(t, buf[:n]) != want {
				t.Fatalf("b's receive: %q, %v; want its message", buf[:n], err)
			}
		})
	}
}

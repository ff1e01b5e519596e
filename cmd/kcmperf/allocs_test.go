//go:build !race

package main

import (
	"testing"

	"github.com/gokcm/kcm"
)

// The race detector allocates on its own, so these run only without -race.

// TestKCMPathsDoNotAllocate checks the issue's bar "0 allocations per
// message in steady state on the pooled paths": an rr transaction (Send,
// Recv on the client; RecvMessage, Release, Send on the in-process server)
// and a stream batch (SendBatch on the server, RecvBatch and Release here).
// AllocsPerRun counts the whole process, so both sides are covered.
func TestKCMPathsDoNotAllocate(t *testing.T) {
	s, err := startServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tg, err := dialTarget(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()

	t.Run("rr", func(t *testing.T) {
		c, err := tg.dial(kindKCMEcho, 1)
		if err != nil {
			t.Fatal(err)
		}
		m := newPerfMux()
		defer m.Close()
		if _, err := m.attach(c, lengthPrefix); err != nil {
			t.Fatal(err)
		}
		sock := m.NewSocket(kcm.Datagram)
		req, resp := newMessage(1, 'q'), make([]byte, 64)
		rr := func() {
			if err := sock.Send(req); err != nil {
				t.Fatal(err)
			}
			if _, err := sock.Recv(resp); err != nil {
				t.Fatal(err)
			}
		}
		for range 1000 { // warm the pools
			rr()
		}
		if a := testing.AllocsPerRun(5000, rr); a != 0 {
			t.Errorf("%v allocations per rr transaction, want 0", a)
		}
	})

	t.Run("stream", func(t *testing.T) {
		c, err := tg.dialHello(hello{kind: kindKCMStream, size: 64, batch: defaultBatch})
		if err != nil {
			t.Fatal(err)
		}
		m := newPerfMux()
		defer m.Close()
		if _, err := m.attach(c, lengthPrefix); err != nil {
			t.Fatal(err)
		}
		sock := m.NewSocket(kcm.Datagram)
		ms := make([]kcm.Message, defaultBatch)
		var got int
		batch := func() {
			n, err := sock.RecvBatch(ms)
			if err != nil {
				t.Fatal(err)
			}
			for i := range ms[:n] {
				ms[i].Release()
			}
			got += n
		}
		for range 1000 {
			batch()
		}
		got = 0
		a := testing.AllocsPerRun(5000, batch)
		if perMsg := a * 5000 / float64(max(got, 1)); perMsg >= 0.01 {
			t.Errorf("%v allocations per RecvBatch (%.3f per message), want 0", a, perMsg)
		}
	})
}

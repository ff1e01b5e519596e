//go:build !race

package main

import (
	"runtime"
	"testing"

	"github.com/gokcm/kcm"
)

// The race detector allocates on its own, so these run only without -race.

// maxAllocsPerMsg is the allocation rate counted as zero: the process's
// own background work (a grace timer's goroutine, the runtime) may
// allocate now and then during thousands of messages; a path that
// allocated per message would show 1 or more.
const maxAllocsPerMsg = 0.01

// mallocsPerCall runs f n times and returns the heap allocations per call
// of the whole process (the server runs in it too). Unlike
// testing.AllocsPerRun it does not round down, so a path that allocates
// on one call in ten still shows.
func mallocsPerCall(n int, f func()) float64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// TestKCMPathsDoNotAllocate checks the issue's bar "0 allocations per
// message in steady state on the pooled paths": an rr transaction (Send,
// Recv on the client; RecvMessage, Release, Send on the in-process server)
// and a stream batch (SendBatch on the server, RecvBatch and Release here).
// AllocsPerRun counts the whole process, so both sides are covered.
func TestKCMPathsDoNotAllocate(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
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
		m := newPerfMux(kcm.Config{})
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
		a := mallocsPerCall(5000, rr)
		t.Logf("%.4f allocations per rr transaction", a)
		if a >= maxAllocsPerMsg {
			t.Errorf("%.4f allocations per rr transaction, want 0", a)
		}
	})

	t.Run("stream", func(t *testing.T) {
		c, err := tg.dialHello(hello{kind: kindKCMStream, size: 64, batch: sendBatchFor(64)})
		if err != nil {
			t.Fatal(err)
		}
		m := newPerfMux(kcm.Config{})
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
		a := mallocsPerCall(5000, batch)
		perMsg := a * 5000 / float64(max(got, 1))
		t.Logf("%.5f allocations per message received", perMsg)
		if perMsg >= maxAllocsPerMsg {
			t.Errorf("%.4f allocations per RecvBatch (%.5f per message), want 0", a, perMsg)
		}
	})
}

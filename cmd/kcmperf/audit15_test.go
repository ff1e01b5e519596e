package main

import (
	"bytes"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Audit 15 of cmd/kcmperf: failing checks of bugs found by running the tool,
// skipped so that the package stays green. Remove a t.Skip to see its bug.

// TestAuditSharedLargeReplies: -t shared accepts any -r up to 16 MiB, but
// with replies that do not fit the steering budget of Config.Affinity (a
// quarter of the mux's RecvBuffer, shared by the sockets) the mux steers
// them to any socket, as its documentation says it may (best effort), and
// sharedRR fails the run with "socket N received the reply for socket M":
//
//	kcmperf -t shared -r 65536 -l 300ms -w 100ms -reps 1
//	kcmperf: priming: shared 200x4 65536/65536B kcm: worker failed: socket 54 received the reply for socket 173
//
// (-r 16384 -psocks 1 and -instances 4 -psocks 1 -r 300000 fail the same
// way; -r 4096 at 200 sockets still passes.)
func TestAuditSharedLargeReplies(t *testing.T) {
	t.Skip("BUG: -t shared fails with 'socket N received the reply for socket M' once replies exceed the mux's affinity budget (sharedKCM treats best-effort Config.Affinity as a guarantee)")
	// The default 200 sockets, over one psock, against the child server as
	// the command runs them.
	var out, errb bytes.Buffer
	args := append([]string{"-t", "shared", "-psocks", "1", "-r", "65536"}, tiny...)
	if code := clientMain(append(args, "-json"), &out, &errb); code != 0 {
		t.Fatalf("kcmperf %v: exit %d: %s", args, code, errb.String())
	}
}

// heapObjectBytes is the live (and not yet swept) heap of this process.
func heapObjectBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// streamHeapPerInstance runs side's stream workload with n instances of
// 64-byte messages against tg for a while and returns the client's heap
// growth per instance while it runs.
func streamHeapPerInstance(t *testing.T, tg *target, side string, n int) uint64 {
	t.Helper()
	cfg := config{Test: "stream", Instances: n, ReqSize: 64, RespSize: 64, Batch: defaultBatch, Sender: "kcm"}
	runtime.GC()
	before := heapObjectBytes()
	wl, err := newWorkload(tg, cfg, side)
	if err != nil {
		t.Fatal(err)
	}
	var phase atomic.Int32
	phase.Store(phaseMeasure)
	ws := make([]worker, wl.workers)
	var wg sync.WaitGroup
	for i := range ws {
		ws[i].phase = &phase
		wg.Add(1)
		go func() {
			defer wg.Done()
			wl.run(i, &ws[i])
		}()
	}
	time.Sleep(500 * time.Millisecond)
	var peak uint64
	for range 5 {
		peak = max(peak, heapObjectBytes())
		time.Sleep(50 * time.Millisecond)
	}
	phase.Store(phaseStop)
	wl.close()
	wg.Wait()
	if peak < before {
		return 0
	}
	return (peak - before) / uint64(n)
}

// TestAuditStreamKCMMemory: the kcm side of -t stream gives every
// instance's mux the default 4 MiB RecvBuffer, and the receiver keeps it
// full of small messages, while the raw side reads through a 64 KiB
// bufio.Reader. Per instance the client holds some 9 MB, so
//
//	kcmperf -t stream -instances 1000 -m 64 -l 300ms -w 100ms -reps 1 -only kcm
//
// takes 56 s and 9.1 GB of RSS for its 0.8 s of runs (-only raw: 3.7 s,
// 110 MB), and without -only the raw run that follows fails with "stream
// x1000 64B raw: no transaction completed in the measured interval" while
// the child server is still busy; -instances 200 -m 64,4096 -reps 1 takes
// 14.5 s and 1.9 GB for 2.4 s of runs.
func TestAuditStreamKCMMemory(t *testing.T) {
	t.Skip("BUG: the kcm stream client buffers ~4 MiB of messages (the default RecvBuffer) per instance against the raw side's 64 KiB bufio.Reader: -t stream -instances 1000 takes ~9 GB and ~1 min")
	ch, err := startChild("", true)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	tg, err := dialTarget(ch.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	const n = 20
	raw := streamHeapPerInstance(t, tg, "raw", n)
	kcm := streamHeapPerInstance(t, tg, "kcm", n)
	t.Logf("client heap per instance while streaming 64 B messages: raw %d KiB, kcm %d KiB", raw>>10, kcm>>10)
	if kcm > 1<<20 {
		t.Errorf("kcm stream receiver holds %d KiB per instance (raw: %d KiB); -instances 1000 needs %d MiB", kcm>>10, raw>>10, kcm*1000>>20)
	}
}

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

// -t shared with replies larger than the default receive buffer's
// affinity budget (a quarter of it, shared by the sockets) runs: the mux is
// given room for every socket's reply to wait in its own queue, so that
// Config.Affinity, which is best effort and steers to any socket beyond
// its budget, steers every reply home. (With the default 4 MiB, -r 65536
// failed with "socket N received the reply for socket M".)
func TestSharedLargeReplies(t *testing.T) {
	var out, errb bytes.Buffer
	// 16 replies of 256 KiB in flight: four times the default budget.
	args := []string{"-t", "shared", "-instances", "16", "-psocks", "1", "-r", "262144", "-l", "300ms", "-w", "50ms", "-reps", "1"}
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
// 64-byte messages against tg until every instance has received several
// receive buffers' worth, and returns the client's peak heap growth per
// instance meanwhile.
func streamHeapPerInstance(t *testing.T, tg *target, side string, n int) uint64 {
	t.Helper()
	cfg := config{Test: "stream", Instances: n, ReqSize: 64, RespSize: 64, Batch: defaultBatch, SendBatch: sendBatchFor(64), Sender: "kcm"}
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
	const each = 8 * streamRecvBuffer / 64
	received := func() bool {
		for i := range ws {
			if ws[i].n.Load() < each {
				return false
			}
		}
		return true
	}
	var peak uint64
	deadline := time.Now().Add(30 * time.Second)
	for !received() { // no event but the counts themselves
		peak = max(peak, heapObjectBytes())
		if time.Now().After(deadline) {
			t.Fatalf("%s: the instances did not receive %d messages each in 30 s", side, each)
		}
		time.Sleep(time.Millisecond)
	}
	phase.Store(phaseStop)
	wl.close()
	wg.Wait()
	if peak < before {
		return 0
	}
	return (peak - before) / uint64(n)
}

// The kcm stream receivers hold little more memory than the raw ones: each
// mux reads ahead streamRecvBuffer (256 KiB) of messages, not the default
// 4 MiB, with which -t stream -instances 1000 took some 9 GB and a minute
// (raw: 110 MB), and the raw run after it failed on the busy server.
func TestStreamKCMMemory(t *testing.T) {
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

package main

import (
	"sync"
	"time"
)

// heartbeatPeriod is the period of the runtime heartbeat. 100 ms was
// enough while every busy kcm psock also fired a 5 ms timer of its own; with
// those gone both sides flip between modes at 100 ms (rr 1 pair ratios
// 0.76-2.81 in one run), while at 1 ms they stay put (0.77-1.10), for about
// a thousand idle wake-ups a second in each process, the same on both sides.
const heartbeatPeriod = time.Millisecond

// startHeartbeat keeps a timer pending, and firing, in this process until
// stop is called.
//
// Why: on an idle-prone VM, whether and how often the Go runtime has a
// timer due changes how it waits when every goroutine blocks, and that
// decides whether a one-instance request/response run lands in a fast mode
// (p50 ~8 us) or a slow one (~55 us, each idle vCPU's wake-up costs tens of
// microseconds); at 200 instances it moves throughput by 10-20%. kcm has
// timers of its own (a psock's grace period), raw TCP has none, so without a
// heartbeat in both processes the two sides are measured in different
// modes, and the ratio says nothing about the work either does.
// -heartbeat=false shows that effect on purpose.
func startHeartbeat() (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	// One timer, re-armed from its own callback: a beat allocates nothing,
	// so it does not show in the allocations per transaction.
	t = time.AfterFunc(heartbeatPeriod, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(heartbeatPeriod)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

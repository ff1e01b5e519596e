package main

import (
	"sync"
	"time"
)

// heartbeatPeriod is the period of the runtime heartbeat.
const heartbeatPeriod = 100 * time.Millisecond

// startHeartbeat keeps a timer pending in this process until stop is
// called.
//
// Why: on an idle-prone VM, whether the Go runtime has a timer pending
// changes how it waits when every goroutine blocks, and that decides
// whether a one-instance request/response run lands in a fast mode (p50
// ~8 us) or a slow one (~55 us, each idle vCPU's wake-up costs tens of
// microseconds). kcm always has one pending (a psock's grace period), raw
// TCP has none, so without a heartbeat in both processes a raw run is
// measured in the slow mode and a kcm run in the fast one, and the ratio
// says nothing about the work either does. -heartbeat=false shows that
// effect on purpose.
func startHeartbeat() (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	var beat func()
	beat = func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t = time.AfterFunc(heartbeatPeriod, beat)
		}
	}
	beat()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

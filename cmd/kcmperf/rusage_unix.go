//go:build unix

package main

import (
	"syscall"
	"time"
)

// cpuTime returns the user+system CPU time this process has used so far,
// every thread included (the Go runtime's GC and netpoller too: they are part
// of what a transaction costs).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuSupported says whether cpuTime measures anything on this platform.
const cpuSupported = true

//go:build !unix

package main

import "time"

// cpuTime is unavailable without getrusage; CPU columns then read 0.
func cpuTime() time.Duration { return 0 }

const cpuSupported = false

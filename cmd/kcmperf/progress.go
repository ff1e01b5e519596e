package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progress draws a live line on a terminal, rewritten in place with \r, and
// stays silent otherwise (pipes, files, -json), so logs hold only results.
type progress struct {
	w       io.Writer
	enabled bool
}

func newProgress(f *os.File, enabled bool) *progress {
	if enabled {
		fi, err := f.Stat()
		enabled = err == nil && fi.Mode()&os.ModeCharDevice != 0
	}
	return &progress{w: f, enabled: enabled}
}

// callback returns the callback runOnce calls during a measured interval.
func (p *progress) callback(label string) func(uint64, time.Duration) {
	if p == nil || !p.enabled {
		return nil
	}
	return func(tx uint64, el time.Duration) {
		fmt.Fprintf(p.w, "\r\x1b[K%s: %.0f/s (%.1fs)", label, float64(tx)/el.Seconds(), el.Seconds())
	}
}

func (p *progress) clear() {
	if p != nil && p.enabled {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

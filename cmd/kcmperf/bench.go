package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Phases of one measured run. Workers count only what completes while the
// phase is measuring, so warm-up and teardown never leak into the figures.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// Latency histograms: 1 ns to 60 s at 2 significant digits (1% resolution)
// keeps one histogram near 30 KB, so 200 instances stay cheap to allocate
// before the run and to merge after it.
const (
	histMin    = 1
	histMax    = int64(60 * time.Second)
	histSigFig = 2
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFig) }

// worker is one instance's counters. Each worker writes only its own, so the
// hot path has no shared cache line; the padding keeps neighbours apart.
type worker struct {
	phase *atomic.Int32
	n     atomic.Uint64 // completed transactions (messages for stream) while measuring
	bytes atomic.Uint64
	hist  *hdrhistogram.Histogram // nil when latency is not measured
	_     [64]byte
}

func (w *worker) stopped() bool   { return w.phase.Load() == phaseStop }
func (w *worker) measuring() bool { return w.phase.Load() == phaseMeasure }

// record counts one transaction that started at start.
func (w *worker) record(start time.Time) {
	d := time.Since(start)
	if w.phase.Load() == phaseMeasure {
		w.n.Add(1)
		w.hist.RecordValue(int64(d))
	}
}

// workload is one side (raw or kcm) of one configuration, set up and ready:
// run(i) is worker i's loop, which returns when the phase is stop or its
// connection is closed; close unblocks every worker and releases everything.
type workload struct {
	workers int
	run     func(i int, w *worker) error
	close   func()
	latency bool // rr and shared measure latency; stream does not
}

// runResult is one measured run of one side.
type runResult struct {
	Tx        uint64
	Bytes     uint64
	Elapsed   time.Duration
	ClientCPU time.Duration
	ServerCPU time.Duration
	Allocs    uint64 // client heap allocations during the measured interval
	hist      *hdrhistogram.Histogram
}

func (r runResult) tps() float64 { return float64(r.Tx) / r.Elapsed.Seconds() }

// runOnce warms wl up, measures it for the configured duration and tears it
// down. progress, if not nil, is called a few times a second with the
// transactions counted so far.
func runOnce(t *target, wl *workload, warmup, dur time.Duration, progress func(tx uint64, elapsed time.Duration)) (res runResult, err error) {
	var phase atomic.Int32
	ws := make([]worker, wl.workers)
	for i := range ws {
		ws[i].phase = &phase
		if wl.latency {
			ws[i].hist = newHist()
		}
	}
	// Start each run from a collected heap on both sides, so garbage from the
	// previous run is not charged to this one.
	runtime.GC()
	if _, err := t.ctrl.do("gc"); err != nil {
		wl.close()
		return res, err
	}

	errc := make(chan error, wl.workers)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := wl.run(i, &ws[i]); err != nil && phase.Load() != phaseStop {
				errc <- err
			}
		}()
	}
	var once sync.Once
	shutdown := func() {
		once.Do(func() {
			phase.Store(phaseStop)
			wl.close()
			wg.Wait()
		})
	}
	defer shutdown()

	if err := waitOrFail(errc, warmup, nil, t.interrupted); err != nil {
		return res, err
	}
	if _, err := t.ctrl.do("start"); err != nil {
		return res, err
	}
	count := func() (n uint64) {
		for i := range ws {
			n += ws[i].n.Load()
		}
		return n
	}
	a0 := heapAllocs()
	c0 := cpuTime()
	phase.Store(phaseMeasure)
	t0 := time.Now()
	tick := func() {
		if progress != nil {
			progress(count(), time.Since(t0))
		}
	}
	err = waitOrFail(errc, dur, tick, t.interrupted)
	res.Elapsed = time.Since(t0)
	phase.Store(phaseStop)
	res.ClientCPU = cpuTime() - c0
	res.Allocs = heapAllocs() - a0
	srv, serr := t.ctrl.stop()
	if err == nil {
		err = serr
	}
	res.ServerCPU = srv
	if err != nil {
		return res, err
	}
	shutdown()
	select {
	case err := <-errc:
		return res, err
	default:
	}
	for i := range ws {
		res.Tx += ws[i].n.Load()
		res.Bytes += ws[i].bytes.Load()
		if ws[i].hist != nil {
			if res.hist == nil {
				res.hist = newHist()
			}
			res.hist.Merge(ws[i].hist)
		}
	}
	if res.Tx == 0 {
		return res, errors.New("no transaction completed in the measured interval")
	}
	return res, nil
}

// errInterrupted ends a run that SIGINT or SIGTERM interrupted.
var errInterrupted = errors.New("interrupted")

// waitOrFail waits for d, calling tick every 250 ms, and returns early with
// the first worker error, or errInterrupted once interrupted is closed.
func waitOrFail(errc <-chan error, d time.Duration, tick func(), interrupted <-chan struct{}) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("worker failed: %w", err)
		case <-interrupted:
			return errInterrupted
		case <-timer.C:
			return nil
		case <-ticker.C:
			if tick != nil {
				tick()
			}
		}
	}
}

// heapAllocs reads the cumulative count of heap allocations without stopping
// the world (unlike runtime.ReadMemStats).
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

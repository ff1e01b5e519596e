package main

import (
	"fmt"
	"time"
)

// sides names the two implementations compared in every configuration.
var sides = [2]string{"raw", "kcm"}

func newWorkload(t *target, cfg config, side string) (*workload, error) {
	type builder func(*target, config) (*workload, error)
	table := map[string][2]builder{
		"rr":     {rrRaw, rrKCM},
		"stream": {streamRaw, streamKCM},
		"shared": {sharedRaw, sharedKCM},
	}
	b, ok := table[cfg.Test]
	if !ok {
		return nil, fmt.Errorf("unknown test %q", cfg.Test)
	}
	if side == "kcm" {
		return b[1](t, cfg)
	}
	return b[0](t, cfg)
}

// runConfig measures one configuration as reps interleaved pairs: raw, kcm,
// kcm, raw, raw, kcm... Adjacent runs see the same machine load, so their
// ratio is far steadier than either absolute figure.
func runConfig(t *target, cfg config, o *options, prog *progress) (Row, error) {
	defer prog.clear() // also before an error is printed
	t.tls = cfg.TLS
	var runs [2][]runResult
	for rep := range o.reps {
		for _, si := range pairOrder(rep) {
			side := sides[si]
			if !o.measures(side) {
				continue
			}
			label := fmt.Sprintf("rep %d/%d", rep+1, o.reps)
			res, err := runSide(t, cfg, side, o.warmup, o.duration, prog, label)
			if err != nil {
				return Row{}, err
			}
			runs[si] = append(runs[si], res)
		}
	}
	return makeRow(cfg, runs[0], runs[1]), nil
}

// runSide sets up side's workload for cfg and runs it once; what labels
// it on the progress line.
func runSide(t *target, cfg config, side string, warmup, dur time.Duration, prog *progress, what string) (runResult, error) {
	wl, err := newWorkload(t, cfg, side)
	if err != nil {
		return runResult{}, fmt.Errorf("%s %s: setup: %w", cfg, side, err)
	}
	res, err := runOnce(t, wl, warmup, dur, prog.callback(fmt.Sprintf("%s %s %s", cfg, side, what)))
	if err != nil {
		return runResult{}, fmt.Errorf("%s %s: %w", cfg, side, err)
	}
	return res, nil
}

// pairOrder returns the indexes into sides in the order repetition rep
// runs them: raw first on even repetitions, kcm first on odd ones. The run
// second in a pair tends to be faster (on a 2-core machine, rr -instances 200
// gave a median ratio of 0.973 with raw always first and 0.921 with kcm
// always first), so a fixed order would credit that to one side.
func pairOrder(rep int) [2]int {
	if rep%2 == 1 {
		return [2]int{1, 0}
	}
	return [2]int{0, 1}
}

// runSuite measures every configuration against one target, after a
// priming run of each side.
func runSuite(t *target, o *options, prog *progress) ([]Row, error) {
	var rows []Row
	if err := primeRuns(t, o.configs()[0], o, prog); err != nil {
		return nil, err
	}
	for _, cfg := range o.configs() {
		row, err := runConfig(t, cfg, o, prog)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// primeTime is how long each priming run lasts after its warm-up, at
// most: no longer than the measured runs.
const primeTime = 300 * time.Millisecond

// primeRuns runs each side of cfg once, unmeasured. The first run in a
// fresh client and server is faster than the runs after it, whichever
// side it is: rr 1's first pair measured kcm/raw 0.854 with raw first and
// 1.054 with kcm first (medians of 20 processes each), while later pairs
// of the same processes sit at parity. Without priming, the side that runs
// first in the first pair would be credited with the difference.
func primeRuns(t *target, cfg config, o *options, prog *progress) error {
	defer prog.clear()
	t.tls = cfg.TLS
	for _, side := range sides {
		if !o.measures(side) {
			continue
		}
		if _, err := runSide(t, cfg, side, o.warmup, min(primeTime, o.duration), prog, "priming"); err != nil {
			return fmt.Errorf("priming: %w", err)
		}
	}
	return nil
}

// measures reports whether the suite runs side (-only may leave one out).
func (o *options) measures(side string) bool { return o.only == "" || o.only == side }

// estimate is the wall time a suite will take, for the opening line.
func (o *options) estimate() time.Duration {
	sides := 2
	if o.only != "" {
		sides = 1
	}
	return time.Duration(len(o.configs())*sides*o.reps)*(o.warmup+o.duration) +
		time.Duration(sides)*(o.warmup+min(primeTime, o.duration))
}

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
			if o.only != "" && o.only != side {
				continue
			}
			wl, err := newWorkload(t, cfg, side)
			if err != nil {
				return Row{}, fmt.Errorf("%s %s: setup: %w", cfg, side, err)
			}
			label := fmt.Sprintf("%s %s rep %d/%d", cfg, side, rep+1, o.reps)
			res, err := runOnce(t, wl, o.warmup, o.duration, prog.callback(label))
			if err != nil {
				return Row{}, fmt.Errorf("%s %s: %w", cfg, side, err)
			}
			runs[si] = append(runs[si], res)
		}
	}
	return makeRow(cfg, runs[0], runs[1]), nil
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

// runSuite measures every configuration against one target.
func runSuite(t *target, o *options, prog *progress) ([]Row, error) {
	var rows []Row
	for _, cfg := range o.configs() {
		row, err := runConfig(t, cfg, o, prog)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// estimate is the wall time a suite will take, for the opening line.
func (o *options) estimate() time.Duration {
	sides := 2
	if o.only != "" {
		sides = 1
	}
	return time.Duration(len(o.configs())*sides*o.reps) * (o.warmup + o.duration)
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Side is one implementation's figures for one configuration: medians over
// the repetitions, latency percentiles over all of them.
type Side struct {
	TPS           float64   `json:"tps"` // transactions/s (messages/s for stream), median
	RepTPS        []float64 `json:"rep_tps"`
	BytesPerSec   float64   `json:"bytes_per_sec,omitempty"` // stream: median
	ClientCPUPerM float64   `json:"client_cpu_s_per_mtx"`    // CPU seconds per million transactions, median
	ServerCPUPerM float64   `json:"server_cpu_s_per_mtx"`
	AllocsPerTx   float64   `json:"client_allocs_per_tx"` // client heap allocations per transaction, median
	P50us         float64   `json:"p50_us,omitempty"`
	P99us         float64   `json:"p99_us,omitempty"`
	P999us        float64   `json:"p999_us,omitempty"`
}

// Row is one configuration, raw and kcm side by side.
type Row struct {
	config
	Raw        Side      `json:"raw"`
	KCM        Side      `json:"kcm"`
	Ratio      float64   `json:"ratio"`       // kcm/raw tps: median of the per-pair ratios
	PairRatios []float64 `json:"pair_ratios"` // kcm/raw tps of each adjacent pair
	CPURatio   float64   `json:"cpu_ratio"`   // kcm/raw CPU per transaction (client+server), median of pairs
}

func makeRow(cfg config, raw, kcm []runResult) Row {
	r := Row{config: cfg, Raw: makeSide(raw), KCM: makeSide(kcm)}
	var cpu []float64
	for i := range min(len(raw), len(kcm)) {
		r.PairRatios = append(r.PairRatios, kcm[i].tps()/raw[i].tps())
		cpu = append(cpu, cpuPerTx(kcm[i])/cpuPerTx(raw[i]))
	}
	r.Ratio = median(r.PairRatios)
	r.CPURatio = median(cpu)
	return r
}

// cpuPerTx is client+server CPU seconds per transaction.
func cpuPerTx(r runResult) float64 {
	return (r.ClientCPU + r.ServerCPU).Seconds() / float64(r.Tx)
}

func makeSide(runs []runResult) Side {
	var s Side
	var bps, ccpu, scpu, allocs []float64
	var h *hdrhistogram.Histogram
	for _, r := range runs {
		s.RepTPS = append(s.RepTPS, r.tps())
		bps = append(bps, float64(r.Bytes)/r.Elapsed.Seconds())
		mtx := float64(r.Tx) / 1e6
		ccpu = append(ccpu, r.ClientCPU.Seconds()/mtx)
		scpu = append(scpu, r.ServerCPU.Seconds()/mtx)
		allocs = append(allocs, float64(r.Allocs)/float64(r.Tx))
		if r.hist != nil {
			if h == nil {
				h = newHist()
			}
			h.Merge(r.hist)
		}
	}
	s.TPS = median(s.RepTPS)
	s.BytesPerSec = median(bps)
	s.ClientCPUPerM = median(ccpu)
	s.ServerCPUPerM = median(scpu)
	s.AllocsPerTx = median(allocs)
	if h != nil {
		us := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
		s.P50us, s.P99us, s.P999us = us(50), us(99), us(99.9)
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Report is the whole result, as -json prints it.
type Report struct {
	Command string `json:"command"`
	Server  string `json:"server"` // "child process on ADDR", or the remote host:port
	// Heartbeat and ServerHeartbeat say whether each process kept the
	// runtime heartbeat timer (see -heartbeat); they should agree.
	Heartbeat       bool          `json:"heartbeat"`
	ServerHeartbeat bool          `json:"server_heartbeat"`
	GoVersion       string        `json:"go_version"`
	CPU             string        `json:"cpu,omitempty"`
	NumCPU          int           `json:"num_cpu"`
	Reps            int           `json:"reps"`
	Duration        time.Duration `json:"duration_ns"`
	Warmup          time.Duration `json:"warmup_ns"`
	Rows            []Row         `json:"rows"`
}

func (rep *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func (rep *Report) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "kcmperf: raw TCP vs kcm, server %s, %d reps x %v (+%v warm-up), medians; %s, %d CPUs, %s; heartbeat: client %s, server %s\n",
		rep.Server, rep.Reps, rep.Duration, rep.Warmup, rep.GoVersion, rep.NumCPU, rep.CPU, onOff(rep.Heartbeat), onOff(rep.ServerHeartbeat))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "test\tside\ttps\tkcm/raw\tMB/s\tcpu s/Mtx cli\tsrv\tcpu kcm/raw\tallocs/tx\tp50 us\tp99 us\tp99.9 us\tpair ratios\t")
	for _, r := range rep.Rows {
		name := r.config.String()
		line := func(name, side string, s Side, ratio, cpuRatio, pairs string) {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%s\t%.2f\t%s\t%s\t%s\t%s\t\n",
				name, side, s.TPS, ratio, mbps(s.BytesPerSec), s.ClientCPUPerM, s.ServerCPUPerM,
				cpuRatio, s.AllocsPerTx, lat(s.P50us), lat(s.P99us), lat(s.P999us), pairs)
		}
		var pairs []string
		for _, p := range r.PairRatios {
			pairs = append(pairs, fmt.Sprintf("%.2f", p))
		}
		if r.Raw.TPS > 0 {
			line(name, "raw", r.Raw, "", "", "")
			name = ""
		}
		if r.KCM.TPS > 0 {
			ratio, cpuRatio := "", ""
			if len(pairs) > 0 {
				ratio, cpuRatio = fmt.Sprintf("%.3f", r.Ratio), fmt.Sprintf("%.3f", r.CPURatio)
			}
			line(name, "kcm", r.KCM, ratio, cpuRatio, strings.Join(pairs, " "))
		}
	}
	return tw.Flush()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func mbps(bps float64) string {
	if bps == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", bps/1e6)
}

func lat(us float64) string {
	if us == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", us)
}

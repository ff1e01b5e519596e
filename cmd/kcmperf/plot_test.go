package main

import (
	"bytes"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sweepRows() []Row {
	var rows []Row
	for _, n := range []int{200, 1, 10} {
		rows = append(rows, Row{
			config: config{Test: "rr", Instances: n, ReqSize: 1, RespSize: 1},
			Raw:    Side{TPS: float64(1000 * n), ClientCPUPerM: 5, ServerCPUPerM: 5},
			KCM:    Side{TPS: float64(900 * n), ClientCPUPerM: 6, ServerCPUPerM: 5},
		})
	}
	return append(rows, Row{config: config{Test: "stream", Instances: 1}, Raw: Side{TPS: 1, ClientCPUPerM: 1}, KCM: Side{TPS: 1, ClientCPUPerM: 1}})
}

func TestPlotPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rr.png")
	if err := writePlot(path, sweepRows()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 100 || r.Dy() < 100 {
		t.Errorf("PNG is %v", r)
	}
}

func TestPlotSVG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rr.svg")
	if err := writePlot(path, sweepRows()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, "<svg") || !strings.Contains(s, "kcm") {
		t.Errorf("not an SVG with a kcm series: %.200s", s)
	}
}

func TestPlotRejects(t *testing.T) {
	if err := writePlot(filepath.Join(t.TempDir(), "x.pdf"), sweepRows()); err == nil {
		t.Error(".pdf accepted")
	}
	if err := writePlot(filepath.Join(t.TempDir(), "x.png"), nil); err == nil {
		t.Error("empty rows accepted")
	}
}

func TestPlotRowsOrder(t *testing.T) {
	rows := plotRows(sweepRows())
	if len(rows) != 3 || rows[0].Instances != 1 || rows[2].Instances != 200 {
		t.Errorf("plot rows %v", rows)
	}
}

// TestPlotRowsStream: stream rows are one line per side, against size at
// one instance count, against instances (at the first size) when
// -instances sweeps; before, a sweep of both zigzagged between sizes.
func TestPlotRowsStream(t *testing.T) {
	var rows []Row
	for _, n := range []int{1, 4} {
		for _, sz := range []int{64, 4096} {
			rows = append(rows, Row{config: config{Test: "stream", Instances: n, ReqSize: sz, RespSize: sz},
				Raw: Side{TPS: 1, ClientCPUPerM: 1}, KCM: Side{TPS: 1, ClientCPUPerM: 1}})
		}
	}
	if got := plotRows(rows); len(got) != 2 || got[0].Instances != 1 || got[1].Instances != 4 || got[0].ReqSize != 64 || got[1].ReqSize != 64 {
		t.Errorf("instances and sizes swept: plot rows %v, want x1 and x4 at 64B", got)
	}
	if got := plotRows(rows[:2]); len(got) != 2 || got[0].ReqSize != 64 || got[1].ReqSize != 4096 {
		t.Errorf("sizes swept: plot rows %v, want 64B and 4096B", got)
	}
	if err := drawPlot(io.Discard, ".svg", rows); err != nil {
		t.Error(err)
	}
}

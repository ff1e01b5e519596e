package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// writePlot draws, for raw TCP and kcm, transactions/s against instances and
// CPU per transaction (client+server) against instances, side by side, into
// a PNG or SVG chosen by the file's extension. It plots the rr rows (the
// instance sweep, e.g. -t rr -instances 1,10,50,200), or the first test's
// rows when there is no rr row.
func writePlot(path string, rows []Row) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("-plot: want a .png or .svg file, got %q", path)
	}
	pts := plotRows(rows)
	if len(pts) == 0 {
		return fmt.Errorf("-plot: nothing to plot")
	}
	test := pts[0].Test

	tps := plot.New()
	tps.Title.Text = test + ": transactions/s"
	tps.X.Label.Text = "instances"
	tps.Y.Label.Text = "tps"
	cpu := plot.New()
	cpu.Title.Text = test + ": CPU per transaction (client+server)"
	cpu.X.Label.Text = "instances"
	cpu.Y.Label.Text = "CPU us/tx"

	var rawTPS, kcmTPS, rawCPU, kcmCPU plotter.XYs
	for _, r := range pts {
		x := float64(r.Instances)
		rawTPS = append(rawTPS, plotter.XY{X: x, Y: r.Raw.TPS})
		kcmTPS = append(kcmTPS, plotter.XY{X: x, Y: r.KCM.TPS})
		rawCPU = append(rawCPU, plotter.XY{X: x, Y: r.Raw.ClientCPUPerM + r.Raw.ServerCPUPerM})
		kcmCPU = append(kcmCPU, plotter.XY{X: x, Y: r.KCM.ClientCPUPerM + r.KCM.ServerCPUPerM})
	}
	if err := plotutil.AddLinePoints(tps, "raw TCP", rawTPS, "kcm", kcmTPS); err != nil {
		return err
	}
	if err := plotutil.AddLinePoints(cpu, "raw TCP", rawCPU, "kcm", kcmCPU); err != nil {
		return err
	}
	for _, p := range []*plot.Plot{tps, cpu} {
		p.Legend.Top = true
		p.Y.Min = 0
		if first, last := pts[0].Instances, pts[len(pts)-1].Instances; first >= 1 && last >= 10*first {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		}
	}

	const w, h = 12 * vg.Inch, 4.5 * vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if ext == ".png" {
		c = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	} else {
		c = vgsvg.New(w, h)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	plots := [][]*plot.Plot{{tps, cpu}}
	canvases := plot.Align(plots, tiles, dc)
	tps.Draw(canvases[0][0])
	cpu.Draw(canvases[0][1])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotRows picks the rows to plot, ordered by instances.
func plotRows(rows []Row) []Row {
	if len(rows) == 0 {
		return nil
	}
	test := rows[0].Test
	if slices.ContainsFunc(rows, func(r Row) bool { return r.Test == "rr" }) {
		test = "rr"
	}
	var out []Row
	for _, r := range rows {
		if r.Test == test {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b Row) int { return a.Instances - b.Instances })
	return out
}

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

// writePlot draws rows (see drawPlot) into the file at path, a PNG or an
// SVG by its extension.
func writePlot(path string, rows []Row) error {
	format, err := plotFormat(path)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := drawPlot(f, format, rows); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotFormat returns the image format for a -plot path: ".png" or ".svg".
func plotFormat(path string) (string, error) {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return "", fmt.Errorf("-plot: want a .png or .svg file, got %q", path)
	}
	return ext, nil
}

// drawPlot draws, for raw TCP and kcm, transactions/s and CPU per
// transaction (client+server) side by side, in format (".png" or ".svg").
// It plots the rr rows against instances (the sweep of -t rr -instances
// 1,10,50,200), or, without rr rows, the first test's rows (see plotRows):
// stream rows against message size, or against instances when they sweep
// it, others against instances. A side that did not run (-only) is left
// out.
func drawPlot(w io.Writer, format string, rows []Row) error {
	pts := plotRows(rows)
	if len(pts) == 0 {
		return fmt.Errorf("-plot: nothing to plot")
	}
	test := pts[0].Test
	xLabel, xOf := "instances", func(r Row) int { return r.Instances }
	if test == "stream" {
		if pts[0].Instances == pts[len(pts)-1].Instances {
			xLabel, xOf = "message payload (bytes)", func(r Row) int { return r.ReqSize }
		} else {
			test = fmt.Sprintf("stream %dB", pts[0].ReqSize)
		}
	}

	tps := plot.New()
	tps.Title.Text = test + ": transactions/s"
	tps.Y.Label.Text = "tps"
	cpu := plot.New()
	cpu.Title.Text = test + ": CPU per transaction (client+server)"
	cpu.Y.Label.Text = "CPU us/tx"

	var rawTPS, kcmTPS, rawCPU, kcmCPU plotter.XYs
	for _, r := range pts {
		x := float64(xOf(r))
		rawTPS = append(rawTPS, plotter.XY{X: x, Y: r.Raw.TPS})
		kcmTPS = append(kcmTPS, plotter.XY{X: x, Y: r.KCM.TPS})
		rawCPU = append(rawCPU, plotter.XY{X: x, Y: r.Raw.ClientCPUPerM + r.Raw.ServerCPUPerM})
		kcmCPU = append(kcmCPU, plotter.XY{X: x, Y: r.KCM.ClientCPUPerM + r.KCM.ServerCPUPerM})
	}
	if err := addSeries(tps, rawTPS, kcmTPS); err != nil {
		return err
	}
	if err := addSeries(cpu, rawCPU, kcmCPU); err != nil {
		return err
	}
	// Each legend goes in the top corner its lines leave free: left when
	// they rise, right when they fall.
	tps.Legend.Left = rising(rawTPS, kcmTPS)
	cpu.Legend.Left = rising(rawCPU, kcmCPU)
	for _, p := range []*plot.Plot{tps, cpu} {
		p.X.Label.Text = xLabel
		p.Legend.Top = true
		p.Y.Min = 0
		if first, last := xOf(pts[0]), xOf(pts[len(pts)-1]); first >= 1 && last >= 10*first {
			p.X.Scale = plot.LogScale{}
			p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		}
	}

	const width, height = 12 * vg.Inch, 4.5 * vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if format == ".png" {
		c = vgimg.PngCanvas{Canvas: vgimg.New(width, height)}
	} else {
		c = vgsvg.New(width, height)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	plots := [][]*plot.Plot{{tps, cpu}}
	canvases := plot.Align(plots, tiles, dc)
	tps.Draw(canvases[0][0])
	cpu.Draw(canvases[0][1])
	_, err := c.WriteTo(w)
	return err
}

// rising reports whether the lines end higher than they start, on average.
func rising(series ...plotter.XYs) bool {
	var d float64
	for _, xys := range series {
		if len(xys) > 0 {
			d += xys[len(xys)-1].Y - xys[0].Y
		}
	}
	return d > 0
}

// addSeries adds the raw and kcm lines to p, leaving out a side whose
// figures are all zero because it did not run.
func addSeries(p *plot.Plot, raw, kcm plotter.XYs) error {
	var args []any
	for _, s := range []struct {
		name string
		xys  plotter.XYs
	}{{"raw TCP", raw}, {"kcm", kcm}} {
		if slices.ContainsFunc(s.xys, func(xy plotter.XY) bool { return xy.Y != 0 }) {
			args = append(args, s.name, s.xys)
		}
	}
	if len(args) == 0 {
		return fmt.Errorf("-plot: nothing to plot")
	}
	return plotutil.AddLinePoints(p, args...)
}

// plotRows picks the rows to plot, ordered by instances, then size: those
// of rr, or else of the first test. Stream rows that sweep both instances
// and sizes keep the first size only, so that each side is one line.
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
	if test == "stream" && slices.ContainsFunc(out, func(r Row) bool { return r.Instances != out[0].Instances }) {
		size := out[0].ReqSize
		out = slices.DeleteFunc(out, func(r Row) bool { return r.ReqSize != size })
	}
	slices.SortStableFunc(out, func(a, b Row) int {
		if a.Instances != b.Instances {
			return a.Instances - b.Instances
		}
		return a.ReqSize - b.ReqSize
	})
	return out
}

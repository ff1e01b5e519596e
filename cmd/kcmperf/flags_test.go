package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFlagsDefaultSuite(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.reps != 9 || o.duration != 300*time.Millisecond || o.warmup != 100*time.Millisecond || o.req != 1 || o.resp != 1 {
		t.Errorf("defaults: reps %d l %v w %v r %d,%d", o.reps, o.duration, o.warmup, o.req, o.resp)
	}
	want := []config{
		{Test: "rr", Instances: 1, ReqSize: 1, RespSize: 1},
		{Test: "rr", Instances: 200, ReqSize: 1, RespSize: 1},
		{Test: "stream", Instances: 1, ReqSize: 64, RespSize: 64, Batch: 64, SendBatch: 963, Sender: "kcm"},
		{Test: "stream", Instances: 1, ReqSize: 4096, RespSize: 4096, Batch: 64, SendBatch: 15, Sender: "kcm"},
	}
	if got := o.configs(); !slices.Equal(got, want) {
		t.Errorf("default suite %v, want %v", got, want)
	}
	if e := o.estimate(); e < 20*time.Second || e > 40*time.Second {
		t.Errorf("default run takes %v, want about 30s", e)
	}
}

// TestFlagsDefaultSuiteSweep: without -t, -instances and -m set the default
// suite's rr and stream rows instead of being ignored.
func TestFlagsDefaultSuiteSweep(t *testing.T) {
	o, err := parseFlags([]string{"-instances", "1,10,50", "-m", "256"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range o.configs() {
		got = append(got, c.String())
	}
	want := []string{"rr x1 1/1B", "rr x10 1/1B", "rr x50 1/1B", "stream x1 256B"}
	if !slices.Equal(got, want) {
		t.Errorf("default suite with -instances and -m: %q, want %q", got, want)
	}
}

func TestFlagsSweep(t *testing.T) {
	o, err := parseFlags([]string{"-t", "rr,shared", "-instances", "1,10,50,200", "-r", "64,1k", "-psocks", "8", "-H", "h:1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cs := o.configs()
	if len(cs) != 8 {
		t.Fatalf("%d configs, want 8: %v", len(cs), cs)
	}
	if c := cs[3]; c.Test != "rr" || c.Instances != 200 || c.ReqSize != 64 || c.RespSize != 1024 {
		t.Errorf("config 3: %+v", c)
	}
	if c := cs[4]; c.Test != "shared" || c.Instances != 1 || c.Psocks != 8 {
		t.Errorf("config 4: %+v", c)
	}
	if o.host != "h:1" {
		t.Errorf("host %q", o.host)
	}
	for in, want := range map[string]string{
		"example.net": "example.net:" + defaultPort,
		"::1":         "[::1]:" + defaultPort,
		"[::1]":       "[::1]:" + defaultPort,
		"[::1]:99":    "[::1]:99",
	} {
		if o, err := parseFlags([]string{"-H", in}, io.Discard); err != nil || o.host != want {
			t.Errorf("-H %s: host %q (%v), want %q", in, o.host, err, want)
		}
	}
}

func TestFlagsSharedIDRoom(t *testing.T) {
	o, err := parseFlags([]string{"-t", "shared"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.configs()[0]
	if c.ReqSize < 4 || c.RespSize < 4 || c.Instances != 200 || c.Psocks != 4 {
		t.Errorf("shared config %+v: requests must hold a 4-byte id", c)
	}
}

func TestFlagsErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-t", "bogus"},
		{"-r", "x"},
		{"-r", "1,2,3"},
		{"-instances", "0"},
		{"-reps", "0"},
		{"-l", "0s"},
		{"-peer", "netperf"},
		{"-m", "-1"},
		{"-batch", "0"},
		{"-send-batch", "-1"},
		{"-stream-sender", "udp"},
		{"extra"},
		{"-plot", "out.jpg"},
		{"-plot", "noextension"},
		{"-peer-time", "0s"},
		{"-peer", "sockperf", "-tls"},
		{"-peer", "sockperf", "-plot", "x.png"},
		{"-peer", "sockperf", "-H", "127.0.0.1:1"},
		{"-peer", "sockperf", "-t", "rr"},
		{"-H", "127.0.0.1:1", "-server-cpuprofile", "srv.prof"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// TestFlagsPeer: -peer takes the flags it uses; the suite's flags, which
// it would ignore (no plot written, no remote server used), are refused.
func TestFlagsPeer(t *testing.T) {
	args := []string{"-peer", "sockperf", "-peer-time", "2s", "-w", "10ms", "-json", "-heartbeat=false"}
	if _, err := parseFlags(args, io.Discard); err != nil {
		t.Errorf("%v: %v", args, err)
	}
	_, err := parseFlags([]string{"-peer", "sockperf", "-plot", "x.svg", "-instances", "3"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-instances, -plot") {
		t.Errorf("-peer with -plot and -instances: error %v, want both named", err)
	}
}

// The heartbeat keeps a timer pending until stopped, and leaves nothing
// behind (TestMain checks goroutines).
func TestHeartbeatStops(t *testing.T) {
	stop := startHeartbeat()
	stop()
}

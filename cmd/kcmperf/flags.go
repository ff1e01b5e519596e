package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// options are the client's command-line settings.
type options struct {
	tests      []string // rr, stream, shared; empty: the default suite
	req, resp  int      // rr payload sizes in bytes
	sizes      []int    // stream payload sizes
	instances  []int    // rr: independent instances; shared: sockets; stream: connections
	psocks     int      // shared: psocks of the one mux
	duration   time.Duration
	warmup     time.Duration
	reps       int
	host       string // remote "kcmperf server"; empty: start a child
	json       bool
	plot       string
	peer       string
	cpuprofile string // client CPU profile
	srvprofile string // server (child) CPU profile
	heartbeat  bool   // keep a timer pending in both processes
	peerTime   time.Duration
	batch      int    // stream: messages per kcm RecvBatch
	sendBatch  int    // stream: messages per kcm SendBatch; 0: sendBatchFor
	sender     string // stream: kcm or raw sender for the kcm receiver
	only       string // run one side only (profiling): raw or kcm
	tls        bool   // data connections over TLS 1.3
}

// defaultPort is where "kcmperf server" listens unless told otherwise.
const defaultPort = "12866"

// config is one measured configuration: both raw and kcm run it reps times.
type config struct {
	Test      string `json:"test"`
	Instances int    `json:"instances"`
	Psocks    int    `json:"psocks,omitempty"`
	ReqSize   int    `json:"req_size"`
	RespSize  int    `json:"resp_size"`
	Batch     int    `json:"batch,omitempty"`      // stream: messages per kcm RecvBatch
	SendBatch int    `json:"send_batch,omitempty"` // stream: messages per SendBatch of the kcm sender
	Sender    string `json:"sender,omitempty"`     // stream: what sends to the kcm receiver, kcm or raw
	TLS       bool   `json:"tls,omitempty"`        // every data connection is TLS 1.3
}

func (c config) String() string {
	if c.TLS {
		c.TLS = false
		return c.String() + " tls"
	}
	switch c.Test {
	case "stream":
		s := fmt.Sprintf("stream x%d %dB", c.Instances, c.ReqSize)
		if c.Sender == "raw" {
			s += " raw-sender"
		}
		return s
	case "shared":
		return fmt.Sprintf("shared %dx%d %d/%dB", c.Instances, c.Psocks, c.ReqSize, c.RespSize)
	}
	return fmt.Sprintf("rr x%d %d/%dB", c.Instances, c.ReqSize, c.RespSize)
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("kcmperf", flag.ContinueOnError)
	fs.SetOutput(out)
	tests := fs.String("t", "", "tests to run, comma-separated: rr, stream, shared (default: the standard suite)")
	rr := fs.String("r", "1,1", "rr request,response payload sizes in bytes (netperf -r)")
	sizes := fs.String("m", "64,4096", "stream message payload sizes in bytes, comma-separated")
	inst := fs.String("instances", "", "instances, comma-separated for a sweep (rr default 1; shared default 200 sockets; without -t, the rr rows: default 1,200)")
	fs.IntVar(&o.psocks, "psocks", 4, "shared: psocks (TCP connections) of the one mux")
	fs.DurationVar(&o.duration, "l", 300*time.Millisecond, "measured duration of each run")
	fs.DurationVar(&o.warmup, "w", 100*time.Millisecond, "warm-up before each measured run")
	fs.IntVar(&o.reps, "reps", 9, "repetitions of each raw/kcm pair; which side runs first alternates")
	fs.IntVar(&o.batch, "batch", defaultBatch, "stream: messages per kcm RecvBatch")
	fs.IntVar(&o.sendBatch, "send-batch", 0, "stream: messages per SendBatch of the kcm sender (default: as many as fill the raw sender's 64 KiB writes)")
	fs.StringVar(&o.sender, "stream-sender", "kcm", "stream: sender for the kcm receiver, kcm (SendBatch) or raw (the baseline's bufio.Writer)")
	fs.StringVar(&o.host, "H", "", "host[:port] of a remote 'kcmperf server' (port "+defaultPort+" when left out; default: start a server in a child process)")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON")
	fs.StringVar(&o.plot, "plot", "", "draw tps and CPU per transaction against instances into FILE.png or FILE.svg (the rr rows; the stream or shared rows when there are none)")
	fs.StringVar(&o.peer, "peer", "", "drive a real peer instead of the suite: sockperf")
	fs.DurationVar(&o.peerTime, "peer-time", 5*time.Second, "duration of each peer measurement")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write the client's CPU profile to this file")
	fs.StringVar(&o.only, "only", "", "run only one side, raw or kcm (for profiling; no ratios)")
	fs.StringVar(&o.srvprofile, "server-cpuprofile", "", "write the child server's CPU profile to this file")
	fs.BoolVar(&o.tls, "tls", false, "run every data connection, raw and kcm, over TLS 1.3 (the server makes a self-signed certificate)")
	fs.BoolVar(&o.heartbeat, "heartbeat", true, "keep a timer pending in client and child server, so raw and kcm runs see the same Go runtime idle behaviour (see docs/PERFORMANCE.md)")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: kcmperf [flags]\n       kcmperf server [-listen addr] [-heartbeat=false] [-cpuprofile file]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *tests != "" {
		for _, t := range strings.Split(*tests, ",") {
			switch t = strings.TrimSpace(t); t {
			case "rr", "stream", "shared":
				o.tests = append(o.tests, t)
			default:
				return nil, fmt.Errorf("unknown test %q (want rr, stream or shared)", t)
			}
		}
	}
	rs, err := parseInts(*rr)
	if err != nil || len(rs) < 1 || len(rs) > 2 {
		return nil, fmt.Errorf("-r wants req[,resp] sizes: %q", *rr)
	}
	o.req, o.resp = rs[0], rs[0]
	if len(rs) == 2 {
		o.resp = rs[1]
	}
	if o.sizes, err = parseInts(*sizes); err != nil || len(o.sizes) == 0 {
		return nil, fmt.Errorf("-m wants sizes: %q", *sizes)
	}
	if *inst != "" {
		if o.instances, err = parseInts(*inst); err != nil || len(o.instances) == 0 {
			return nil, fmt.Errorf("-instances wants counts: %q", *inst)
		}
		for _, n := range o.instances {
			if n < 1 {
				return nil, errors.New("-instances must be at least 1")
			}
		}
	}
	switch {
	case o.reps < 1:
		return nil, errors.New("-reps must be at least 1")
	case o.duration <= 0:
		return nil, errors.New("-l must be positive")
	case o.warmup < 0:
		return nil, errors.New("-w must not be negative")
	case o.psocks < 1:
		return nil, errors.New("-psocks must be at least 1")
	case o.batch < 1 || o.batch > maxBatch:
		return nil, fmt.Errorf("-batch must be in 1..%d", maxBatch)
	case o.sendBatch < 0 || o.sendBatch > maxBatch:
		return nil, fmt.Errorf("-send-batch must be in 1..%d (0: the default)", maxBatch)
	case o.sender != "kcm" && o.sender != "raw":
		return nil, fmt.Errorf("-stream-sender wants kcm or raw, got %q", o.sender)
	case o.only != "" && o.only != "raw" && o.only != "kcm":
		return nil, fmt.Errorf("-only wants raw or kcm, got %q", o.only)
	case o.peerTime <= 0:
		return nil, errors.New("-peer-time must be positive")
	case o.peer != "" && o.peer != "sockperf":
		return nil, fmt.Errorf("unknown peer %q (want sockperf)", o.peer)
	case o.peer != "" && o.tls:
		return nil, errors.New("-tls does not apply to -peer: sockperf speaks plain TCP")
	case o.host != "" && o.srvprofile != "":
		return nil, errors.New("-server-cpuprofile profiles the child server; with -H, run \"kcmperf server -cpuprofile FILE\" there")
	}
	if o.peer != "" {
		// -peer runs its own fixed comparison on loopback: flags of the
		// suite would be ignored without a word (-plot writing no file, -H
		// measuring a local server).
		var ignored []string
		fs.Visit(func(f *flag.Flag) {
			if !peerFlags[f.Name] {
				ignored = append(ignored, "-"+f.Name)
			}
		})
		if len(ignored) > 0 {
			return nil, fmt.Errorf("%s does not apply to -peer", strings.Join(ignored, ", "))
		}
	}
	if o.plot != "" {
		if _, err := plotFormat(o.plot); err != nil {
			return nil, err
		}
	}
	if o.host != "" {
		if _, _, err := net.SplitHostPort(o.host); err != nil {
			// A bare host, or a bracketed IPv6 address without a port.
			host := strings.TrimSuffix(strings.TrimPrefix(o.host, "["), "]")
			o.host = net.JoinHostPort(host, defaultPort)
		}
	}
	for _, n := range append([]int{o.req, o.resp}, o.sizes...) {
		if n < 0 || n > maxMessageSize-hdrLen {
			return nil, fmt.Errorf("size %d out of range", n)
		}
	}
	return o, nil
}

// peerFlags are the flags that apply to a -peer run.
var peerFlags = map[string]bool{"peer": true, "peer-time": true, "w": true, "json": true, "cpuprofile": true, "heartbeat": true}

// parseInts parses "1,10,200"; sizes may end in k or K (KiB).
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mul := 1
		if strings.HasSuffix(f, "k") || strings.HasSuffix(f, "K") {
			f, mul = f[:len(f)-1], 1024
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n*mul)
	}
	return out, nil
}

// configs expands the options into the list of configurations to measure.
func (o *options) configs() []config {
	cs := o.suiteConfigs()
	for i := range cs {
		cs[i].TLS = o.tls
	}
	return cs
}

// suiteConfigs is configs without the settings common to every row.
// streamConfig is the stream configuration of n instances of size-byte
// payloads.
func (o *options) streamConfig(n, size int) config {
	c := config{Test: "stream", Instances: n, ReqSize: size, RespSize: size, Batch: o.batch, SendBatch: o.sendBatch, Sender: o.sender}
	if c.SendBatch == 0 {
		c.SendBatch = sendBatchFor(size)
	}
	if c.Sender == "raw" {
		c.SendBatch = 0 // the raw sender has none
	}
	return c
}

func (o *options) suiteConfigs() []config {
	if len(o.tests) == 0 {
		// The README's main job: the RFC's two rr figures and two stream
		// sizes. -instances and -m, when given, replace them.
		inst := o.instances
		if inst == nil {
			inst = []int{1, 200}
		}
		var cs []config
		for _, n := range inst {
			cs = append(cs, config{Test: "rr", Instances: n, ReqSize: o.req, RespSize: o.resp})
		}
		for _, sz := range o.sizes {
			cs = append(cs, o.streamConfig(1, sz))
		}
		return cs
	}
	var cs []config
	for _, t := range o.tests {
		inst := o.instances
		switch t {
		case "rr":
			if inst == nil {
				inst = []int{1}
			}
			for _, n := range inst {
				cs = append(cs, config{Test: t, Instances: n, ReqSize: o.req, RespSize: o.resp})
			}
		case "stream":
			if inst == nil {
				inst = []int{1}
			}
			for _, n := range inst {
				for _, sz := range o.sizes {
					cs = append(cs, o.streamConfig(n, sz))
				}
			}
		case "shared":
			if inst == nil {
				inst = []int{200}
			}
			// Requests carry a 4-byte id so the raw baseline can route replies.
			req, resp := max(o.req, 4), max(o.resp, 4)
			for _, n := range inst {
				cs = append(cs, config{Test: t, Instances: n, Psocks: o.psocks, ReqSize: req, RespSize: resp})
			}
		}
	}
	return cs
}

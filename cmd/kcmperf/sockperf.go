package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
)

// sockperf's message header (packed): sequence number u64 @0, flags u16 @8,
// total message length u32 @10, all big-endian; 14 bytes at least. A sockperf
// server answers a message whose flags say "client" and "pong request", with
// the same bytes and the client flag cleared; it ignores warm-up messages.
const (
	sockperfHdrLen     = parser.SockperfHeaderSize
	sockperfFlagClient = 1
	sockperfFlagPong   = 2
)

// sockperfFraming finds sockperf messages in a stream: the parser package's
// built-in.
var sockperfFraming = parser.Sockperf()

// peerResult is one ping-pong client's figures against the sockperf server.
// Latencies are one-way (RTT/2), as sockperf reports them by default.
type peerResult struct {
	Client     string  `json:"client"`
	RoundTrips float64 `json:"round_trips_per_sec"`
	AvgUs      float64 `json:"avg_latency_us"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
}

// runSockperf starts an unmodified "sockperf server", runs sockperf's own
// ping-pong client against it, then a Go raw TCP client and a kcm client
// speaking sockperf's framing, and prints the three side by side.
//
// Without the sockperf binary it says so on stderr (and, with -json, in a
// JSON object with "skipped") and returns nil: a missing optional peer is
// not a failure.
func runSockperf(o *options, w, stderr io.Writer) error {
	bin, err := exec.LookPath("sockperf")
	if err != nil {
		const why = "sockperf not found in PATH; install Debian package sockperf to compare kcm with it"
		fmt.Fprintln(stderr, "kcmperf:", why)
		if o.json {
			return json.NewEncoder(w).Encode(map[string]any{"peer": "sockperf", "skipped": why})
		}
		return nil
	}
	addr, stop, err := startSockperfServer(bin)
	if err != nil {
		return err
	}
	defer stop()

	var results []peerResult
	native, err := sockperfPingPong(bin, addr, o.peerTime)
	if err != nil {
		return err
	}
	results = append(results, native)
	for _, c := range []struct {
		name string
		dial func(string) (pingPonger, error)
	}{{"Go raw TCP", dialRawPing}, {"kcm", dialKCMPing}} {
		p, err := c.dial(addr)
		if err != nil {
			return err
		}
		r, err := measurePing(p, o.warmup, o.peerTime)
		p.Close()
		if err != nil {
			return fmt.Errorf("%s against sockperf: %w", c.name, err)
		}
		r.Client = c.name
		results = append(results, r)
	}

	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"peer": "sockperf", "server": addr, "message_size": sockperfHdrLen, "results": results})
	}
	fmt.Fprintf(w, "sockperf server on %s, 14-byte ping-pong over TCP, %v per Go client (sockperf's own runs %s); latency one-way (RTT/2) as sockperf prints it\n", addr, o.peerTime, sockperfSeconds(o.peerTime)+"s")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "client\tround trips/s\tvs sockperf\tavg us\tp50 us\tp99 us\tp99.9 us\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.0f\t%.3f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Client, r.RoundTrips, r.RoundTrips/results[0].RoundTrips, r.AvgUs, r.P50us, r.P99us, r.P999us)
	}
	return tw.Flush()
}

// startSockperfServer starts the server on a free loopback port and waits
// until it accepts connections; stop kills it by its pid.
func startSockperfServer(bin string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "server", "--tcp", "-i", "127.0.0.1", "-p", port)
	dieWithParent(cmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		cmd.Process.Kill()
		<-exited
	}
	// Poll for the listening socket: sockperf says nothing machine-readable
	// when it is ready.
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, stop, nil
		}
		select {
		case <-exited:
			return "", nil, fmt.Errorf("sockperf server exited: %s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("sockperf server did not listen on %s: %s", addr, out.String())
		}
	}
}

var (
	ansiRE       = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	validRE      = regexp.MustCompile(`\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)`)
	avgRE        = regexp.MustCompile(`avg-latency=([0-9.]+)`)
	percentileRE = regexp.MustCompile(`percentile ([0-9.]+) =\s*([0-9.]+)`)
)

// sockperfPingPong runs sockperf's own client and parses its summary.
func sockperfPingPong(bin, addr string, d time.Duration) (peerResult, error) {
	host, port, _ := net.SplitHostPort(addr)
	secs := sockperfSeconds(d)
	cmd := exec.Command(bin, "ping-pong", "--tcp", "-i", host, "-p", port, "-t", secs, "-m", strconv.Itoa(sockperfHdrLen))
	dieWithParent(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return peerResult{}, fmt.Errorf("sockperf ping-pong: %v: %s", err, out)
	}
	return parseSockperf(out)
}

// sockperfSeconds is d as sockperf's -t takes it: whole seconds, at least 1.
func sockperfSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

func parseSockperf(out []byte) (peerResult, error) {
	s := ansiRE.ReplaceAllString(string(out), "")
	r := peerResult{Client: "sockperf ping-pong (C)"}
	m := validRE.FindStringSubmatch(s)
	if m == nil {
		return r, fmt.Errorf("sockperf output has no [Valid Duration] line: %s", s)
	}
	secs, _ := strconv.ParseFloat(m[1], 64)
	n, _ := strconv.ParseFloat(m[2], 64)
	if secs <= 0 {
		return r, errors.New("sockperf reported a zero run time")
	}
	r.RoundTrips = n / secs
	if m := avgRE.FindStringSubmatch(s); m != nil {
		r.AvgUs, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range percentileRE.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[1] {
		case "50.000":
			r.P50us = v
		case "99.000":
			r.P99us = v
		case "99.900":
			r.P999us = v
		}
	}
	return r, nil
}

// pingPonger does one sockperf round trip with sequence number seq.
type pingPonger interface {
	ping(seq uint64) error
	Close() error
}

func sockperfPing(seq uint64, b []byte) {
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint16(b[8:], sockperfFlagClient|sockperfFlagPong)
	binary.BigEndian.PutUint32(b[10:], uint32(len(b)))
}

// checkPong verifies that reply answers the ping with sequence number seq.
func checkPong(seq uint64, reply []byte) error {
	if len(reply) != sockperfHdrLen {
		return fmt.Errorf("reply of %d bytes", len(reply))
	}
	if got := binary.BigEndian.Uint64(reply); got != seq {
		return fmt.Errorf("reply to sequence %d, want %d", got, seq)
	}
	if binary.BigEndian.Uint16(reply[8:])&sockperfFlagClient != 0 {
		return errors.New("reply still marked as a client message")
	}
	return nil
}

type rawPing struct {
	c        net.Conn
	br       *bufio.Reader
	req, rep []byte
}

func dialRawPing(addr string) (pingPonger, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawPing{c: c, br: bufio.NewReader(c), req: make([]byte, sockperfHdrLen), rep: make([]byte, sockperfHdrLen)}, nil
}

func (p *rawPing) ping(seq uint64) error {
	sockperfPing(seq, p.req)
	if _, err := p.c.Write(p.req); err != nil {
		return err
	}
	if _, err := io.ReadFull(p.br, p.rep); err != nil {
		return err
	}
	return checkPong(seq, p.rep)
}

func (p *rawPing) Close() error { return p.c.Close() }

type kcmPing struct {
	m        *perfMux
	s        *kcm.Socket
	req, rep []byte
}

func dialKCMPing(addr string) (pingPonger, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := newPerfMux(kcm.Config{})
	if _, err := m.attach(c, sockperfFraming); err != nil {
		c.Close()
		m.Close()
		return nil, err
	}
	return &kcmPing{m: m, s: m.NewSocket(kcm.Datagram), req: make([]byte, sockperfHdrLen), rep: make([]byte, sockperfHdrLen+1)}, nil
}

func (p *kcmPing) ping(seq uint64) error {
	sockperfPing(seq, p.req)
	if err := p.s.Send(p.req); err != nil {
		return err
	}
	n, err := p.s.Recv(p.rep)
	if err != nil {
		return err
	}
	return checkPong(seq, p.rep[:n])
}

func (p *kcmPing) Close() error { return p.m.Close() }

// measurePing runs round trips for warmup, then measures for d.
func measurePing(p pingPonger, warmup, d time.Duration) (peerResult, error) {
	var seq uint64
	for end := time.Now().Add(warmup); time.Now().Before(end); {
		seq++
		if err := p.ping(seq); err != nil {
			return peerResult{}, err
		}
	}
	h := newHist()
	var n uint64
	t0 := time.Now()
	for end := t0.Add(d); ; n++ {
		start := time.Now()
		if !start.Before(end) {
			break
		}
		seq++
		if err := p.ping(seq); err != nil {
			return peerResult{}, err
		}
		h.RecordValue(int64(time.Since(start)) / 2) // one-way, as sockperf prints
	}
	el := time.Since(t0)
	us := func(q float64) float64 { return float64(h.ValueAtQuantile(q)) / 1e3 }
	return peerResult{RoundTrips: float64(n) / el.Seconds(), AvgUs: h.Mean() / 1e3, P50us: us(50), P99us: us(99), P999us: us(99.9)}, nil
}

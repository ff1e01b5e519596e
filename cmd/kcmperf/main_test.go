package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm/internal/testconn"
	"go.uber.org/goleak"
)

// TestMain turns the test binary into a kcmperf server when a test starts it
// as the child (startChild re-executes os.Executable()), into a client when
// a test starts it with clientEnv set, and checks that no goroutine
// outlives the tests otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "server" {
		os.Exit(serverMain(os.Args[2:], os.Stdout, os.Stderr))
	}
	if os.Getenv(clientEnv) == "1" {
		os.Exit(clientMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// tiny keeps the race-enabled runs short: what is checked is that every test
// produces sane rows, not the figures.
var tiny = []string{"-l", "60ms", "-w", "10ms", "-reps", "2"}

func runJSON(t *testing.T, args ...string) Report {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(append(args, tiny...), "-json")
	if code := clientMain(args, &out, &errb); code != 0 {
		t.Fatalf("kcmperf %v: exit %d: %s", args, code, errb.String())
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("JSON output does not decode: %v\n%s", err, out.String())
	}
	return rep
}

func checkSide(t *testing.T, r Row, name string, s Side, latency bool) {
	t.Helper()
	if s.TPS <= 0 || len(s.RepTPS) != 2 {
		t.Errorf("%s %s: tps %v over %d reps", r.config, name, s.TPS, len(s.RepTPS))
	}
	if cpuSupported && s.ClientCPUPerM <= 0 {
		t.Errorf("%s %s: client CPU per Mtx %v", r.config, name, s.ClientCPUPerM)
	}
	if latency {
		if !(s.P50us > 0 && s.P50us <= s.P99us && s.P99us <= s.P999us) {
			t.Errorf("%s %s: percentiles not ordered: %v %v %v", r.config, name, s.P50us, s.P99us, s.P999us)
		}
	} else if s.BytesPerSec <= 0 {
		t.Errorf("%s %s: no bytes/s", r.config, name)
	}
}

func checkRow(t *testing.T, r Row) {
	t.Helper()
	latency := r.Test != "stream"
	checkSide(t, r, "raw", r.Raw, latency)
	checkSide(t, r, "kcm", r.KCM, latency)
	if r.Ratio <= 0 || len(r.PairRatios) != 2 || r.CPURatio <= 0 {
		t.Errorf("%s: ratio %v pairs %v cpu ratio %v", r.config, r.Ratio, r.PairRatios, r.CPURatio)
	}
	want := r.KCM.TPS / r.Raw.TPS
	if r.Ratio < want/10 || r.Ratio > want*10 {
		t.Errorf("%s: ratio %v far from the medians' %v", r.config, r.Ratio, want)
	}
}

// TestEveryTestAgainstChild runs each test type against a child-process
// server, as the default run does, and checks the JSON rows.
func TestEveryTestAgainstChild(t *testing.T) {
	rep := runJSON(t, "-t", "rr,stream,shared", "-instances", "3", "-psocks", "2", "-r", "8,16", "-m", "64")
	if len(rep.Rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(rep.Rows))
	}
	for i, test := range []string{"rr", "stream", "shared"} {
		r := rep.Rows[i]
		if r.Test != test || r.Instances != 3 {
			t.Errorf("row %d is %s x%d, want %s x3", i, r.Test, r.Instances, test)
		}
		checkRow(t, r)
	}
	if rep.Rows[2].Psocks != 2 {
		t.Errorf("shared row: psocks %d", rep.Rows[2].Psocks)
	}
	if !strings.HasPrefix(rep.Server, "child process") || rep.Reps != 2 {
		t.Errorf("report header: server %q reps %d", rep.Server, rep.Reps)
	}
}

// TestTLSAgainstChild runs each test type with every data connection over
// TLS: the rows say so, and both sides produce sane figures.
func TestTLSAgainstChild(t *testing.T) {
	rep := runJSON(t, "-tls", "-t", "rr,stream,shared", "-instances", "2", "-psocks", "2", "-m", "4096")
	if len(rep.Rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if !r.TLS || !strings.HasSuffix(r.config.String(), " tls") {
			t.Errorf("row %s: TLS %v", r.config, r.TLS)
		}
		checkRow(t, r)
	}
}

// TestInProcessServer runs client and server in one process so the race
// detector sees both sides, plain and over TLS, and checks that closing the server leaves no
// goroutine behind (goleak).
func TestInProcessServer(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, extra := range [][]string{nil, {"-tls"}} {
		args := append([]string{"-t", "rr,stream,shared", "-instances", "2", "-psocks", "2", "-m", "4096", "-H", s.Addr()}, extra...)
		o, err := parseFlags(append(args, tiny...), os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		tg, err := dialTarget(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		rows, err := runSuite(tg, o, nil)
		tg.Close()
		if err != nil {
			t.Fatalf("%v: %v", extra, err)
		}
		for _, r := range rows {
			checkRow(t, r)
		}
	}
}

func TestTableOutput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := clientMain(append([]string{"-t", "rr"}, tiny...), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	s := out.String()
	for _, want := range []string{"kcm/raw", "cpu s/Mtx", "p99.9", "rr x1 1/1B", "raw", "kcm"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\r") {
		t.Errorf("progress line written to a non-terminal:\n%q", s)
	}
}

func TestServerQuit(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cc, err := dialControl(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.do("bogus"); err == nil {
		t.Error("unknown control command accepted")
	}
	if _, err := cc.do("start"); err != nil {
		t.Fatal(err)
	}
	if d, err := cc.stop(); err != nil || d < 0 {
		t.Fatalf("stop: %v %v", d, err)
	}
	if _, err := cc.do("quit"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Quit():
	case <-time.After(5 * time.Second):
		t.Fatal("quit did not close Quit()")
	}
}

// TestControlRefusesStrangers: a peer that is not a kcmperf server, whether
// it answers something else or nothing at all, ends dialControl with an
// error in bounded time instead of a hang.
func TestControlRefusesStrangers(t *testing.T) {
	answers := []string{"HTTP/1.1 400 Bad Request\r\n", ""}
	addr := fakeServer(t, func(i int, c net.Conn) {
		io.WriteString(c, answers[i%len(answers)])
		io.Copy(io.Discard, c) // until the client gives up
	})
	for _, answer := range answers {
		start := time.Now()
		cc, err := dialControlTimeout(addr, 300*time.Millisecond)
		if err == nil {
			cc.Close()
			t.Fatalf("answer %q: accepted as a kcmperf server", answer)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("answer %q: gave up after %v", answer, d)
		}
		if !strings.Contains(err.Error(), "kcmperf server") {
			t.Errorf("answer %q: error %q does not say what is wrong", answer, err)
		}
	}
}

// TestControlRefusesEcho: a peer that answers at once with something that
// cannot be a greeting (an echo server sends the hello back) is refused
// with what it said, without waiting for the control timeout.
func TestControlRefusesEcho(t *testing.T) {
	addr := fakeServer(t, func(_ int, c net.Conn) { io.Copy(c, c) })
	cc, err := dialControlTimeout(addr, time.Minute)
	if err == nil {
		cc.Close()
		t.Fatal("an echo server accepted as a kcmperf server")
	}
	if !strings.Contains(err.Error(), "it said") || !strings.Contains(err.Error(), helloMagic) {
		t.Errorf("error %q does not show what the peer said", err)
	}
}

// TestControlTimesOut: a server that stops answering mid-run (here: a
// control peer that greets and then goes silent) makes the command fail
// after the control timeout.
func TestControlTimesOut(t *testing.T) {
	addr := fakeServer(t, func(_ int, c net.Conn) {
		if _, err := readHello(c); err != nil {
			return
		}
		io.WriteString(c, greeting(true)+"\n")
		io.Copy(io.Discard, c)
	})
	cc, err := dialControlTimeout(addr, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !cc.heartbeat {
		t.Error("greeting's heartbeat=true not seen")
	}
	if _, err := cc.stop(); err == nil {
		t.Error("stop succeeded against a silent server")
	}
	cc.Close()
}

// fakeServer accepts loopback connections one at a time and runs handle on
// each (i counts them from 0), closing it after; a control peer that is not
// a kcmperf server. The listener closes, and the loop ends, with the test.
func fakeServer(t *testing.T, handle func(i int, c net.Conn)) string {
	t.Helper()
	i := 0 // Serve calls one at a time
	return testconn.Serve(t, func(c net.Conn) {
		handle(i, c)
		i++
		c.Close()
	})
}

// TestServerFlags: "kcmperf server" rejects stray arguments, -h is not an
// error, and the heartbeat it runs is what a client's greeting reports.
func TestServerFlags(t *testing.T) {
	if code := serverMain([]string{"-h"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("server -h: exit %d, want 0", code)
	}
	if code := serverMain([]string{"-listen", "127.0.0.1:0", "junk"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("server with a stray argument: exit %d, want 2", code)
	}
	for _, hb := range []bool{false, true} {
		s, err := startServer("127.0.0.1:0", hb)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := dialControl(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if cc.heartbeat != hb {
			t.Errorf("server heartbeat %v reported as %v", hb, cc.heartbeat)
		}
		cc.Close()
		s.Close()
	}
}

// TestReportHeartbeat: the report says whether each process ran the
// heartbeat; the child follows the client's -heartbeat.
func TestReportHeartbeat(t *testing.T) {
	for _, hb := range []bool{true, false} {
		rep := runJSON(t, "-t", "rr", "-heartbeat="+strconv.FormatBool(hb))
		if rep.Heartbeat != hb || rep.ServerHeartbeat != hb {
			t.Errorf("-heartbeat=%v: report says client %v, server %v", hb, rep.Heartbeat, rep.ServerHeartbeat)
		}
	}
}

// TestPlotFileCheckedFirst: an unwritable -plot path fails before any
// measurement, and a failed run leaves no plot file behind.
func TestPlotFileCheckedFirst(t *testing.T) {
	var out, errb bytes.Buffer
	bad := filepath.Join(t.TempDir(), "missing", "x.png")
	start := time.Now()
	if code := clientMain([]string{"-t", "rr", "-l", "10s", "-plot", bad}, &out, &errb); code == 0 {
		t.Fatal("unwritable -plot path accepted")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failed after %v: it measured first", d)
	}
	if out.Len() != 0 {
		t.Errorf("printed results before failing:\n%s", out.String())
	}
	path := filepath.Join(t.TempDir(), "y.png")
	if code := clientMain([]string{"-t", "rr", "-plot", path, "-H", "127.0.0.1:1"}, &out, &errb); code == 0 {
		t.Fatal("run against a closed port succeeded")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("failed run left %s behind (%v)", path, err)
	}
}

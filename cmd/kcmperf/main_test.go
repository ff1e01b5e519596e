package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain turns the test binary into a kcmperf server when a test starts it
// as the child (startChild re-executes os.Executable()), and checks that no
// goroutine outlives the tests otherwise.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "server" {
		os.Exit(serverMain(os.Args[2:], os.Stdout, os.Stderr))
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
	if !rep.Rows[2].Provisional || rep.Rows[2].Psocks != 2 {
		t.Errorf("shared row: provisional %v psocks %d", rep.Rows[2].Provisional, rep.Rows[2].Psocks)
	}
	if !strings.HasPrefix(rep.Server, "child process") || rep.Reps != 2 {
		t.Errorf("report header: server %q reps %d", rep.Server, rep.Reps)
	}
}

// TestInProcessServer runs client and server in one process so the race
// detector sees both sides, and checks that closing the server leaves no
// goroutine behind (goleak).
func TestInProcessServer(t *testing.T) {
	s, err := startServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, err := parseFlags(append([]string{"-t", "rr,stream,shared", "-instances", "2", "-psocks", "2", "-m", "4096", "-H", s.Addr()}, tiny...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := dialTarget(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	rows, err := runSuite(tg, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		checkRow(t, r)
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
	s, err := startServer("127.0.0.1:0")
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

package main

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"strings"
	"testing"
)

// A real sockperf 3.7 ping-pong summary, colour codes included.
const sockperfSample = "sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=90992; ReceivedMessages=90991\n" +
	"sockperf: ========= Printing statistics for Server No: 0\n" +
	"sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=47015; ReceivedMessages=47015\n" +
	"sockperf: \x1b[2;35m====> avg-latency=16.467 (std-dev=20.173)\x1b[0m\n" +
	"sockperf: ---> percentile 99.990 =  326.767\n" +
	"sockperf: ---> percentile 99.900 =  138.358\n" +
	"sockperf: ---> percentile 99.000 =   50.859\n" +
	"sockperf: ---> percentile 50.000 =    2.533\n"

func TestParseSockperf(t *testing.T) {
	r, err := parseSockperf([]byte(sockperfSample))
	if err != nil {
		t.Fatal(err)
	}
	if r.RoundTrips < 30332 || r.RoundTrips > 30333 {
		t.Errorf("round trips/s %v, want 47015/1.550", r.RoundTrips)
	}
	if r.AvgUs != 16.467 || r.P50us != 2.533 || r.P99us != 50.859 || r.P999us != 138.358 {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseSockperf([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestSockperfFraming(t *testing.T) {
	msg := make([]byte, 20)
	sockperfPing(7, msg)
	for n := range sockperfHdrLen {
		if got, err := sockperfFraming.Parse(msg[:n]); got != 0 || err != nil {
			t.Errorf("%d bytes: %d, %v; want 0, nil", n, got, err)
		}
	}
	if got, err := sockperfFraming.Parse(msg); got != 20 || err != nil {
		t.Errorf("whole message: %d, %v", got, err)
	}
	if f := binary.BigEndian.Uint16(msg[8:]); f != sockperfFlagClient|sockperfFlagPong {
		t.Errorf("flags %#x", f)
	}
	binary.BigEndian.PutUint32(msg[10:], 3)
	if _, err := sockperfFraming.Parse(msg); err == nil {
		t.Error("length below the header accepted")
	}
	reply := append([]byte(nil), msg[:sockperfHdrLen]...)
	if err := checkPong(7, reply); err == nil {
		t.Error("reply with the client flag accepted")
	}
	binary.BigEndian.PutUint16(reply[8:], sockperfFlagPong)
	if err := checkPong(7, reply); err != nil {
		t.Error(err)
	}
	if err := checkPong(8, reply); err == nil {
		t.Error("wrong sequence accepted")
	}
}

// TestSockperfPeer drives a real sockperf server with sockperf, raw Go and
// kcm, or checks the install hint when sockperf is missing.
func TestSockperfPeer(t *testing.T) {
	var out, errb bytes.Buffer
	code := clientMain([]string{"-peer", "sockperf", "-peer-time", "300ms", "-w", "50ms"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if _, err := exec.LookPath("sockperf"); err != nil {
		if !strings.Contains(errb.String(), "install Debian package sockperf") {
			t.Errorf("no install hint on stderr: %q", errb.String())
		}
		t.Skip("sockperf not installed: ", errb.String())
	}
	for _, want := range []string{"sockperf ping-pong (C)", "Go raw TCP", "kcm", "round trips/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

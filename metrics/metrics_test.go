package metrics_test

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
	"github.com/gokcm/kcm/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var framing = kcm.ParserFunc(func(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	return 4 + int(binary.BigEndian.Uint32(b)), nil
})

func frame(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	return testconn.Pair(t, "tcp")
}

// The collector reports a mux's counters after real traffic, under the
// kernel's names, and the failure of a psock in the psock aggregates.
func TestCollectorReportsMuxCounters(t *testing.T) {
	m := kcm.NewMux(kcm.Config{MaxMessageSize: 64})
	defer m.Close()
	c, peer := tcpPair(t)
	if _, err := m.Attach(c, framing); err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	s.Clone()
	for _, msg := range []string{"hello", "world!"} {
		if err := s.Send(frame(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(peer, make([]byte, 4+5+4+6)); err != nil {
		t.Fatal(err)
	}
	peer.Write(frame("ping"))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Recv(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}

	col := metrics.NewCollector()
	col.Add("client", m)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	want := `
# HELP kcm_rx_msgs_total Messages parsed from the mux's psocks.
# TYPE kcm_rx_msgs_total counter
kcm_rx_msgs_total{mux="client"} 1
# HELP kcm_tx_msgs_total Messages completely written to the mux's psocks.
# TYPE kcm_tx_msgs_total counter
kcm_tx_msgs_total{mux="client"} 2
# HELP kcm_tx_bytes_total Bytes of the messages written to the mux's psocks.
# TYPE kcm_tx_bytes_total counter
kcm_tx_bytes_total{mux="client"} 19
# HELP kcm_psocks Psocks attached to the mux.
# TYPE kcm_psocks gauge
kcm_psocks{mux="client"} 1
# HELP kcm_sockets Open sockets of the mux.
# TYPE kcm_sockets gauge
kcm_sockets{mux="client"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kcm_rx_msgs_total", "kcm_tx_msgs_total", "kcm_tx_bytes_total", "kcm_psocks", "kcm_sockets"); err != nil {
		t.Fatal(err)
	}

	// A message over the limit stops the psock: the aggregate keeps
	// counting it after it left.
	p := m.Psocks()[0] // before the write: it may fail and leave at once
	peer.Write(frame(strings.Repeat("x", 100)))
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("psock did not fail")
	}
	want = `
# HELP kcm_psock_msg_too_big_total Psocks aborted on a message over the size limit.
# TYPE kcm_psock_msg_too_big_total counter
kcm_psock_msg_too_big_total{mux="client"} 1
# HELP kcm_psocks Psocks attached to the mux.
# TYPE kcm_psocks gauge
kcm_psocks{mux="client"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kcm_psock_msg_too_big_total", "kcm_psocks"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(col); n != 22 {
		t.Fatalf("%d series for one mux, want 22", n)
	}
}

// Muxes are told apart by their label, and a removed one is no longer
// reported.
func TestCollectorAddRemove(t *testing.T) {
	a, b := kcm.NewMux(kcm.Config{}), kcm.NewMux(kcm.Config{})
	defer a.Close()
	defer b.Close()
	a.NewSocket(kcm.Datagram)
	col := metrics.NewCollector()
	col.Add("a", a)
	col.Add("b", b)
	if n := testutil.CollectAndCount(col, "kcm_sockets"); n != 2 {
		t.Fatalf("%d kcm_sockets series, want 2", n)
	}
	col.Remove("a")
	want := "# HELP kcm_sockets Open sockets of the mux.\n# TYPE kcm_sockets gauge\nkcm_sockets{mux=\"b\"} 0\n"
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "kcm_sockets"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(col)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
	"github.com/gokcm/kcm/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// Audit 20: the metrics collector.

// a20scrape gathers reg and returns every kcm series of mux name by its
// metric name, with its type.
func a20scrape(t *testing.T, reg *prometheus.Registry, name string) (map[string]float64, map[string]dto.MetricType) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	vals, types := map[string]float64{}, map[string]dto.MetricType{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "mux" {
				t.Fatalf("%s: labels %v, want only mux", mf.GetName(), m.GetLabel())
			}
			if m.GetLabel()[0].GetValue() != name {
				continue
			}
			types[mf.GetName()] = mf.GetType()
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				vals[mf.GetName()] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				vals[mf.GetName()] = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: type %v", mf.GetName(), mf.GetType())
			}
		}
	}
	return vals, types
}

// a20want maps each exported series to the Mux.Stats field it must equal
// (spec section 5: the kernel's names).
func a20want(st kcm.MuxStats) map[string]uint64 {
	return map[string]uint64{
		"kcm_rx_msgs_total":             st.RxMsgs,
		"kcm_rx_bytes_total":            st.RxBytes,
		"kcm_tx_msgs_total":             st.TxMsgs,
		"kcm_tx_bytes_total":            st.TxBytes,
		"kcm_tx_retries_total":          st.TxRetries,
		"kcm_psock_attach_total":        st.PsockAttach,
		"kcm_psock_unattach_total":      st.PsockUnattach,
		"kcm_psock_unattach_rsvd_total": st.PsockUnattachRsvd,
		"kcm_rx_ready_drops_total":      st.RxReadyDrops,
		"kcm_psock_reserved_total":      st.Psocks.Reserved,
		"kcm_psock_unreserved_total":    st.Psocks.Unreserved,
		"kcm_psock_tx_aborts_total":     st.Psocks.TxAborts,
		"kcm_psock_need_more_hdr_total": st.Psocks.NeedMoreHdr,
		"kcm_psock_msg_too_big_total":   st.Psocks.MsgTooBig,
		"kcm_psock_msg_timeouts_total":  st.Psocks.MsgTimeouts,
		"kcm_psock_bad_hdr_len_total":   st.Psocks.BadHdrLen,
		"kcm_psock_interrupted_total":   st.Psocks.Interrupted,
		"kcm_psock_unrecov_intr_total":  st.Psocks.UnrecovIntr,
	}
}

// Every counter the collector exports is a counter, named after the
// kernel's counter, and equals its Mux.Stats field on a quiet mux that
// has seen traffic both ways, a psock that failed (msg_too_big), one
// that was unattached, and a split write; the gauges are
// gauges and equal Sockets, Psocks and Queued.
func TestAudit20CollectorSeriesMatchMuxStats(t *testing.T) {
	m := kcm.NewMux(kcm.Config{MaxMessageSize: 64})
	defer m.Close()
	s := m.NewSocket(kcm.Datagram)
	s.Clone()

	c1, peer1 := tcpPair(t)
	p1, err := m.Attach(c1, framing)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"a", "bb", "ccc"} {
		if err := s.Send(frame(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := readN(peer1, 4+1+4+2+4+3); err != nil {
		t.Fatal(err)
	}
	// A message split over two writes.
	f := frame("hello")
	peer1.Write(f[:2])
	got := make(chan error, 1)
	go func() {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := s.Recv(make([]byte, 64))
		got <- err
	}()
	peer1.Write(f[2:])
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// An unattached psock, and one that fails on a message too big.
	if _, err := p1.Unattach(); err != nil {
		t.Fatal(err)
	}
	c2, peer2 := tcpPair(t)
	p2, err := m.Attach(c2, framing)
	if err != nil {
		t.Fatal(err)
	}
	peer2.Write(frame(strings.Repeat("x", 100)))
	select {
	case <-p2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("psock did not fail")
	}
	c3, _ := tcpPair(t)
	if _, err := m.Attach(c3, framing); err != nil {
		t.Fatal(err)
	}

	col := metrics.NewCollector()
	col.Add("m", m)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	vals, types := a20scrape(t, reg, "m")
	st := m.Stats()
	for name, v := range a20want(st) {
		if types[name] != dto.MetricType_COUNTER {
			t.Errorf("%s: type %v, want counter", name, types[name])
		}
		if vals[name] != float64(v) {
			t.Errorf("%s = %v, Mux.Stats says %d", name, vals[name], v)
		}
	}
	if st.PsockAttach != 3 || st.PsockUnattach != 1 || st.Psocks.MsgTooBig != 1 || st.RxMsgs != 1 || st.TxMsgs != 3 {
		t.Errorf("stats %+v: the scenario did not happen as meant", st)
	}
	recvQ, sendQ := m.Queued()
	gauges := map[string]int{
		"kcm_sockets": len(m.Sockets()), "kcm_psocks": len(m.Psocks()),
		"kcm_recv_queued_bytes": recvQ, "kcm_send_queued_bytes": sendQ,
	}
	for name, v := range gauges {
		if types[name] != dto.MetricType_GAUGE {
			t.Errorf("%s: type %v, want gauge", name, types[name])
		}
		if vals[name] != float64(v) {
			t.Errorf("%s = %v, want %d", name, vals[name], v)
		}
	}
	if len(vals) != len(gauges)+len(a20want(st)) {
		t.Errorf("%d series, want %d", len(vals), len(gauges)+len(a20want(st)))
	}
}

func readN(c net.Conn, n int) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}

// Collector doc: "It is safe for concurrent use"; Add: "A closed mux
// keeps reporting its final counters". Scrapes run while a ConnSet
// churns connections (each peer sends messages and hangs up), sockets
// send and receive, and the mux closes: every counter only grows from
// one scrape to the next, nothing races, and after the close the series
// are Mux.Stats' final values with no socket, psock or queued byte left.
func TestAudit20CollectorScrapesDuringChurnAndClose(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	const perConn = 5
	addr := testconn.Serve(t, func(c net.Conn) {
		for range perConn {
			c.Write(frame("from peer"))
		}
		c.Close()
	})
	var d net.Dialer
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size:       2,
		Dial:       func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		Parser:     framing,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	col := metrics.NewCollector()
	col.Add("churn", m)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 2 { // scrapers
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]float64{}
			for {
				mfs, err := reg.Gather()
				if err != nil {
					errs <- err.Error()
					return
				}
				for _, mf := range mfs {
					if mf.GetType() != dto.MetricType_COUNTER {
						continue
					}
					v := mf.GetMetric()[0].GetCounter().GetValue()
					if v < last[mf.GetName()] {
						errs <- mf.GetName() + " went down"
						return
					}
					last[mf.GetName()] = v
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	s := m.NewSocket(kcm.Datagram)
	wg.Add(1)
	go func() { // a sender: its messages go to whichever psock is there
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
			s.Send(frame("to peer"))
		}
	}()
	// Receive messages from several generations of connections.
	buf := make([]byte, 64)
	for range 8 * perConn {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Recv(buf); err != nil {
			t.Fatalf("recv: %v", err)
		}
	}
	m.Close() // while the scrapers and the sender run
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	cs.Close()

	vals, _ := a20scrape(t, reg, "churn")
	st := m.Stats()
	for name, v := range a20want(st) {
		if vals[name] != float64(v) {
			t.Errorf("after Close: %s = %v, Mux.Stats says %d", name, vals[name], v)
		}
	}
	if st.PsockAttach < 4 || st.RxMsgs < 8*perConn {
		t.Errorf("stats %+v: too little churn", st)
	}
	for _, g := range []string{"kcm_sockets", "kcm_psocks", "kcm_recv_queued_bytes", "kcm_send_queued_bytes"} {
		if vals[g] != 0 {
			t.Errorf("after Close: %s = %v, want 0", g, vals[g])
		}
	}
}

// A mux name that is not valid UTF-8 (a mux named after a peer's address
// or a client's id, as the bytes came) is not a valid label value. Collect
// built its series with prometheus.MustNewConstMetric, which panicked
// midway through the muxes; the registry recovers that into a gather
// error, so a promhttp handler with its default options answered every
// scrape with 500, losing every series of the registry. The name's bad
// bytes are now replaced, and the series is reported.
func TestAudit20CollectorInvalidNameDoesNotPanic(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	col := metrics.NewCollector()
	col.Add("client-\xff", m)
	ch := make(chan prometheus.Metric, 64)
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover(); close(ch) }()
		col.Collect(ch)
	}()
	for range ch {
	}
	if r := <-panicked; r != nil {
		t.Fatalf("Collect panicked: %v", r)
	}
	want := "# HELP kcm_sockets Open sockets of the mux.\n# TYPE kcm_sockets gauge\nkcm_sockets{mux=\"client-\uFFFD\"} 0\n"
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "kcm_sockets"); err != nil {
		t.Fatal(err)
	}
	col.Remove("client-\xff")
	if n := testutil.CollectAndCount(col); n != 0 {
		t.Fatalf("%d series after Remove, want 0", n)
	}
}

// After churn a mux's sockets are far from index order (those made after
// others left take the low indexes and sit at the end of its list); Collect
// still reports them all. (Mux.Sockets and Mux.Psocks sorted such lists
// with an insertion sort under the mux's lock, quadratic: a scrape of
// 16000 sockets held the data path up for 170 ms. The sort's cost is
// checked in TestSortByIndexIsNotQuadratic.)
func TestAudit20CollectAfterChurn(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	const n = 16000
	ss := make([]*kcm.Socket, n)
	for i := range ss {
		ss[i] = m.NewSocket(kcm.Datagram)
	}
	for _, s := range ss[:n/2] {
		s.Close()
	}
	for range n / 2 {
		m.NewSocket(kcm.Datagram) // takes a low index, goes last in the list
	}
	col := metrics.NewCollector()
	col.Add("m", m)
	want := fmt.Sprintf("# HELP kcm_sockets Open sockets of the mux.\n# TYPE kcm_sockets gauge\nkcm_sockets{mux=\"m\"} %d\n", n)
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), "kcm_sockets"); err != nil {
		t.Fatal(err)
	}
}

package metrics

import (
	"strings"
	"sync"

	"github.com/gokcm/kcm"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector for a set of named muxes. Its zero
// value is not usable; call NewCollector. It is safe for concurrent use.
type Collector struct {
	mu    sync.Mutex
	muxes map[string]*kcm.Mux
}

// NewCollector returns a Collector with no mux.
func NewCollector() *Collector {
	return &Collector{muxes: make(map[string]*kcm.Mux)}
}

// Add makes the collector report m with the label mux=name, replacing a mux
// added before under that name. A closed mux keeps reporting its final
// counters until it is removed.
//
// A name that is not valid UTF-8 (a peer's bytes, say) cannot be a label
// value: its invalid bytes are replaced with U+FFFD, so that one bad name
// does not fail every scrape of the registry.
func (c *Collector) Add(name string, m *kcm.Mux) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.muxes[strings.ToValidUTF8(name, "\uFFFD")] = m
}

// Remove stops reporting the mux named name.
func (c *Collector) Remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.muxes, strings.ToValidUTF8(name, "\uFFFD"))
}

// metric is one exported series: its description and how to read it.
type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *snapshot) float64
}

// snapshot is what one scrape reads from a mux.
type snapshot struct {
	st              kcm.MuxStats
	sockets, psocks int
	recvQ, sendQ    int
}

func counter(name, help string, v func(*snapshot) uint64) metric {
	return metric{
		desc:  prometheus.NewDesc("kcm_"+name+"_total", help, []string{"mux"}, nil),
		kind:  prometheus.CounterValue,
		value: func(s *snapshot) float64 { return float64(v(s)) },
	}
}

func gauge(name, help string, v func(*snapshot) int) metric {
	return metric{
		desc:  prometheus.NewDesc("kcm_"+name, help, []string{"mux"}, nil),
		kind:  prometheus.GaugeValue,
		value: func(s *snapshot) float64 { return float64(v(s)) },
	}
}

// metrics lists the exported series, named after the kernel's counters
// (spec section 5).
var metrics = []metric{
	counter("rx_msgs", "Messages parsed from the mux's psocks.", func(s *snapshot) uint64 { return s.st.RxMsgs }),
	counter("rx_bytes", "Bytes of the messages parsed from the mux's psocks.", func(s *snapshot) uint64 { return s.st.RxBytes }),
	counter("tx_msgs", "Messages completely written to the mux's psocks.", func(s *snapshot) uint64 { return s.st.TxMsgs }),
	counter("tx_bytes", "Bytes of the messages written to the mux's psocks.", func(s *snapshot) uint64 { return s.st.TxBytes }),
	counter("tx_retries", "Messages restarted from their first byte on another psock.", func(s *snapshot) uint64 { return s.st.TxRetries }),
	counter("psock_attach", "Psocks attached.", func(s *snapshot) uint64 { return s.st.PsockAttach }),
	counter("psock_unattach", "Psocks unattached.", func(s *snapshot) uint64 { return s.st.PsockUnattach }),
	counter("psock_unattach_rsvd", "Psocks unattached in the middle of a message.", func(s *snapshot) uint64 { return s.st.PsockUnattachRsvd }),
	counter("rx_ready_drops", "Parsed messages dropped because no socket could ever take them.", func(s *snapshot) uint64 { return s.st.RxReadyDrops }),
	counter("psock_reserved", "Times a socket reserved a psock for transmit.", func(s *snapshot) uint64 { return s.st.Psocks.Reserved }),
	counter("psock_unreserved", "Times a socket released its transmit reservation.", func(s *snapshot) uint64 { return s.st.Psocks.Unreserved }),
	counter("psock_tx_aborts", "Messages whose transmit a psock failure aborted.", func(s *snapshot) uint64 { return s.st.Psocks.TxAborts }),
	counter("psock_need_more_hdr", "Parser calls that asked for more bytes.", func(s *snapshot) uint64 { return s.st.Psocks.NeedMoreHdr }),
	counter("psock_msg_too_big", "Psocks aborted on a message over the size limit.", func(s *snapshot) uint64 { return s.st.Psocks.MsgTooBig }),
	counter("psock_msg_timeouts", "Psocks aborted on the message assembly deadline.", func(s *snapshot) uint64 { return s.st.Psocks.MsgTimeouts }),
	counter("psock_bad_hdr_len", "Psocks aborted on a negative or contradictory length from the parser.", func(s *snapshot) uint64 { return s.st.Psocks.BadHdrLen }),
	counter("psock_interrupted", "Parser errors on the first look at a message.", func(s *snapshot) uint64 { return s.st.Psocks.Interrupted }),
	counter("psock_unrecov_intr", "Parser errors after part of a message was buffered.", func(s *snapshot) uint64 { return s.st.Psocks.UnrecovIntr }),
	gauge("sockets", "Open sockets of the mux.", func(s *snapshot) int { return s.sockets }),
	gauge("psocks", "Psocks attached to the mux.", func(s *snapshot) int { return s.psocks }),
	gauge("recv_queued_bytes", "Bytes of parsed messages no receive has taken yet.", func(s *snapshot) int { return s.recvQ }),
	gauge("send_queued_bytes", "Bytes of messages the mux copied from senders and has not written yet.", func(s *snapshot) int { return s.sendQ }),
}

// Describe sends the descriptions of every series the collector reports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range metrics {
		ch <- m.desc
	}
}

// Collect reads every mux's statistics and sends its series.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	named := make(map[string]*kcm.Mux, len(c.muxes))
	for name, m := range c.muxes {
		named[name] = m
	}
	c.mu.Unlock()
	for name, m := range named {
		s := snapshot{st: m.Stats(), sockets: len(m.Sockets()), psocks: len(m.Psocks())}
		s.recvQ, s.sendQ = m.Queued()
		for _, x := range metrics {
			ch <- prometheus.MustNewConstMetric(x.desc, x.kind, x.value(&s), name)
		}
	}
}

package kcm

import (
	"bufio"
	"fmt"
	"io"
)

// WriteProc writes the mux's state in the layout of the kernel's
// /proc/net/kcm: a header, a mux line, then one line per socket and per
// psock with counters, queue sizes and status flags.
func (m *Mux) WriteProc(w io.Writer) error {
	return WriteProc(w, m)
}

// WriteProc writes the state of several muxes in the layout of
// /proc/net/kcm, as the kernel lists every mux of a network namespace.
func WriteProc(w io.Writer, muxes ...*Mux) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "*** KCM statistics (%d MUX) ****\n", len(muxes))
	fmt.Fprintf(bw, "%-14s %-10s %-16s %-10s %-16s %-8s %-8s %-8s %-8s %s\n",
		"Object", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Recv-Q", "Rmem", "Send-Q", "Smem", "Status")
	for _, m := range muxes {
		m.writeProcMux(bw)
	}
	return bw.Flush()
}

func (m *Mux) writeProcMux(w io.Writer) {
	st := m.Stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintf(w, "%-6s%-8s %-10d %-16d %-10d %-16d %-8s %-8s %-8s %-8s KCMs: %d, Psocks %d\n",
		"mux", "", st.RxMsgs, st.RxBytes, st.TxMsgs, st.TxBytes, "-", "-", "-", "-",
		len(m.sockets), len(m.psocks))
	socks := append([]*Socket(nil), m.sockets...)
	sortByIndex(socks, func(s *Socket) int { return s.index })
	for _, s := range socks {
		m.writeProcSocketLocked(w, s)
	}
	psocks := append([]*Psock(nil), m.psocks...)
	sortByIndex(psocks, func(p *Psock) int { return p.index })
	for _, p := range psocks {
		m.writeProcPsockLocked(w, p, socks)
	}
}

func (m *Mux) writeProcSocketLocked(w io.Writer, s *Socket) {
	st := s.statsLocked()
	recvQ, rmem := len(s.kept), 0
	for _, msg := range s.kept {
		rmem += len(msg.b)
	}
	if s.aff != nil {
		recvQ += s.aff.own.len()
		rmem += s.aff.own.bytes
	}
	waiting, smem := queuedBy(m.backlog.q, s)
	sendQ := waiting
	for _, p := range m.psocks {
		p.tx.mu.Lock()
		n, b := queuedBy(p.tx.q, s)
		in, inb := queuedBy(p.tx.inflight, s)
		p.tx.mu.Unlock()
		sendQ, smem = sendQ+n+in, smem+b+inb
	}
	fmt.Fprintf(w, "   kcm-%-7d %-10d %-16d %-10d %-16d %-8d %-8d %-8d %-8d ",
		s.index, st.RxMsgs, st.RxBytes, st.TxMsgs, st.TxBytes, recvQ, rmem, sendQ, smem)
	if p := s.txp.Load(); p != nil {
		fmt.Fprintf(w, "Psck-%d ", p.index)
	}
	if waiting > 0 {
		// The kernel's tx_wait: the socket's messages wait for a psock.
		io.WriteString(w, "TxWait ")
	}
	for wt := m.waiters.head; wt != nil; wt = wt.next {
		if wt.s == s {
			io.WriteString(w, "RxWait ")
			break
		}
	}
	if s.disabled {
		io.WriteString(w, "RxDisabled ")
	}
	io.WriteString(w, "\n")
}

func (m *Mux) writeProcPsockLocked(w io.Writer, p *Psock, socks []*Socket) {
	st := p.statsLocked()
	rmem := "-"
	if p.rx != rxLed && p.rx != rxBg {
		rmem = fmt.Sprint(p.sp.buffered())
	}
	p.tx.mu.Lock()
	sendQ, smem, txStop := len(p.tx.q), p.tx.load.Load(), p.tx.stopped.Load()
	p.tx.mu.Unlock()
	fmt.Fprintf(w, "   psock-%-5d %-10d %-16d %-10d %-16d %-8d %-8s %-8d %-8d ",
		p.index, st.RxMsgs, st.RxBytes, st.TxMsgs, st.TxBytes, 0, rmem, sendQ, smem)
	// The kernel's done: unattached, still listed while its transmit
	// side stops.
	if p.gone || p.unattaching {
		io.WriteString(w, "Done ")
	}
	if txStop {
		io.WriteString(w, "TxStop ")
	}
	if p.rx == rxStopped {
		io.WriteString(w, "RxStop ")
	}
	for _, s := range socks {
		if s.txp.Load() == p {
			fmt.Fprintf(w, "Rsvd-%d ", s.index)
			break
		}
	}
	switch p.rx {
	case rxPaused:
		io.WriteString(w, "RxPause RdyRx ")
	case rxLed:
		if p.leader != nil {
			fmt.Fprintf(w, "RxLed-%d ", p.leader.index)
		}
	case rxBg:
		io.WriteString(w, "RxBg ")
	}
	io.WriteString(w, "\n")
}

// WriteProcStats writes the mux's counters in the layout of the kernel's
// /proc/net/kcm_stats: a MUX table and a Psock table aggregating every
// psock the mux had. Unlike the kernel, the Unattach and UnattchRsvd
// columns hold their own values, and TX-Retries and RX-Aborts are counted.
func (m *Mux) WriteProcStats(w io.Writer) error {
	st := m.Stats()
	ps := st.Psocks
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%-8s %-10s %-16s %-10s %-16s %-10s %-10s %-10s %-10s %-10s\n",
		"MUX", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "TX-Retries", "Attach", "Unattach", "UnattchRsvd", "RX-RdyDrops")
	fmt.Fprintf(bw, "%-8s %-10d %-16d %-10d %-16d %-10d %-10d %-10d %-10d %-10d\n",
		"", st.RxMsgs, st.RxBytes, st.TxMsgs, st.TxBytes, st.TxRetries,
		st.PsockAttach, st.PsockUnattach, st.PsockUnattachRsvd, st.RxReadyDrops)
	fmt.Fprintf(bw, "%-8s %-10s %-16s %-10s %-16s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-10s %-10s\n",
		"Psock", "RX-Msgs", "RX-Bytes", "TX-Msgs", "TX-Bytes", "Reserved", "Unreserved",
		"RX-Aborts", "RX-MemFail", "RX-NeedMor", "RX-BadLen", "RX-TooBig", "RX-Timeout", "TX-Aborts")
	fmt.Fprintf(bw, "%-8s %-10d %-16d %-10d %-16d %-10d %-10d %-10d %-10d %-10d %-10d %-10d %-10d %-10d\n",
		"", ps.RxMsgs, ps.RxBytes, ps.TxMsgs, ps.TxBytes, ps.Reserved, ps.Unreserved,
		ps.RxAborts(), ps.MemFail, ps.NeedMoreHdr, ps.BadHdrLen, ps.MsgTooBig, ps.MsgTimeouts, ps.TxAborts)
	return bw.Flush()
}

// RxAborts returns how many times receive was aborted, for any reason.
func (s PsockStats) RxAborts() uint64 {
	return s.MsgTooBig + s.MsgTimeouts + s.BadHdrLen + s.Interrupted + s.UnrecovIntr
}

// queuedBy counts the messages of q that s sent, and their bytes: a
// socket's Send-Q and Smem are its messages not yet written whole, in the
// mux's backlog, queued on a psock or in a write of its queue.
func queuedBy(q []txEntry, s *Socket) (msgs, bytes int) {
	for i := range q {
		if q[i].s == s {
			msgs++
			bytes += q[i].size()
		}
	}
	return msgs, bytes
}

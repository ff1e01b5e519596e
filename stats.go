package kcm

import "sync/atomic"

// MuxStats are a mux's counters, named after the kernel's kcm_mux_stats.
// Message and byte counts are those of every psock the mux ever had.
type MuxStats struct {
	RxMsgs            uint64 // messages parsed from psocks
	RxBytes           uint64 // bytes of those messages
	TxMsgs            uint64 // messages completely written to psocks
	TxBytes           uint64 // bytes of those messages
	TxRetries         uint64 // messages restarted on another psock after a failure
	PsockAttach       uint64 // psocks attached
	PsockUnattach     uint64 // psocks unattached
	PsockUnattachRsvd uint64 // psocks unattached in the middle of a transmitted message
	RxReadyDrops      uint64 // parsed messages dropped because no socket remained
	// Psocks sums the counters of every psock the mux ever had, attached
	// or gone (the kernel's aggregated psock statistics).
	Psocks PsockStats
}

// PsockStats are a psock's counters, named after the kernel's
// kcm_psock_stats and strp_stats.
type PsockStats struct {
	RxMsgs      uint64 // messages parsed
	RxBytes     uint64 // bytes of those messages
	TxMsgs      uint64 // messages completely written
	TxBytes     uint64 // bytes of those messages
	Reserved    uint64 // times a socket reserved the psock for transmit
	Unreserved  uint64 // times a socket released its reservation
	TxAborts    uint64 // messages of a failed write (restarted elsewhere), and SendTo messages lost with the psock
	NeedMoreHdr uint64 // parser calls that asked for more bytes
	MsgTooBig   uint64 // aborts on a message over the size limit
	MsgTimeouts uint64 // aborts on the assembly deadline
	BadHdrLen   uint64 // aborts on a negative or contradictory length from the parser
	Interrupted uint64 // parser errors on the first look at a message
	UnrecovIntr uint64 // parser errors after part of the message was buffered
	MemFail     uint64 // buffer allocation failures (always 0 in Go)
}

// SocketStats are a socket's counters, named after the kernel's kcm_stats.
type SocketStats struct {
	RxMsgs  uint64 // messages received by the application
	RxBytes uint64 // bytes copied (or lent) to the application
	TxMsgs  uint64 // messages sent by the application
	TxBytes uint64 // bytes of those messages
}

// psockCounters are the psock's rare-event counters, updated by whichever
// goroutine owns the psock's receive or transmit side at the time and read
// by Stats from anywhere. The per-message counters live elsewhere so the
// data path needs no atomic operation for them: rx ones under mux.mu, tx
// ones under the psock's tx.mu.
type psockCounters struct {
	reserved, unreserved, txAborts, needMoreHdr atomic.Uint64
	msgTooBig, msgTimeouts, badHdrLen           atomic.Uint64
	interrupted, unrecovIntr, memFail           atomic.Uint64
}

// msgCount counts messages and their bytes.
type msgCount struct{ msgs, bytes uint64 }

func (c *msgCount) add(n, bytes int) {
	c.msgs += uint64(n)
	c.bytes += uint64(bytes)
}

func (c *psockCounters) snapshot() PsockStats {
	return PsockStats{
		Reserved: c.reserved.Load(), Unreserved: c.unreserved.Load(),
		TxAborts: c.txAborts.Load(), NeedMoreHdr: c.needMoreHdr.Load(),
		MsgTooBig: c.msgTooBig.Load(), MsgTimeouts: c.msgTimeouts.Load(),
		BadHdrLen: c.badHdrLen.Load(), Interrupted: c.interrupted.Load(),
		UnrecovIntr: c.unrecovIntr.Load(), MemFail: c.memFail.Load(),
	}
}

func (s *PsockStats) add(o PsockStats) {
	s.RxMsgs += o.RxMsgs
	s.RxBytes += o.RxBytes
	s.TxMsgs += o.TxMsgs
	s.TxBytes += o.TxBytes
	s.Reserved += o.Reserved
	s.Unreserved += o.Unreserved
	s.TxAborts += o.TxAborts
	s.NeedMoreHdr += o.NeedMoreHdr
	s.MsgTooBig += o.MsgTooBig
	s.MsgTimeouts += o.MsgTimeouts
	s.BadHdrLen += o.BadHdrLen
	s.Interrupted += o.Interrupted
	s.UnrecovIntr += o.UnrecovIntr
	s.MemFail += o.MemFail
}

// socketCounters: the receive counters are guarded by mux.mu, the transmit
// ones are atomics (concurrent senders share a socket without a lock).
type socketCounters struct {
	rx              msgCount
	txMsgs, txBytes atomic.Uint64
}

type muxCounters struct {
	txRetries, psockAttach, psockUnattach, psockUnattachRsvd, rxReadyDrops atomic.Uint64
}

// countReserved counts a socket's reservation of p, on p and in the
// mux's totals.
func (m *Mux) countReserved(p *Psock) {
	p.stats.reserved.Add(1)
	m.cold.reserved.Add(1)
}

// countUnreserved counts the release of a socket's reservation of p.
func (m *Mux) countUnreserved(p *Psock) {
	p.stats.unreserved.Add(1)
	m.cold.unreserved.Add(1)
}

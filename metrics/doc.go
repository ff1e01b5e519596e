// Package metrics exports the counters of kcm muxes to Prometheus.
//
// It is the only part of kcm that depends on the Prometheus client: the
// core package keeps its statistics in plain structs (kcm.MuxStats,
// kcm.PsockStats) and its /proc/net/kcm-style dumps, and this package reads
// them when Prometheus scrapes. A Collector names each mux with a label and
// reports, per mux, the kernel's counters under their kernel names (mux
// counters, and the psock counters summed over every psock the mux has had,
// departed ones included), how many sockets and psocks it has now, and the
// bytes it holds for receivers and from senders (Mux.Queued).
// Psocks and sockets get no series of their own: a server may attach tens
// of thousands of connections, and their indexes are reused.
package metrics

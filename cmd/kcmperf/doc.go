// Command kcmperf measures kcm against raw TCP on the same machine, in the
// same run, in the spirit of netperf TCP_RR and the RFC's kcmperf and
// super_kcmperf.
//
// With no arguments it starts its own server in a child process (so that
// client and server do not share one Go runtime and its scheduler), runs the
// default suite on loopback for about 30 seconds and prints a table:
//
//	go run ./cmd/kcmperf
//
// Every configuration is measured as interleaved pairs whose order
// alternates (raw, kcm, kcm, raw, raw, kcm, ...), because the second run of
// a pair tends to be the faster one, and reported as medians; the kcm/raw
// ratio is the median of the per-pair ratios, because on small shared
// machines absolute figures swing far more between runs than between two
// adjacent runs. By default there are 9 pairs of 300 ms runs (-reps, -l)
// rather than a few long ones: a pair's ratio swings with the state a
// run happens to start in (which CPUs the threads land on, how the VM
// wakes them), not with its length, so more pairs give a steadier median
// in the same time.
//
// Tests:
//
//	-t rr       request/response, one outstanding per instance (netperf TCP_RR);
//	            -instances N runs N independent muxes of one socket and one
//	            psock against N raw TCP connections (super_kcmperf).
//	-t stream   one-way messages from the server to the client: msgs/s, bytes/s.
//	-t shared   N sockets over M psocks of one mux, each reply steered to the
//	            socket that sent the request (Config.Affinity), against N
//	            goroutines over M raw connections with a reader each that
//	            routes replies by id.
//
// Without -t the default suite runs rr at 1 and 200 instances and stream
// at 64 and 4096 bytes; -instances and -m replace those.
//
// A server for remote runs is started with "kcmperf server -listen :PORT" and
// named on the client with -H host:port. Both keep the 1 ms runtime
// heartbeat by default (-heartbeat; see docs/PERFORMANCE.md); the server
// tells the client its setting, the report prints both, and the client
// warns when they differ. Every exchange with the server is bounded by a
// timeout, so a server that hangs, or a port where something else listens,
// ends the run with an error. "kcmperf -peer sockperf" drives an
// unmodified sockperf server with kcm and prints sockperf's own ping-pong
// result beside it. -tls runs every data connection, raw and kcm alike,
// over TLS 1.3 (tls.go): the server, local or remote, serves TLS to any
// connection that starts a handshake, with a self-signed certificate.
//
// -json prints the Report (report.go): the run's settings, and per
// configuration the raw and kcm sides (median tps, CPU seconds per million
// transactions on each end, allocations per transaction, latency
// percentiles), the per-pair ratios and their medians. -plot FILE.png or
// FILE.svg draws tps and CPU per transaction against instances (stream
// rows: against message size, unless -instances sweeps); the file is
// created before measuring.
//
// Ctrl-C (SIGINT) or SIGTERM ends a run the way an error does: the child
// server is stopped and waited for, a -plot file is removed, and the exit
// status is 130; a second Ctrl-C kills at once.
//
// Wire format of rr and stream: each message is a 4-byte big-endian payload
// length followed by the payload. Every data connection starts with a fixed
// 12-byte hello (see proto.go) that tells the server what to do with it; one
// listening port serves every test and the control connection.
package main

// Package kcm is a userspace Kernel Connection Multiplexor: the Linux
// AF_KCM socket family, for any net.Conn on any OS, with the fixes and
// extensions its authors listed as future work.
//
// A Mux joins Sockets, on which application goroutines send and receive
// whole messages, with attached stream connections (psocks). Each psock
// has a Parser that finds message boundaries in its byte stream; nothing
// changes on the wire.
//
// The data path:
//
//	receive: conn bytes -> strparser (Parser.Parse) -> message -> receiving Socket
//	transmit: Socket.Send -> psock (one writer, queued senders combined) -> conn bytes
//
// A message sent on any socket is written whole on one psock, never
// interleaved with another; if that psock fails before the message was
// fully handed to the connection, it is sent again from its first byte on
// another psock (a message sent with Socket.SendTo names its psock, and is
// lost with it instead). Config.WriteTimeout fails a psock whose peer
// stops taking bytes. A message parsed from any psock goes to a socket
// that is blocked receiving, or waits in a bounded mux-wide queue; when
// the queue is full, psocks stop reading and TCP flow control pushes back
// on the peer. Mux.Stats and Mux.Queued report counters and queue sizes.
//
// The behaviour follows the kernel's (docs/ARCHITECTURE.md maps it to the
// code) except where it is a known wart: parsers always see the start of a
// message, unattach loses nothing, SeqPacket partial reads keep the rest of
// the message, and failed psocks are reported and removed.
//
// Beyond the kernel, a mux may span many peers (an unconnected mux): each
// received Message says its psock, and Socket.SendTo replies on that psock
// alone; Config.Affinity steers each received message to a socket, so
// that for instance a reply reaches the socket that sent the request.
// A ConnSet keeps a number of connections to one service attached to a
// mux, dialling a new one whenever one is lost.
//
// Subpackages provide parsers: package parser has a declarative length
// field parser and built-ins for common protocols, package bpf runs
// classic BPF and eBPF programs as the kernel does. Package metrics
// exports muxes' counters to Prometheus, so that the core does not depend
// on its client.
package kcm

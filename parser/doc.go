// Package parser provides message parsers for kcm psocks that need no
// program: a declarative length-field parser and built-in parsers for common
// length-prefixed protocols.
//
// # Place in the architecture
//
// A kcm psock reads bytes from its stream connection and hands the bytes of
// the next message, starting at the message's first byte, to a kcm.Parser.
// The parser answers with the message's total length, 0 for "need more
// bytes", or an error that aborts the psock; the psock then cuts the message
// out of the stream and delivers it to a socket of the mux:
//
//	bytes in -> parser -> message -> socket
//
// In kernel KCM this step is a BPF program. Package bpf runs such programs
// (classic BPF and eBPF objects); this package covers the common cases with
// native Go code that needs no program at all and is several times faster.
//
// A parser sees one direction of one connection from its first byte. Where
// that direction does not begin with the protocol's ordinary framing, a
// built-in of its own parses it whole: HTTP2Server for what an HTTP/2
// server reads (the client's preface, then frames), PostgresFrontend for
// what a PostgreSQL server reads (startup packets, then typed messages).
//
// # Guarantees
//
// Every parser here accepts any input (empty, short, garbage, huge length
// fields) without panicking, never retains its input, does not allocate on a
// successful or need-more call, and is safe for concurrent use. A returned
// length is never smaller than the header bytes it was computed from, and
// lengths that do not fit in an int are reported as kcm.ErrMessageTooBig
// instead of overflowing.
package parser

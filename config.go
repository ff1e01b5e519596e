package kcm

import (
	"fmt"
	"time"
)

// Defaults applied to zero fields of Config and PsockConfig.
const (
	// DefaultMaxMessageSize is the largest message a psock accepts when
	// Config.MaxMessageSize is zero.
	DefaultMaxMessageSize = 8 << 20
	// DefaultRecvBuffer bounds received-but-undelivered bytes per mux when
	// Config.RecvBuffer is zero.
	DefaultRecvBuffer = 4 << 20
	// DefaultSendBuffer bounds queued-but-unwritten bytes per mux when
	// Config.SendBuffer is zero.
	DefaultSendBuffer = 4 << 20
)

// Config configures a Mux. The zero value is ready to use.
type Config struct {
	// MaxMessageSize is the largest message, header included, a psock
	// accepts; a longer one aborts the psock with ErrMessageTooBig.
	// Zero means DefaultMaxMessageSize (8 MiB).
	MaxMessageSize int

	// MessageTimeout is the whole-message assembly deadline: a message
	// whose first byte has been buffered must be complete within it, or
	// the psock aborts with ErrMessageTimeout. Later bytes do not extend it.
	// Zero disables the deadline.
	MessageTimeout time.Duration

	// RecvBuffer bounds the bytes of parsed messages waiting in the mux for
	// a receiver. When it is full, psocks stop reading and TCP flow control
	// pushes back on the peer. A single message larger than the bound is
	// still delivered when nothing else is queued. Each waiting message
	// also takes about 48 bytes of bookkeeping, so their number is bounded
	// too, to RecvBuffer/48 (at least 1024): a flood of tiny messages
	// holds at most about twice RecvBuffer.
	// Zero means DefaultRecvBuffer (4 MiB).
	RecvBuffer int

	// SendBuffer bounds the bytes of messages the mux has copied from
	// senders but not yet written to a connection. A sender whose message
	// would go over it waits, uncopied, until the message is written (or
	// its write deadline passes), as does one whose message over 64 KiB
	// waits for a busy psock. A single message larger than the bound is
	// copied when nothing else is held.
	// Zero means DefaultSendBuffer (4 MiB).
	SendBuffer int

	// WriteTimeout, if set, bounds how long a write to a connection may
	// go without progress: when a WriteTimeout passes in which the
	// connection accepts no byte of a pending write, the psock fails like
	// on any write error (the error wraps os.ErrDeadlineExceeded). Each
	// period starts when the previous one ended with progress, so a stall
	// that begins within a period is caught after one to two WriteTimeouts.
	// The connection is closed, and every message not completely written
	// restarts from its first byte on another psock. It finds dead peers
	// from the transmit side: a peer that stopped reading, or a path TCP
	// has not given up on yet. A peer that reads slowly but steadily keeps
	// its psock. Only TCP and Unix connections on Unix systems are
	// resumed after a timeout with progress; on any other connection (TLS,
	// whose writes cannot resume after a timeout, among them) it bounds
	// each whole write instead. Zero (the default) means no limit.
	WriteTimeout time.Duration

	// OnPsockError, if set, is called once for each psock that fails (parser
	// error, size or assembly limit, connection error or peer EOF), after it
	// has left the mux, in a goroutine of its own (so it may call any
	// method of the mux, Close included). Mux.Close does not wait for
	// callbacks still running.
	OnPsockError func(p *Psock, err error)

	// Affinity, if set, steers received messages to sockets: it returns
	// the index (Socket.Index) of the socket that should receive msg, read
	// from psock p, or -1 for any socket. Steering is best effort and never
	// holds up other sockets: the message goes to a receive call waiting
	// on that socket, or waits for its next one in a queue of the socket's
	// own. It goes to any socket instead when no open, receiving socket
	// has that index, when the own queues of all sockets would hold more
	// than a quarter of RecvBuffer (which bounds them together with the
	// shared queue), in bytes or in messages (see RecvBuffer), or when the
	// socket's own queue would hold more than its share of that quarter
	// (the quarter divided by the open sockets;
	// an empty own queue takes one message over its share, within the
	// quarter), so that a socket that does not receive cannot switch
	// steering off for the others. A socket receives the messages of a
	// psock, its own and the shared ones, in stream order. Messages
	// waiting for a socket that closes or disables receiving go to the
	// shared queue, merged in by delivery order; a socket that already
	// received a later message of the same psock then receives them after
	// it. Socket indexes are reused after Close: a message for a closed
	// socket goes to the next socket given its index.
	//
	// Affinity is called with the mux's lock held, by the goroutine that
	// delivers the message: it must be a quick function of its arguments
	// and must not call methods of the mux, its sockets or its psocks. msg
	// is only valid during the call. A panic in it is a fault of the
	// stream, as in a parser: the message goes to any socket, and p fails
	// with ErrParse after delivering the complete messages it had read.
	//
	// With Affinity set, psocks are read by background goroutines (a
	// receive never reads a psock for itself; a DontWait receive may read
	// one, steering what it brings as a background reader would), which
	// costs a goroutine handoff per message on a mux of one psock.
	Affinity func(msg []byte, p *Psock) int
}

// PsockConfig overrides the mux's receive limits for one psock. Zero (or
// negative) fields take the mux's values, so a psock cannot turn off a
// MessageTimeout the mux sets.
type PsockConfig struct {
	// MaxMessageSize, if positive, replaces Config.MaxMessageSize.
	MaxMessageSize int
	// MessageTimeout, if positive, replaces Config.MessageTimeout.
	MessageTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.RecvBuffer <= 0 {
		c.RecvBuffer = DefaultRecvBuffer
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.MessageTimeout < 0 {
		c.MessageTimeout = 0
	}
	return c
}

// SocketType is the kind of a Socket, after the kernel's socket types.
type SocketType int

const (
	// Datagram sockets (SOCK_DGRAM) receive whole messages: a receive into
	// a short buffer returns ErrTruncated and discards the rest.
	Datagram SocketType = iota
	// SeqPacket sockets (SOCK_SEQPACKET) keep the rest of a message that
	// did not fit the receive buffer for the next receive.
	SeqPacket
)

// String returns the kernel's name of the socket type.
func (t SocketType) String() string {
	switch t {
	case Datagram:
		return "SOCK_DGRAM"
	case SeqPacket:
		return "SOCK_SEQPACKET"
	}
	return fmt.Sprintf("SocketType(%d)", int(t))
}

// SendFlags modify SendMsg.
type SendFlags uint

const (
	// More says the message continues in the next SendMsg call (MSG_MORE
	// on a Datagram socket, a record without MSG_EOR on a SeqPacket one).
	More SendFlags = 1 << iota
	// Batch holds the message until a send without Batch, then writes the
	// whole batch together (MSG_BATCH).
	Batch
)

// RecvFlags modify RecvMsg and report what it returned.
type RecvFlags uint

const (
	// Peek returns the next message without consuming it (MSG_PEEK).
	Peek RecvFlags = 1 << iota
	// DontWait returns ErrWouldBlock instead of waiting (MSG_DONTWAIT).
	// A message whose bytes had arrived on a TCP or Unix connection before
	// the call is returned, as the kernel, which parses on arrival, would:
	// on Unix systems the call reads those connections without waiting. (A
	// TLS connection, or any on other systems, cannot be read so; its
	// messages come with its background reader.)
	// Such a read takes at most about Config.RecvBuffer bytes of each
	// connection, so the call returns soon even while a peer keeps sending.
	DontWait
	// EOR is reported when the returned bytes end a message (MSG_EOR).
	EOR
	// Trunc is reported when a Datagram message did not fit: its rest was
	// discarded, or, with Peek, left queued (MSG_TRUNC).
	Trunc
)

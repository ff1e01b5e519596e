package kcm

import (
	"errors"
	"fmt"
	"net"
)

// Sentinel errors. Errors returned by kcm wrap these with context; test for
// them with errors.Is.
var (
	// ErrClosed is returned by calls on a closed Socket or Mux, and is the
	// Err of a psock whose mux was closed. It wraps net.ErrClosed, as the
	// errors of closed net.Conns do.
	ErrClosed = fmt.Errorf("kcm: use of closed socket or mux: %w", net.ErrClosed)

	// ErrMessageTooBig aborts a psock whose parser returned a length above
	// the psock's maximum message size (kernel EMSGSIZE, counter msg_too_big).
	ErrMessageTooBig = errors.New("kcm: message too big")

	// ErrMessageTimeout aborts a psock whose message was not fully received
	// within the assembly deadline (kernel ETIMEDOUT, counter msg_timeouts).
	ErrMessageTimeout = errors.New("kcm: message assembly timed out")

	// ErrBadLength aborts a psock whose parser returned a negative length,
	// or one that contradicts the bytes already seen (kernel EPROTO, counter
	// bad_hdr_len). Parsers also return it for length fields that are
	// invalid by themselves; the psock then fails with ErrParse wrapping it,
	// as for any parser error.
	ErrBadLength = errors.New("kcm: bad message length")

	// ErrParse wraps every error a parser returned, beside the parser's own
	// error, so both errors.Is(err, ErrParse) and errors.Is(err, parserErr)
	// hold.
	ErrParse = errors.New("kcm: parser error")

	// ErrTruncated is returned by a Datagram receive into a buffer shorter
	// than the message: the buffer is filled and the rest of the message is
	// discarded (kernel MSG_TRUNC).
	ErrTruncated = errors.New("kcm: message truncated")

	// ErrAlreadyAttached is returned when attaching a connection that is
	// already attached to a mux (kernel EALREADY).
	ErrAlreadyAttached = errors.New("kcm: connection already attached")

	// ErrNotAttached is returned when unattaching a psock that is no longer
	// in its mux (kernel ENOENT), and by SendTo when its psock is not, or
	// no longer, attached to the socket's mux.
	ErrNotAttached = errors.New("kcm: psock not attached")

	// ErrUnattachInProgress is returned by a second, concurrent Unattach of
	// the same psock (kernel EALREADY).
	ErrUnattachInProgress = errors.New("kcm: unattach already in progress")

	// ErrBadConn is returned when attaching a nil or closed connection, or
	// one whose type is not comparable (the mux could not tell it apart
	// from others).
	ErrBadConn = errors.New("kcm: bad connection")

	// ErrWouldBlock is returned by a receive with the DontWait flag when no
	// message is ready (kernel EAGAIN).
	ErrWouldBlock = errors.New("kcm: operation would block")

	// ErrMidMessage is returned with the connection by Unattach when the
	// stream was cut in the middle of a transmitted message: the message was
	// sent again on another psock, and the returned stream is no longer at a
	// message boundary. It is also the Err of a psock whose write a closing
	// socket cut in the middle of a message.
	ErrMidMessage = errors.New("kcm: stream ended mid-message")
)

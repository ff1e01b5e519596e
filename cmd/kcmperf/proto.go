package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
)

// hdrLen is the size of the length prefix of every rr and stream message.
const hdrLen = 4

// Connection kinds named in the hello. One listening port serves all of them
// so that a remote server is reached with a single host:port.
const (
	kindControl    = 'C' // line commands: start, stop (rusage delta), gc, quit
	kindRawEcho    = 'R' // raw TCP: read a request, write a response
	kindKCMEcho    = 'K' // kcm: one mux, one socket, one psock; Recv then Send
	kindRawStream  = 'S' // raw TCP: write messages through a bufio.Writer until the peer leaves
	kindKCMStream  = 'T' // kcm: SendBatch until the peer leaves
	helloLen       = 12
	helloMagic     = "kcmp"
	maxMessageSize = 16 << 20
	defaultBatch   = 64 // messages per RecvBatch in stream mode
	maxBatch       = 16384
	// streamWrite is the raw stream sender's bufio.Writer size, so the size
	// of its writes; the kcm sender's batches carry as many bytes by default.
	streamWrite = 64 << 10
)

// sendBatchFor is the default number of messages per SendBatch of a kcm
// stream sender of payload size bytes: as many as the raw sender writes at
// once, so both senders make writes of the same size and the stream rows
// compare the receivers.
func sendBatchFor(size int) int {
	return max(1, min(maxBatch, streamWrite/(hdrLen+size)))
}

// hello is the first thing written on every connection to the server:
// magic(4) kind(1) pad(1) batch(2) size(4). size is the response size for
// echo kinds and the message payload size for stream kinds; batch is the
// number of messages per SendBatch of a kcm stream sender (0:
// sendBatchFor(size)).
type hello struct {
	kind  byte
	batch int
	size  int
}

func (h hello) marshal() []byte {
	b := make([]byte, helloLen)
	copy(b, helloMagic)
	b[4] = h.kind
	binary.BigEndian.PutUint16(b[6:], uint16(h.batch))
	binary.BigEndian.PutUint32(b[8:], uint32(h.size))
	return b
}

func readHello(r io.Reader) (hello, error) {
	var b [helloLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return hello{}, err
	}
	if string(b[:4]) != helloMagic {
		return hello{}, errors.New("kcmperf: bad hello magic")
	}
	h := hello{kind: b[4], batch: int(binary.BigEndian.Uint16(b[6:])), size: int(binary.BigEndian.Uint32(b[8:]))}
	if h.size > maxMessageSize-hdrLen {
		return hello{}, fmt.Errorf("kcmperf: size %d too large", h.size)
	}
	if h.batch < 1 {
		h.batch = sendBatchFor(h.size)
	}
	return h, nil
}

// newMessage returns one framed message with a payload of size bytes.
func newMessage(size int, fill byte) []byte {
	b := make([]byte, hdrLen+size)
	binary.BigEndian.PutUint32(b, uint32(size))
	for i := hdrLen; i < len(b); i++ {
		b[i] = fill
	}
	return b
}

// lengthPrefix parses the 4-byte big-endian length prefix framing: the
// message is the 4-byte header plus the payload length it names.
var lengthPrefix kcm.Parser = mustLengthField(parser.LengthField{Size: hdrLen, MaxLength: maxMessageSize})

func mustLengthField(cfg parser.LengthField) kcm.Parser {
	p, err := parser.NewLengthField(cfg)
	if err != nil {
		panic(err)
	}
	return p
}

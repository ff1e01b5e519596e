package kcm

// Parser finds message boundaries in a psock's byte stream, like the BPF
// program of a kernel KCM attach.
//
// Parse is called with the bytes of the next message received so far; b
// always starts at the message's first byte. It returns the message's total
// length in bytes (header included) when it can tell, 0 when it needs more
// bytes, or an error when the stream cannot be parsed. The psock aborts on
// an error or a panic (ErrParse), on a negative length or one that
// contradicts what an earlier call saw (ErrBadLength), and on a length
// above its maximum message size, or 0 once that many bytes are buffered
// (ErrMessageTooBig).
//
// Parse is called again for the same message only after more bytes arrived.
// It must not retain b. A Parser may be shared by several psocks and is
// then called concurrently. It runs on the receive path, at times with the
// mux's lock held, so it must not call methods of the mux, its sockets or
// its psocks (a kernel BPF parser cannot either).
type Parser interface {
	Parse(b []byte) (int, error)
}

// ParserFunc adapts an ordinary function to the Parser interface.
type ParserFunc func(b []byte) (int, error)

// Parse calls f(b).
func (f ParserFunc) Parse(b []byte) (int, error) { return f(b) }

package parser

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/gokcm/kcm"
)

// The built-in parsers are hand-written: each is a zero-size type whose Parse
// reads the length field directly, so a call through kcm.Parser costs a few
// nanoseconds and never allocates on success. Each built-in but the two
// that join others (HTTP2Server, PostgresFrontend) has an equivalent
// LengthField configuration (or, for MQTT and WebSocket, a BPF program) in
// the differential tests of this package and of package bpf.

// HTTP2 parses HTTP/2 frames (RFC 9113 section 4.1): a 24-bit big-endian
// payload length, then type, flags and stream identifier, for a 9-byte
// header. The total is length + 9; it needs 3 bytes and never fails. A
// server's stream begins with the client connection preface, which is not
// a frame: parse that direction with HTTP2Server.
func HTTP2() kcm.Parser { return http2Parser{} }

type http2Parser struct{}

func (http2Parser) Parse(b []byte) (int, error) {
	if len(b) < 3 {
		return 0, nil
	}
	return (int(b[0])<<16 | int(b[1])<<8 | int(b[2])) + 9, nil
}

// HTTP2Preface is the client connection preface (RFC 9113 section 3.4).
const HTTP2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP2Server parses what an HTTP/2 server reads: the client connection
// preface, HTTP2Preface, as one 24-byte message, then frames as HTTP2.
// Bytes that begin like the preface wait until they are the whole preface
// or differ from it; a frame cannot begin that way in practice (its length
// would be 5,263,945 bytes, more than SETTINGS_MAX_FRAME_SIZE allows unless
// the server raised it). It never fails.
func HTTP2Server() kcm.Parser { return http2ServerParser{} }

type http2ServerParser struct{}

func (http2ServerParser) Parse(b []byte) (int, error) {
	if len(b) > 0 && b[0] == HTTP2Preface[0] {
		k := min(len(b), len(HTTP2Preface))
		if string(b[:k]) == HTTP2Preface[:k] {
			if k == len(HTTP2Preface) {
				return k, nil
			}
			return 0, nil
		}
	}
	return http2Parser{}.Parse(b)
}

// Thrift parses Thrift's framed transport (TFramedTransport): a 4-byte
// big-endian signed frame size followed by the frame. The total is size + 4;
// a negative size is kcm.ErrBadLength.
func Thrift() kcm.Parser { return int32Prefix{name: "thrift"} }

// Kafka parses Kafka protocol requests and responses: a 4-byte big-endian
// signed message size followed by the message. The total is size + 4; a
// negative size is kcm.ErrBadLength.
func Kafka() kcm.Parser { return int32Prefix{name: "kafka"} }

// int32Prefix is a 4-byte big-endian int32 length that excludes itself.
type int32Prefix struct{ name string }

func (p int32Prefix) Parse(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b)
	if n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %s: negative frame size %d", kcm.ErrBadLength, p.name, int32(n))
	}
	if uint64(n) > math.MaxInt-4 { // only on 32-bit platforms
		return 0, intOverflow(p.name, n, 4)
	}
	return int(n) + 4, nil
}

// DNS parses DNS messages over TCP (RFC 1035 section 4.2.2, RFC 7766): a
// 2-byte big-endian length followed by the message. The total is length + 2;
// it never fails.
func DNS() kcm.Parser { return dnsParser{} }

type dnsParser struct{}

func (dnsParser) Parse(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	return int(binary.BigEndian.Uint16(b)) + 2, nil
}

// Memcached parses memcached binary protocol packets, requests and
// responses alike: a 24-byte header whose 4-byte big-endian "total body
// length" at offset 8 counts extras, key and value. The total is body + 24;
// it needs 12 bytes and never fails.
func Memcached() kcm.Parser { return memcachedParser{} }

type memcachedParser struct{}

func (memcachedParser) Parse(b []byte) (int, error) {
	if len(b) < 12 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if uint64(n) > math.MaxInt-24 { // only on 32-bit platforms
		return 0, intOverflow("memcached", n, 24)
	}
	return int(n) + 24, nil
}

// Postgres parses PostgreSQL frontend/backend protocol messages after the
// startup phase: a type byte, then a 4-byte big-endian signed length that
// counts itself but not the type byte. The total is length + 1; a length
// below 4 or negative is kcm.ErrBadLength.
func Postgres() kcm.Parser { return postgresParser{} }

type postgresParser struct{}

func (postgresParser) Parse(b []byte) (int, error) {
	if len(b) < 5 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if n < 4 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: postgres: message length %d", kcm.ErrBadLength, int32(n))
	}
	if uint64(n) > math.MaxInt-1 { // only on 32-bit platforms
		return 0, intOverflow("postgres", n, 1)
	}
	return int(n) + 1, nil
}

// PostgresMaxStartup is the largest startup packet PostgresStartup
// accepts: MAX_STARTUP_PACKET_LENGTH in src/include/libpq/pqcomm.h. (The
// server compares it with the length less the length field's own 4 bytes,
// so it accepts packets up to 4 bytes longer; no client sends one.)
const PostgresMaxStartup = 10000

// PostgresStartup parses the packets a PostgreSQL client sends before the
// server answers its startup request (StartupMessage, SSLRequest,
// GSSENCRequest, CancelRequest): a 4-byte big-endian length that counts
// itself, followed by a 4-byte protocol or request code. The total is the
// length; below 8 is kcm.ErrBadLength and above PostgresMaxStartup
// (negative lengths included) is kcm.ErrMessageTooBig. The authentication
// messages that follow are typed: PostgresFrontend parses the whole client
// side of a connection.
func PostgresStartup() kcm.Parser { return postgresStartupParser{} }

type postgresStartupParser struct{}

// PostgresFrontend parses everything a PostgreSQL client sends on one
// connection: the startup-phase packets that have no type byte (as
// PostgresStartup) and the typed messages of authentication and the rest
// of the session (as Postgres). The two are told apart by the first byte:
// startup packets are shorter than 16 MiB, so their length begins with a
// zero byte, and no message type is zero. After an SSLRequest the server's
// 'S' switches the stream to TLS: attach the TLS connection instead. After
// a GSSENCRequest answered 'G' the stream is GSSAPI-encrypted packets,
// whose length does not count itself, which this parser does not read
// (it would cut each 4 bytes short).
func PostgresFrontend() kcm.Parser { return postgresFrontendParser{} }

type postgresFrontendParser struct{}

func (postgresFrontendParser) Parse(b []byte) (int, error) {
	if len(b) > 0 && b[0] == 0 {
		return postgresStartupParser{}.Parse(b)
	}
	return postgresParser{}.Parse(b)
}

func (postgresStartupParser) Parse(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b)
	if n < 8 {
		return 0, fmt.Errorf("%w: postgres startup: length %d below 8", kcm.ErrBadLength, n)
	}
	if n > PostgresMaxStartup {
		return 0, fmt.Errorf("%w: postgres startup: length %d above %d", kcm.ErrMessageTooBig, n, PostgresMaxStartup)
	}
	return int(n), nil
}

// Mongo parses MongoDB wire protocol messages: the 16-byte standard header
// starts with messageLength, a little-endian int32 that counts the whole
// message. A length below 16 or negative is kcm.ErrBadLength.
func Mongo() kcm.Parser { return mongoParser{} }

type mongoParser struct{}

func (mongoParser) Parse(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 16 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: mongo: message length %d", kcm.ErrBadLength, int32(n))
	}
	return int(n), nil
}

// TLSMaxRecord is the largest TLS record payload any TLS version allows
// (2^14 + 2048, TLSCiphertext in RFC 5246 section 6.2.3).
const TLSMaxRecord = 1<<14 + 2048

// TLSRecord parses TLS records (SSL 3.0 through TLS 1.3): content type,
// 2-byte version and a 2-byte big-endian length at offset 3. The total is
// length + 5; a length above TLSMaxRecord is kcm.ErrMessageTooBig (the peer
// would answer record_overflow).
func TLSRecord() kcm.Parser { return tlsParser{} }

type tlsParser struct{}

func (tlsParser) Parse(b []byte) (int, error) {
	if len(b) < 5 {
		return 0, nil
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if n > TLSMaxRecord {
		return 0, fmt.Errorf("%w: tls: record length %d above %d", kcm.ErrMessageTooBig, n, TLSMaxRecord)
	}
	return n + 5, nil
}

// RDS parses RDS-over-TCP messages the way the KCM BPF program
// `return load_word(skb, 16) + 40;` does: the big-endian h_len at offset
// 16 plus 40. It needs 20 bytes and never fails.
//
// Note: Linux's struct rds_header is 48 bytes (h_len counts the payload
// only), so real RDS traffic would need + 48. This parser deliberately
// matches that program so both give the same boundaries;
// use a LengthField{Offset: 16, Size: 4, Adjust: 28} for + 48.
func RDS() kcm.Parser { return rdsParser{} }

type rdsParser struct{}

func (rdsParser) Parse(b []byte) (int, error) {
	if len(b) < 20 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b[16:20])
	if uint64(n) > math.MaxInt-40 { // only on 32-bit platforms
		return 0, intOverflow("rds", n, 40)
	}
	return int(n) + 40, nil
}

// SockperfHeaderSize is the size of the sockperf message header: 8-byte
// sequence number, 2-byte flags, 4-byte length.
const SockperfHeaderSize = 14

// Sockperf parses sockperf's TCP messages: a 14-byte header whose 4-byte
// big-endian length at offset 10 is the total message length, header
// included. A length below the header, or of 2 GiB or more (sockperf's
// own messages are far shorter), is kcm.ErrBadLength.
func Sockperf() kcm.Parser { return sockperfParser{} }

type sockperfParser struct{}

func (sockperfParser) Parse(b []byte) (int, error) {
	if len(b) < 14 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b[10:14])
	if n < SockperfHeaderSize || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: sockperf: message length %d", kcm.ErrBadLength, n)
	}
	return int(n), nil
}

// GRPC parses gRPC length-prefixed messages (the HTTP/2 DATA payload framing
// of the gRPC protocol): a compressed-flag byte and a 4-byte big-endian
// length. The total is length + 5; it never fails. It reads the messages
// inside a stream's DATA frames, once taken out of them; a gRPC connection
// itself carries HTTP/2 frames: use HTTP2 or HTTP2Server there.
func GRPC() kcm.Parser { return grpcParser{} }

type grpcParser struct{}

func (grpcParser) Parse(b []byte) (int, error) {
	if len(b) < 5 {
		return 0, nil
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) > math.MaxInt-5 { // only on 32-bit platforms
		return 0, intOverflow("grpc", n, 5)
	}
	return int(n) + 5, nil
}

// WebSocket parses WebSocket frames (RFC 6455 section 5.2): a 7-bit payload
// length, extended to 16 bits (126) or 64 bits (127), and a 4-byte masking
// key when the MASK bit is set. It returns 0 until the whole header is
// present. A 64-bit length with the most significant bit set is
// kcm.ErrBadLength (the RFC forbids it); a total that does not fit in an int
// is kcm.ErrMessageTooBig.
func WebSocket() kcm.Parser { return webSocketParser{} }

type webSocketParser struct{}

func (webSocketParser) Parse(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, nil
	}
	hdr := 2 + int(b[1]>>7)*4 // mask key
	var n uint64
	switch l := b[1] & 0x7f; l {
	case 126:
		hdr += 2
		if len(b) < hdr {
			return 0, nil
		}
		n = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		hdr += 8
		if len(b) < hdr {
			return 0, nil
		}
		n = binary.BigEndian.Uint64(b[2:10])
		if n > math.MaxInt64 {
			return 0, fmt.Errorf("%w: websocket: 64-bit payload length with the top bit set", kcm.ErrBadLength)
		}
		if n > uint64(math.MaxInt-hdr) {
			return 0, fmt.Errorf("%w: websocket: payload length %d", kcm.ErrMessageTooBig, n)
		}
	default:
		if len(b) < hdr {
			return 0, nil
		}
		n = uint64(l)
	}
	return int(n) + hdr, nil
}

// MQTTMaxRemaining is the largest remaining length MQTT can encode
// (268,435,455, four varint bytes).
const MQTTMaxRemaining = 1<<28 - 1

// MQTT parses MQTT control packets (v3.1.1 and v5): a fixed-header byte, then
// the remaining length as a 1 to 4 byte varint (7 bits per byte, least
// significant first). The total is 1 + varint bytes + remaining length. A
// fourth byte with its continuation bit set is kcm.ErrBadLength (malformed
// packet).
func MQTT() kcm.Parser { return mqttParser{} }

type mqttParser struct{}

func (mqttParser) Parse(b []byte) (int, error) {
	var n int
	for i := 1; i < 5; i++ {
		if i >= len(b) {
			return 0, nil
		}
		c := b[i]
		n |= int(c&0x7f) << (7 * (i - 1))
		if c < 0x80 {
			return 1 + i + n, nil
		}
	}
	return 0, fmt.Errorf("%w: mqtt: remaining length longer than 4 bytes", kcm.ErrBadLength)
}

// intOverflow reports a 32-bit length field n that, with the k bytes added
// to it, does not fit in an int. The built-ins check for it inline; the
// check compiles away on 64-bit platforms.
func intOverflow(name string, n uint32, k int) error {
	return fmt.Errorf("%w: %s: length %d does not fit in an int", kcm.ErrMessageTooBig, name, uint64(n)+uint64(k))
}

package parser_test

// Audit 16: the built-in parsers against their protocols' specifications
// and the kcm.Parser contract (KCM-SEMANTICS.md section 3): exact lengths
// at the boundaries of each length encoding, "need more" for every proper
// prefix of a header, errors (never a length) for invalid headers, answers
// that never change or contradict an earlier "need more" as bytes are
// added, and a psock's MaxMessageSize applied to each built-in's lengths.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/parser"
)

// a16Parsers is every built-in, the two that join others included.
func a16Parsers() []struct {
	name string
	p    kcm.Parser
} {
	return []struct {
		name string
		p    kcm.Parser
	}{
		{"http2", parser.HTTP2()}, {"http2server", parser.HTTP2Server()},
		{"thrift", parser.Thrift()}, {"kafka", parser.Kafka()}, {"dns", parser.DNS()},
		{"memcached", parser.Memcached()}, {"postgres", parser.Postgres()},
		{"postgres_startup", parser.PostgresStartup()}, {"postgres_frontend", parser.PostgresFrontend()},
		{"mongo", parser.Mongo()}, {"tls", parser.TLSRecord()}, {"rds", parser.RDS()},
		{"sockperf", parser.Sockperf()}, {"grpc", parser.GRPC()}, {"websocket", parser.WebSocket()},
		{"mqtt", parser.MQTT()},
	}
}

// TestAudit16HeaderBoundaries gives each built-in exactly the header bytes
// it needs to answer, at the boundaries of its length encoding and of its
// protocol's limits. Every proper prefix must say "need more" (0, nil), the
// whole header must give the exact total (header included) or the error
// class the doc comment promises, and bytes after the header must not
// change the answer.
func TestAudit16HeaderBoundaries(t *testing.T) {
	const maxInt64 = math.MaxInt64
	tests := []struct {
		name string
		p    kcm.Parser
		hdr  string
		want int64 // above math.MaxInt (32-bit platforms): ErrMessageTooBig
		err  error
	}{
		// RFC 9113 4.1: 24-bit length + 9-byte header.
		{"http2 empty payload", parser.HTTP2(), "000000", 9, nil},
		{"http2 default SETTINGS_MAX_FRAME_SIZE", parser.HTTP2(), "004000", 1<<14 + 9, nil},
		{"http2 largest SETTINGS_MAX_FRAME_SIZE", parser.HTTP2(), "ffffff", 1<<24 - 1 + 9, nil},
		// RFC 9113 3.4: the 24-byte preface, then frames.
		{"http2server preface", parser.HTTP2Server(), "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a", 24, nil},
		{"http2server frame", parser.HTTP2Server(), "000012", 18 + 9, nil},
		{"http2server 'P' frame", parser.HTTP2Server(), "504000", 0x504000 + 9, nil},
		{"http2server preface but last byte", parser.HTTP2Server(), "505249202a20485454502f322e300d0a0d0a534d0d0a0d00", 0x505249 + 9, nil},
		{"http2server preface but 4th byte", parser.HTTP2Server(), "50524921", 0x505249 + 9, nil},
		// TFramedTransport / Kafka: int32 size + 4.
		{"thrift empty", parser.Thrift(), "00000000", 4, nil},
		{"thrift total 2^31-1", parser.Thrift(), "7ffffffb", 1<<31 - 1, nil},
		{"thrift total 2^31", parser.Thrift(), "7ffffffc", 1 << 31, nil},
		{"thrift -2^31", parser.Thrift(), "80000000", 0, kcm.ErrBadLength},
		{"kafka empty", parser.Kafka(), "00000000", 4, nil},
		{"kafka total 2^31", parser.Kafka(), "7ffffffc", 1 << 31, nil},
		{"kafka -2^31", parser.Kafka(), "80000000", 0, kcm.ErrBadLength},
		// RFC 1035 4.2.2: 2-byte length + 2.
		{"dns 256", parser.DNS(), "0100", 258, nil},
		{"dns 65534", parser.DNS(), "fffe", 65536, nil},
		// Memcached binary protocol: total body length at 8, + 24.
		{"memcached no body", parser.Memcached(), "80000000 00000000 00000000", 24, nil},
		{"memcached total 2^32-1", parser.Memcached(), "81000000 00000000 ffffffe7", 1<<32 - 1, nil},
		{"memcached total 2^32", parser.Memcached(), "81000000 00000000 ffffffe8", 1 << 32, nil},
		// PostgreSQL: type byte, Int32 length counting itself.
		{"postgres type 0", parser.Postgres(), "0000000004", 5, nil},
		{"postgres total 2^31-1", parser.Postgres(), "447ffffffe", 1<<31 - 1, nil},
		{"postgres length 0", parser.Postgres(), "4400000000", 0, kcm.ErrBadLength},
		{"postgres -2^31", parser.Postgres(), "4480000000", 0, kcm.ErrBadLength},
		// Startup packets: Int32 length counting itself, then a code.
		{"startup empty StartupMessage", parser.PostgresStartup(), "00000008", 8, nil},
		{"startup 9999", parser.PostgresStartup(), "0000270f", 9999, nil},
		{"startup length 0", parser.PostgresStartup(), "00000000", 0, kcm.ErrBadLength},
		{"startup length 4", parser.PostgresStartup(), "00000004", 0, kcm.ErrBadLength},
		{"startup 2^31", parser.PostgresStartup(), "80000000", 0, kcm.ErrMessageTooBig},
		{"startup 2^24-1", parser.PostgresStartup(), "00ffffff", 0, kcm.ErrMessageTooBig},
		{"frontend SSLRequest", parser.PostgresFrontend(), "00000008", 8, nil},
		{"frontend startup 10001", parser.PostgresFrontend(), "00002711", 0, kcm.ErrMessageTooBig},
		{"frontend startup 2^24-1", parser.PostgresFrontend(), "00ffffff", 0, kcm.ErrMessageTooBig},
		{"frontend typed 0x01", parser.PostgresFrontend(), "0100000004", 5, nil},
		{"frontend Terminate", parser.PostgresFrontend(), "5800000004", 5, nil},
		{"frontend typed -1", parser.PostgresFrontend(), "58ffffffff", 0, kcm.ErrBadLength},
		// MongoDB: little-endian int32 messageLength, whole message.
		{"mongo 17", parser.Mongo(), "11000000", 17, nil},
		{"mongo 48000000 (maxMessageSizeBytes)", parser.Mongo(), "006cdc02", 48000000, nil},
		{"mongo 0", parser.Mongo(), "00000000", 0, kcm.ErrBadLength},
		{"mongo -1", parser.Mongo(), "ffffffff", 0, kcm.ErrBadLength},
		// TLS record layer: 2-byte length at 3, + 5.
		{"tls 2^14 (TLSPlaintext max)", parser.TLSRecord(), "1603010000", 5, nil},
		{"tls TLSPlaintext max", parser.TLSRecord(), "1703034000", 1<<14 + 5, nil},
		{"tls TLS 1.3 TLSCiphertext max", parser.TLSRecord(), "1703034100", 1<<14 + 256 + 5, nil},
		{"tls 0x8000", parser.TLSRecord(), "1703038000", 0, kcm.ErrMessageTooBig},
		// RDS (kernel KCM example): h_len at 16, + 40.
		{"rds empty", parser.RDS(), "00000000000000000000000000000000 00000000", 40, nil},
		{"rds total 2^32-1", parser.RDS(), "00000000000000000000000000000000 ffffffd7", 1<<32 - 1, nil},
		// Sockperf: 14-byte header, total length at 10.
		{"sockperf total 2^31-1", parser.Sockperf(), "00000000000000000000 7fffffff", 1<<31 - 1, nil},
		{"sockperf length 0", parser.Sockperf(), "00000000000000000000 00000000", 0, kcm.ErrBadLength},
		// gRPC length-prefixed message: flag + uint32 length, + 5.
		{"grpc empty", parser.GRPC(), "0000000000", 5, nil},
		{"grpc total 2^32-1", parser.GRPC(), "00fffffffa", 1<<32 - 1, nil},
		{"grpc total 2^32", parser.GRPC(), "00fffffffb", 1 << 32, nil},
		// RFC 6455 5.2.
		{"websocket empty", parser.WebSocket(), "8100", 2, nil},
		{"websocket empty masked", parser.WebSocket(), "8180 00000000", 6, nil},
		{"websocket continuation", parser.WebSocket(), "0005", 7, nil},
		{"websocket 16-bit 0 (non-minimal)", parser.WebSocket(), "827e 0000", 4, nil},
		{"websocket 16-bit 125 (non-minimal)", parser.WebSocket(), "827e 007d", 129, nil},
		{"websocket 16-bit 126", parser.WebSocket(), "827e 007e", 130, nil},
		{"websocket 16-bit max masked", parser.WebSocket(), "82fe ffff 01020304", 65535 + 8, nil},
		{"websocket 64-bit 0 (non-minimal)", parser.WebSocket(), "827f 00000000 00000000", 10, nil},
		{"websocket 64-bit 2^32", parser.WebSocket(), "827f 00000001 00000000", 1<<32 + 10, nil},
		{"websocket 64-bit total 2^31-1", parser.WebSocket(), "827f 00000000 7ffffff5", 1<<31 - 1, nil},
		{"websocket 64-bit total 2^31", parser.WebSocket(), "827f 00000000 7ffffff6", 1 << 31, nil},
		{"websocket 64-bit total MaxInt64", parser.WebSocket(), "827f 7fffffff fffffff5", maxInt64, nil},
		{"websocket 64-bit total MaxInt64+1", parser.WebSocket(), "827f 7fffffff fffffff6", 0, kcm.ErrMessageTooBig},
		{"websocket 64-bit masked total MaxInt64", parser.WebSocket(), "82ff 7fffffff fffffff1 00000000", maxInt64, nil},
		{"websocket 64-bit masked total MaxInt64+1", parser.WebSocket(), "82ff 7fffffff fffffff2 00000000", 0, kcm.ErrMessageTooBig},
		{"websocket 64-bit 2^63 masked", parser.WebSocket(), "82ff 80000000 00000000 00000000", 0, kcm.ErrBadLength},
		{"websocket 64-bit 2^63+1", parser.WebSocket(), "827f 80000000 00000001", 0, kcm.ErrBadLength},
		// MQTT 3.1.1 2.2.3 / MQTT 5 1.5.5: 1-4 byte remaining length.
		{"mqtt 0", parser.MQTT(), "e0 00", 2, nil},
		{"mqtt 16383", parser.MQTT(), "30 ff7f", 16383 + 3, nil},
		{"mqtt 16384", parser.MQTT(), "30 808001", 16384 + 4, nil},
		{"mqtt 2097152", parser.MQTT(), "30 80808001", 2097152 + 5, nil},
		{"mqtt 0 in 2 bytes (non-minimal)", parser.MQTT(), "30 8000", 3, nil},
		{"mqtt 0 in 4 bytes (non-minimal)", parser.MQTT(), "30 80808000", 5, nil},
		{"mqtt 5 bytes of zero", parser.MQTT(), "30 80808080", 0, kcm.ErrBadLength},
	}
	tail := bytes.Repeat([]byte{0xff}, 16)
	for _, tt := range tests {
		if tt.want > math.MaxInt {
			tt.want, tt.err = 0, kcm.ErrMessageTooBig
		}
		hdr := unhex(tt.hdr)
		for k := range len(hdr) {
			if n, err := tt.p.Parse(hdr[:k]); n != 0 || err != nil {
				t.Errorf("%s: prefix %d of %x: %d, %v; want need more", tt.name, k, hdr, n, err)
			}
		}
		for _, b := range [][]byte{hdr, append(append([]byte(nil), hdr...), tail...)} {
			n, err := tt.p.Parse(b)
			if int64(n) != tt.want || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Errorf("%s: Parse(%x) = %d, %v; want %d, %v", tt.name, b, n, err, tt.want, tt.err)
			}
		}
	}
}

// a16Bytes are the byte values most likely to sit on an edge of a length
// encoding (TestAudit16Monotone also mixes in the preface's bytes).
var a16Bytes = []byte{0, 1, 3, 4, 7, 8, 0x0e, 0x10, 0x27, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff}

// TestAudit16Monotone feeds each built-in every prefix of many edgy inputs
// and checks what the contract needs from one message's successive calls:
// need-more until some prefix, then the same answer for every longer
// prefix (the length, or an error of the same class); a length never below
// the bytes of the prefix that first gave it (else it contradicts the
// need-more before it, kcm.ErrBadLength); no negative length; errors of
// the documented classes only, with n == 0; no panic.
func TestAudit16Monotone(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 16))
	preface := []byte(parser.HTTP2Preface)
	for _, pp := range a16Parsers() {
		for iter := range 4000 {
			b := make([]byte, 1+r.IntN(30))
			for i := range b {
				switch x := r.IntN(8); {
				case x < 5:
					b[i] = a16Bytes[r.IntN(len(a16Bytes))]
				case x < 6 && i < len(preface):
					b[i] = preface[i]
				default:
					b[i] = byte(r.Uint32())
				}
			}
			if iter%4 == 0 {
				copy(b, preface[:r.IntN(len(preface)+1)]) // a preface prefix, then edgy bytes
			}
			a16CheckMonotone(t, pp.name, pp.p, b)
		}
	}
}

func a16CheckMonotone(t *testing.T, name string, p kcm.Parser, b []byte) {
	t.Helper()
	first := -1 // prefix that first answered
	var n0 int
	var err0 error
	for k := 0; k <= len(b); k++ {
		n, err := p.Parse(b[:k])
		if err != nil {
			if n != 0 {
				t.Fatalf("%s: %x: %d with error %v", name, b[:k], n, err)
			}
			if !errors.Is(err, kcm.ErrBadLength) && !errors.Is(err, kcm.ErrMessageTooBig) {
				t.Fatalf("%s: %x: error %v is neither ErrBadLength nor ErrMessageTooBig", name, b[:k], err)
			}
		}
		if n < 0 {
			t.Fatalf("%s: %x: negative length %d", name, b[:k], n)
		}
		answered := n != 0 || err != nil
		if first < 0 {
			if !answered {
				continue
			}
			first, n0, err0 = k, n, err
			if err == nil && n < k {
				t.Fatalf("%s: %x: length %d after need-more on %d bytes", name, b[:k], n, k-1)
			}
			continue
		}
		if n != n0 || (err == nil) != (err0 == nil) ||
			(err != nil && errors.Is(err, kcm.ErrBadLength) != errors.Is(err0, kcm.ErrBadLength)) {
			t.Fatalf("%s: %x answered %d, %v; with %d bytes %d, %v", name, b[:first], n0, err0, k, n, err)
		}
	}
}

// TestAudit16JoinersNoAllocs: the package promises no allocation on a
// successful or need-more call; TestBuiltinsNoAllocs does not reach the
// preface and startup branches of HTTP2Server and PostgresFrontend.
func TestAudit16JoinersNoAllocs(t *testing.T) {
	in := []struct {
		p kcm.Parser
		b []byte
	}{
		{parser.HTTP2Server(), []byte(parser.HTTP2Preface)},
		{parser.HTTP2Server(), []byte(parser.HTTP2Preface[:13])},
		{parser.HTTP2Server(), []byte("PRI * HTTP/1.1\r\n")},
		{parser.PostgresFrontend(), unhex("00000008 04d2162f")},
		{parser.PostgresFrontend(), unhex("000000")},
		{parser.PostgresFrontend(), unhex("5800000004")},
	}
	for _, c := range in {
		if n := testing.AllocsPerRun(100, func() { c.p.Parse(c.b) }); n != 0 {
			t.Errorf("Parse(%x) allocates %v times per call", c.b, n)
		}
	}
}

// a16Msg builds a message of exactly size bytes for a built-in.
type a16Msg struct {
	name string
	p    kcm.Parser
	pre  []byte // sent (and delivered as a message) first
	make func(size int) []byte
	huge []string // headers whose length is the largest the encoding allows
}

func a16Msgs() []a16Msg {
	// be32 puts size-sub as a big-endian uint32 at off.
	be32 := func(off, sub int) func(int) []byte {
		return func(size int) []byte {
			b := make([]byte, size)
			binary.BigEndian.PutUint32(b[off:], uint32(size-sub))
			return b
		}
	}
	return []a16Msg{
		{"http2", parser.HTTP2(), nil, func(size int) []byte {
			b := make([]byte, size)
			n := size - 9
			b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
			return b
		}, []string{"ffffff"}},
		{"http2server", parser.HTTP2Server(), []byte(parser.HTTP2Preface), func(size int) []byte {
			b := make([]byte, size)
			n := size - 9
			b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
			return b
		}, []string{"ffffff"}},
		{"thrift", parser.Thrift(), nil, be32(0, 4), []string{"7fffffff"}},
		{"kafka", parser.Kafka(), nil, be32(0, 4), []string{"7fffffff"}},
		{"dns", parser.DNS(), nil, func(size int) []byte {
			b := make([]byte, size)
			binary.BigEndian.PutUint16(b, uint16(size-2))
			return b
		}, []string{"ffff"}},
		{"memcached", parser.Memcached(), nil, be32(8, 24), []string{"81000000 00000000 ffffffff"}},
		{"postgres", parser.Postgres(), nil, func(size int) []byte {
			b := make([]byte, size)
			b[0] = 'd'
			binary.BigEndian.PutUint32(b[1:], uint32(size-1))
			return b
		}, []string{"647fffffff"}},
		{"postgres_startup", parser.PostgresStartup(), nil, func(size int) []byte {
			b := make([]byte, size)
			binary.BigEndian.PutUint32(b, uint32(size))
			binary.BigEndian.PutUint32(b[4:], 0x00030000)
			return b
		}, nil}, // its own limit, PostgresMaxStartup, is below kcm's
		{"postgres_frontend", parser.PostgresFrontend(), unhex("00000008 04d2162f"), func(size int) []byte {
			b := make([]byte, size)
			b[0] = 'p'
			binary.BigEndian.PutUint32(b[1:], uint32(size-1))
			return b
		}, []string{"707fffffff"}},
		{"mongo", parser.Mongo(), nil, func(size int) []byte {
			b := make([]byte, size)
			binary.LittleEndian.PutUint32(b, uint32(size))
			return b
		}, []string{"ffffff7f"}},
		{"tls", parser.TLSRecord(), nil, func(size int) []byte {
			b := make([]byte, size)
			b[0], b[1], b[2] = 0x17, 3, 3
			binary.BigEndian.PutUint16(b[3:], uint16(size-5))
			return b
		}, []string{"1703034800"}},
		{"rds", parser.RDS(), nil, be32(16, 40), []string{"00000000000000000000000000000000 ffffffff"}},
		{"sockperf", parser.Sockperf(), nil, be32(10, 0), []string{"00000000000000000000 7fffffff"}},
		{"grpc", parser.GRPC(), nil, be32(1, 5), []string{"00ffffffff"}},
		{"websocket", parser.WebSocket(), nil, func(size int) []byte {
			b := make([]byte, size)
			b[0], b[1] = 0x82, 0xfe // masked, 16-bit length
			binary.BigEndian.PutUint16(b[2:], uint16(size-8))
			return b
		}, []string{"827f 7fffffff fffffff5", "82ff 7fffffff fffffff1 00000000", "827e ffff"}},
		{"mqtt", parser.MQTT(), nil, func(size int) []byte {
			b := make([]byte, size)
			n := size - 3 // two varint bytes for 128..16383
			b[0], b[1], b[2] = 0x30, byte(n&0x7f|0x80), byte(n>>7)
			return b
		}, []string{"30 ffffff7f"}},
	}
}

// a16Attach attaches one end of a pipe to a new mux with the given
// MaxMessageSize and returns the mux, the psock, a socket and the peer end.
func a16Attach(t *testing.T, p kcm.Parser, max int) (*kcm.Mux, *kcm.Psock, *kcm.Socket, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	m := kcm.NewMux(kcm.Config{})
	ps, err := m.AttachConfig(a, p, kcm.PsockConfig{MaxMessageSize: max})
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	t.Cleanup(func() { m.Close(); b.Close(); a.Close() })
	return m, ps, s, b
}

// TestAudit16MaxMessageSize runs each built-in in a psock with a
// MaxMessageSize of max: a message of exactly max bytes (header included)
// is delivered whole, one of max+1 fails the psock with ErrMessageTooBig
// (kcm's limit applies to the total the parser returns, header included),
// and so does every header with the largest length its encoding allows,
// without overflow into ErrBadLength or a panic.
func TestAudit16MaxMessageSize(t *testing.T) {
	const max = 1000
	for _, mm := range a16Msgs() {
		t.Run(mm.name, func(t *testing.T) {
			// Exactly max bytes: delivered.
			_, ps, s, peer := a16Attach(t, mm.p, max)
			msg := mm.make(max)
			for i := range msg[24:] {
				msg[24+i] = byte(i) // payload after every header
			}
			if n, err := mm.p.Parse(msg); n != max || err != nil {
				t.Fatalf("Parse of the %d-byte message: %d, %v", max, n, err)
			}
			go peer.Write(append(append([]byte(nil), mm.pre...), msg...))
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2*max)
			if len(mm.pre) > 0 {
				if n, err := s.Recv(buf); err != nil || !bytes.Equal(buf[:n], mm.pre) {
					t.Fatalf("first message: %x, %v; want %x", buf[:n], err, mm.pre)
				}
			}
			if n, err := s.Recv(buf); err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("message of max bytes: %d bytes, %v (psock err %v)", n, err, ps.Err())
			}

			over := [][]byte{mm.make(max + 1)}
			for _, h := range mm.huge {
				over = append(over, unhex(h))
			}
			for _, o := range over {
				_, ps, _, peer := a16Attach(t, mm.p, max)
				hdr := o[:min(len(o), 24)]
				go func() {
					peer.Write(append(append([]byte(nil), mm.pre...), hdr...))
				}()
				select {
				case <-ps.Done():
				case <-time.After(10 * time.Second):
					t.Fatalf("header %x: psock still up", hdr)
				}
				if err := ps.Err(); !errors.Is(err, kcm.ErrMessageTooBig) || errors.Is(err, kcm.ErrBadLength) {
					t.Errorf("header %x: psock err %v; want ErrMessageTooBig", hdr, err)
				}
			}
		})
	}
}

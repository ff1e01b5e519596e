package parser_test

import (
	"encoding/hex"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/prototest"
	"github.com/gokcm/kcm/parser"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestBuiltinsOnSpecBytes feeds each built-in messages taken from its
// protocol's specification (or written byte by byte from it) and checks the
// boundaries, for every split of the stream into two chunks.
func TestBuiltinsOnSpecBytes(t *testing.T) {
	tests := []struct {
		name string
		p    kcm.Parser
		msgs [][]byte
	}{
		{"http2", parser.HTTP2(), [][]byte{
			// RFC 9113 3.4: the client's SETTINGS frame after the preface
			// (as sent by nghttp2: 3 settings), then SETTINGS ACK, then
			// a PING and a HEADERS frame with END_STREAM|END_HEADERS.
			unhex("000012 04 00 00000000  0003 00000064 0004 40000000 0002 00000000"),
			unhex("000000 04 01 00000000"),
			unhex("000008 06 00 00000000 0102030405060708"),
			unhex("000005 01 05 00000001 8286 84 41 8a"),
		}},
		{"http2 server", parser.HTTP2Server(), [][]byte{
			// RFC 9113 3.4: the client connection preface, then the
			// client's SETTINGS frame and a HEADERS frame.
			[]byte(parser.HTTP2Preface),
			unhex("000012 04 00 00000000  0003 00000064 0004 40000000 0002 00000000"),
			unhex("000005 01 05 00000001 8286 84 41 8a"),
		}},
		{"thrift", parser.Thrift(), [][]byte{
			// Framed binary protocol call "ping", seqid 1, empty args.
			unhex("00000011 80010001 00000004 70696e67 00000001 00"),
		}},
		{"dns", parser.DNS(), [][]byte{
			// Query for example.com A, id 0x1234, RD.
			unhex("001d 1234 0100 0001 0000 0000 0000 076578616d706c6503636f6d00 0001 0001"),
		}},
		{"memcached", parser.Memcached(), [][]byte{
			// Binary protocol spec, example "Get request" for "Hello".
			unhex("80000005 00000000 00000005 00000000 0000000000000000 48656c6c6f"),
			// Example "Get response" with flags 0xdeadbeef, value "World".
			unhex("81000000 04000000 00000009 00000000 0000000000000001 deadbeef 576f726c64"),
		}},
		{"kafka", parser.Kafka(), [][]byte{
			// ApiVersions v0 request, correlation id 1, client "kcm".
			unhex("0000000d 0012 0000 00000001 0003 6b636d"),
		}},
		{"postgres", parser.Postgres(), [][]byte{
			unhex("52 00000008 00000000"),               // AuthenticationOk
			unhex("5a 00000005 49"),                     // ReadyForQuery idle
			unhex("51 0000000e 53454c4543542031 3b 00"), // Query "SELECT 1;"
		}},
		{"postgres_startup", parser.PostgresStartup(), [][]byte{
			unhex("00000008 04d2162f"), // SSLRequest
			// StartupMessage v3.0, user=kcm.
			unhex("00000012 00030000 7573657200 6b636d00 00"),
		}},
		{"postgres frontend", parser.PostgresFrontend(), [][]byte{
			// StartupMessage v3.0, user=kcm; PasswordMessage "secret";
			// Query "SELECT 1;"; Terminate.
			unhex("00000012 00030000 7573657200 6b636d00 00"),
			unhex("70 0000000b 73656372657400"),
			unhex("51 0000000e 53454c4543542031 3b 00"),
			unhex("58 00000004"),
		}},
		{"postgres frontend cancel", parser.PostgresFrontend(), [][]byte{
			unhex("00000010 04d2162e 00003039 12345678"), // CancelRequest
		}},
		{"mongo", parser.Mongo(), [][]byte{
			// OP_MSG (2013) with an empty kind-0 section: {} document.
			unhex("1a000000 01000000 00000000 dd070000 00000000 00 05000000 00"),
		}},
		{"tls", parser.TLSRecord(), [][]byte{
			unhex("16 0301 0004 0e000000"), // handshake record: ServerHelloDone
			unhex("14 0303 0001 01"),       // ChangeCipherSpec
			unhex("15 0303 0002 0100"),     // alert close_notify
		}},
		{"rds", parser.RDS(), [][]byte{
			// h_sequence, h_ack, h_len = 3, ports, flags, credit, padding,
			// csum, 16 bytes of extension space cut to the +40 framing.
			append(unhex("0000000000000001 0000000000000000 00000003 4000 4001 00 00 00000000 0000 0000000000000000"), 'a', 'b', 'c'),
		}},
		{"sockperf", parser.Sockperf(), [][]byte{
			// sequence 7, flags ping (3), length 14: a bare header.
			unhex("0000000000000007 0003 0000000e"),
			append(unhex("0000000000000008 0002 00000010"), 0, 0),
		}},
		{"grpc", parser.GRPC(), [][]byte{
			unhex("00 00000007 0a05776f726c64"), // HelloRequest{name: "world"}
			unhex("00 00000000"),
		}},
		{"websocket", parser.WebSocket(), [][]byte{
			// RFC 6455 5.7 examples.
			unhex("810548656c6c6f"),
			unhex("818537fa213d7f9f4d5158"),
			unhex("0103 48656c"), unhex("8002 6c6f"),
			unhex("8900"),
			append(unhex("827e0100"), make([]byte, 256)...),
			append(unhex("827f0000000000010000"), make([]byte, 65536)...),
		}},
		{"mqtt", parser.MQTT(), [][]byte{
			// CONNECT, MQTT 3.1.1, clean session, keepalive 60, id "kcm".
			unhex("10 0f 00044d515454 04 02 003c 0003 6b636d"),
			unhex("20 02 0000"), // CONNACK
			unhex("c0 00"),      // PINGREQ
			append(unhex("30 c801 0003 612f62"), make([]byte, 200-5)...), // PUBLISH, 2-byte varint
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stream []byte
			var want []int
			for _, m := range tt.msgs {
				stream = append(stream, m...)
				want = append(want, len(m))
			}
			for cut := 0; cut <= len(stream); cut += 1 + len(stream)/200 {
				got, rest, err := prototest.Split(tt.p, stream, []int{cut})
				if err != nil || rest != 0 || !equal(got, want) {
					t.Fatalf("split at %d: got %v (rest %d, err %v), want %v", cut, got, rest, err, want)
				}
			}
		})
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBuiltinErrors(t *testing.T) {
	tests := []struct {
		name string
		p    kcm.Parser
		in   string
		err  error
	}{
		{"thrift negative", parser.Thrift(), "80000000", kcm.ErrBadLength},
		{"kafka negative", parser.Kafka(), "ffffffff", kcm.ErrBadLength},
		{"postgres short length", parser.Postgres(), "5100000003", kcm.ErrBadLength},
		{"postgres negative", parser.Postgres(), "51ffffffff", kcm.ErrBadLength},
		{"postgres startup short", parser.PostgresStartup(), "00000007", kcm.ErrBadLength},
		{"postgres startup huge", parser.PostgresStartup(), "00002711", kcm.ErrMessageTooBig},
		{"mongo short", parser.Mongo(), "0f000000", kcm.ErrBadLength},
		{"mongo negative", parser.Mongo(), "00000080", kcm.ErrBadLength},
		{"tls overflow", parser.TLSRecord(), "1703034801", kcm.ErrMessageTooBig},
		{"sockperf short", parser.Sockperf(), "00000000000000000000 0000000d", kcm.ErrBadLength},
		{"websocket top bit", parser.WebSocket(), "827f8000000000000000", kcm.ErrBadLength},
		{"websocket huge", parser.WebSocket(), "82ff7ffffffffffffff8 00000000", kcm.ErrMessageTooBig},
		{"mqtt 5-byte varint", parser.MQTT(), "30ffffffff01", kcm.ErrBadLength},
		{"postgres frontend short startup", parser.PostgresFrontend(), "00000007", kcm.ErrBadLength},
		{"postgres frontend short message", parser.PostgresFrontend(), "7000000003", kcm.ErrBadLength},
	}
	for _, tt := range tests {
		n, err := tt.p.Parse(unhex(tt.in))
		if n != 0 || !errors.Is(err, tt.err) {
			t.Errorf("%s: Parse(%s) = %d, %v; want %v", tt.name, tt.in, n, err, tt.err)
		}
	}
}

// TestBuiltinsShortInputs checks that every built-in needs more bytes (and
// does not fail) on every proper prefix of its header.
func TestBuiltinsShortInputs(t *testing.T) {
	for _, p := range prototest.Protocols() {
		for n := 0; n < 2; n++ {
			if got, err := p.Native.Parse(make([]byte, n)[:n]); err != nil || (got != 0 && got < n) {
				t.Errorf("%s: Parse of %d zero bytes = %d, %v", p.Name, n, got, err)
			}
		}
	}
}

func TestBuiltinsNoAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range prototest.Protocols() {
		b := p.Gen(r, 10)
		if n := testing.AllocsPerRun(100, func() { p.Native.Parse(b); p.Native.Parse(b[:1]) }); n != 0 {
			t.Errorf("%s: Parse allocates %v times per call", p.Name, n)
		}
	}
}

// TestBuiltinEdges pins each built-in's answer at the edges of its length
// encoding: incomplete headers, the largest lengths, variable-length
// headers and the protocol limits.
func TestBuiltinEdges(t *testing.T) {
	tests := []struct {
		name string
		p    kcm.Parser
		in   string
		want int64 // above math.MaxInt (32-bit platforms): ErrMessageTooBig
		err  error
	}{
		{"http2 empty", parser.HTTP2(), "", 0, nil},
		{"http2 2 bytes", parser.HTTP2(), "0000", 0, nil},
		{"http2 largest", parser.HTTP2(), "ffffff", 1<<24 - 1 + 9, nil},
		{"thrift 3 bytes", parser.Thrift(), "000000", 0, nil},
		{"thrift empty frame", parser.Thrift(), "00000000", 4, nil},
		{"thrift largest", parser.Thrift(), "7fffffff", 1<<31 - 1 + 4, nil},
		{"kafka largest", parser.Kafka(), "7fffffff", 1<<31 - 1 + 4, nil},
		{"dns 1 byte", parser.DNS(), "00", 0, nil},
		{"dns empty message", parser.DNS(), "0000", 2, nil},
		{"dns largest", parser.DNS(), "ffff", 65535 + 2, nil},
		{"memcached 11 bytes", parser.Memcached(), "8000000000000000000000", 0, nil},
		{"memcached largest", parser.Memcached(), "80000000 00000000 ffffffff", 1<<32 - 1 + 24, nil},
		{"postgres 4 bytes", parser.Postgres(), "51000000", 0, nil},
		{"postgres bare", parser.Postgres(), "5a00000004", 5, nil},
		{"postgres largest", parser.Postgres(), "447fffffff", 1<<31 - 1 + 1, nil},
		{"postgres startup 3 bytes", parser.PostgresStartup(), "000000", 0, nil},
		{"postgres SSLRequest", parser.PostgresStartup(), "00000008 04d2162f", 8, nil},
		{"postgres GSSENCRequest", parser.PostgresStartup(), "00000008 04d21630", 8, nil},
		{"postgres CancelRequest", parser.PostgresStartup(), "00000010 04d2162e", 16, nil},
		{"postgres startup largest", parser.PostgresStartup(), "00002710", parser.PostgresMaxStartup, nil},
		{"postgres startup negative", parser.PostgresStartup(), "ffffffff", 0, kcm.ErrMessageTooBig},
		{"mongo 3 bytes", parser.Mongo(), "100000", 0, nil},
		{"mongo header only", parser.Mongo(), "10000000", 16, nil},
		{"mongo largest", parser.Mongo(), "ffffff7f", 1<<31 - 1, nil},
		{"tls 4 bytes", parser.TLSRecord(), "17030300", 0, nil},
		{"tls empty record", parser.TLSRecord(), "1703030000", 5, nil},
		{"tls largest", parser.TLSRecord(), "1703034800", parser.TLSMaxRecord + 5, nil},
		{"tls 0xffff", parser.TLSRecord(), "170303ffff", 0, kcm.ErrMessageTooBig},
		{"rds 19 bytes", parser.RDS(), "00000000000000000000000000000000000000", 0, nil},
		{"rds largest", parser.RDS(), "00000000000000000000000000000000 ffffffff", 1<<32 - 1 + 40, nil},
		{"sockperf 13 bytes", parser.Sockperf(), "00000000000000000000 000000", 0, nil},
		{"sockperf header only", parser.Sockperf(), "00000000000000000000 0000000e", 14, nil},
		{"sockperf negative", parser.Sockperf(), "00000000000000000000 ffffffff", 0, kcm.ErrBadLength},
		{"grpc 4 bytes", parser.GRPC(), "00000000", 0, nil},
		{"grpc largest", parser.GRPC(), "01ffffffff", 1<<32 - 1 + 5, nil},
		{"websocket empty", parser.WebSocket(), "", 0, nil},
		{"websocket 1 byte", parser.WebSocket(), "81", 0, nil},
		{"websocket 7-bit", parser.WebSocket(), "817d", 125 + 2, nil},
		{"websocket masked, key incomplete", parser.WebSocket(), "8185 37fa21", 0, nil},
		{"websocket masked", parser.WebSocket(), "8185 37fa213d", 5 + 6, nil},
		{"websocket 16-bit incomplete", parser.WebSocket(), "827e 01", 0, nil},
		{"websocket 16-bit", parser.WebSocket(), "827e ffff", 65535 + 4, nil},
		{"websocket 16-bit masked incomplete", parser.WebSocket(), "82fe 0100 000000", 0, nil},
		{"websocket 16-bit masked", parser.WebSocket(), "82fe 0100 00000000", 256 + 8, nil},
		{"websocket 64-bit incomplete", parser.WebSocket(), "827f 00000000 000001", 0, nil},
		{"websocket 64-bit", parser.WebSocket(), "827f 00000000 00010000", 65536 + 10, nil},
		{"websocket 64-bit masked incomplete", parser.WebSocket(), "82ff 00000000 00010000 000000", 0, nil},
		{"websocket 64-bit masked", parser.WebSocket(), "82ff 00000000 00010000 00000000", 65536 + 14, nil},
		{"websocket 64-bit top bit", parser.WebSocket(), "827f ffffffff ffffffff", 0, kcm.ErrBadLength},
		{"websocket 64-bit too big for an int", parser.WebSocket(), "827f 7fffffff ffffffff", 0, kcm.ErrMessageTooBig},
		{"mqtt empty", parser.MQTT(), "", 0, nil},
		{"mqtt 1 byte", parser.MQTT(), "30", 0, nil},
		{"mqtt 1-byte varint", parser.MQTT(), "30 7f", 127 + 2, nil},
		{"mqtt 2-byte varint incomplete", parser.MQTT(), "30 80", 0, nil},
		{"mqtt 2-byte varint", parser.MQTT(), "30 8001", 128 + 3, nil},
		{"mqtt 3-byte varint", parser.MQTT(), "30 ffff7f", 1<<21 - 1 + 4, nil},
		{"mqtt 4-byte varint incomplete", parser.MQTT(), "30 ffffff", 0, nil},
		{"mqtt 4-byte varint", parser.MQTT(), "30 ffffff7f", parser.MQTTMaxRemaining + 5, nil},
		{"mqtt 5th byte", parser.MQTT(), "30 ffffff80", 0, kcm.ErrBadLength},
		{"mqtt 5th byte present", parser.MQTT(), "30 80808080 01", 0, kcm.ErrBadLength},
	}
	for _, tt := range tests {
		if tt.want > math.MaxInt {
			tt.want, tt.err = 0, kcm.ErrMessageTooBig
		}
		n, err := tt.p.Parse(unhex(tt.in))
		if int64(n) != tt.want || !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
			t.Errorf("%s: Parse(%s) = %d, %v; want %d, %v", tt.name, tt.in, n, err, tt.want, tt.err)
		}
	}
}

// TestBuiltinsPrefixes checks, for messages of every built-in, that each
// proper prefix of a message gives "need more" or the message's own length,
// and that a stream of many messages in one buffer is cut at the first.
func TestBuiltinsPrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, p := range prototest.Protocols() {
		for _, size := range []int{0, 1, 125, 126, 127, 128, 300, 65535, 65536, 70000} {
			size = min(size, p.MaxPayload)
			m := p.Gen(r, size)
			for k := range min(len(m), 40) {
				if n, err := p.Native.Parse(m[:k]); err != nil || (n != 0 && n != len(m)) {
					t.Fatalf("%s: prefix %d of a %d-byte message: %d, %v", p.Name, k, len(m), n, err)
				}
			}
			stream := append(append(append([]byte(nil), m...), p.Gen(r, 5)...), p.Gen(r, 7)...)
			if n, err := p.Native.Parse(stream); n != len(m) || err != nil {
				t.Fatalf("%s: first of three messages: %d, %v; want %d", p.Name, n, err, len(m))
			}
		}
	}
}

// TestHTTP2ServerPreface: bytes that begin like the preface wait for it
// whole; once they differ, they are a frame.
func TestHTTP2ServerPreface(t *testing.T) {
	p := parser.HTTP2Server()
	for k := range len(parser.HTTP2Preface) {
		if n, err := p.Parse([]byte(parser.HTTP2Preface[:k])); n != 0 || err != nil {
			t.Fatalf("prefix %d of the preface: %d, %v; want need more", k, n, err)
		}
	}
	notPreface := []byte("PRI * HTTP/1.1\r\n")
	if n, err := p.Parse(notPreface); n != 0x505249+9 || err != nil {
		t.Fatalf("bytes that differ from the preface: %d, %v; want them parsed as a frame", n, err)
	}
	if n, err := p.Parse(unhex("000000 04 01 00000000")); n != 9 || err != nil {
		t.Fatalf("SETTINGS ACK: %d, %v", n, err)
	}
}

package parser_test

import (
	"encoding/hex"
	"errors"
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

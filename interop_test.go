package kcm_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/peers"
	"github.com/gokcm/kcm/internal/testconn"
	"github.com/gokcm/kcm/parser"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A real memcached through a mux of four connections: sockets of many
// goroutines send binary-protocol requests concurrently (memcached would
// reject or misparse an interleaved request), and every reply comes back
// whole, exactly once, with the right value for its key.
func TestInteropMemcached(t *testing.T) {
	addr := peers.Memcached(t)
	m := newMux(t, kcm.Config{})
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Attach(c, parser.Memcached()); err != nil {
			t.Fatal(err)
		}
	}
	const keys = 200
	const (
		opGetK = 0x0c
		opSet  = 0x01
	)
	// replies collects every reply by opaque, from whichever socket got it.
	var mu sync.Mutex
	replies := map[uint32][]byte{}
	exchange := func(reqs func(s *kcm.Socket, g int) int) {
		var wg sync.WaitGroup
		var socks []*kcm.Socket
		for g := 0; g < 8; g++ {
			s := m.NewSocket(kcm.Datagram)
			socks = append(socks, s)
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				n := reqs(s, g)
				buf := make([]byte, 4096)
				for i := 0; i < n; i++ {
					s.SetReadDeadline(time.Now().Add(10 * time.Second))
					k, err := s.Recv(buf)
					if err != nil {
						t.Errorf("recv: %v", err)
						return
					}
					r := append([]byte(nil), buf[:k]...)
					if r[0] != 0x81 || int(binary.BigEndian.Uint32(r[8:]))+24 != len(r) {
						t.Errorf("malformed reply %x", r[:24])
						return
					}
					mu.Lock()
					op := binary.BigEndian.Uint32(r[12:])
					if _, dup := replies[op]; dup {
						t.Errorf("reply to %d twice", op)
					}
					replies[op] = r
					mu.Unlock()
				}
			}(g)
		}
		wg.Wait()
		// Only now: closing a socket drops its requests still queued, and
		// a goroutine may finish on replies to other goroutines' requests.
		for _, s := range socks {
			s.Close()
		}
	}
	key := func(i int) []byte { return []byte(fmt.Sprintf("kcm-key-%d", i)) }
	value := func(i int) []byte { return []byte(fmt.Sprintf("value-%d-%s", i, make([]byte, i%300))) }
	exchange(func(s *kcm.Socket, g int) int {
		n := 0
		for i := g; i < keys; i += 8 {
			extras := make([]byte, 8) // flags, expiry
			if err := s.Send(peers.MemcachedRequest(opSet, uint32(i), key(i), extras, value(i))); err != nil {
				t.Errorf("send: %v", err)
			}
			n++
		}
		return n
	})
	for i := 0; i < keys; i++ {
		if r := replies[uint32(i)]; r == nil || binary.BigEndian.Uint16(r[6:]) != 0 {
			t.Fatalf("set %d: reply %x", i, r)
		}
	}
	clear(replies)
	exchange(func(s *kcm.Socket, g int) int {
		n := 0
		for i := g; i < keys; i += 8 {
			s.Send(peers.MemcachedRequest(opGetK, uint32(keys+i), key(i), nil, nil))
			n++
		}
		return n
	})
	for i := 0; i < keys; i++ {
		r := replies[uint32(keys+i)]
		if r == nil || binary.BigEndian.Uint16(r[6:]) != 0 {
			t.Fatalf("get %d: reply %x", i, r)
		}
		extras, klen := int(r[4]), int(binary.BigEndian.Uint16(r[2:]))
		body := r[24:]
		if string(body[extras:extras+klen]) != string(key(i)) || string(body[extras+klen:]) != string(value(i)) {
			t.Fatalf("get %d: wrong key or value", i)
		}
	}
}

// A real memcached, pipelined with quiet operations, whose replies are not
// one per request: SETQ answers nothing on success and GETKQ nothing on a
// miss, and a NOOP's reply marks the end of what came before it. Whole
// pipelines go out as one batch (SendBatch); the replies come back as
// exactly the hits, in order, then the NOOP.
func TestInteropMemcachedQuietPipeline(t *testing.T) {
	const (
		opSetQ  = 0x11
		opGetKQ = 0x0d
		opNoop  = 0x0a
		keys    = 100
	)
	addr := peers.Memcached(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(t, kcm.Config{})
	if _, err := m.Attach(c, parser.Memcached()); err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	key := func(i int) []byte { return fmt.Appendf(nil, "quiet-%d", i) }
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*7) }
	// untilNoop returns the replies received before the NOOP's.
	untilNoop := func() [][]byte {
		var got [][]byte
		for {
			r := recvWithin(t, s, 10*time.Second)
			if r[0] != 0x81 {
				t.Fatalf("reply magic %#x", r[0])
			}
			if r[1] == opNoop {
				return got
			}
			got = append(got, r)
		}
	}

	var sets [][]byte
	for i := range keys {
		sets = append(sets, peers.MemcachedRequest(opSetQ, uint32(i), key(i), make([]byte, 8), value(i)))
	}
	if err := s.SendBatch(append(sets, peers.MemcachedRequest(opNoop, 0, nil, nil, nil))); err != nil {
		t.Fatal(err)
	}
	if got := untilNoop(); len(got) != 0 {
		t.Fatalf("%d replies to quiet sets that succeed, want none (status %#x)", len(got), got[0][6:8])
	}

	var gets [][]byte
	for i := range keys + keys/2 { // keys from keys on were never set: misses
		gets = append(gets, peers.MemcachedRequest(opGetKQ, uint32(i), key(i), nil, nil))
	}
	if err := s.SendBatch(append(gets, peers.MemcachedRequest(opNoop, 0, nil, nil, nil))); err != nil {
		t.Fatal(err)
	}
	got := untilNoop()
	if len(got) != keys {
		t.Fatalf("%d replies, want one per hit, %d", len(got), keys)
	}
	for i, r := range got { // the hits, in order
		extras, klen := int(r[4]), int(binary.BigEndian.Uint16(r[2:]))
		body := r[24:]
		if binary.BigEndian.Uint32(r[12:]) != uint32(i) || string(body[extras:extras+klen]) != string(key(i)) ||
			!bytes.Equal(body[extras+klen:], value(i)) {
			t.Fatalf("reply %d is not the hit on %q", i, key(i))
		}
	}
}

// A real memcached that goes away and comes back, behind a ConnSet of
// three connections: its psocks fail with the server, the set dials until
// it is back, and a request sent while no connection was attached waits in
// the mux and is answered once the set has reconnected.
func TestInteropMemcachedRestartBehindConnSet(t *testing.T) {
	const (
		opSet  = 0x01
		opGetK = 0x0c
	)
	addr, restart := peers.MemcachedRestartable(t)
	m := newMux(t, kcm.Config{})
	var d net.Dialer
	cs, err := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size:       3,
		Dial:       func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		Parser:     parser.Memcached(),
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	attached := func(n int) func(string) bool {
		return func(string) bool {
			k := 0
			for _, p := range cs.Psocks() {
				if p != nil {
					k++
				}
			}
			return k == n
		}
	}
	s := m.NewSocket(kcm.Datagram)
	reply := func(opaque uint32) []byte {
		t.Helper()
		r := recvWithin(t, s, 10*time.Second)
		if r[0] != 0x81 || binary.BigEndian.Uint32(r[12:]) != opaque || binary.BigEndian.Uint16(r[6:]) != 0 {
			t.Fatalf("reply % x, want a success for opaque %d", r[:24], opaque)
		}
		return r
	}
	set := func(opaque uint32, key, value string) []byte {
		return peers.MemcachedRequest(opSet, opaque, []byte(key), make([]byte, 8), []byte(value))
	}
	get := func(opaque uint32, key, want string) {
		t.Helper()
		if err := s.Send(peers.MemcachedRequest(opGetK, opaque, []byte(key), nil, nil)); err != nil {
			t.Fatal(err)
		}
		r := reply(opaque)
		extras, klen := int(r[4]), int(binary.BigEndian.Uint16(r[2:]))
		if v := string(r[24+extras+klen:]); v != want {
			t.Fatalf("get %q = %q, want %q", key, v, want)
		}
	}

	waitProc(t, m, attached(3))
	if err := s.Send(set(1, "k", "before")); err != nil {
		t.Fatal(err)
	}
	reply(1)
	get(2, "k", "before")
	restart(func() {
		waitProc(t, m, attached(0))                           // every psock failed with the server
		if err := s.Send(set(3, "k", "during")); err != nil { // held by the mux
			t.Fatal(err)
		}
	})
	reply(3) // sent once the set reconnected
	get(4, "k", "during")
	waitProc(t, m, attached(3))
	if st := m.Stats(); st.PsockAttach < 6 {
		t.Fatalf("PsockAttach = %d, want 3 and 3 more after the restart", st.PsockAttach)
	}
}

// A real nghttpd, over cleartext HTTP/2: the connection preface is written
// before the attach (connection management stays with the application, as
// the kernel's KCM design says), then every HTTP/2 frame is one message,
// parsed by parser.HTTP2(), and the served file arrives intact. Over TLS
// (h2 by ALPN), the tls.Conn is attached before its handshake, which the
// psock makes, and the preface goes out as a message of its own.
func TestInteropNghttpd(t *testing.T) {
	docroot := t.TempDir()
	body := make([]byte, 40000)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	if err := os.WriteFile(filepath.Join(docroot, "f.txt"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("h2c", func(t *testing.T) {
		addr := peers.Nghttpd(t, docroot)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// The preface is not a frame: write it, and our SETTINGS, before attaching.
		if _, err := c.Write(append([]byte(http2.ClientPreface), h2frame(http2.FrameSettings, 0, 0, nil)...)); err != nil {
			t.Fatal(err)
		}
		m := newMux(t, kcm.Config{})
		if _, err := m.Attach(c, parser.HTTP2()); err != nil {
			t.Fatal(err)
		}
		h2Get(t, m.NewSocket(kcm.Datagram), addr, body)
	})
	t.Run("tls", func(t *testing.T) {
		key, cert := writeKeyPair(t, selfSigned(t))
		addr := peers.NghttpdTLS(t, docroot, key, cert)
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		m := newMux(t, kcm.Config{})
		if _, err := m.Attach(c, parser.HTTP2()); err != nil {
			t.Fatal(err)
		}
		s := m.NewSocket(kcm.Datagram)
		if err := s.Send([]byte(http2.ClientPreface)); err != nil {
			t.Fatal(err)
		}
		if err := s.Send(h2frame(http2.FrameSettings, 0, 0, nil)); err != nil {
			t.Fatal(err)
		}
		h2Get(t, s, addr, body)
		if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN negotiated %q, want h2", p)
		}
	})
}

// h2Get requests /f.txt on stream 1 through s, after the connection
// preface, answers the server's SETTINGS, and checks that the response is
// 200 with body.
func h2Get(t *testing.T, s *kcm.Socket, addr string, body []byte) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/f.txt"}, {":authority", addr}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	flags := http2.FlagHeadersEndStream | http2.FlagHeadersEndHeaders
	if err := s.Send(h2frame(http2.FrameHeaders, flags, 1, hb.Bytes())); err != nil {
		t.Fatal(err)
	}
	var got []byte
	var status string
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for done := false; !done; {
		f := recvWithin(t, s, 10*time.Second)
		length := int(f[0])<<16 | int(f[1])<<8 | int(f[2])
		if len(f) != 9+length {
			t.Fatalf("frame of %d bytes says length %d", len(f), length)
		}
		typ, fl, stream := http2.FrameType(f[3]), http2.Flags(f[4]), binary.BigEndian.Uint32(f[5:])&0x7fffffff
		switch {
		case typ == http2.FrameSettings && fl&http2.FlagSettingsAck == 0:
			s.Send(h2frame(http2.FrameSettings, http2.FlagSettingsAck, 0, nil))
		case typ == http2.FrameHeaders && stream == 1:
			if _, err := dec.Write(f[9:]); err != nil {
				t.Fatal(err)
			}
		case typ == http2.FrameData && stream == 1:
			got = append(got, f[9:]...)
			done = fl&http2.FlagDataEndStream != 0
		case typ == http2.FrameGoAway || typ == http2.FrameRSTStream:
			t.Fatalf("server sent %v", typ)
		}
	}
	if status != "200" || !bytes.Equal(got, body) {
		t.Fatalf("status %q, %d bytes, want 200 and the file", status, len(got))
	}
}

// writeKeyPair writes cert's private key and certificate as PEM files, for
// a peer that reads them, and returns their paths.
func writeKeyPair(t *testing.T, cert tls.Certificate) (keyFile, certFile string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, certFile = filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFile, certFile
}

// h2frame encodes one HTTP/2 frame.
func h2frame(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) []byte {
	f := make([]byte, 9, 9+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3], f[4] = byte(typ), byte(flags)
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

// serveMux accepts loopback TCP connections and attaches each to m with
// parser p: a server's one unconnected mux, whose psocks are its clients.
// It returns the listening host and port; the listener closes with the
// test.
func serveMux(t *testing.T, m *kcm.Mux, p kcm.Parser) (host, port string) {
	return serveMuxTLS(t, m, p, nil)
}

// serveMuxTLS is serveMux over TLS with cfg, unless cfg is nil: every
// psock is a server-side tls.Conn, whose handshake its first read makes.
func serveMuxTLS(t *testing.T, m *kcm.Mux, p kcm.Parser, cfg *tls.Config) (host, port string) {
	t.Helper()
	addr := testconn.Serve(t, func(c net.Conn) {
		if cfg != nil {
			c = tls.Server(c, cfg)
		}
		if _, err := m.Attach(c, p); err != nil {
			c.Close()
		}
	})
	host, port, _ = net.SplitHostPort(addr)
	return host, port
}

// A real client drives a kcm server: an unmodified sockperf ping-pong
// client (C) against an echo server whose connections are the psocks of
// one unconnected mux, parsed by parser.Sockperf(), answered by four
// worker sockets, each reply sent on the connection its request came from
// (SendTo), as a sockperf server answers. sockperf checks every reply's
// sequence number.
//
// In throughput mode sockperf sends as fast as the server takes them, and
// every message it counts as sent is parsed by the server exactly once.
func TestInteropSockperfClient(t *testing.T) {
	m := newMux(t, kcm.Config{})
	host, port := serveMux(t, m, parser.Sockperf())
	var got atomic.Int64 // messages other than warm-up ones
	serveSockets(t, m, 4, func(s *kcm.Socket) { sockperfEcho(s, &got) })
	observed := regexp.MustCompile(`Total (\d+) observations`)
	for _, size := range []string{"14", "1400"} {
		out := peers.Run(t, "sockperf", "sockperf", "ping-pong", "--tcp", "-i", host, "-p", port, "-t", "1", "-m", size)
		if !strings.Contains(out, "# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0") {
			t.Fatalf("sockperf -m %s saw lost or misordered replies:\n%s", size, out)
		}
		if n := observed.FindStringSubmatch(out); n == nil || n[1] == "0" {
			t.Fatalf("sockperf -m %s observed no round trip:\n%s", size, out)
		}
	}

	got.Store(0)
	out := peers.Run(t, "sockperf", "sockperf", "throughput", "--tcp", "-i", host, "-p", port, "-t", "1", "-m", "100")
	sent := regexp.MustCompile(`Total of (\d+) messages sent`).FindStringSubmatch(out)
	if sent == nil {
		t.Fatalf("sockperf throughput printed no count:\n%s", out)
	}
	n, _ := strconv.ParseInt(sent[1], 10, 64)
	waitProc(t, m, func(string) bool { return got.Load() >= n }) // the server drains what is in flight
	if got.Load() != n || n == 0 {
		t.Fatalf("the server parsed %d messages, sockperf sent %d", got.Load(), n)
	}
}

// sockperfEcho answers each sockperf message of a client that asks for a
// reply (flags: client, pong request) with its bytes, the client flag
// cleared, and counts in got those that are not warm-up messages.
func sockperfEcho(s *kcm.Socket, got *atomic.Int64) {
	const client, pong, warmup = 1, 2, 4
	var reply []byte
	for {
		msg, err := s.RecvMessage()
		if err != nil {
			return
		}
		b := msg.Bytes()
		f := binary.BigEndian.Uint16(b[8:])
		if f&warmup == 0 {
			got.Add(1)
		}
		if f&(client|pong) == client|pong {
			reply = append(reply[:0], b...)
			binary.BigEndian.PutUint16(reply[8:], f&^client)
			s.SendTo(reply, msg.Psock()) // fails only when the client left
		}
		msg.Release()
	}
}

// A real HTTP/2 load client drives a kcm server: h2load, over four
// connections with eight streams each in flight, against a minimal HTTP/2
// server on one unconnected mux, in cleartext (h2c) and over TLS (h2 by
// ALPN, each psock a tls.Conn). parser.HTTP2Server() makes the client
// preface and then every frame one message; the server keeps each
// connection's HPACK state by psock and answers every request on its own
// connection (SendTo). h2load checks every response.
func TestInteropH2load(t *testing.T) {
	for _, tc := range h2Fronts(t) {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			host, port := serveMuxTLS(t, m, parser.HTTP2Server(), tc.tls)
			body := bytes.Repeat([]byte("kcm "), 25)
			var bad atomic.Int64 // frames the server could not handle
			// One socket: HTTP/2 frames of a connection must be handled in order.
			serveSockets(t, m, 1, func(s *kcm.Socket) { h2Serve(s, body, &bad) })
			h2load(t, tc.scheme, host, port)
			if bad.Load() != 0 {
				t.Fatalf("the server could not handle %d frames", bad.Load())
			}
		})
	}
}

// h2Front is how an HTTP/2 client reaches a kcm server: h2c, or TLS with
// ALPN h2.
type h2Front struct {
	name, scheme string
	tls          *tls.Config
}

func h2Fronts(t *testing.T) []h2Front {
	return []h2Front{
		{"h2c", "http", nil},
		{"tls", "https", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h2"}}},
	}
}

// h2loadRequests is how many requests h2load makes (4 connections x 8
// streams) in h2load.
const h2loadRequests = 20000

// h2load runs a real h2load against host:port and fails the test unless
// every request got a 2xx response; it logs h2load's rate.
func h2load(t *testing.T, scheme, host, port string) {
	t.Helper()
	const n = h2loadRequests
	out := peers.Run(t, "h2load", "nghttp2-client", "-n", strconv.Itoa(n), "-c", "4", "-m", "8",
		scheme+"://"+net.JoinHostPort(host, port)+"/f")
	want := fmt.Sprintf("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored, 0 timeout", n, n, n, n)
	if !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("status codes: %d 2xx", n)) {
		t.Fatalf("h2load did not get %d good responses:\n%s", n, out)
	}
	if i := strings.Index(out, "finished in"); i >= 0 {
		t.Log(strings.SplitN(out[i:], "\n", 2)[0])
	}
}

// h2Serve answers every GET of every HTTP/2 connection of s's mux with
// body. It handles what a client such as h2load sends: the preface,
// SETTINGS, PING, HEADERS ending their stream; other frames are ignored,
// and header blocks continued in CONTINUATION frames are counted in bad.
func h2Serve(s *kcm.Socket, body []byte, bad *atomic.Int64) {
	type conn struct {
		dec *hpack.Decoder
		enc *hpack.Encoder
		buf bytes.Buffer
	}
	conns := map[*kcm.Psock]*conn{}
	for {
		msg, err := s.RecvMessage()
		if err != nil {
			return
		}
		p, f := msg.Psock(), msg.Bytes()
		c := conns[p]
		if c == nil {
			c = &conn{dec: hpack.NewDecoder(4096, nil)}
			c.enc = hpack.NewEncoder(&c.buf)
			conns[p] = c
		}
		typ, fl, stream := http2.FrameType(f[3]), http2.Flags(f[4]), binary.BigEndian.Uint32(f[5:])&0x7fffffff
		switch {
		case string(f) == parser.HTTP2Preface:
			s.SendTo(h2frame(http2.FrameSettings, 0, 0, nil), p)
		case typ == http2.FrameSettings && fl&http2.FlagSettingsAck == 0:
			s.SendTo(h2frame(http2.FrameSettings, http2.FlagSettingsAck, 0, nil), p)
		case typ == http2.FramePing && fl&http2.FlagPingAck == 0:
			s.SendTo(h2frame(http2.FramePing, http2.FlagPingAck, 0, f[9:]), p)
		case typ == http2.FrameHeaders:
			block := f[9:]
			if fl&http2.FlagHeadersPadded != 0 {
				block = block[1 : len(block)-int(block[0])]
			}
			if fl&http2.FlagHeadersPriority != 0 {
				block = block[5:]
			}
			if _, err := c.dec.DecodeFull(block); err != nil || fl&http2.FlagHeadersEndHeaders == 0 {
				bad.Add(1)
				break
			}
			if fl&http2.FlagHeadersEndStream == 0 {
				break // a request body follows: not a GET
			}
			c.buf.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
			s.SendTo(h2frame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, stream, c.buf.Bytes()), p)
			s.SendTo(h2frame(http2.FrameData, http2.FlagDataEndStream, stream, body), p)
		}
		msg.Release()
	}
}

// A real TLS 1.3 stack (openssl s_server) asks for a key update after the
// write deadline of kcm's last timed write has passed. The connection's
// reader answers the key update with a write of its own, which must not
// find that old deadline: tls.Conn keeps a failed write's error for good,
// and the psock would fail on its next message.
func TestInteropOpenSSLKeyUpdateAfterTimedWrite(t *testing.T) {
	keyUpdateAfterTimedWrite(t, func(c *tls.Conn) net.Conn { return c })
}

// The same with the tls.Conn behind a wrapper of the application's (one
// that counts bytes, say), which kcm cannot see through: nor can it see
// through the connection Unattach hands back with bytes it had read
// (prefixConn), attached again. Its write deadline must come off as well:
// every connection kcm does not write itself may be a tls.Conn. (Only a
// tls.Conn kcm recognised had its deadline taken off.)
func TestInteropOpenSSLKeyUpdateAfterTimedWriteWrapped(t *testing.T) {
	keyUpdateAfterTimedWrite(t, func(c *tls.Conn) net.Conn { return struct{ net.Conn }{c} })
}

// keyUpdateAfterTimedWrite attaches a TLS 1.3 connection to an openssl
// s_server, wrapped by wrap, to a mux with a WriteTimeout, and has the
// server ask for a key update long after kcm's last write.
func keyUpdateAfterTimedWrite(t *testing.T, wrap func(*tls.Conn) net.Conn) {
	keyFile, certFile := writeKeyPair(t, selfSigned(t))
	srv := peers.OpenSSLServer(t, keyFile, certFile)
	const wto = 20 * time.Millisecond
	m := kcm.NewMux(kcm.Config{WriteTimeout: wto})
	defer m.Close()
	conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.Attach(wrap(conn), lenPrefix)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.SeqPacket)
	if err := s.Send(frame([]byte("first-message"))); err != nil {
		t.Fatal(err)
	}
	srv.WaitOutput(t, "first-message")
	// The state under test is a deadline in the past: let it pass.
	time.Sleep(3 * wto)
	srv.Input(t, "K\n")
	srv.WaitOutput(t, "SSL_do_handshake -> 1")
	// A message from the server after its key update; kcm's tls.Conn reads
	// the update on the way and answers it.
	srv.Input(t, "\x00\x00\x00\x05reply")
	if got := recvWithin(t, s, 10*time.Second); string(got) != "\x00\x00\x00\x05reply" {
		t.Fatalf("received %q", got)
	}
	srv.WaitOutput(t, "<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
	if err := s.Send(frame([]byte("second-message"))); err != nil {
		t.Fatal(err)
	}
	srv.WaitOutput(t, "second-message")
	if err := p.Err(); err != nil {
		t.Fatalf("psock failed: %v", err)
	}
}

// The RFC's L7 proxy, between two real peers: h2load's HTTP/2 connections
// are the psocks of a front mux, each paired with a connection of a back
// mux to a real nghttpd, and every frame goes across as a message, in
// order, with SendBatchTo. Cleartext and TLS-terminating fronts; h2load checks
// every response.
func TestInteropH2Proxy(t *testing.T) {
	docroot := t.TempDir()
	body := bytes.Repeat([]byte("kcm proxy "), 400)
	if err := os.WriteFile(filepath.Join(docroot, "f"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	upstream := peers.Nghttpd(t, docroot)
	for _, tc := range h2Fronts(t) {
		t.Run(tc.name, func(t *testing.T) {
			front := newH2Proxy(t, upstream)
			host, port := serveMuxTLS(t, front, parser.HTTP2Server(), tc.tls)
			const n = h2loadRequests
			h2load(t, tc.scheme, host, port)
			// Every request was parsed before its answer came back; the
			// answers (two frames or more each) may still be counted as
			// h2load exits, so they are checked with room to spare.
			if st := front.Stats(); st.PsockAttach < 4 || st.RxMsgs < n || st.TxMsgs < n {
				t.Fatalf("the front mux did not carry the traffic: %+v", st)
			}
		})
	}
}

// newH2Proxy returns the front mux of an HTTP/2 proxy to upstream: for each
// of its psocks it dials upstream on first data and relays frames both ways
// (the client's preface, a message of parser.HTTP2Server, included); when
// either connection ends, its pair is closed.
func newH2Proxy(t *testing.T, upstream string) *kcm.Mux {
	var mu sync.Mutex
	pair := map[*kcm.Psock]*kcm.Psock{} // both directions
	drop := func(p *kcm.Psock, _ error) {
		mu.Lock()
		q := pair[p]
		delete(pair, p)
		delete(pair, q)
		mu.Unlock()
		if q != nil {
			if c, err := q.Unattach(); err == nil {
				c.Close()
			}
		}
	}
	front := newMux(t, kcm.Config{OnPsockError: drop})
	back := newMux(t, kcm.Config{OnPsockError: drop})
	fs, bs := front.NewSocket(kcm.Datagram), back.NewSocket(kcm.Datagram)
	// What arrived together goes out together: each run of messages from
	// one connection in one write to its pair.
	relay := func(from *kcm.Socket, to *kcm.Socket, peerOf func(*kcm.Psock) *kcm.Psock) {
		ms := make([]kcm.Message, 64)
		var run [][]byte
		for {
			n, err := from.RecvBatch(ms)
			if err != nil {
				return
			}
			for i := 0; i < n; {
				p := ms[i].Psock()
				run = run[:0]
				for ; i < n && ms[i].Psock() == p; i++ {
					run = append(run, ms[i].Bytes())
				}
				if q := peerOf(p); q != nil {
					to.SendBatchTo(run, q) // fails only when q left: its pair is going too
				}
			}
			kcm.ReleaseBatch(ms[:n])
		}
	}
	upstreamOf := func(p *kcm.Psock) *kcm.Psock {
		mu.Lock()
		defer mu.Unlock()
		if q, ok := pair[p]; ok {
			return q
		}
		c, err := net.Dial("tcp", upstream)
		if err != nil {
			t.Errorf("proxy: dial upstream: %v", err)
			return nil
		}
		q, err := back.Attach(c, parser.HTTP2())
		if err != nil {
			c.Close()
			return nil
		}
		pair[p], pair[q] = q, p
		return q
	}
	clientOf := func(q *kcm.Psock) *kcm.Psock {
		mu.Lock()
		defer mu.Unlock()
		return pair[q]
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); relay(fs, bs, upstreamOf) }()
	go func() { defer wg.Done(); relay(bs, fs, clientOf) }()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		wg.Wait()
	})
	return front
}

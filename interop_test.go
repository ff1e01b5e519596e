package kcm_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/peers"
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

// A real nghttpd, over cleartext HTTP/2: the connection preface is written
// before the attach (connection management stays with the application, as
// the kernel's KCM design says), then every HTTP/2 frame is one message,
// parsed by parser.HTTP2(), and the served file arrives intact.
func TestInteropNghttpd(t *testing.T) {
	docroot := t.TempDir()
	body := make([]byte, 40000)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	if err := os.WriteFile(filepath.Join(docroot, "f.txt"), body, 0o644); err != nil {
		t.Fatal(err)
	}
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
	s := m.NewSocket(kcm.Datagram)

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

// h2frame encodes one HTTP/2 frame.
func h2frame(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) []byte {
	f := make([]byte, 9, 9+len(payload))
	f[0], f[1], f[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
	f[3], f[4] = byte(typ), byte(flags)
	binary.BigEndian.PutUint32(f[5:], stream)
	return append(f, payload...)
}

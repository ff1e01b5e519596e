package kcm_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/peers"
	"github.com/gokcm/kcm/parser"
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
		for g := 0; g < 8; g++ {
			s := m.NewSocket(kcm.Datagram)
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				defer s.Close()
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

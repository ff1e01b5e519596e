package kcm_test

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/gokcm/kcm"
)

// lenPrefix is the test framing: a 4-byte big-endian payload length, then
// the payload.
var lenPrefix = kcm.ParserFunc(func(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	return 4 + int(binary.BigEndian.Uint32(b)), nil
})

func frame(payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func TestSmokeRR(t *testing.T) {
	c, srv := tcpPair(t)
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	s := m.NewSocket(kcm.Datagram)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1024)
		for {
			var hdr [4]byte
			if _, err := readFull(srv, hdr[:]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(hdr[:])
			if _, err := readFull(srv, buf[:n]); err != nil {
				return
			}
			srv.Write(frame(buf[:n]))
		}
	}()
	b := make([]byte, 100)
	for i := 0; i < 1000; i++ {
		msg := frame([]byte{byte(i), 2, 3})
		if err := s.Send(msg); err != nil {
			t.Fatal(err)
		}
		n, err := s.Recv(b)
		if err != nil {
			t.Fatal(err)
		}
		if string(b[:n]) != string(msg) {
			t.Fatalf("got %x want %x", b[:n], msg)
		}
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

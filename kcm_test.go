package kcm_test

import (
	"encoding/binary"
	"io"
	"testing"

	"github.com/gokcm/kcm"
)

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
			if _, err := io.ReadFull(srv, hdr[:]); err != nil {
				return
			}
			n := binary.BigEndian.Uint32(hdr[:])
			if _, err := io.ReadFull(srv, buf[:n]); err != nil {
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

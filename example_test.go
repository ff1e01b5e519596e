package kcm_test

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/gokcm/kcm"
)

// A client sends requests on a kcm socket over a TCP connection and
// receives whole replies; the server here is a kcm echo service too.
func Example() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()

	// Messages are a 2-byte big-endian payload length, then the payload.
	framing := kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 2 {
			return 0, nil // need more bytes
		}
		return 2 + int(binary.BigEndian.Uint16(b)), nil
	})

	// Server: every connection is attached to one mux; one socket echoes.
	server := kcm.NewMux(kcm.Config{})
	defer server.Close()
	go func() {
		c, _ := ln.Accept()
		server.Attach(c, framing)
	}()
	go func() {
		s := server.NewSocket(kcm.Datagram)
		buf := make([]byte, 1<<16)
		for {
			n, err := s.Recv(buf)
			if err != nil {
				return
			}
			s.Send(buf[:n])
		}
	}()

	// Client.
	client := kcm.NewMux(kcm.Config{})
	defer client.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	client.Attach(c, framing)
	s := client.NewSocket(kcm.Datagram)

	msg := append([]byte{0, 5}, "hello"...)
	s.Send(msg)
	reply := make([]byte, 64)
	n, _ := s.Recv(reply)
	fmt.Printf("%q\n", reply[2:n])
	// Output: "hello"
}

// A receiver drains many small messages at once without copying them: the
// batch lends the mux's buffers until ReleaseBatch.
func ExampleSocket_RecvBatch() {
	a, b := net.Pipe()
	defer b.Close()
	framing := kcm.ParserFunc(func(p []byte) (int, error) {
		if len(p) < 1 {
			return 0, nil
		}
		return 1 + int(p[0]), nil // a 1-byte length, then the payload
	})
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	m.Attach(a, framing)
	s := m.NewSocket(kcm.Datagram)
	go b.Write([]byte("\x03one\x03two\x05three"))

	batch := make([]kcm.Message, 16)
	for got := 0; got < 3; {
		n, err := s.RecvBatch(batch)
		if err != nil {
			return
		}
		for _, msg := range batch[:n] {
			fmt.Printf("%s\n", msg.Bytes()[1:])
		}
		kcm.ReleaseBatch(batch[:n])
		got += n
	}
	// Output:
	// one
	// two
	// three
}

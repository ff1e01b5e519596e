package kcm_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

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

// A loop that must not block, an event loop for instance, polls with
// DontWait: a message whose bytes have arrived is returned at once, as the
// kernel, which parses on arrival, would return it; with nothing there the
// call returns ErrWouldBlock instead of waiting.
func ExampleSocket_RecvMsg_dontWait() {
	dir, _ := os.MkdirTemp("", "kcm")
	defer os.RemoveAll(dir)
	ln, _ := net.Listen("unix", filepath.Join(dir, "s"))
	defer ln.Close()
	peer, _ := net.Dial("unix", ln.Addr().String())
	defer peer.Close()
	c, _ := ln.Accept()

	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	m.Attach(c, kcm.ParserFunc(func(p []byte) (int, error) {
		if len(p) < 1 {
			return 0, nil
		}
		return 1 + int(p[0]), nil // a 1-byte length, then the payload
	}))
	s := m.NewSocket(kcm.Datagram)

	buf := make([]byte, 64)
	_, _, err := s.RecvMsg(buf, kcm.DontWait)
	fmt.Println(errors.Is(err, kcm.ErrWouldBlock))
	peer.Write([]byte("\x05hello")) // on a Unix socket, queued at c when Write returns
	n, _, err := s.RecvMsg(buf, kcm.DontWait)
	fmt.Printf("%q %v\n", buf[1:n], err)
	// Output:
	// true
	// "hello" <nil>
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

// A server replies on the connection each request came from: its workers
// share one mux over all client connections (an unconnected mux).
func ExampleSocket_SendTo() {
	framing := kcm.ParserFunc(func(p []byte) (int, error) {
		if len(p) < 1 {
			return 0, nil
		}
		return 1 + int(p[0]), nil // a 1-byte length, then the payload
	})
	server := kcm.NewMux(kcm.Config{})
	defer server.Close()
	var clients []net.Conn
	for range 2 {
		c, s := net.Pipe()
		server.Attach(s, framing)
		clients = append(clients, c)
	}
	go func() {
		w := server.NewSocket(kcm.Datagram)
		for {
			msg, err := w.RecvMessage()
			if err != nil {
				return // the mux closed
			}
			reply := append([]byte{0}, "re: "...)
			reply = append(reply, msg.Bytes()[1:]...)
			reply[0] = byte(len(reply) - 1)
			w.SendTo(reply, msg.Psock())
			msg.Release()
		}
	}()
	for i, name := range []string{"ann", "bob"} {
		clients[i].Write(append([]byte{3}, name...))
		buf := make([]byte, 64)
		n, _ := clients[i].Read(buf)
		fmt.Printf("client %d: %s\n", i, buf[1:n])
	}
	// Output:
	// client 0: re: ann
	// client 1: re: bob
}

// A relay passes messages from a client's connection on to an upstream
// one: what arrived together goes out together, in one write.
func ExampleSocket_SendBatchTo() {
	framing := kcm.ParserFunc(func(p []byte) (int, error) {
		if len(p) < 1 {
			return 0, nil
		}
		return 1 + int(p[0]), nil // a 1-byte length, then the payload
	})
	front, back := kcm.NewMux(kcm.Config{}), kcm.NewMux(kcm.Config{})
	defer front.Close()
	defer back.Close()
	client, c := net.Pipe()
	up, u := net.Pipe()
	front.Attach(c, framing)
	upstream, _ := back.Attach(u, framing)
	go func() {
		in, out := front.NewSocket(kcm.Datagram), back.NewSocket(kcm.Datagram)
		ms := make([]kcm.Message, 16)
		var run [][]byte
		for {
			n, err := in.RecvBatch(ms)
			if err != nil {
				return // the mux closed
			}
			run = run[:0]
			for _, m := range ms[:n] {
				run = append(run, m.Bytes())
			}
			out.SendBatchTo(run, upstream)
			kcm.ReleaseBatch(ms[:n])
		}
	}()
	go client.Write([]byte("\x03one\x03two\x05three"))
	r := bufio.NewReader(up)
	for range 3 {
		size, _ := r.ReadByte()
		payload := make([]byte, size)
		io.ReadFull(r, payload)
		fmt.Printf("upstream got %s\n", payload)
	}
	// Output:
	// upstream got one
	// upstream got two
	// upstream got three
}

// Two sockets share one connection to an echo peer; Config.Affinity gives
// each reply to the socket whose index the message carries, so each
// receives its own reply whichever receives first.
func ExampleConfig_affinity() {
	a, b := net.Pipe()
	defer b.Close()
	framing := kcm.ParserFunc(func(p []byte) (int, error) {
		if len(p) < 1 {
			return 0, nil
		}
		return 1 + int(p[0]), nil
	})
	m := kcm.NewMux(kcm.Config{Affinity: func(msg []byte, _ *kcm.Psock) int {
		if len(msg) < 2 {
			return -1 // any socket
		}
		return int(msg[1]) // the payload's first byte: the sender's index
	}})
	defer m.Close()
	m.Attach(a, framing)
	go io.Copy(b, b) // the peer echoes

	socks := []*kcm.Socket{m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)}
	for _, s := range socks {
		s.Send([]byte{2, byte(s.Index()), '!'})
	}
	for i := len(socks) - 1; i >= 0; i-- {
		buf := make([]byte, 8)
		n, _ := socks[i].Recv(buf)
		fmt.Printf("socket %d got the reply to socket %d (%d bytes)\n", socks[i].Index(), buf[1], n)
	}
	// Output:
	// socket 1 got the reply to socket 1 (3 bytes)
	// socket 0 got the reply to socket 0 (3 bytes)
}

// A client keeps two connections to a service attached to its mux: a
// connection that fails or is closed by the server is dialled again.
func ExampleNewConnSet() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() { // the service: echoes every byte on every connection
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	framing := kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 1 {
			return 0, nil
		}
		return 1 + int(b[0]), nil
	})

	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	var d net.Dialer
	set, _ := kcm.NewConnSet(m, kcm.ConnSetConfig{
		Size:   2,
		Dial:   func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", ln.Addr().String()) },
		Parser: framing,
	})
	defer set.Close()

	s := m.NewSocket(kcm.Datagram)
	s.Send(append([]byte{5}, "hello"...)) // held until a connection is attached
	buf := make([]byte, 16)
	n, _ := s.Recv(buf)
	fmt.Printf("%s\n", buf[1:n])
	// Output: hello
}

// Unattach hands a connection back exactly where the mux stopped: here a
// protocol of framed messages switches, after a "raw" message, to a plain
// byte stream, which the application reads from the returned connection,
// beginning with the bytes the mux had already read.
func ExamplePsock_Unattach() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, _ := ln.Accept()
		defer c.Close()
		// Two framed messages, then the stream is raw text.
		c.Write([]byte("\x05hello\x03raw" + "and now plain bytes\n"))
		io.Copy(io.Discard, c) // until the client closes
	}()

	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	c, _ := net.Dial("tcp", ln.Addr().String())
	p, _ := m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 1 {
			return 0, nil
		}
		return 1 + int(b[0]), nil // a 1-byte length, then the payload
	}))
	s := m.NewSocket(kcm.Datagram)
	buf := make([]byte, 64)
	for {
		n, _ := s.Recv(buf)
		fmt.Printf("message %q\n", buf[1:n])
		if string(buf[1:n]) == "raw" {
			break
		}
	}
	raw, _ := p.Unattach() // its reads begin with what the mux had read
	defer raw.Close()
	line, _ := bufio.NewReader(raw).ReadString('\n')
	fmt.Printf("stream %q\n", line)
	// Output:
	// message "hello"
	// message "raw"
	// stream "and now plain bytes\n"
}

// A SeqPacket socket receives a message larger than its buffer in pieces,
// as SOCK_SEQPACKET does: the rest stays for the next call, and EOR marks
// the piece that ends the message. (A Datagram socket would cut it and
// report Trunc.)
func ExampleSocket_RecvMsg() {
	c, peer := net.Pipe()
	defer peer.Close()
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	m.Attach(c, kcm.ParserFunc(func(b []byte) (int, error) {
		if len(b) < 1 {
			return 0, nil
		}
		return 1 + int(b[0]), nil // a 1-byte length, then the payload
	}))
	go peer.Write(append([]byte{11}, "hello world"...))

	s := m.NewSocket(kcm.SeqPacket)
	buf := make([]byte, 5)
	for {
		n, flags, err := s.RecvMsg(buf, 0)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%q end=%v\n", buf[:n], flags&kcm.EOR != 0)
		if flags&kcm.EOR != 0 {
			break
		}
	}
	// Output:
	// "\vhell" end=false
	// "o wor" end=false
	// "ld" end=true
}

// A debug endpoint that shows the mux's state in the layout of the
// kernel's /proc/net/kcm (a line for the mux, one per socket and one per
// psock, with counters, queue sizes and status flags such as TxWait or
// RxBg), then its counters in the layout of /proc/net/kcm_stats: what to
// look at when messages seem stuck.
func ExampleMux_WriteProc() {
	m := kcm.NewMux(kcm.Config{}) // the application's mux
	defer m.Close()
	debug := http.NewServeMux()
	debug.HandleFunc("/debug/kcm", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		m.WriteProc(w)
		io.WriteString(w, "\n")
		m.WriteProcStats(w)
	})
	http.ListenAndServe("localhost:6060", debug)
}

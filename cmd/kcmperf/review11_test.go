package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// The server's first-byte peek (plain or TLS): a connection that stalls
// after its first bytes, or whose TLS handshake fails, holds nothing: the
// server goes on serving others, closes it at once for a failed handshake,
// and Close does not wait for the hello timeout (goleak checks that no
// goroutine outlives the tests).

// r11Echo runs one raw echo round trip over a data connection of tg.
func r11Echo(t *testing.T, tg *target) {
	t.Helper()
	c, err := tg.dial(kindRawEcho, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := make([]byte, hdrLen+8)
	binary.BigEndian.PutUint32(req, 8)
	copy(req[hdrLen:], "r11-echo")
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, hdrLen+16)
	if _, err := io.ReadFull(c, resp); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(resp) != 16 || string(resp[hdrLen:hdrLen+8]) != "r11-echo" {
		t.Fatalf("echo response %q", resp)
	}
}

// r11ClosedSoon checks that the server closes c within d.
func r11ClosedSoon(t *testing.T, c net.Conn, d time.Duration, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if err != nil && isTimeout(err) {
		t.Errorf("%s: the server kept the connection open for %v", what, d)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestServerStalledFirstBytes(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	var stalled []net.Conn
	for _, prefix := range [][]byte{[]byte(helloMagic[:1]), {tlsHandshakeRecord}, {tlsHandshakeRecord, 3, 1}} {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(prefix); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}
	// Meanwhile the server serves others, plain and TLS.
	cc, err := dialControl(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.do("start"); err != nil {
		t.Fatal(err)
	}
	cc.Close()
	for _, useTLS := range []bool{false, true} {
		r11Echo(t, &target{addr: s.Addr(), tls: useTLS})
	}
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		closed = true
	case <-time.After(helloTimeout / 2):
		t.Fatal("Close waits for connections that stalled before their hello")
	}
	for _, c := range stalled {
		r11ClosedSoon(t, c, 5*time.Second, "stalled connection after Close")
	}
}

func TestServerFailedTLSHandshake(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, bogus := range [][]byte{
		{tlsHandshakeRecord, 3, 1, 0, 4, 'k', 'c', 'm', 'p'},          // a handshake record that is no ClientHello
		{tlsHandshakeRecord, 'c', 'm', 'p', 'C', 0, 0, 0, 0, 0, 0, 0}, // a hello with a TLS first byte
	} {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(bogus); err != nil {
			t.Fatal(err)
		}
		r11ClosedSoon(t, c, helloTimeout/2, "failed handshake")
		c.Close()
	}
	r11Echo(t, &target{addr: s.Addr(), tls: true})
}

// A hello that arrives piece by piece, the first byte alone, is read
// whole, plain and over TLS, for control and data connections alike.
func TestServerHelloPieceByPiece(t *testing.T) {
	s, err := startServer("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, useTLS := range []bool{false, true} {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if useTLS {
			if c, err = clientTLS(c, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for _, b := range (hello{kind: kindControl}).marshal() {
			if _, err := c.Write([]byte{b}); err != nil {
				t.Fatal(err)
			}
		}
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("tls %v: %v", useTLS, err)
		}
		if _, ok := parseGreeting(line); !ok {
			t.Fatalf("tls %v: greeting %q", useTLS, line)
		}
		if _, err := io.WriteString(c, "start\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := br.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ok" {
			t.Fatalf("tls %v: start: %q %v", useTLS, line, err)
		}
		c.Close()
	}
}

package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokcm/kcm"
)

// helloTimeout is how long a new connection may take to send its hello.
const helloTimeout = 10 * time.Second

// server answers every kind of kcmperf connection on one listening port. It
// runs in a child process of the client (the default), as "kcmperf server"
// on a remote machine, or in-process in tests.
type server struct {
	ln        net.Listener
	heartbeat bool // reported in the control greeting
	wg        sync.WaitGroup

	mu      sync.Mutex
	closers map[io.Closer]struct{}
	closed  bool
	quit    chan struct{} // closed by a control "quit"
	once    sync.Once

	tlsOnce sync.Once // makes tls, for data connections that start a TLS handshake
	tls     *tls.Config
	tlsErr  error

	starts atomic.Int64 // runs clients started (a "start" each), for tests
}

func startServer(addr string, heartbeat bool) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &server{ln: ln, heartbeat: heartbeat, closers: make(map[io.Closer]struct{}), quit: make(chan struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *server) Addr() string { return s.ln.Addr().String() }

// Quit is closed when a control connection asked the server to exit.
func (s *server) Quit() <-chan struct{} { return s.quit }

// Close stops accepting, closes every connection and mux and waits for their
// goroutines, so that nothing outlives the server.
func (s *server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.closers {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// track registers c to be closed by Close; it reports false (and closes c)
// when the server is already closing.
func (s *server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.closers[c] = struct{}{}
	return true
}

func (s *server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.closers, c)
	s.mu.Unlock()
	c.Close()
}

func (s *server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

func (s *server) serveConn(c net.Conn) {
	defer s.untrack(c)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	// A connection that never says what it is for must not hold the
	// server's resources.
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return
	}
	r := io.MultiReader(bytes.NewReader(first[:]), c)
	if first[0] == tlsHandshakeRecord {
		cfg, err := s.tlsConfig()
		if err != nil {
			return
		}
		tc := tls.Server(&prefixConn{Conn: c, r: r}, cfg)
		if tc.Handshake() != nil {
			return
		}
		c, r = tc, tc
	}
	h, err := readHello(r)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	switch h.kind {
	case kindControl:
		s.serveControl(c)
	case kindRawEcho:
		serveRawEcho(c, h.size)
	case kindRawStream:
		serveRawStream(c, h.size)
	case kindKCMEcho, kindKCMStream:
		s.serveKCM(c, h)
	}
}

// serveControl answers line commands. "stop" returns the CPU time the whole
// server process used since this connection's last "start", which is how the
// client learns the server's share of each measured interval.
func (s *server) serveControl(c net.Conn) {
	if _, err := io.WriteString(c, greeting(s.heartbeat)+"\n"); err != nil {
		return
	}
	sc := bufio.NewScanner(c)
	var cpu0 = cpuTime()
	for sc.Scan() {
		var reply string
		switch cmd := strings.TrimSpace(sc.Text()); cmd {
		case "start":
			cpu0 = cpuTime()
			s.starts.Add(1)
			reply = "ok"
		case "stop":
			reply = fmt.Sprintf("cpu %d", int64(cpuTime()-cpu0))
		case "gc":
			runtime.GC()
			reply = "ok"
		case "quit":
			s.once.Do(func() { close(s.quit) })
			reply = "ok"
		default:
			reply = "error unknown command " + cmd
		}
		if _, err := io.WriteString(c, reply+"\n"); err != nil {
			return
		}
	}
}

// serveRawEcho is the raw TCP server of rr: the fastest honest Go code, a
// bufio.Reader for the requests and one Write per response. The response
// starts with the request's payload (as much as fits), so that a client
// multiplexing several requests on one connection can match replies by an id.
func serveRawEcho(c net.Conn, respSize int) {
	br := bufio.NewReader(c)
	resp := newMessage(respSize, 'r')
	var hdr [hdrLen]byte
	buf := make([]byte, 0, 4096)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n > maxMessageSize {
			return
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		copy(resp[hdrLen:], buf)
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// serveRawStream writes messages of size payload bytes back to back through a
// bufio.Writer (which writes whenever it is full) until the client leaves.
func serveRawStream(c net.Conn, size int) {
	bw := bufio.NewWriterSize(c, streamWrite)
	msg := newMessage(size, 's')
	for {
		if _, err := bw.Write(msg); err != nil {
			return
		}
	}
}

// serveKCM serves one connection through its own mux with one socket and one
// psock: the server side of super_kcmperf.
func (s *server) serveKCM(c net.Conn, h hello) {
	m := newPerfMux(kcm.Config{})
	if !s.track(m) {
		return
	}
	defer s.untrack(m)
	if _, err := m.attach(c, lengthPrefix); err != nil {
		return
	}
	sock := m.NewSocket(kcm.Datagram)
	defer sock.Close()
	switch h.kind {
	case kindKCMEcho:
		kcmEcho(sock, h.size)
	case kindKCMStream:
		kcmStream(sock, h.size, h.batch)
	}
}

// kcmEcho receives each request without copying it (the pooled path) and
// sends the response, which starts with the request payload like serveRawEcho.
func kcmEcho(sock *kcm.Socket, respSize int) {
	resp := newMessage(respSize, 'k')
	for {
		msg, err := sock.RecvMessage()
		if err != nil {
			return
		}
		b := msg.Bytes()
		if len(b) > hdrLen {
			copy(resp[hdrLen:], b[hdrLen:])
		}
		msg.Release()
		if err := sock.Send(resp); err != nil {
			return
		}
	}
}

// kcmStream sends the same message n at a time with SendBatch until the
// client leaves.
func kcmStream(sock *kcm.Socket, size, n int) {
	msg := newMessage(size, 't')
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = msg
	}
	for {
		if err := sock.SendBatch(batch); err != nil {
			return
		}
	}
}

package kcm_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/peers"
)

// a18Proxy relays one TCP connection to target. Bytes from the target go
// through always; bytes to it stop once stopUp is closed (the proxy reads
// nothing more from its client: a peer that stopped reading; what it read
// after stopUp is dropped).
type a18Proxy struct {
	ln     net.Listener
	stopUp chan struct{}
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newA18Proxy(t *testing.T, target string) *a18Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := &a18Proxy{ln: ln, stopUp: make(chan struct{})}
	px.wg.Add(1)
	go func() {
		defer px.wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			return
		}
		px.mu.Lock()
		px.conns = append(px.conns, c, up)
		px.mu.Unlock()
		px.wg.Add(2)
		go func() { defer px.wg.Done(); io.Copy(c, up) }()
		go func() {
			defer px.wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				select {
				case <-px.stopUp:
					// Reads nothing more, and forwards nothing of it: a
					// part of a record would hold the target up.
					return
				default:
				}
				if n > 0 {
					up.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}()
	t.Cleanup(func() {
		ln.Close()
		px.mu.Lock()
		for _, c := range px.conns {
			c.Close()
		}
		px.mu.Unlock()
		px.wg.Wait()
	})
	return px
}

// a18WaitStable polls f until it reports the same non-zero value three
// times in a row, 30 ms apart (a kernel queue that stopped moving: no
// event says so), at most 10 s.
func a18WaitStable(t *testing.T, what string, f func() int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, same := -1, 0
	for time.Now().Before(deadline) {
		v := f()
		if v > 0 && v == last {
			same++
			if same == 3 {
				return
			}
		} else {
			same = 0
		}
		last = v
		time.Sleep(30 * time.Millisecond) // polling a kernel queue: no event
	}
	t.Fatalf("%s did not settle", what)
}

// A TLS 1.3 peer that stopped reading asks for a key update
// (update_requested) while kcm's writer is stuck on the full send buffer:
// tls.Conn's reader answers the key update from inside Read, so it waits
// for the write lock the stuck writer holds, where a read deadline does
// not wake it. Unattach stops the writer too, and returns the connection
// with the cut write's ErrMidMessage.
func TestAudit18TLSUnattachKeyUpdateWhileWriterStuck(t *testing.T) {
	testAudit18KeyUpdateWhileWriterStuck(t)
}

func testAudit18KeyUpdateWhileWriterStuck(t *testing.T) {
	keyFile, certFile := writeKeyPair(t, selfSigned(t))
	srv := peers.OpenSSLServer(t, keyFile, certFile)
	px := newA18Proxy(t, srv.Addr)
	conn, err := tls.Dial("tcp", px.ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	p, err := m.Attach(conn, lenPrefix)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(frame([]byte("first-message"))); err != nil {
		t.Fatal(err)
	}
	srv.WaitOutput(t, "first-message")
	close(px.stopUp)
	// Far more than the kernel buffers hold: the writer gets stuck.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range 64 {
			if s.Send(msgOf(uint32(i), 1<<20)) != nil {
				return
			}
		}
	}()
	defer func() {
		m.Close() // the sender waits for a psock otherwise
		<-sent
	}()
	under := conn.NetConn()
	a18WaitStable(t, "kcm's send queue", func() int { _, out := a18Queues(t, under); return out })
	srv.Input(t, "K\n")
	srv.WaitOutput(t, "SSL_do_handshake -> 1") // the key update went out
	// kcm's tls.Conn has read the key update once its receive queue is
	// empty again (the record is small: it arrives whole).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if in, _ := a18Queues(t, under); in == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kcm did not read the key update")
		}
		time.Sleep(10 * time.Millisecond) // polling a kernel queue: no event
	}
	res := make(chan error, 1)
	go func() {
		_, err := p.Unattach()
		// Not the TLS connection's Close: its close_notify would wait
		// 5 s for the peer, which does not read.
		under.Close()
		res <- err
	}()
	select {
	case err := <-res:
		if !errors.Is(err, kcm.ErrMidMessage) {
			t.Fatalf("Unattach: %v, want ErrMidMessage (its write was cut)", err)
		}
	case <-time.After(10 * time.Second):
		m.Close()
		<-res
		t.Fatal("Unattach of the TLS psock did not return within 10 s")
	}
}

// A TLS psock attached before its handshake whose handshake fails (a
// certificate the client does not trust, a peer speaking plaintext, a peer
// that hangs up mid-handshake) fails with an error that says so; the
// mux's other psock goes on carrying messages, and Close returns at once.
func TestAudit18TLSHandshakeFailures(t *testing.T) {
	cases := []struct {
		name string
		// attach returns the connection to attach and makes the peer's side.
		conns func(t *testing.T) (net.Conn, func(peer net.Conn))
		want  string
	}{
		{"client/untrusted", func(t *testing.T) (net.Conn, func(net.Conn)) {
			c, peer := tcpPair(t)
			cert := selfSigned(t)
			return tls.Client(c, &tls.Config{ServerName: "127.0.0.1"}), func(net.Conn) {
				tls.Server(peer, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
			}
		}, "certificate"},
		{"server/plaintext", func(t *testing.T) (net.Conn, func(net.Conn)) {
			c, peer := tcpPair(t)
			return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}), func(net.Conn) {
				peer.Write(frame([]byte("hello in the clear")))
			}
		}, "handshake"},
		{"server/hangup", func(t *testing.T) (net.Conn, func(net.Conn)) {
			c, peer := tcpPair(t)
			return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}), func(net.Conn) {
				// The start of a ClientHello record, then the end of the stream.
				peer.Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01})
				peer.Close()
			}
		}, "handshake"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := kcm.NewMux(kcm.Config{})
			defer m.Close()
			s := m.NewSocket(kcm.Datagram)
			_, other := attachPeer(t, m)
			c, peerSide := tc.conns(t)
			p, err := m.Attach(layeredConn{c}, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); peerSide(nil) }()
			defer func() { <-done }()
			err = waitDone(t, p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Err = %v, want an error that mentions %q", err, tc.want)
			}
			t.Logf("Err = %v", err)
			if _, uerr := p.Unattach(); !errors.Is(uerr, kcm.ErrNotAttached) {
				t.Fatalf("Unattach after the failure: %v, want ErrNotAttached", uerr)
			}
			// The other psock carries messages both ways.
			if err := s.Send(msgOf(7, 100)); err != nil {
				t.Fatal(err)
			}
			other.SetReadDeadline(time.Now().Add(5 * time.Second))
			if id := checkMsg(t, readMsg(t, other)); id != 7 {
				t.Fatalf("other psock got message %d", id)
			}
			if _, err := other.Write(msgOf(8, 50)); err != nil {
				t.Fatal(err)
			}
			if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 8 {
				t.Fatalf("received message %d", id)
			}
			if err := cfDo(t, 2*time.Second, "Mux.Close", m.Close); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// a18TLSPair returns a handshaken TLS pair: the server end for the mux,
// the client end for the test.
func a18TLSPair(t *testing.T, version uint16) (srv, cli *tls.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	srv = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MaxVersion: version})
	cli = tls.Client(peer, &tls.Config{InsecureSkipVerify: true})
	hs := make(chan error, 1)
	go func() { hs <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

var a18Versions = []struct {
	name string
	v    uint16
}{{"TLS12", tls.VersionTLS12}, {"TLS13", tls.VersionTLS13}}

// A peer's close_notify after a whole message ends the psock with io.EOF;
// in the middle of one, with io.ErrUnexpectedEOF. The message before it is
// delivered either way.
func TestAudit18TLSCloseNotify(t *testing.T) {
	for _, ver := range a18Versions {
		for _, mid := range []bool{false, true} {
			t.Run(ver.name+map[bool]string{false: "/boundary", true: "/mid"}[mid], func(t *testing.T) {
				m := newMux(t, kcm.Config{})
				s := m.NewSocket(kcm.Datagram)
				srv, cli := a18TLSPair(t, ver.v)
				p, err := m.Attach(srv, lenPrefix)
				if err != nil {
					t.Fatal(err)
				}
				b := msgOf(1, 30000)
				if mid {
					b = append(b, msgOf(2, 100)[:50]...)
				}
				if _, err := cli.Write(b); err != nil {
					t.Fatal(err)
				}
				if err := cli.CloseWrite(); err != nil { // close_notify
					t.Fatal(err)
				}
				if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 1 {
					t.Fatalf("got message %d", id)
				}
				want := io.EOF
				if mid {
					want = io.ErrUnexpectedEOF
				}
				if err := waitDone(t, p); err != want {
					t.Fatalf("Err = %v, want %v", err, want)
				}
				cli.Close()
			})
		}
	}
}

// Unattach of a handshaken TLS psock that holds part of a message returns
// a connection whose reads yield that part first, then the rest of the TLS
// stream; writes on it reach the peer, and the peer's close_notify ends it.
func TestAudit18TLSUnattachContinuesStream(t *testing.T) {
	for _, ver := range a18Versions {
		t.Run(ver.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			srv, cli := a18TLSPair(t, ver.v)
			defer cli.Close()
			p, err := m.Attach(srv, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			m2 := msgOf(2, 70000) // spans several records
			first := append(msgOf(1, 100), m2[:40000]...)
			if _, err := cli.Write(first); err != nil {
				t.Fatal(err)
			}
			if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 1 {
				t.Fatalf("got message %d", id)
			}
			// The part of message 2 is read once the psock's counters
			// say so; it need not have been read all for the check below.
			c, err := p.Unattach()
			if err != nil {
				t.Fatalf("Unattach: %v", err)
			}
			defer c.Close()
			go func() {
				cli.Write(m2[40000:])
				cli.CloseWrite()
			}()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the returned connection: %v", err)
			}
			if !bytes.Equal(got, m2) {
				t.Fatalf("the returned connection gave %d bytes, want message 2 (%d bytes) exactly", len(got), len(m2))
			}
			if _, err := c.Write(msgOf(3, 5000)); err != nil {
				t.Fatalf("write on the returned connection: %v", err)
			}
			cli.SetReadDeadline(time.Now().Add(10 * time.Second))
			if id := checkMsg(t, readMsg(t, cli)); id != 3 {
				t.Fatalf("peer got message %d", id)
			}
		})
	}
}

// Many small messages (joined into writes of up to 64 KiB on TLS) and
// large ones spanning many records, from several senders at once with
// Send and SendBatch, reach a TLS peer whole and, per sender, in order;
// the peer's own large and small messages come back whole.
func TestAudit18TLSMixedSizes(t *testing.T) {
	for _, ver := range a18Versions {
		t.Run(ver.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			srv, cli := a18TLSPair(t, ver.v)
			defer cli.Close()
			p, err := m.Attach(srv, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			const senders, perSender = 3, 400
			size := func(i int) int {
				switch i % 50 {
				case 0:
					return 1<<20 + i
				case 1:
					return 16<<10 + 1
				}
				return 9 + (i*37)%300
			}
			var wg sync.WaitGroup
			errs := make(chan error, senders)
			for k := range senders {
				s := m.NewSocket(kcm.Datagram)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perSender; {
						if k == 0 || i%50 < 2 {
							if err := s.Send(a18Msg(k, i, size(i))); err != nil {
								errs <- err
								return
							}
							i++
							continue
						}
						var batch [][]byte
						for ; i < perSender && i%50 >= 2 && len(batch) < 20; i++ {
							batch = append(batch, a18Msg(k, i, size(i)))
						}
						if err := s.SendBatch(batch); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			// The peer sends too, at the same time.
			back := m.NewSocket(kcm.Datagram)
			peerSent := make(chan error, 1)
			go func() {
				for i := range 40 {
					if _, err := cli.Write(a18Msg(9, i, size(i))); err != nil {
						peerSent <- err
						return
					}
				}
				peerSent <- nil
			}()
			next := make([]int, senders)
			cli.SetReadDeadline(time.Now().Add(60 * time.Second))
			for range senders * perSender {
				b := readMsg(t, cli)
				k, i := a18Check(t, b)
				if k >= senders || i != next[k] || len(b) != size(i) {
					t.Fatalf("peer got sender %d's message %d (%d bytes), want its message %d", k, i, len(b), next[k])
				}
				next[k]++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i := range 40 {
				b := recvWithin(t, back, 10*time.Second)
				if k, j := a18Check(t, b); k != 9 || j != i || len(b) != size(i) {
					t.Fatalf("got %d/%d (%d bytes), want 9/%d", k, j, len(b), i)
				}
			}
			if err := <-peerSent; err != nil {
				t.Fatal(err)
			}
			if err := p.Err(); err != nil {
				t.Fatalf("psock: %v", err)
			}
		})
	}
}

// a18Msg is a framed message of size bytes from sender k, number i, its
// body a pattern of both.
func a18Msg(k, i, size int) []byte {
	b := make([]byte, size)
	b[0], b[1], b[2], b[3] = byte((size-4)>>24), byte((size-4)>>16), byte((size-4)>>8), byte(size-4)
	b[4], b[5], b[6] = byte(k), byte(i>>8), byte(i)
	for j := 7; j < size; j++ {
		b[j] = byte(j*7 + k + i)
	}
	return b
}

func a18Check(t *testing.T, b []byte) (k, i int) {
	t.Helper()
	if len(b) < 7 {
		t.Fatalf("message of %d bytes", len(b))
	}
	k, i = int(b[4]), int(b[5])<<8|int(b[6])
	for j := 7; j < len(b); j++ {
		if b[j] != byte(j*7+k+i) {
			t.Fatalf("message %d/%d corrupt at byte %d", k, i, j)
		}
	}
	return k, i
}

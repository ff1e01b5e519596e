package kcm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Psocks work over crypto/tls connections: messages in both directions,
// across record boundaries.
func TestTLSPsock(t *testing.T) {
	cert := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvc <- nil
			return
		}
		c.(*tls.Conn).Handshake()
		srvc <- c
	}()
	cli, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := <-srvc
	defer srv.Close()

	client, server := newMux(t, kcm.Config{}), newMux(t, kcm.Config{})
	if _, err := client.Attach(cli, lenPrefix); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Attach(srv, lenPrefix); err != nil {
		t.Fatal(err)
	}
	cs, ss := client.NewSocket(kcm.Datagram), server.NewSocket(kcm.Datagram)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, err := ss.Recv(buf)
			if err != nil {
				return
			}
			ss.Send(buf[:n])
		}
	}()
	for i, size := range []int{10, 20000, 100000, 5} {
		msg := msgOf(uint32(i), size)
		if err := cs.Send(msg); err != nil {
			t.Fatal(err)
		}
		if got := recvWithin(t, cs, 10*time.Second); !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs", size)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsPairNoHandshake returns a server-side tls.Conn whose handshake has
// not begun, and its client, which begins it on its first use.
func tlsPairNoHandshake(t *testing.T) (srv, cli *tls.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	srv = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	cli = tls.Client(peer, &tls.Config{InsecureSkipVerify: true})
	return srv, cli
}

// A TLS psock attached before its handshake makes the handshake when first
// read, and the mux's interrupts meanwhile (here: another psock's attach,
// a socket's deadline, a non-blocking receive) do not cut it: a tls.Conn
// whose handshake read times out fails that handshake for good, and its
// reader spun on the timeout at full speed until then, never to deliver
// a message (nor to let Mux.Close return).
func TestTLSHandshakeSurvivesInterrupts(t *testing.T) {
	t.Run("tls.Conn", func(t *testing.T) {
		testTLSHandshakeSurvivesInterrupts(t, func(c *tls.Conn) net.Conn { return c })
	})
	// A wrapper that exposes the tls.Conn under it with a NetConn method,
	// as tls.Conn itself does, is seen through.
	t.Run("layered", func(t *testing.T) {
		testTLSHandshakeSurvivesInterrupts(t, func(c *tls.Conn) net.Conn { return layeredConn{c} })
	})
}

// layeredConn is an application's wrapper around a connection, which it
// exposes with a NetConn method.
type layeredConn struct{ net.Conn }

func (c layeredConn) NetConn() net.Conn { return c.Conn }

func testTLSHandshakeSurvivesInterrupts(t *testing.T, wrap func(*tls.Conn) net.Conn) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	srv, cli := tlsPairNoHandshake(t)
	p, err := m.Attach(wrap(srv), lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	attachPeer(t, m) // interrupts the first psock's reader
	s.SetReadDeadline(time.Now().Add(time.Hour))
	if _, _, err := s.RecvMsg(make([]byte, 10), kcm.DontWait); !errors.Is(err, kcm.ErrWouldBlock) {
		t.Fatalf("RecvMsg(DontWait) = %v, want ErrWouldBlock", err)
	}
	// The client handshakes only now, and sends.
	if _, err := cli.Write(msgOf(1, 100)); err != nil {
		t.Fatal(err)
	}
	if id := checkMsg(t, recvWithin(t, s, 5*time.Second)); id != 1 {
		t.Fatalf("got message %d, want 1", id)
	}
	if err := s.Send(msgOf(2, 100)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatalf("TLS psock left: %v", p.Err())
	default:
	}
}

// Unattach of a TLS psock whose handshake the peer never completes returns
// at once: the handshake is cancelled, which closes the connection, and
// Unattach says so.
func TestTLSUnattachDuringHandshake(t *testing.T) {
	m := newMux(t, kcm.Config{})
	srv, _ := tlsPairNoHandshake(t) // the client stays silent
	p, err := m.Attach(srv, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	err = cfDo(t, 5*time.Second, "Unattach during the handshake", func() (err error) {
		c, err = p.Unattach()
		return err
	})
	if !errors.Is(err, net.ErrClosed) || c == nil {
		t.Fatalf("Unattach: %v (connection returned: %t); want the connection and an error wrapping net.ErrClosed", err, c != nil)
	}
	if err := waitDone(t, p); err != nil {
		t.Fatalf("Err after Unattach = %v, want nil", err)
	}
}

// stickyTimeoutConn reports a timeout on every read, as a tls.Conn does
// once a read timed out during its handshake, though no deadline is set.
type stickyTimeoutConn struct{ net.Conn }

func (stickyTimeoutConn) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

// A connection that reports timeouts the mux did not set fails its psock,
// for its receivers and its background reader alike: reading again would
// spin at full speed, holding up Mux.Close.
func TestReadTimeoutNotOursFailsPsock(t *testing.T) {
	for _, lead := range []bool{false, true} {
		t.Run(map[bool]string{false: "background", true: "receiver"}[lead], func(t *testing.T) {
			m := kcm.NewMux(kcm.Config{})
			s := m.NewSocket(kcm.Datagram)
			c, _ := tcpPair(t)
			p, err := m.Attach(stickyTimeoutConn{c}, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			if lead {
				go s.Recv(make([]byte, 10))
			}
			if err := waitDone(t, p); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Err = %v, want the connection's timeout", err)
			}
			if err := cfDo(t, 5*time.Second, "Mux.Close", m.Close); err != nil {
				t.Fatal(err)
			}
		})
	}
}

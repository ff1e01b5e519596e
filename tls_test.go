package kcm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
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

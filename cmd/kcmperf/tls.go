package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// TLS (-tls): every data connection of the run, raw and kcm alike, is a TLS
// 1.3 connection; the control connection stays plain. The server needs no
// flag: a connection whose first byte starts a TLS handshake record is
// served over TLS, with a self-signed certificate the server makes when
// the first one arrives. The client does not verify it: the benchmark
// measures the record layer, not the trust in a key made for one run.

// tlsHandshakeRecord is the first byte of a TLS ClientHello (a handshake
// record); no kcmperf hello starts with it.
const tlsHandshakeRecord = 0x16

// clientTLS wraps a data connection's client end in TLS and completes the
// handshake within timeout.
func clientTLS(c net.Conn, timeout time.Duration) (net.Conn, error) {
	tc := tls.Client(c, &tls.Config{
		InsecureSkipVerify: true, // the server's key is made for this run; see above
		MinVersion:         tls.VersionTLS13,
	})
	tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// tlsConfig returns the server's TLS configuration, making its key and
// certificate the first time.
func (s *server) tlsConfig() (*tls.Config, error) {
	s.tlsOnce.Do(func() {
		var cert tls.Certificate
		cert, s.tlsErr = selfSigned()
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	})
	return s.tls, s.tlsErr
}

// selfSigned makes an ECDSA P-256 key and a certificate for it, valid for a
// day.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "kcmperf"},
		DNSNames:     []string{"kcmperf"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// prefixConn is a connection whose first bytes were already read: reads
// take them from r first.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

package kcm_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// r13GatedHandshake is a server tls.Conn whose HandshakeContext, once the
// handshake is made, waits for release before it returns: the moment
// between the handshake's end and its reader taking the mux's lock, held
// open.
type r13GatedHandshake struct {
	*tls.Conn
	made, release chan struct{}
}

func (c *r13GatedHandshake) HandshakeContext(ctx context.Context) error {
	err := c.Conn.HandshakeContext(ctx)
	close(c.made)
	<-c.release
	return err
}

// An Unattach that comes once the handshake is made, before its reader
// noted it, returns the connection as it is: open and handshaken.
// Cancelling a context after HandshakeContext returned closes nothing, yet
// Unattach reported an error wrapping net.ErrClosed ("its handshake was
// cancelled"), so a caller would drop a working connection.
func TestTLSUnattachAfterHandshakeKeepsConn(t *testing.T) {
	m := newMux(t, kcm.Config{})
	srv, cli := tlsPairNoHandshake(t)
	g := &r13GatedHandshake{Conn: srv, made: make(chan struct{}), release: make(chan struct{})}
	p, err := m.Attach(g, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	hs := make(chan error, 1)
	go func() { hs <- cli.Handshake() }()
	select {
	case <-g.made:
	case <-time.After(10 * time.Second):
		t.Fatal("the handshake was not made")
	}
	if err := <-hs; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	type result struct {
		c   net.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := p.Unattach()
		res <- result{c, err}
	}()
	// Unattach has begun (the dump shows Done) and waits for the reader.
	waitProc(t, m, func(d string) bool {
		return strings.Contains(procLine(d, fmt.Sprintf("psock-%d", p.Index())), "Done")
	})
	close(g.release)
	var r result
	select {
	case r = <-res:
	case <-time.After(10 * time.Second):
		t.Fatal("Unattach did not return")
	}
	if r.err != nil {
		t.Fatalf("Unattach after the handshake: %v, want nil", r.err)
	}
	// The connection works, both ways.
	if _, err := r.c.Write(frame([]byte("back"))); err != nil {
		t.Fatalf("write on the returned connection: %v", err)
	}
	if got := readMsg(t, cli); string(got[4:]) != "back" {
		t.Fatalf("client read %q", got)
	}
	if _, err := cli.Write(frame([]byte("forth"))); err != nil {
		t.Fatal(err)
	}
	if got := readMsg(t, r.c); string(got[4:]) != "forth" {
		t.Fatalf("read %q on the returned connection", got)
	}
}

package kcm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// r12FailWrites is a connection whose writes fail at once; its reads block
// until it is closed.
type r12FailWrites struct{ net.Conn }

func (c r12FailWrites) Write([]byte) (int, error) { return 0, errors.New("r12: write refused") }

// A sender waiting uncopied in the backlog (its message did not fit in the
// send buffer) whose message is flushed to a psock that then fails before
// writing it must send it again elsewhere, as any message of a failed
// psock: its Send neither fails nor loses the message. 58ee704 tells such
// a sender errRestart, which backlog.add hands back to transmit, which
// returned it to the caller ("kcm: restart on another psock").
func TestBacklogWaiterRestartsAfterFailedPsock(t *testing.T) {
	m := NewMux(Config{SendBuffer: 1024})
	defer m.Close()
	s := m.NewSocket(Datagram)
	small, big := r11Msg(1, 100), r11Msg(2, 4096)
	if err := s.Send(small); err != nil { // copied into the backlog
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { errs <- s.Send(big) }() // does not fit: waits uncopied
	waitLocked(t, m, "the big send never waited in the backlog", func() bool { return len(m.backlog.q) == 2 })
	m.mu.Unlock()

	bad, _ := loopbackPair(t)
	p1, err := m.Attach(r12FailWrites{bad}, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	<-p1.Done() // the backlog went to p1, whose write failed
	select {
	case err := <-errs:
		t.Fatalf("Send returned %v before any psock could write its message", err)
	default:
	}

	c, peer := loopbackPair(t)
	if _, err := m.Attach(c, r11Parser); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return")
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(small)+len(big))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append([]byte(nil), small...), big...)) {
		t.Fatal("peer read other bytes than the two messages in order")
	}
	if a := p1.Stats().TxAborts; a != 2 {
		t.Errorf("failed psock TxAborts %d, want 2", a)
	}
	if r := m.Stats().TxRetries; r != 2 {
		t.Errorf("TxRetries %d, want 2", r)
	}
}

// r12RawAfter returns how many bytes the TLS peer srv's transport reads
// until its end: records srv's TLS layer was not asked to read.
func r12RawAfter(t *testing.T, srv interface{ NetConn() net.Conn }) int64 {
	t.Helper()
	raw := srv.NetConn()
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, raw)
	if err != nil {
		t.Fatalf("peer's transport: %v after %d bytes", err, n)
	}
	return n
}

// A TLS peer that closes cleanly (close_notify; here with CloseWrite, so
// it still reads) gets the psock's close_notify back, as RFC 8446 6.1
// asks of each side before it closes its write side, and as kcm did before
// 9c292b8: the psock leaves the mux with io.EOF, which is no failure of
// the connection, and nothing is being written to a peer that reads.
// 9c292b8 closes every psock that left with an error other than ErrClosed
// without a goodbye: the peer's transport ends with no record after its
// own close_notify (a non-Go peer such as OpenSSL reports an unexpected
// EOF).
func TestPeerCloseNotifyIsAnswered(t *testing.T) {
	cli, srv := r11TLSPair(t)
	defer srv.Close()
	m := NewMux(Config{})
	defer m.Close()
	p, err := m.Attach(cli, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Err() != io.EOF {
		t.Fatalf("psock left with %v, want io.EOF", p.Err())
	}
	if n := r12RawAfter(t, srv); n == 0 {
		t.Fatal("the psock closed its connection without a close_notify")
	}
}

// Mux.Close's close_notify reaches a peer that reads. (TestCloseSaysTLSGoodbye
// cannot tell: a Go TLS peer reads io.EOF for a bare transport close at a
// record boundary too.) Passes; it guards the polite close.
func TestCloseSendsTLSCloseNotify(t *testing.T) {
	cli, srv := r11TLSPair(t)
	defer srv.Close()
	m := NewMux(Config{})
	if _, err := m.Attach(cli, r11Parser); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if n := r12RawAfter(t, srv); n == 0 {
		t.Fatal("Mux.Close closed a TLS psock without a close_notify")
	}
}

// ConnSet.Close closes a TLS connection as Mux.Close does (98d8fd9), also
// when the mux had buffered part of a message from it: Unattach then hands
// back the connection wrapped with those bytes (prefixConn), which has no
// NetConn method, so detach closed it as a plain connection and its
// close_notify, behind a peer that stopped reading, held Close for 5 s.
func TestConnSetCloseDoesNotWaitForTLSGoodbyeAfterPartialMessage(t *testing.T) {
	cli, srv := r11TLSPair(t)
	defer srv.Close()
	fillTLS(t, cli)
	m := NewMux(Config{})
	defer m.Close()
	partial := make(chan struct{})
	var once sync.Once
	parser := ParserFunc(func(b []byte) (int, error) {
		if len(b) >= 14 {
			once.Do(func() { close(partial) })
		}
		return r11Parser(b)
	})
	dialled := false
	cs, err := NewConnSet(m, ConnSetConfig{
		Parser: parser,
		Dial: func(ctx context.Context) (net.Conn, error) {
			if dialled {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			dialled = true
			return cli, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	msg := r11Msg(1, 104)
	if _, err := srv.Write(msg[:14]); err != nil { // part of a message
		t.Fatal(err)
	}
	<-partial
	start := time.Now()
	cs.Close()
	if d := time.Since(start); d > closeBound {
		t.Fatalf("ConnSet.Close took %v", d)
	}
}

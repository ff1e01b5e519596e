package kcm_test

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// sendBeforeHandshake attaches the server end of a TLS connection to m
// before its handshake, has other fill m's 1 KiB send buffer (sendFiller),
// and starts a 100 KiB message from s, sent to the new psock with SendTo
// when pinned, which must wait (it is in s's Send-Q when this returns).
// It returns the psock, the client end, and where the send's error goes.
func sendBeforeHandshake(t *testing.T, m *kcm.Mux, s, other *kcm.Socket, pinned bool) (*kcm.Psock, *tls.Conn, <-chan error) {
	t.Helper()
	srv, cli := tlsPairNoHandshake(t)
	p, err := m.Attach(srv, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	sendFiller(t, other, 2) // it goes out after the handshake
	sent := make(chan error, 1)
	go func() {
		if pinned {
			sent <- s.SendTo(msgOf(1, 100<<10), p)
		} else {
			sent <- s.Send(msgOf(1, 100<<10))
		}
	}()
	waitSendQ(t, m, s, 1)
	return p, cli, sent
}

// tlsSlowClient makes the client's handshake after delay (a client slow to
// handshake, not one that stopped reading), then reads one framed message
// from it; the message, or the error, goes to the channel returned.
func tlsSlowClient(t *testing.T, cli *tls.Conn, delay time.Duration) <-chan []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		defer close(got)
		time.Sleep(delay) // the peer is slow to handshake
		cli.SetDeadline(time.Now().Add(10 * time.Second))
		if err := cli.Handshake(); err != nil {
			t.Errorf("client handshake: %v", err)
			return
		}
		var hdr [4]byte
		if _, err := io.ReadFull(cli, hdr[:]); err != nil {
			t.Errorf("client read: %v", err)
			return
		}
		m := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
		copy(m, hdr[:])
		if _, err := io.ReadFull(cli, m[4:]); err != nil {
			t.Errorf("client read: %v", err)
			return
		}
		got <- m
	}()
	return got
}

// A message sent on a TLS psock attached before its handshake goes out
// once the handshake is done, however long the peer takes to make it:
// Config.WriteTimeout bounds the stalls of a peer that stopped reading,
// not the wait for a handshake. (It armed a write deadline that the
// handshake's own writes then met, failing the handshake for good.)
func TestTLSWriteTimeoutBeforeHandshake(t *testing.T) {
	for _, send := range []string{"Send", "SendTo", "SendBatch"} {
		t.Run(send, func(t *testing.T) {
			m := newMux(t, kcm.Config{WriteTimeout: 200 * time.Millisecond})
			s := m.NewSocket(kcm.Datagram)
			srv, cli := tlsPairNoHandshake(t)
			p, err := m.Attach(srv, lenPrefix)
			if err != nil {
				t.Fatal(err)
			}
			got := tlsSlowClient(t, cli, 400*time.Millisecond)
			msg := msgOf(1, 100)
			err = cfDo(t, 10*time.Second, send, func() error {
				switch send {
				case "SendTo":
					return s.SendTo(msg, p)
				case "SendBatch":
					return s.SendBatch([][]byte{msg})
				}
				return s.Send(msg)
			})
			if err != nil {
				t.Fatalf("%s: %v", send, err)
			}
			if b := <-got; b == nil || checkMsg(t, b) != 1 {
				t.Fatalf("the client got no message 1 (psock: %v)", p.Err())
			}
			select {
			case <-p.Done():
				t.Fatalf("TLS psock left: %v", p.Err())
			default:
			}
		})
	}
}

// sendFiller sends message id from s, copied into the mux's send buffer,
// so that a large message sent after it waits uncopied.
func sendFiller(t *testing.T, s *kcm.Socket, id uint32) {
	t.Helper()
	err := cfDo(t, 5*time.Second, "Send", func() error { return s.Send(msgOf(id, 100)) })
	if err != nil {
		t.Fatal(err)
	}
}

// A send waiting for a TLS psock's handshake (uncopied: the send buffer
// is full, and a SendTo copies no more than 64 KiB) honours its socket's
// closing and write deadline, and neither cuts the handshake: the psock
// serves the mux's other sockets once the peer makes it. (The sender
// waited in tls.Conn's Write for the handshake, which no deadline
// interrupts; the deadline a closing socket set in the past to stop it
// then failed the handshake's own writes, and the psock with it.)
func TestTLSSendWaitingForHandshakeGivesUp(t *testing.T) {
	for _, how := range []string{"Close", "SetWriteDeadline"} {
		for _, pinned := range []bool{false, true} {
			name := how + map[bool]string{false: "/Send", true: "/SendTo"}[pinned]
			t.Run(name, func(t *testing.T) {
				m := newMux(t, kcm.Config{SendBuffer: 1 << 10})
				s, other := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
				p, cli, sent := sendBeforeHandshake(t, m, s, other, pinned)
				want := kcm.ErrClosed
				if how == "Close" {
					s.Close()
				} else {
					s.SetWriteDeadline(time.Now())
					want = os.ErrDeadlineExceeded
				}
				select {
				case err := <-sent:
					if !errors.Is(err, want) {
						t.Fatalf("send: %v, want %v", err, want)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("the send waiting for the handshake did not return after %s", how)
				}
				got := tlsSlowClient(t, cli, 0)
				if b := <-got; b == nil || checkMsg(t, b) != 2 {
					t.Fatalf("the client got no message 2 (psock: %v)", p.Err())
				}
				select {
				case <-p.Done():
					t.Fatalf("TLS psock left: %v", p.Err())
				default:
				}
			})
		}
	}
}

// Unattach of a TLS psock during its handshake, while a send waits for it,
// returns at once: the handshake is cancelled. A Send's message stays
// with the mux and goes out on the next psock; a SendTo's fails with
// ErrNotAttached.
func TestTLSUnattachWhileSendWaitsForHandshake(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		t.Run(map[bool]string{false: "Send", true: "SendTo"}[pinned], func(t *testing.T) {
			m := newMux(t, kcm.Config{SendBuffer: 1 << 10, WriteTimeout: time.Minute})
			s, other := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
			p, _, sent := sendBeforeHandshake(t, m, s, other, pinned) // the client stays silent
			err := cfDo(t, 5*time.Second, "Unattach", func() error {
				_, err := p.Unattach()
				return err
			})
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Unattach: %v, want an error wrapping net.ErrClosed", err)
			}
			if pinned {
				select {
				case err := <-sent:
					if !errors.Is(err, kcm.ErrNotAttached) {
						t.Fatalf("SendTo: %v, want ErrNotAttached", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("SendTo did not return after Unattach")
				}
				return
			}
			_, peer := attachPeer(t, m)
			for _, want := range []uint32{2, 1} {
				if id := checkMsg(t, readMsg(t, peer)); id != want {
					t.Fatalf("peer read message %d, want %d", id, want)
				}
			}
			if err := <-sent; err != nil {
				t.Fatalf("Send: %v", err)
			}
		})
	}
}

// A TLS psock takes no messages before its handshake is done: they go to
// the mux's other psocks meanwhile, not into its queue to wait for a peer
// that may never make it. A SendTo waiting for its handshake fails with
// ErrNotAttached when the handshake fails.
func TestTLSPsockTakesMessagesAfterHandshake(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1 << 10})
	s, other := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	srv, cli := tlsPairNoHandshake(t)
	p, err := m.Attach(srv, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- s.SendTo(msgOf(1, 100<<10), p) }()
	waitSendQ(t, m, s, 1)
	for i := range 20 {
		if err := other.Send(msgOf(uint32(i+2), 100)); err != nil {
			t.Fatal(err)
		}
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range 20 {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i+2) {
			t.Fatalf("peer read message %d, want %d", id, i+2)
		}
	}
	// The client's bytes are no ClientHello: the handshake fails.
	if _, err := cli.NetConn().Write([]byte("not a TLS record\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-sent:
		if !errors.Is(err, kcm.ErrNotAttached) {
			t.Fatalf("SendTo: %v, want ErrNotAttached", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SendTo did not return after the handshake failed")
	}
	if err := waitDone(t, p); err == nil {
		t.Fatal("the psock whose handshake failed left without an error")
	}
}

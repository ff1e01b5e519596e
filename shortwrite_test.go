package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// shortConn breaks io.Writer as some wrappers do: its Write call number
// short (from 1) writes only the first half of what it is given and
// returns that count with a nil error.
type shortConn struct {
	net.Conn
	mu    sync.Mutex
	calls int
	short int
}

func (c *shortConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.calls++
	short := c.calls == c.short
	c.mu.Unlock()
	if short && len(b) > 1 {
		return c.Conn.Write(b[:len(b)/2])
	}
	return c.Conn.Write(b)
}

// attachShort attaches a shortConn to m, alone, and returns its psock and
// the peer's end.
func attachShort(t *testing.T, m *kcm.Mux, wrap func(net.Conn) net.Conn, short int) (*kcm.Psock, net.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	if wrap != nil {
		c = wrap(c)
	}
	p, err := m.Attach(&shortConn{Conn: c, short: short}, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p, peer
}

// checkShortFailed checks that p left the mux with io.ErrShortWrite as soon
// as the write came back short, and that its stream holds want, the
// messages written whole then a part of the one cut, and nothing after.
func checkShortFailed(t *testing.T, p *kcm.Psock, peer net.Conn, want []byte) {
	t.Helper()
	select {
	case <-p.Done():
	default:
		t.Fatal("the psock is still attached after a short write")
	}
	if err := p.Err(); !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("psock error %v, want io.ErrShortWrite", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("peer of the failed psock: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the failed psock's stream has %d bytes, want the %d written before the short write and nothing after", len(got), len(want))
	}
}

// readIDs reads n messages from peer and checks they are ids, in order.
func readIDs(t *testing.T, peer net.Conn, ids ...uint32) {
	t.Helper()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range ids {
		if id := checkMsg(t, readMsg(t, peer)); id != want {
			t.Fatalf("read message %d, want %d", id, want)
		}
	}
}

// A write that returns fewer bytes than it was given with a nil error is a
// short write (io.ErrShortWrite): the psock fails and the message that did
// not go out whole is restarted from byte 0 on another psock, as after any
// write error; nothing more is written after the part. Here the sender's
// own write on an idle psock, with and without a WriteTimeout.
func TestShortWriteOwnMessage(t *testing.T) {
	for name, cfg := range map[string]kcm.Config{"plain": {}, "WriteTimeout": {WriteTimeout: 5 * time.Second}} {
		t.Run(name, func(t *testing.T) {
			m := newMux(t, cfg)
			p, peer := attachShort(t, m, nil, 1)
			s := m.NewSocket(kcm.Datagram)
			msg := msgOf(1, 1000)
			if err := s.Send(msg); err != nil {
				t.Fatalf("send: %v", err)
			}
			checkShortFailed(t, p, peer, msg[:len(msg)/2])
			_, peer2 := attachPeer(t, m) // takes the backlog
			readIDs(t, peer2, 1)
			if st := p.Stats(); st.TxAborts != 1 || st.TxMsgs != 0 {
				t.Errorf("TxAborts %d, TxMsgs %d: want 1, 0", st.TxAborts, st.TxMsgs)
			}
			if st := m.Stats(); st.TxRetries != 1 {
				t.Errorf("TxRetries %d, want 1", st.TxRetries)
			}
		})
	}
}

// The same for a batch: coalesced into one write (small messages), or
// joined into writes of up to 64 KiB for a connection without writev. The
// messages written whole stay written; the others go out on another psock.
func TestShortWriteBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		done int // messages wholly inside the first half of the first write
	}{
		{"coalesced", 100, 2},         // 5 × 104 bytes in one write of 520: 260 go out
		{"joined", 40 << 10, 0},       // the first write is the first message alone
		{"joined three", 20 << 10, 1}, // three messages per write
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMux(t, kcm.Config{})
			p, peer := attachShort(t, m, nil, 1)
			s := m.NewSocket(kcm.Datagram)
			var msgs [][]byte
			var stream []byte
			for i := range 5 {
				msgs = append(msgs, msgOf(uint32(i+1), tc.size))
			}
			first := len(msgs[0]) // the first write: the messages that fit in 64 KiB
			for _, b := range msgs[1:] {
				if tc.size < 512 || first+len(b) <= 64<<10 {
					first += len(b)
				} else {
					break
				}
			}
			for _, b := range msgs {
				stream = append(stream, b...)
			}
			if err := s.SendBatch(msgs); err != nil {
				t.Fatalf("send batch: %v", err)
			}
			checkShortFailed(t, p, peer, stream[:first/2])
			_, peer2 := attachPeer(t, m)
			var ids []uint32
			for i := tc.done; i < len(msgs); i++ {
				ids = append(ids, uint32(i+1))
			}
			readIDs(t, peer2, ids...)
			rest := uint64(len(msgs) - tc.done)
			if st := p.Stats(); st.TxAborts != rest || st.TxMsgs != uint64(tc.done) {
				t.Errorf("TxAborts %d, TxMsgs %d: want %d, %d", st.TxAborts, st.TxMsgs, rest, tc.done)
			}
			if st := m.Stats(); st.TxRetries != rest {
				t.Errorf("TxRetries %d, want %d", st.TxRetries, rest)
			}
		})
	}
}

// The same for a queue write: a copied message and one too large to copy,
// queued behind a held write, are joined into separate writes; the first
// comes back short.
func TestShortWriteQueue(t *testing.T) {
	m := newMux(t, kcm.Config{})
	var sc *stepConn
	p, peer := attachShort(t, m, func(c net.Conn) net.Conn { sc = newStepConn(c, 1); return sc }, 2)
	sA, sB, sC := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	a, small, big := msgOf(1, 100), msgOf(2, 100), msgOf(3, 100<<10)
	errs := make(chan error, 2)
	go func() { errs <- sA.Send(a) }()
	<-sc.entered // sA writes its own message, held
	if err := sB.Send(small); err != nil {
		t.Fatal(err)
	}
	go func() { errs <- sC.Send(big) }() // too large to copy: waits
	waitSmem(t, m, p.Index(), int64(len(a)+len(small)+len(big)))
	sc.release <- struct{}{}
	for range 2 {
		if err := waitErr(t, errs, "send"); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	checkShortFailed(t, p, peer, append(a, small[:len(small)/2]...))
	_, peer2 := attachPeer(t, m)
	readIDs(t, peer2, 2, 3)
	if st := p.Stats(); st.TxAborts != 2 || st.TxMsgs != 1 {
		t.Errorf("TxAborts %d, TxMsgs %d: want 2, 1", st.TxAborts, st.TxMsgs)
	}
}

package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// collect reads framed messages from peers until want messages came,
// checking each is intact; it returns the ids seen per peer.
func collect(t *testing.T, peers []net.Conn, want int) map[uint32]int {
	t.Helper()
	type got struct {
		id   uint32
		peer int
	}
	ch := make(chan got, want)
	var wg sync.WaitGroup
	for i, c := range peers {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			for {
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
				m := make([]byte, 4+n)
				copy(m, hdr[:])
				if _, err := io.ReadFull(c, m[4:]); err != nil {
					t.Errorf("peer %d: stream ended inside a message", i)
					return
				}
				ch <- got{checkMsg(t, m), i}
			}
		}(i, c)
	}
	seen := make(map[uint32]int)
	for len(seen) < want {
		select {
		case g := <-ch:
			if _, dup := seen[g.id]; dup {
				t.Fatalf("message %d written twice", g.id)
			}
			seen[g.id] = g.peer
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d messages arrived", len(seen), want)
		}
	}
	for _, c := range peers {
		c.SetReadDeadline(aLongTimeAgo)
	}
	wg.Wait()
	return seen
}

var aLongTimeAgo = time.Unix(1, 0)

// Messages from many sockets over many psocks, of random sizes up to
// 1 MiB, arrive whole and never interleaved.
func TestAtomicityManySocketsManyPsocks(t *testing.T) {
	m := newMux(t, kcm.Config{})
	var peers []net.Conn
	for i := 0; i < 4; i++ {
		_, peer := attachPeer(t, m)
		peers = append(peers, peer)
	}
	const senders, perSender = 8, 25
	rngs := make([]*rand.Rand, senders) // each used by its sender only
	for g := range rngs {
		rngs[g] = rand.New(rand.NewSource(int64(g)))
	}
	wg := sendConcurrently(t, m, senders, perSender, func(g, i int) [][]byte {
		size := rngs[g].Intn(1 << 20)
		if rngs[g].Intn(3) > 0 {
			size = rngs[g].Intn(2000)
		}
		return [][]byte{msgOf(uint32(g*1000+i), size)}
	})
	seen := collect(t, peers, senders*perSender)
	wg.Wait()
	used := map[int]bool{}
	for _, p := range seen {
		used[p] = true
	}
	if len(used) < 2 {
		t.Errorf("all messages went to one psock of 4")
	}
	if st := m.Stats(); st.TxMsgs != senders*perSender {
		t.Errorf("TxMsgs = %d", st.TxMsgs)
	}
}

// With no psock attached, messages wait in the mux and the first attach
// writes them in order.
func TestSendBeforeAttachFlushedOnFirstAttach(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	for i := 0; i < 10; i++ {
		if err := s.Send(msgOf(uint32(i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	_, peer := attachPeer(t, m)
	for i := 0; i < 10; i++ {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
			t.Fatalf("got %d want %d", id, i)
		}
	}
}

// Once the send buffer is full and no psock is attached, a sender waits
// until its write deadline.
func TestSendBufferFullHonoursWriteDeadline(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 1000})
	s := m.NewSocket(kcm.Datagram)
	if err := s.Send(msgOf(1, 900)); err != nil {
		t.Fatal(err)
	}
	s.SetWriteDeadline(time.Now().Add(30 * time.Millisecond))
	err := s.Send(msgOf(2, 900))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	s.SetWriteDeadline(time.Time{})
	_, peer := attachPeer(t, m)
	if id := checkMsg(t, readMsg(t, peer)); id != 1 {
		t.Fatalf("got %d", id)
	}
}

// A psock that fails before a message was fully written: the message is
// restarted from byte 0 on another psock and arrives whole, once.
func TestTransmitRetryOnAnotherPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	bad, badPeer := attachPeer(t, m)
	// The bad peer never reads and resets: big writes to it cannot finish.
	badPeer.(*net.TCPConn).SetLinger(0)
	msg := msgOf(42, 8<<20)
	errc := make(chan error, 1)
	go func() { errc <- s.Send(msg) }()
	// Wait until the message is stuck in flight on the only psock.
	deadline := time.Now().Add(5 * time.Second)
	for bad.Stats().Reserved == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, goodPeer := attachPeer(t, m)
	badPeer.Close() // RST: the write fails mid-message
	got := make(chan []byte, 1)
	go func() { got <- readMsg(t, goodPeer) }()
	if err := <-errc; err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, msg) {
			t.Fatal("retried message differs")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message not retried")
	}
	if err := waitDone(t, bad); err == nil {
		t.Fatal("failed psock has no error")
	}
	if st := m.Stats(); st.TxRetries == 0 || bad.Stats().TxAborts == 0 {
		t.Fatalf("TxRetries = %d, TxAborts = %d", st.TxRetries, bad.Stats().TxAborts)
	}
}

// Batch holds messages until a send without Batch, then writes them all.
func TestBatchHeldUntilFlush(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	for i := 0; i < 3; i++ {
		if err := s.SendMsg(msgOf(uint32(i), 30), kcm.Batch); err != nil {
			t.Fatal(err)
		}
	}
	peer.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if n, _ := peer.Read(make([]byte, 10)); n != 0 {
		t.Fatal("batched message written before the batch ended")
	}
	peer.SetReadDeadline(time.Time{})
	if err := s.Send(nil); err != nil { // a zero-length send ends the batch
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
			t.Fatalf("got %d", id)
		}
	}
}

// More builds one message from several calls.
func TestMoreBuildsOneMessage(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.SeqPacket)
	_, peer := attachPeer(t, m)
	msg := msgOf(7, 3000)
	s.SendMsg(msg[:10], kcm.More)
	s.SendMsg(msg[10:2000], kcm.More)
	s.SendMsg(msg[2000:], 0)
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatal("message built from parts differs")
	}
	if st := s.Stats(); st.TxMsgs != 1 || st.TxBytes != uint64(len(msg)) {
		t.Fatalf("stats %+v", st)
	}
}

// A zero-length send with no open message writes nothing.
func TestZeroLengthSendIsNoop(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	p, _ := attachPeer(t, m)
	if err := s.Send(nil); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.TxMsgs != 0 || st.TxBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// SendBatch writes several messages together, each whole.
func TestSendBatch(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	var msgs [][]byte
	for i := 0; i < 100; i++ {
		msgs = append(msgs, msgOf(uint32(i), 10+i*30))
	}
	msgs = append(msgs, nil) // skipped
	if err := s.SendBatch(msgs); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
			t.Fatalf("got %d", id)
		}
	}
}

// A connection without a writev of its own (TLS, a wrapper) would get one
// Write per message from net.Buffers, for TLS one record and one system
// call each. A batch is joined into writes of up to 64 KiB instead, and a
// message of 64 KiB or more goes out on its own.
func TestSendBatchJoinsWritesWithoutWritev(t *testing.T) {
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	c, peer := tcpPair(t)
	cc := &writeCounter{Conn: c}
	if _, err := m.Attach(cc, lenPrefix); err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for i := range 32 {
		msgs = append(msgs, msgOf(uint32(i), 4096)) // 4100 bytes: 15 fit in 64 KiB
	}
	msgs = append(msgs, msgOf(32, 100<<10), msgOf(33, 4096))
	sent := make(chan error, 1)
	go func() { sent <- s.SendBatch(msgs) }()
	for i, msg := range msgs {
		if got := readMsg(t, peer); !bytes.Equal(got, msg) {
			t.Fatalf("message %d differs", i)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	// 15, 15, then 2 with the large one too big to join them, the large
	// one, the last.
	if n := cc.writes.Load(); n != 5 {
		t.Fatalf("%d writes for %d messages, want 5", n, len(msgs))
	}
}

// writeCounter is a connection wrapper, so without writev, that counts
// its writes.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (c *writeCounter) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// Concurrent senders on one psock: every message arrives whole; while
// one writes, the others' messages are combined into fewer writes.
func TestConcurrentSendersOnePsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	_, peer := attachPeer(t, m)
	const senders, per = 16, 200
	wg := sendConcurrently(t, m, senders, per, func(g, i int) [][]byte {
		return [][]byte{msgOf(uint32(g<<16|i), 100+i)}
	})
	collect(t, []net.Conn{peer}, senders*per)
	wg.Wait()
}

// Socket is a net.Conn: Write sends a message, Read returns one, in pieces
// when the buffer is short.
func TestSocketIsNetConn(t *testing.T) {
	var _ net.Conn = (*kcm.Socket)(nil)
	m := newMux(t, kcm.Config{})
	s := m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	msg := msgOf(1, 50)
	if n, err := s.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := readMsg(t, peer); !bytes.Equal(got, msg) {
		t.Fatal("written message differs")
	}
	peer.Write(msg)
	if got := readPieces(t, s, len(msg), 7); !bytes.Equal(got, msg) {
		t.Fatal("Read pieces differ")
	}
	if s.LocalAddr().Network() != "kcm" || s.RemoteAddr() == nil {
		t.Fatal("addresses")
	}
}

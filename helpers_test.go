package kcm_test

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
	"github.com/gokcm/kcm/internal/testconn"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lenPrefix is the test framing: a 4-byte big-endian payload length, then
// the payload.
var lenPrefix = kcm.ParserFunc(func(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	return testconn.FrameLen(b), nil
})

func frame(payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	return b
}

// msgOf returns a framed message whose payload says who sent it and is
// filled with a pattern that reveals interleaving.
func msgOf(id uint32, size int) []byte {
	if size < 8 {
		size = 8
	}
	p := make([]byte, size)
	binary.BigEndian.PutUint32(p, id)
	binary.BigEndian.PutUint32(p[4:], uint32(size))
	for i := 8; i < size; i++ {
		p[i] = byte(id) ^ byte(i)
	}
	return frame(p)
}

// checkMsg verifies a message built by msgOf and returns its id, or
// badID after reporting what is wrong. It reports with Errorf, so reader
// goroutines may call it too.
func checkMsg(t testing.TB, m []byte) uint32 {
	t.Helper()
	if len(m) < 12 {
		t.Errorf("message too short: %d bytes", len(m))
		return badID
	}
	p := m[4:]
	id := binary.BigEndian.Uint32(p)
	if int(binary.BigEndian.Uint32(p[4:])) != len(p) {
		t.Errorf("message %d: size field %d, payload %d", id, binary.BigEndian.Uint32(p[4:]), len(p))
		return badID
	}
	for i := 8; i < len(p); i++ {
		if p[i] != byte(id)^byte(i) {
			t.Errorf("message %d corrupt at byte %d", id, i)
			return badID
		}
	}
	return id
}

// badID is checkMsg's id for a malformed message; msgOf never makes it.
const badID = ^uint32(0)

// tcpPair returns both ends of a loopback TCP connection, closed at the
// end of the test.
func tcpPair(t testing.TB) (client, server net.Conn) {
	return testconn.Pair(t, "tcp")
}

// newMux returns a mux closed at the end of the test.
func newMux(t testing.TB, cfg kcm.Config) *kcm.Mux {
	m := kcm.NewMux(cfg)
	t.Cleanup(func() { m.Close() })
	return m
}

// attachPeer attaches one end of a new TCP pair to m and returns the
// psock and the other end, which plays the peer.
func attachPeer(t testing.TB, m *kcm.Mux) (*kcm.Psock, net.Conn) {
	t.Helper()
	c, peer := tcpPair(t)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return p, peer
}

// readMsg reads one framed message from a raw peer connection.
func readMsg(t testing.TB, c net.Conn) []byte {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	m := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
	copy(m, hdr[:])
	if _, err := io.ReadFull(c, m[4:]); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	return m
}

// recvWithin receives one message, failing the test if none comes soon.
func recvWithin(t testing.TB, s *kcm.Socket, d time.Duration) []byte {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(d))
	defer s.SetReadDeadline(time.Time{})
	buf := recvBufs.Get().(*[]byte)
	defer recvBufs.Put(buf)
	n, err := s.Recv(*buf)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return append([]byte(nil), (*buf)[:n]...)
}

var recvBufs = sync.Pool{New: func() any { b := make([]byte, 17<<20); return &b }}

// waitDone waits for a psock to leave its mux.
func waitDone(t testing.TB, p *kcm.Psock) error {
	t.Helper()
	select {
	case <-p.Done():
		return p.Err()
	case <-time.After(10 * time.Second):
		t.Fatal("psock did not leave the mux")
		return nil
	}
}

// writeChunked writes b to c in random pieces.
func writeChunked(c net.Conn, b []byte, rng *rand.Rand) error {
	for len(b) > 0 {
		n := 1 + rng.Intn(min(len(b), 3000))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// readPieces reads n bytes from s with Read calls of at most piece bytes
// each, failing the test on an error.
func readPieces(t testing.TB, s *kcm.Socket, n, piece int) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, piece)
	for len(got) < n {
		k, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:k]...)
	}
	return got
}

// sendConcurrently starts senders goroutines, each with its own socket of
// m, each sending msgs(g, i) for i < per; the returned group ends when all
// are done. A failed send fails the test.
func sendConcurrently(t testing.TB, m *kcm.Mux, senders, per int, msgs func(g, i int) [][]byte) *sync.WaitGroup {
	var wg sync.WaitGroup
	for g := 0; g < senders; g++ {
		s := m.NewSocket(kcm.Datagram)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				for _, b := range msgs(g, i) {
					if err := s.Send(b); err != nil {
						t.Errorf("send: %v", err)
						return
					}
				}
			}
		}(g)
	}
	return &wg
}

// serveSockets runs serve on n new sockets of m, each in a goroutine of
// its own, until m closes; the end of the test closes m and waits for
// them.
func serveSockets(t *testing.T, m *kcm.Mux, n int, serve func(s *kcm.Socket)) {
	var wg sync.WaitGroup
	for range n {
		s := m.NewSocket(kcm.Datagram)
		wg.Add(1)
		go func() {
			defer wg.Done()
			serve(s)
		}()
	}
	t.Cleanup(func() {
		m.Close()
		wg.Wait()
	})
}

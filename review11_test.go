package kcm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/gokcm/kcm/internal/testconn"
)

// Review of the joined writes on connections without a writev
// (writeJoined): the byte count it returns decides which messages of a
// batch or queue were written whole, which one was cut, and which start
// again on another psock.

var errR11Cut = errors.New("r11: injected write failure")

// r11Conn is a connection wrapper, so without writev (p.raw == nil),
// whose writes fail once budget bytes have gone out. With partial, the
// write that crosses the budget writes the bytes up to it and returns
// their count with the error; otherwise it writes nothing. A negative
// budget never fails. gate, when set, holds the first write until closed.
type r11Conn struct {
	net.Conn
	mu      sync.Mutex
	budget  int
	partial bool
	gate    chan struct{}
	entered chan struct{} // closed when the first write waits on gate
	writes  int
	wrote   int // bytes the connection accepted
}

func (c *r11Conn) Write(b []byte) (int, error) {
	if c.gate != nil {
		c.mu.Lock()
		first := c.writes == 0
		c.mu.Unlock()
		if first {
			close(c.entered)
			<-c.gate
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.budget < 0 || len(b) <= c.budget {
		n, err := c.Conn.Write(b)
		c.wrote += n
		if c.budget >= 0 {
			c.budget -= n
		}
		return n, err
	}
	n := 0
	if c.partial && c.budget > 0 {
		var err error
		n, err = c.Conn.Write(b[:c.budget])
		c.wrote += n
		if err != nil {
			return n, err
		}
	}
	c.budget = 0
	return n, errR11Cut
}

var r11Parser = ParserFunc(func(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, nil
	}
	return testconn.FrameLen(b), nil
})

// r11Msg is a framed message of size bytes in all: length, id, then a
// pattern that reveals interleaving.
func r11Msg(id uint32, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(size-4))
	binary.BigEndian.PutUint32(b[4:], id)
	for i := 8; i < size; i++ {
		b[i] = byte(id) ^ byte(i) ^ byte(i>>8)
	}
	return b
}

// r11Stream is what a peer read: whole messages in order, then the bytes
// of a message cut short, if any.
type r11Stream struct {
	ids   []uint32
	bytes int // all bytes read, the cut tail included
	tail  int
	bad   error
}

// r11Read reads framed messages from peer until EOF, checking each and
// sending its id to ids.
// r11Second attaches a second psock to m, whose peer's messages' ids go
// to ids, as r11Read reports them.
func r11Second(t *testing.T, m *Mux, ids chan<- uint32) <-chan r11Stream {
	t.Helper()
	cb, peerB := loopbackPair(t)
	if _, err := m.Attach(cb, r11Parser); err != nil {
		t.Fatal(err)
	}
	return r11Read(peerB, ids)
}

func r11Read(peer net.Conn, ids chan<- uint32) <-chan r11Stream {
	out := make(chan r11Stream, 1)
	go func() {
		var st r11Stream
		defer func() { out <- st }()
		for {
			var hdr [4]byte
			n, err := io.ReadFull(peer, hdr[:])
			st.bytes += n
			if err != nil {
				st.tail = n
				return
			}
			b := make([]byte, 4+binary.BigEndian.Uint32(hdr[:]))
			copy(b, hdr[:])
			n, err = io.ReadFull(peer, b[4:])
			st.bytes += n
			if err != nil {
				st.tail = 4 + n
				return
			}
			id := binary.BigEndian.Uint32(b[4:])
			for i := 8; i < len(b); i++ {
				if b[i] != byte(id)^byte(i)^byte(i>>8) {
					st.bad = fmt.Errorf("message %d corrupt at byte %d", id, i)
					return
				}
			}
			st.ids = append(st.ids, id)
			ids <- id
		}
	}()
	return out
}

// r11Collect waits until want distinct ids arrived.
func r11Collect(t *testing.T, ids <-chan uint32, want int) {
	t.Helper()
	seen := map[uint32]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < want {
		select {
		case id := <-ids:
			seen[id] = true
		case <-timeout:
			t.Fatalf("%d of %d messages arrived", len(seen), want)
		}
	}
}

// r11Check checks that every id below n arrived exactly once, a's stream
// starting with first, and that a's stream holds exactly aBytes.
func r11Check(t *testing.T, a, b r11Stream, first []uint32, n int, aBytes int) {
	t.Helper()
	if a.bad != nil || b.bad != nil {
		t.Fatalf("corrupt: %v %v", a.bad, b.bad)
	}
	if aBytes >= 0 && a.bytes != aBytes {
		t.Errorf("the failed psock's peer got %d bytes, the connection accepted %d", a.bytes, aBytes)
	}
	got := append([]uint32(nil), a.ids...)
	if len(got) < len(first) {
		t.Fatalf("failed psock: %v, want it to start with %v", got, first)
	}
	for i, id := range first {
		if got[i] != id {
			t.Fatalf("failed psock: %v, want it to start with %v", got, first)
		}
	}
	got = append(got[len(first):], b.ids...)
	count := map[uint32]int{}
	for _, id := range got {
		count[id]++
	}
	for id := range n {
		if count[uint32(id)] != 1 {
			t.Errorf("message %d arrived %d times (failed psock %v tail %d, survivor %v)", id, count[uint32(id)], a.ids, a.tail, b.ids)
		}
	}
	if len(got) != n {
		t.Errorf("%d messages arrived, want %d", len(got), n)
	}
}

// A batch written in joined writes on a wrapper connection that fails
// after k bytes: the messages it accepted whole arrive there, once; the
// one it cut is lost there and, like those after it, arrives whole on the
// other psock; none twice. The cut lands inside the first, second or third
// joined write, inside or between messages, and inside a message of 64 KiB
// or more, written on its own; the failing write either writes up to the
// cut and says so, or writes nothing.
func TestJoinedBatchFailsPartWay(t *testing.T) {
	small := 3000
	smalls := make([]int, 60) // 21 to a joined write of 63000 bytes
	for i := range smalls {
		smalls[i] = small
	}
	w := 21 * small
	mixed := []int{small, small, small, small, small, 100 << 10, small, small, small, 70 << 10, 600, 600}
	cases := []struct {
		sizes []int
		k     int
	}{
		{smalls, 1}, {smalls, small}, {smalls, small + 1}, {smalls, w - 1}, {smalls, w},
		{smalls, w + 1}, {smalls, w + 5*small}, {smalls, 2*w + 7}, {smalls, 2*w + 3*small},
		{smalls, 60*small - 1},
		{mixed, 4 * small}, {mixed, 5 * small}, {mixed, 5*small + 1000}, {mixed, 5*small + 100<<10},
		{mixed, 5*small + 100<<10 + 2*small}, {mixed, 8*small + 100<<10 + 5},
		{mixed, 8*small + 170<<10 + 600},
	}
	for _, tc := range cases {
		for _, partial := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d-msgs/k=%d/partial=%v", len(tc.sizes), tc.k, partial), func(t *testing.T) {
				r11Batch(t, tc.sizes, tc.k, partial)
			})
		}
	}
}

func r11Batch(t *testing.T, sizes []int, k int, partial bool) {
	m := NewMux(Config{})
	defer m.Close()
	ids := make(chan uint32, 1024)
	ca, peerA := loopbackPair(t)
	cb, peerB := loopbackPair(t)
	wa := &r11Conn{Conn: ca, budget: -1, partial: partial}
	pa, err := m.Attach(wa, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	ra := r11Read(peerA, ids)
	s := m.NewSocket(Datagram)
	// The socket reserves psock a, which the batch then goes to first.
	reserve := r11Msg(1000, 100)
	if err := s.Send(reserve); err != nil {
		t.Fatal(err)
	}
	r11Collect(t, ids, 1)
	if _, err := m.Attach(&r11Conn{Conn: cb, budget: -1}, r11Parser); err != nil {
		t.Fatal(err)
	}
	rb := r11Read(peerB, ids)
	wa.mu.Lock()
	wa.budget = k
	wa.mu.Unlock()

	var msgs [][]byte
	for i, size := range sizes {
		msgs = append(msgs, r11Msg(uint32(i), size))
	}
	if err := s.SendBatch(msgs); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pa.Done():
	default:
		t.Fatal("the psock whose write failed is still attached")
	}
	r11Collect(t, ids, len(msgs))
	m.Close()
	a, b := <-ra, <-rb
	wa.mu.Lock()
	wrote := wa.wrote
	wa.mu.Unlock()
	if partial && wrote != len(reserve)+k {
		t.Errorf("the connection accepted %d bytes, want %d", wrote, len(reserve)+k)
	}
	r11Check(t, a, b, []uint32{1000}, len(msgs), wrote)
	if t.Failed() {
		t.Logf("writes on a: %d", wa.writes)
	}
}

// r11WaitQueued waits until p's queue holds n messages. Nothing signals a
// sender's queueing, so the queue is polled.
func r11WaitQueued(t *testing.T, p *Psock, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.tx.mu.Lock()
		got := len(p.tx.q)
		p.tx.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages queued, want %d", got, n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// A queue written in joined writes (copied messages, a large uncopied one
// between them: three writes) on a wrapper connection that fails after k
// bytes, while no other psock is attached: what the connection accepted
// whole arrives there once, the rest, the cut message included, arrives
// whole on the psock attached afterwards, and the waiting sender of the
// large message returns nil once it is written there.
func TestJoinedQueueFailsPartWay(t *testing.T) {
	const small = 3000
	first := 2000 // the writer's own message
	run := 5 * small
	big := 100 << 10
	for _, k := range []int{
		first - 1, first, first + 1, first + small, first + run - 1, first + run, first + run + 1,
		first + run + big - 1, first + run + big, first + run + big + small + 7, first + 2*run + big - 1,
	} {
		for _, partial := range []bool{true, false} {
			t.Run(fmt.Sprintf("k=%d/partial=%v", k, partial), func(t *testing.T) {
				r11Queue(t, first, small, big, k, partial)
			})
		}
	}
}

func r11Queue(t *testing.T, first, small, big, k int, partial bool) {
	m := NewMux(Config{})
	defer m.Close()
	ids := make(chan uint32, 1024)
	ca, peerA := loopbackPair(t)
	cb, peerB := loopbackPair(t)
	wa := &r11Conn{Conn: ca, budget: k, partial: partial, gate: make(chan struct{}), entered: make(chan struct{})}
	pa, err := m.Attach(wa, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	ra := r11Read(peerA, ids)
	var sends sync.WaitGroup
	send := func(s *Socket, b []byte) {
		sends.Add(1)
		go func() {
			defer sends.Done()
			if err := s.Send(b); err != nil {
				t.Errorf("send %d: %v", binary.BigEndian.Uint32(b[4:]), err)
			}
		}()
	}
	send(m.NewSocket(Datagram), r11Msg(0, first))
	<-wa.entered
	s1 := m.NewSocket(Datagram)
	for id := uint32(1); id <= 5; id++ {
		if err := s1.Send(r11Msg(id, small)); err != nil {
			t.Fatal(err)
		}
	}
	bigMsg := r11Msg(6, big)
	send(m.NewSocket(Datagram), bigMsg)
	r11WaitQueued(t, pa, 6)
	s3 := m.NewSocket(Datagram)
	for id := uint32(7); id <= 11; id++ {
		if err := s3.Send(r11Msg(id, small)); err != nil {
			t.Fatal(err)
		}
	}
	r11WaitQueued(t, pa, 11)
	close(wa.gate)
	select {
	case <-pa.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the psock whose write failed is still attached")
	}
	if _, err := m.Attach(&r11Conn{Conn: cb, budget: -1}, r11Parser); err != nil {
		t.Fatal(err)
	}
	rb := r11Read(peerB, ids)
	r11Collect(t, ids, 12)
	sends.Wait()
	m.Close()
	a, b := <-ra, <-rb
	wa.mu.Lock()
	wrote, writes := wa.wrote, wa.writes
	wa.mu.Unlock()
	if partial && wrote != k {
		t.Errorf("the connection accepted %d bytes, want %d", wrote, k)
	}
	r11Check(t, a, b, nil, 12, wrote)
	if !bytes.Equal(bigMsg, r11Msg(6, big)) {
		t.Error("the large message's buffer changed")
	}
	if t.Failed() {
		t.Logf("writes on a: %d", writes)
	}
}

// r11TLSPair returns both ends of a TLS 1.3 connection over loopback TCP
// with small socket buffers, so that a peer that does not read soon
// blocks the writer.
func r11TLSPair(t *testing.T) (cli, srv *tls.Conn) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	c, peer := loopbackPair(t)
	c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	peer.(*net.TCPConn).SetReadBuffer(16 << 10)
	cli = tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	srv = tls.Server(peer, &tls.Config{Certificates: []tls.Certificate{cert}})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

func r11Batch300(base uint32) [][]byte {
	var msgs [][]byte
	for i := range 300 {
		msgs = append(msgs, r11Msg(base+uint32(i), 8000))
	}
	return msgs
}

// r11TLSMux returns a mux configured by cfg, closed at the end of the
// test, with the client end of a TLS connection attached as pa, and the
// server end.
func r11TLSMux(t *testing.T, cfg Config) (m *Mux, pa *Psock, srv net.Conn) {
	t.Helper()
	m = NewMux(cfg)
	t.Cleanup(func() { m.Close() })
	cli, srv := r11TLSPair(t)
	pa, err := m.Attach(cli, r11Parser)
	if err != nil {
		t.Fatal(err)
	}
	return m, pa, srv
}

// A WriteTimeout that passes during joined writes on a TLS psock whose
// peer stopped reading fails the psock (tls.Conn cannot write after a
// timeout); the batch goes out, every message once and whole, on the psock
// attached afterwards, and the failed one's peer got whole messages only
// ahead of them.
func TestJoinedTLSWriteTimeoutFailsPsock(t *testing.T) {
	m, pa, srv := r11TLSMux(t, Config{WriteTimeout: 100 * time.Millisecond})
	s := m.NewSocket(Datagram)
	msgs := r11Batch300(0)
	if err := s.SendBatch(msgs); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pa.Done():
	default:
		t.Fatal("the psock whose write timed out is still attached")
	}
	if !errors.Is(pa.Err(), os.ErrDeadlineExceeded) {
		t.Fatalf("psock error %v, want a write timeout", pa.Err())
	}
	ids := make(chan uint32, 1024)
	ra := r11Read(srv, ids)
	rb := r11Second(t, m, ids)
	r11Collect(t, ids, len(msgs))
	m.Close()
	a, b := <-ra, <-rb
	r11Check(t, a, b, nil, len(msgs), -1)
	if len(a.ids) == 0 || len(b.ids) == 0 {
		t.Errorf("the timeout did not fall inside the batch: %d messages on the failed psock, %d after", len(a.ids), len(b.ids))
	}
}

// r11WaitWriting waits until s writes p and p's connection is blocked
// behind a peer that does not read (its load stays while it writes).
func r11WaitWriting(t *testing.T, p *Psock, s *Socket) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.tx.mu.Lock()
		ok := p.tx.writing && p.tx.writer == s
		p.tx.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the batch is not being written")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// A socket's Close interrupting its batch in joined writes on a TLS psock
// fails the psock; the messages another socket queued behind the batch go
// out once and whole on the psock attached afterwards, and the closed
// socket's messages arrive at most once, in order, on the failed psock.
func TestJoinedTLSCloseInterruptsBatch(t *testing.T) {
	m, pa, srv := r11TLSMux(t, Config{})
	s1, s2 := m.NewSocket(Datagram), m.NewSocket(Datagram)
	sent := make(chan error, 1)
	go func() { sent <- s1.SendBatch(r11Batch300(1000)) }()
	r11WaitWriting(t, pa, s1)
	for i := range 10 {
		if err := s2.Send(r11Msg(uint32(i), 3000)); err != nil {
			t.Fatal(err)
		}
	}
	s1.Close()
	if err := <-sent; !errors.Is(err, ErrClosed) {
		t.Fatalf("SendBatch of the closed socket: %v", err)
	}
	select {
	case <-pa.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the TLS psock stayed attached after its write was interrupted")
	}
	if !errors.Is(pa.Err(), ErrMidMessage) {
		t.Fatalf("psock error %v, want ErrMidMessage", pa.Err())
	}
	ids := make(chan uint32, 1024)
	ra := r11Read(srv, ids)
	rb := r11Second(t, m, ids)
	seen := map[uint32]int{}
	timeout := time.After(10 * time.Second)
	for n := 0; n < 10; {
		select {
		case id := <-ids:
			seen[id]++
			if id < 1000 {
				n++
			}
		case <-timeout:
			t.Fatalf("%d of s2's messages arrived", n)
		}
	}
	m.Close()
	a, b := <-ra, <-rb
	if a.bad != nil || b.bad != nil {
		t.Fatalf("corrupt: %v %v", a.bad, b.bad)
	}
	for i, id := range a.ids {
		if id != 1000+uint32(i) {
			t.Fatalf("failed psock got %v", a.ids)
		}
	}
	if len(a.ids) == 300 {
		t.Fatal("the whole batch went out before the close")
	}
	want := map[uint32]int{}
	for _, id := range a.ids {
		want[id]++
	}
	for i := range 10 {
		want[uint32(i)]++
	}
	got := map[uint32]int{}
	for _, id := range append(append([]uint32(nil), a.ids...), b.ids...) {
		got[id]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("arrived %v, want %v", got, want)
	}
}

// Unattach interrupting a batch in joined writes on a TLS psock returns
// the connection with ErrMidMessage (tls.Conn cannot write after the
// interrupt); the batch goes on, every message once and whole, on the
// other psock.
func TestJoinedTLSUnattachInterruptsBatch(t *testing.T) {
	m, pa, srv := r11TLSMux(t, Config{})
	s := m.NewSocket(Datagram)
	msgs := r11Batch300(0)
	sent := make(chan error, 1)
	go func() { sent <- s.SendBatch(msgs) }()
	r11WaitWriting(t, pa, s)
	cb, peerB := loopbackPair(t)
	if _, err := m.Attach(cb, r11Parser); err != nil {
		t.Fatal(err)
	}
	ids := make(chan uint32, 1024)
	rb := r11Read(peerB, ids)
	c, err := pa.Unattach()
	if !errors.Is(err, ErrMidMessage) {
		t.Fatalf("Unattach: %v, want ErrMidMessage", err)
	}
	if c == nil {
		t.Fatal("Unattach returned no connection")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	ra := r11Read(srv, ids) // before Close, which sends close_notify
	c.Close()
	r11Collect(t, ids, len(msgs))
	m.Close()
	a, b := <-ra, <-rb
	r11Check(t, a, b, nil, len(msgs), -1)
}

// r11Unreachable reports how many of ws point to memory the collector
// could not free.
func r11Reachable(ws []weak.Pointer[byte]) int {
	runtime.GC()
	runtime.GC()
	live := 0
	for _, w := range ws {
		if w.Value() != nil {
			live++
		}
	}
	return live
}

// Joined writes keep no reference to the senders' messages once written,
// as net.Buffers does (it sets the pieces it wrote to nil): neither a
// batch's messages nor a large message that waited uncopied in the queue
// stay reachable from the psock after their send returned.
func TestJoinedWritesDoNotKeepMessages(t *testing.T) {
	t.Run("batch", func(t *testing.T) {
		m := NewMux(Config{})
		defer m.Close()
		c, peer := loopbackPair(t)
		if _, err := m.Attach(&r11Conn{Conn: c, budget: -1}, r11Parser); err != nil {
			t.Fatal(err)
		}
		ids := make(chan uint32, 1024)
		r := r11Read(peer, ids)
		s := m.NewSocket(Datagram)
		var ws []weak.Pointer[byte]
		func() {
			var msgs [][]byte
			for i := range 8 {
				b := r11Msg(uint32(i), 1<<20)
				ws = append(ws, weak.Make(&b[0]))
				msgs = append(msgs, b)
			}
			if err := s.SendBatch(msgs); err != nil {
				t.Fatal(err)
			}
		}()
		r11Collect(t, ids, 8)
		if n := r11Reachable(ws); n != 0 {
			t.Errorf("%d of 8 messages of a returned SendBatch are still reachable", n)
		}
		m.Close()
		<-r
	})
	t.Run("queue", func(t *testing.T) {
		m := NewMux(Config{})
		defer m.Close()
		c, peer := loopbackPair(t)
		wa := &r11Conn{Conn: c, budget: -1, gate: make(chan struct{}), entered: make(chan struct{})}
		pa, err := m.Attach(wa, r11Parser)
		if err != nil {
			t.Fatal(err)
		}
		ids := make(chan uint32, 1024)
		r := r11Read(peer, ids)
		errc := make(chan error, 2)
		go func() { errc <- m.NewSocket(Datagram).Send(r11Msg(0, 100)) }()
		<-wa.entered
		if err := m.NewSocket(Datagram).Send(r11Msg(1, 100)); err != nil {
			t.Fatal(err)
		}
		var ws []weak.Pointer[byte]
		func() {
			big := r11Msg(2, 1<<20) // waits uncopied: one piece of the queue's writev
			ws = append(ws, weak.Make(&big[0]))
			go func() { errc <- m.NewSocket(Datagram).Send(big) }()
		}()
		r11WaitQueued(t, pa, 2)
		close(wa.gate)
		for range 2 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		r11Collect(t, ids, 3)
		if n := r11Reachable(ws); n != 0 {
			t.Error("a large message is still reachable after its Send returned")
		}
		m.Close()
		<-r
	})
}

package kcm_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// The benchmarks put kcm beside the same workload on raw TCP (a net.Conn
// with a 4-byte length prefix, read through bufio, one Write per message)
// in the same run; compare the pairs with benchstat.

// rawEcho serves length-prefixed messages on c, echoing each.
func rawEcho(c net.Conn) {
	r := bufio.NewReader(c)
	buf := make([]byte, 64<<10)
	for {
		if _, err := io.ReadFull(r, buf[:4]); err != nil {
			return
		}
		n := 4 + int(binary.BigEndian.Uint32(buf))
		if n > len(buf) {
			buf = append(buf, make([]byte, n-len(buf))...)
		}
		if _, err := io.ReadFull(r, buf[4:n]); err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// kcmEcho serves messages on a mux of one socket and one psock.
func kcmEcho(c net.Conn) {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	s := m.NewSocket(kcm.Datagram)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		return
	}
	go func() { <-p.Done(); s.Close() }()
	for {
		msg, err := s.RecvMessage()
		if err != nil {
			return
		}
		err = s.Send(msg.Bytes())
		msg.Release()
		if err != nil {
			return
		}
	}
}

func BenchmarkRR(b *testing.B) {
	for _, size := range []int{1, 1024} {
		req := frame(make([]byte, size))
		for _, impl := range []struct {
			name string
			dial func(testing.TB, []byte, time.Duration) func() error
		}{{"raw", rawRR}, {"kcm", kcmRR}} {
			b.Run("size="+itoa(size)+"/impl="+impl.name, func(b *testing.B) {
				tx := impl.dial(b, req, 0)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := tx(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRRDeadline is BenchmarkRR 1 B with a deadline set before
// every exchange, as net.Conn users do: SetDeadline on the connection for
// raw, on the socket for kcm.
func BenchmarkRRDeadline(b *testing.B) {
	req := frame(make([]byte, 1))
	for _, impl := range []struct {
		name string
		dial func(testing.TB, []byte, time.Duration) func() error
	}{{"raw", rawRR}, {"kcm", kcmRR}} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			tx := impl.dial(b, req, 5*time.Second)
			b.ReportAllocs()
			for b.Loop() {
				if err := tx(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rawRR connects to a raw echo server and returns one request/response
// exchange of req: a Write, and the response read through bufio; with dl,
// after a SetDeadline dl from now.
func rawRR(tb testing.TB, req []byte, dl time.Duration) func() error {
	c, srv := tcpPair(tb)
	go rawEcho(srv)
	r := bufio.NewReader(c)
	buf := make([]byte, len(req))
	return func() error {
		if dl > 0 {
			c.SetDeadline(time.Now().Add(dl))
		}
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, buf[:4]); err != nil {
			return err
		}
		_, err := io.ReadFull(r, buf[4:4+binary.BigEndian.Uint32(buf)])
		return err
	}
}

// kcmRR connects a mux of one socket and one psock to a kcm echo server
// and returns one request/response exchange of req: Send and Recv; with
// dl, after the socket's SetDeadline dl from now.
func kcmRR(tb testing.TB, req []byte, dl time.Duration) func() error {
	c, srv := tcpPair(tb)
	go kcmEcho(srv)
	m := kcm.NewMux(kcm.Config{})
	tb.Cleanup(func() { m.Close() })
	s := m.NewSocket(kcm.Datagram)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, len(req))
	return func() error {
		if dl > 0 {
			s.SetDeadline(time.Now().Add(dl))
		}
		if err := s.Send(req); err != nil {
			return err
		}
		_, err := s.Recv(buf)
		return err
	}
}

// BenchmarkRRInstances is super_kcmperf in one process: 200 independent
// request/response pairs at once (a connection with an echo server each;
// for kcm a mux of one socket and one psock at both ends), one transaction
// in flight on each. The machine's CPUs are the limit, so ns/op is CPU
// time per transaction divided by the CPUs: the per-transaction overhead
// that kcmperf's rr -instances 200 compares, without a second process.
func BenchmarkRRInstances(b *testing.B) {
	const instances = 200
	req := frame([]byte{1})
	b.Run(fmt.Sprintf("instances=%d/impl=raw", instances), func(b *testing.B) {
		rrParallel(b, instances, func() func() error { return rawRR(b, req, 0) })
	})
	b.Run(fmt.Sprintf("instances=%d/impl=kcm", instances), func(b *testing.B) {
		rrParallel(b, instances, func() func() error { return kcmRR(b, req, 0) })
	})
}

// rrParallel runs b.N transactions over n instances made by newInst, each
// in its own goroutine taking transactions from a shared count.
func rrParallel(b *testing.B, n int, newInst func() func() error) {
	txs := make([]func() error, n)
	for i := range txs {
		txs[i] = newInst()
		if err := txs[i](); err != nil { // connected
			b.Fatal(err)
		}
	}
	// Instances set up first sat idle while the others were made, long
	// enough for their psocks to hand their buffers back: warm them all up
	// together so that the measured part is the steady state.
	if err := rrConcurrently(txs, int64(20*n)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	if err := rrConcurrently(txs, int64(b.N)); err != nil {
		b.Fatal(err)
	}
	// CPU per transaction, both ends included: the wall time per
	// transaction depends as much on scheduling as on the work done.
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// rrConcurrently runs total transactions, each tx in its own goroutine
// taking them from a shared count, and returns the first error.
func rrConcurrently(txs []func() error, total int64) error {
	var left atomic.Int64
	left.Store(total)
	errs := make(chan error, len(txs))
	for _, tx := range txs {
		go func() {
			for left.Add(-1) >= 0 {
				if err := tx(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range txs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func itoa(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1024 && n%1024 == 0:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkStream sends b.N messages one way over one connection. raw is a
// hand-written bufio length-prefix loop on both ends; kcm sends batches
// with SendBatch and receives with RecvBatch (zero copy). Each kcm batch
// carries as many messages as fill the raw writer's 64 KiB buffer, so both
// senders make writes of the same size: a write's fixed cost (on loopback,
// the receiver's side of TCP runs in it) is most of a 4 KiB write's.
func BenchmarkStream(b *testing.B) {
	for _, size := range []int{64, 4096} {
		msg := frame(make([]byte, size-4))
		b.Run("size="+itoa(size)+"/impl=raw", func(b *testing.B) {
			c, srv := tcpPair(b)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			go func() {
				w := bufio.NewWriterSize(c, 64<<10)
				for i := 0; i < b.N; i++ {
					w.Write(msg)
				}
				w.Flush()
			}()
			r := bufio.NewReaderSize(srv, 64<<10)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				hdr, err := r.Peek(4)
				if err != nil {
					b.Fatal(err)
				}
				n := 4 + int(binary.BigEndian.Uint32(hdr))
				if _, err := r.Peek(n); err != nil {
					b.Fatal(err)
				}
				r.Discard(n)
			}
		})
		b.Run("size="+itoa(size)+"/impl=kcm", func(b *testing.B) {
			c, srv := tcpPair(b)
			tx, rx := kcm.NewMux(kcm.Config{}), kcm.NewMux(kcm.Config{})
			defer tx.Close()
			defer rx.Close()
			if _, err := tx.Attach(c, lenPrefix); err != nil {
				b.Fatal(err)
			}
			if _, err := rx.Attach(srv, lenPrefix); err != nil {
				b.Fatal(err)
			}
			ts, rs := tx.NewSocket(kcm.Datagram), rx.NewSocket(kcm.Datagram)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			go func() {
				batch := make([][]byte, max(1, (64<<10)/len(msg)))
				for i := range batch {
					batch[i] = msg
				}
				for left := b.N; left > 0; left -= len(batch) {
					if err := ts.SendBatch(batch[:min(left, len(batch))]); err != nil {
						return
					}
				}
			}()
			ms := make([]kcm.Message, 64)
			b.ResetTimer()
			for got := 0; got < b.N; {
				n, err := rs.RecvBatch(ms)
				if err != nil {
					b.Fatal(err)
				}
				kcm.ReleaseBatch(ms[:n])
				got += n
			}
		})
	}
}

// loopConn echoes what is written back to its reader, in memory: it
// measures kcm's own per-message cost, free of system calls. A read waits
// for data or for a read deadline in the past, which is how kcm interrupts
// a reader.
type loopConn struct {
	mu     sync.Mutex
	buf    []byte
	dl     time.Time
	closed bool
	ready  chan struct{} // signalled on every write and deadline change
}

func newLoopConn() *loopConn { return &loopConn{ready: make(chan struct{}, 1)} }

func (c *loopConn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		if len(c.buf) > 0 {
			n := copy(b, c.buf)
			c.buf = c.buf[:copy(c.buf, c.buf[n:])]
			c.mu.Unlock()
			return n, nil
		}
		dl, closed := c.dl, c.closed
		c.mu.Unlock()
		if closed {
			return 0, net.ErrClosed
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		var expired <-chan time.Time
		if !dl.IsZero() {
			expired = time.After(time.Until(dl))
		}
		select {
		case <-c.ready:
		case <-expired:
		}
	}
}

func (c *loopConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.buf = append(c.buf, b...)
	c.mu.Unlock()
	c.signal()
	return len(b), nil
}

func (c *loopConn) signal() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

func (c *loopConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.dl = t
	c.mu.Unlock()
	c.signal()
	return nil
}

func (c *loopConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.signal()
	return nil
}

func (c *loopConn) LocalAddr() net.Addr              { return nil }
func (c *loopConn) RemoteAddr() net.Addr             { return nil }
func (c *loopConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkOverhead is kcm's own cost of one Send and one Recv on a mux of
// one socket and one psock, over a connection that echoes in memory: the
// data path without system calls, for profiling kcm's code alone. With
// many instances, used round-robin as kcmperf's rr -instances uses its
// muxes, each exchange finds its state out of the nearest caches; raw is
// the same exchange with a bufio.Reader and a Write, the baseline;
// kcm-lend receives with RecvMessage and Release instead of Recv.
func BenchmarkOverhead(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("instances=%d/impl=raw", n), func(b *testing.B) { overheadRaw(b, n) })
		b.Run(fmt.Sprintf("instances=%d/impl=kcm", n), func(b *testing.B) { overheadKCM(b, n, false) })
		b.Run(fmt.Sprintf("instances=%d/impl=kcm-lend", n), func(b *testing.B) { overheadKCM(b, n, true) })
	}
}

func overheadRaw(b *testing.B, n int) {
	type inst struct {
		c  *loopConn
		br *bufio.Reader
	}
	insts := make([]inst, n)
	for i := range insts {
		c := newLoopConn()
		insts[i] = inst{c, bufio.NewReader(c)}
	}
	req := frame([]byte{1})
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in := &insts[i%n]
		in.c.Write(req)
		if _, err := io.ReadFull(in.br, buf[:4]); err != nil {
			b.Fatal(err)
		}
		l := binary.BigEndian.Uint32(buf[:4])
		if _, err := io.ReadFull(in.br, buf[4:4+l]); err != nil {
			b.Fatal(err)
		}
	}
}

// overheadKCM receives with Recv, or with lend with RecvMessage and Release.
func overheadKCM(b *testing.B, n int, lend bool) {
	socks := make([]*kcm.Socket, n)
	for i := range socks {
		m := kcm.NewMux(kcm.Config{})
		defer m.Close()
		socks[i] = m.NewSocket(kcm.Datagram)
		m.Attach(newLoopConn(), lenPrefix)
	}
	req := frame([]byte{1})
	buf := make([]byte, 64)
	// Wait for the first exchanges to get through the background readers.
	for _, s := range socks {
		s.Send(req)
		s.Recv(buf)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := socks[i%n]
		s.Send(req)
		if lend {
			msg, _ := s.RecvMessage()
			msg.Release()
		} else {
			s.Recv(buf)
		}
	}
}

// BenchmarkReceive is the receive side of BenchmarkStream alone, over a
// connection that holds the stream in memory (refilled 1024 messages at a
// time): kcm's cost of carving and handing out 64-byte messages with
// RecvBatch, beside a bufio loop that peeks and discards each one, free of
// system calls and of the sender.
func BenchmarkReceive(b *testing.B) {
	msg := frame(make([]byte, 60))
	chunk := bytes.Repeat(msg, 1024)
	b.Run("size=64B/impl=raw", func(b *testing.B) {
		c := newLoopConn()
		r := bufio.NewReaderSize(c, 64<<10)
		b.ReportAllocs()
		b.ResetTimer()
		for got := 0; got < b.N; got += 1024 {
			c.Write(chunk)
			for range 1024 {
				hdr, err := r.Peek(4)
				if err != nil {
					b.Fatal(err)
				}
				n := 4 + int(binary.BigEndian.Uint32(hdr))
				if _, err := r.Peek(n); err != nil {
					b.Fatal(err)
				}
				r.Discard(n)
			}
		}
	})
	b.Run("size=64B/impl=kcm", func(b *testing.B) {
		c := newLoopConn()
		m := kcm.NewMux(kcm.Config{})
		defer m.Close()
		s := m.NewSocket(kcm.Datagram)
		if _, err := m.Attach(c, lenPrefix); err != nil {
			b.Fatal(err)
		}
		ms := make([]kcm.Message, 64)
		b.ReportAllocs()
		b.ResetTimer()
		for got := 0; got < b.N; got += 1024 {
			c.Write(chunk)
			for left := 1024; left > 0; {
				n, err := s.RecvBatch(ms)
				if err != nil {
					b.Fatal(err)
				}
				kcm.ReleaseBatch(ms[:n])
				left -= n
			}
		}
	})
}

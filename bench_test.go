package kcm_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strconv"
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
		b.Run("size="+itoa(size)+"/impl=raw", func(b *testing.B) {
			c, srv := tcpPair(b)
			go rawEcho(srv)
			r := bufio.NewReader(c)
			buf := make([]byte, len(req))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, buf[:4]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, buf[4:4+binary.BigEndian.Uint32(buf)]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("size="+itoa(size)+"/impl=kcm", func(b *testing.B) {
			c, srv := tcpPair(b)
			go kcmEcho(srv)
			m := kcm.NewMux(kcm.Config{})
			defer m.Close()
			s := m.NewSocket(kcm.Datagram)
			if _, err := m.Attach(c, lenPrefix); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, len(req))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Send(req); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Recv(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
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
// with SendBatch and receives with RecvBatch (zero copy).
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
				batch := make([][]byte, 64)
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

// loopConn echoes what is written back to its reader, without blocking:
// it measures kcm's own per-message cost, free of system calls.
type loopConn struct {
	buf []byte
}

func (c *loopConn) Read(b []byte) (int, error) {
	n := copy(b, c.buf)
	c.buf = c.buf[:copy(c.buf, c.buf[n:])]
	return n, nil
}
func (c *loopConn) Write(b []byte) (int, error)      { c.buf = append(c.buf, b...); return len(b), nil }
func (c *loopConn) Close() error                     { return nil }
func (c *loopConn) LocalAddr() net.Addr              { return nil }
func (c *loopConn) RemoteAddr() net.Addr             { return nil }
func (c *loopConn) SetDeadline(time.Time) error      { return nil }
func (c *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (c *loopConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkOverhead is kcm's own cost of one Send and one Recv on a mux of
// one socket and one psock, over a connection that echoes in memory: the
// data path without system calls, for profiling kcm's code alone.
func BenchmarkOverhead(b *testing.B) {
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	s := m.NewSocket(kcm.Datagram)
	c := &loopConn{}
	m.Attach(c, lenPrefix)
	req := frame([]byte{1})
	buf := make([]byte, 64)
	// Wait for the first exchange to get through the background reader.
	s.Send(req)
	s.Recv(buf)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Send(req)
		s.Recv(buf)
	}
}

package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/gokcm/kcm"
)

// The server streams messages to the client, so that the receiver being
// measured runs in this process and counts locally.

// publishEvery is how many messages a stream receiver counts locally before
// it publishes them: one atomic add per message would be a visible share of
// a 20 ns message.
const publishEvery = 256

// streamRaw is the baseline receiver: a tight loop over a bufio.Reader that
// reads each length prefix, then each payload into the application's buffer.
func streamRaw(t *target, cfg config) (*workload, error) {
	conns, err := dialN(t, cfg.Instances, kindRawStream, cfg.ReqSize)
	if err != nil {
		return nil, err
	}
	return &workload{
		workers: len(conns),
		close:   closeAll(conns),
		run: func(i int, w *worker) error {
			br := bufio.NewReaderSize(conns[i], 64<<10)
			body := make([]byte, cfg.ReqSize)
			var hdr [hdrLen]byte
			var n, bytes uint64
			defer func() { w.n.Add(n); w.bytes.Add(bytes) }()
			for !w.stopped() {
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					return err
				}
				if m := int(binary.BigEndian.Uint32(hdr[:])); m != len(body) {
					return fmt.Errorf("message of %d bytes, want %d", m, len(body))
				}
				if _, err := io.ReadFull(br, body); err != nil {
					return err
				}
				if w.measuring() {
					n++
					bytes += uint64(hdrLen + len(body))
					if n == publishEvery {
						w.n.Add(n)
						w.bytes.Add(bytes)
						n, bytes = 0, 0
					}
				}
			}
			return nil
		},
	}, nil
}

// streamRecvBuffer is the receive buffer of a kcm stream receiver's mux.
const streamRecvBuffer = 256 << 10

// streamKCM receives with RecvBatch, which lends pooled buffers that are
// released right away (ReleaseBatch): kcm's zero-copy batch path. The
// server sends with SendBatch, cfg.SendBatch messages at a time.
func streamKCM(t *target, cfg config) (*workload, error) {
	// The sender is kcm (SendBatch) unless -stream-sender raw isolates the
	// receive path against the very sender the baseline gets.
	kind := byte(kindKCMStream)
	if cfg.Sender == "raw" {
		kind = kindRawStream
	}
	// Each mux reads ahead at most streamRecvBuffer of messages, as a
	// socket's receive buffer would hold, not the default 4 MiB: with
	// -instances 1000 that would be gigabytes of queued messages where the
	// raw receivers hold 64 KiB each.
	socks, muxes, cleanup, err := kcmInstances(cfg.Instances, kcm.Config{RecvBuffer: streamRecvBuffer}, func() (net.Conn, error) {
		return t.dialHello(hello{kind: kind, size: cfg.ReqSize, batch: cfg.SendBatch})
	})
	if err != nil {
		return nil, err
	}
	return &workload{
		workers: len(socks),
		close:   cleanup,
		run: func(i int, w *worker) error {
			s := socks[i]
			ms := make([]kcm.Message, cfg.Batch)
			want := hdrLen + cfg.ReqSize
			var n, bytes uint64
			defer func() { w.n.Add(n); w.bytes.Add(bytes) }()
			for !w.stopped() {
				k, err := s.RecvBatch(ms)
				if err != nil {
					return muxes[i].explain(err)
				}
				for j := range ms[:k] {
					if l := len(ms[j].Bytes()); l != want {
						return fmt.Errorf("message of %d bytes, want %d", l, want)
					}
				}
				kcm.ReleaseBatch(ms[:k])
				if w.measuring() {
					n += uint64(k)
					bytes += uint64(k * want)
					if n >= publishEvery {
						w.n.Add(n)
						w.bytes.Add(bytes)
						n, bytes = 0, 0
					}
				}
			}
			return nil
		},
	}, nil
}

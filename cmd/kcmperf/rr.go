package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gokcm/kcm"
)

// rrRaw is netperf TCP_RR in Go: per instance one TCP connection, one Write
// per request and a bufio.Reader for the response, one transaction in flight.
func rrRaw(t *target, cfg config) (*workload, error) {
	conns, err := dialN(t, cfg.Instances, kindRawEcho, cfg.RespSize)
	if err != nil {
		return nil, err
	}
	return &workload{
		workers: len(conns),
		latency: true,
		close:   closeAll(conns),
		run: func(i int, w *worker) error {
			c := conns[i]
			req := newMessage(cfg.ReqSize, 'q')
			resp := make([]byte, cfg.RespSize)
			br := bufio.NewReader(c)
			var hdr [hdrLen]byte
			for !w.stopped() {
				start := time.Now()
				if _, err := c.Write(req); err != nil {
					return err
				}
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					return err
				}
				if n := int(binary.BigEndian.Uint32(hdr[:])); n != len(resp) {
					return fmt.Errorf("response of %d bytes, want %d", n, len(resp))
				}
				if _, err := io.ReadFull(br, resp); err != nil {
					return err
				}
				w.record(start)
			}
			return nil
		},
	}, nil
}

// rrKCM is super_kcmperf: per instance its own mux with one socket and one
// psock, Send of the request and Recv of the response.
func rrKCM(t *target, cfg config) (*workload, error) {
	socks, muxes, cleanup, err := kcmInstances(cfg.Instances, kcm.Config{}, func() (net.Conn, error) {
		return t.dial(kindKCMEcho, cfg.RespSize)
	})
	if err != nil {
		return nil, err
	}
	return &workload{
		workers: len(socks),
		latency: true,
		close:   cleanup,
		run: func(i int, w *worker) error {
			return muxes[i].explain(kcmRR(socks[i], newMessage(cfg.ReqSize, 'q'), hdrLen+cfg.RespSize, w, nil))
		},
	}, nil
}

// kcmInstances makes n muxes of one socket and one psock over connections
// from dial, and returns their sockets, the muxes in the same order and a
// function closing them all.
func kcmInstances(n int, cfg kcm.Config, dial func() (net.Conn, error)) ([]*kcm.Socket, []*perfMux, func(), error) {
	muxes := make([]*perfMux, 0, n)
	socks := make([]*kcm.Socket, 0, n)
	cleanup := func() {
		for _, m := range muxes {
			m.Close()
		}
	}
	for range n {
		c, err := dial()
		if err != nil {
			cleanup()
			return nil, nil, nil, err
		}
		m := newPerfMux(cfg)
		muxes = append(muxes, m)
		if _, err := m.attach(c, lengthPrefix); err != nil {
			c.Close()
			cleanup()
			return nil, nil, nil, err
		}
		socks = append(socks, m.NewSocket(kcm.Datagram))
	}
	return socks, muxes, cleanup, nil
}

// kcmRR sends req and receives a response of want bytes on s until w
// stops, recording each transaction's latency; check, if not nil, looks at
// each response.
func kcmRR(s *kcm.Socket, req []byte, want int, w *worker, check func(resp []byte) error) error {
	resp := make([]byte, want+1) // one spare byte tells a longer message apart
	for !w.stopped() {
		start := time.Now()
		if err := s.Send(req); err != nil {
			return err
		}
		n, err := s.Recv(resp)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("response of %d bytes, want %d", n, want)
		}
		if check != nil {
			if err := check(resp[:n]); err != nil {
				return err
			}
		}
		w.record(start)
	}
	return nil
}

func dialN(t *target, n int, kind byte, size int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := t.dial(kind, size)
		if err != nil {
			closeAll(conns)()
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []net.Conn) func() {
	return func() {
		for _, c := range conns {
			c.Close()
		}
	}
}

package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gokcm/kcm"
)

// shared: N request/response goroutines over M connections.
//
// The raw baseline is the hand-written multiplexer Go programs use: a write
// mutex per connection and one reader goroutine per connection that routes
// each reply to its goroutine by the 4-byte id at the start of the payload
// (the server echoes it).
//
// The kcm side is N sockets of one mux whose M psocks lead to kcm echo
// servers, with Config.Affinity steering each reply to the socket whose
// index its id carries: the same routing, done by the mux. Each goroutine
// checks that the reply it receives is its own.

func sharedRaw(t *target, cfg config) (*workload, error) {
	conns, err := dialN(t, cfg.Psocks, kindRawEcho, cfg.RespSize)
	if err != nil {
		return nil, err
	}
	wmu := make([]sync.Mutex, len(conns))
	replies := make([]chan struct{}, cfg.Instances)
	for i := range replies {
		replies[i] = make(chan struct{}, 1)
	}
	done := make(chan struct{})
	// failed is closed, with readErr set, when a reader stops on an error:
	// the workers waiting for replies on its connection report it.
	failed := make(chan struct{})
	var readErr error
	var failOnce sync.Once
	fail := func(err error) {
		failOnce.Do(func() { readErr = err; close(failed) })
	}
	var readers sync.WaitGroup
	for ci, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			br := bufio.NewReader(c)
			body := make([]byte, cfg.RespSize)
			var hdr [hdrLen]byte
			for {
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					fail(fmt.Errorf("connection %d: reading a reply: %w", ci, err))
					return
				}
				if n := int(binary.BigEndian.Uint32(hdr[:])); n != len(body) {
					fail(fmt.Errorf("connection %d: reply of %d bytes, want %d", ci, n, len(body)))
					return
				}
				if _, err := io.ReadFull(br, body); err != nil {
					fail(fmt.Errorf("connection %d: reading a reply: %w", ci, err))
					return
				}
				id := binary.BigEndian.Uint32(body)
				if int(id) >= len(replies) {
					fail(fmt.Errorf("connection %d: reply for unknown instance %d", ci, id))
					return
				}
				replies[id] <- struct{}{}
			}
		}()
	}
	var once sync.Once
	return &workload{
		workers: cfg.Instances,
		latency: true,
		close: func() {
			once.Do(func() {
				close(done)
				closeAll(conns)()
				readers.Wait()
			})
		},
		run: func(i int, w *worker) error {
			ci := i % len(conns)
			c := conns[ci]
			req := newMessage(cfg.ReqSize, 'q')
			binary.BigEndian.PutUint32(req[hdrLen:], uint32(i))
			for !w.stopped() {
				start := time.Now()
				wmu[ci].Lock()
				_, err := c.Write(req)
				wmu[ci].Unlock()
				if err != nil {
					return err
				}
				select {
				case <-replies[i]:
				case <-done:
					return nil
				case <-failed:
					return readErr
				}
				w.record(start)
			}
			return nil
		},
	}, nil
}

func sharedKCM(t *target, cfg config) (*workload, error) {
	m := newPerfMux(kcm.Config{Affinity: replySocket, RecvBuffer: sharedRecvBuffer(cfg)})
	for range cfg.Psocks {
		c, err := t.dial(kindKCMEcho, cfg.RespSize)
		if err != nil {
			m.Close()
			return nil, err
		}
		if _, err := m.attach(c, lengthPrefix); err != nil {
			c.Close()
			m.Close()
			return nil, err
		}
	}
	socks := make([]*kcm.Socket, cfg.Instances)
	socks[0] = m.NewSocket(kcm.Datagram)
	for i := 1; i < len(socks); i++ {
		socks[i] = socks[0].Clone()
	}
	return &workload{
		workers: len(socks),
		latency: true,
		close:   func() { m.Close() },
		run: func(i int, w *worker) error {
			return m.explain(sharedRR(socks[i], cfg, w))
		},
	}, nil
}

// sharedRecvBuffer is the receive buffer of the shared test's mux: room
// for every socket's reply to wait in its own queue, which Config.Affinity
// keeps to a quarter of the receive buffer (beyond that it steers replies
// to any socket, and sharedRR would fail), with room to spare.
func sharedRecvBuffer(cfg config) int {
	return max(kcm.DefaultRecvBuffer, 8*cfg.Instances*(hdrLen+cfg.RespSize))
}

// replySocket is the shared test's Config.Affinity: a reply goes to the
// socket whose index its payload starts with.
func replySocket(msg []byte, _ *kcm.Psock) int {
	if len(msg) < hdrLen+4 {
		return -1
	}
	return int(binary.BigEndian.Uint32(msg[hdrLen:]))
}

// sharedRR sends requests carrying s's index and receives their replies on
// s until w stops, checking that each reply is s's own.
func sharedRR(s *kcm.Socket, cfg config, w *worker) error {
	req := newMessage(cfg.ReqSize, 'q')
	id := uint32(s.Index())
	binary.BigEndian.PutUint32(req[hdrLen:], id)
	return kcmRR(s, req, hdrLen+cfg.RespSize, w, func(resp []byte) error {
		if got := binary.BigEndian.Uint32(resp[hdrLen:]); got != id {
			return fmt.Errorf("socket %d received the reply for socket %d", id, got)
		}
		return nil
	})
}

package kcm_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 6, a server under churn: workers reply with SendTo on the psock
// each request came from while clients connect, leave (some without
// waiting for their replies) and their psock indexes are reused. Every
// client that waits gets all its replies and only its own; a reply to a
// client that left fails with ErrNotAttached, never reaching the client
// that got its index.
func TestSendToRepliesUnderClientChurn(t *testing.T) {
	m := newMux(t, kcm.Config{})
	const clients, rounds, per, workers = 4, 8, 50, 3
	pairs := make([][][2]net.Conn, clients)
	for c := range pairs {
		for range rounds {
			a, b := tcpPair(t)
			pairs[c] = append(pairs[c], [2]net.Conn{a, b})
		}
	}
	var closing atomic.Bool
	serveSockets(t, m, workers, func(s *kcm.Socket) {
		for {
			msg, err := s.RecvMessage()
			if err != nil {
				return // the mux closed
			}
			err = s.SendTo(msg.Bytes(), msg.Psock())
			msg.Release()
			switch {
			case err == nil, errors.Is(err, kcm.ErrNotAttached):
			case errors.Is(err, kcm.ErrClosed) && closing.Load(): // the test ends
			default:
				t.Errorf("send to: %v", err)
			}
		}
	})
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := clientRound(m, pairs[c][r], c, r, per, r%3 == 2); err != nil {
					t.Errorf("client %d round %d: %v", c, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	closing.Store(true)
}

// clientRound attaches the server end of pair, sends per requests from
// the client end and, unless leave, reads their replies; then the client
// closes its connection.
func clientRound(m *kcm.Mux, pair [2]net.Conn, c, r, per int, leave bool) error {
	server, client := pair[0], pair[1]
	defer client.Close()
	if _, err := m.Attach(server, lenPrefix); err != nil {
		return err
	}
	base := uint32(c<<16 | r<<8)
	for i := range per {
		if _, err := client.Write(msgOf(base|uint32(i), 16+i%64)); err != nil {
			return err
		}
	}
	if leave {
		return nil
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	seen := make(map[uint32]bool)
	for range per {
		b, err := readFrame(client)
		if err != nil {
			return err
		}
		id := binary.BigEndian.Uint32(b[4:])
		if id&^0xff != base || seen[id] {
			return fmt.Errorf("reply %#x: not its own, or twice", id)
		}
		seen[id] = true
	}
	return nil
}

package kcm_test

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// TestAudit19ReservationRaceWithPsockFailure: over the life of a mux, once
// every socket is closed, the mux's Reserved equals its Unreserved: each
// reservation is released once, and counted.
//
// The mux has many busy psocks, each held by a SendTo whose write waits
// on a peer that does not read, and, round after round, one idle psock p,
// which pickTx therefore reserves for every socket's next Send (after a
// loop over all the psocks: a window between pickTx's load of the psock
// list and its reserve). p's peer closes under the senders while a
// monitor polls Mux.Stats. A sender that loaded the list before
// removeLocked published it without p, and reserved p after removeLocked
// released the sockets' reservations of p, holds a reservation of a gone
// psock, counted in Reserved while p waits in m.cold.leaving; if a Stats folds
// p's counters before that reservation is released (pickTx's retry moves
// it to a busy psock, or Close lets go of it), the release is lost:
// Reserved stays above Unreserved. TestAudit19StaleReservationLostFromTotals
// replays that interleaving deterministically; this test looks for it
// through the public API only, within a time budget.
func TestAudit19ReservationRaceWithPsockFailure(t *testing.T) {
	const (
		busy    = 128 // psocks held by a stuck write
		senders = 2
		per     = 64 // sockets per sender, reused round after round
	)
	m := kcm.NewMux(kcm.Config{})
	defer m.Close()
	// The senders' sockets first: removeLocked's scan of the sockets
	// reaches them early.
	ss := make([][]*kcm.Socket, senders)
	var socks []*kcm.Socket
	for i := 0; i < per; i++ {
		for g := range ss {
			s := m.NewSocket(kcm.Datagram)
			ss[g] = append(ss[g], s)
			socks = append(socks, s)
		}
	}
	var holders sync.WaitGroup
	for i := 0; i < busy; i++ {
		c, peer := net.Pipe() // nobody reads peer: a write on c blocks
		defer peer.Close()
		bp, err := m.Attach(c, lenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		h := m.NewSocket(kcm.Datagram)
		socks = append(socks, h)
		holders.Add(1)
		go func() {
			defer holders.Done()
			h.SendTo(msgOf(1, 4096), bp) // returns when h closes
		}()
	}
	// Every busy psock's load counts its stuck message.
	waitProc(t, m, func(d string) bool {
		for i := 0; i < busy; i++ {
			f := procFields(d, "psock-"+strconv.Itoa(i))
			if len(f) <= 8 || f[8] == "0" {
				return false
			}
		}
		return true
	})

	stopPoll := make(chan struct{})
	polled := make(chan struct{})
	go func() { // monitoring
		defer close(polled)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			m.Stats()
		}
	}()
	msg := frame([]byte("x"))
	deadline := time.Now().Add(3 * time.Second)
	rounds := 0
	for time.Now().Before(deadline) {
		rounds++
		c, peer := net.Pipe()
		p, err := m.Attach(c, lenPrefix)
		if err != nil {
			t.Fatal(err)
		}
		drained := make(chan struct{})
		go func() { io.Copy(io.Discard, peer); close(drained) }()
		started := make(chan struct{}, senders)
		var wg sync.WaitGroup
		for g := 0; g < senders; g++ {
			wg.Add(1)
			go func(ss []*kcm.Socket) {
				defer wg.Done()
				// One pass: each socket's first send in the round
				// reserves p, the least loaded psock.
				for i, s := range ss {
					if i == 4 {
						started <- struct{}{}
					}
					select {
					case <-p.Done():
						if i < 4 {
							started <- struct{}{}
						}
						return
					default:
					}
					s.Send(msg)
				}
			}(ss[g])
		}
		for g := 0; g < senders; g++ {
			<-started
		}
		peer.Close() // p fails: EOF on read, or a write on a closed pipe
		<-drained
		<-p.Done()
		wg.Wait()
	}
	close(stopPoll)
	<-polled
	for _, s := range socks {
		s.Close()
	}
	holders.Wait()
	st := m.Stats().Psocks
	t.Logf("%d rounds: Reserved %d, Unreserved %d", rounds, st.Reserved, st.Unreserved)
	if st.Reserved != st.Unreserved {
		t.Errorf("every socket closed: mux Reserved %d != Unreserved %d", st.Reserved, st.Unreserved)
	}
}

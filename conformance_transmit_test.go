package kcm_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Spec 4: a single message larger than the send buffer is accepted when
// nothing else is queued, with or without a psock.
func TestConformanceSendLargerThanSendBuffer(t *testing.T) {
	m := newMux(t, kcm.Config{SendBuffer: 4096})
	s := m.NewSocket(kcm.Datagram)
	big := msgOf(1, 100000)
	if err := cfDo(t, 5*time.Second, "Send without psock", func() error { return s.Send(big) }); err != nil {
		t.Fatal(err)
	}
	_, peer := attachPeer(t, m)
	if got := readMsg(t, peer); !bytes.Equal(got, big) {
		t.Fatal("backlogged big message differs")
	}
	big2 := msgOf(2, 300000)
	errc := make(chan error, 1)
	go func() { errc <- s.Send(big2) }()
	if got := readMsg(t, peer); !bytes.Equal(got, big2) {
		t.Fatal("big message differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// Spec 4: the backlog goes out in order on the first attach, even while
// the socket keeps sending during the attach.
func TestConformanceBacklogOrderAcrossAttach(t *testing.T) {
	for round := 0; round < 30; round++ {
		m := kcm.NewMux(kcm.Config{})
		s := m.NewSocket(kcm.Datagram)
		const n = 2000
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < n; i++ {
				if err := s.Send(msgOf(uint32(i), 8)); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(round%7) * 100 * time.Microsecond) // vary the overlap
		c, peer := tcpPair(t)
		if _, err := m.Attach(c, lenPrefix); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := 0; i < n; i++ {
			if id := checkMsg(t, readMsg(t, peer)); id != uint32(i) {
				m.Close()
				<-done
				t.Fatalf("round %d: message %d arrived in position %d", round, id, i)
			}
		}
		<-done
		m.Close()
	}
}

// Spec 4: messages built with More and sent in batches by many sockets at
// once over several psocks arrive whole and exactly once.
func TestConformanceMoreAndBatchAtomicUnderConcurrency(t *testing.T) {
	m := newMux(t, kcm.Config{})
	var peers []net.Conn
	for i := 0; i < 3; i++ {
		_, peer := attachPeer(t, m)
		peers = append(peers, peer)
	}
	const senders, per = 6, 60
	var wg sync.WaitGroup
	for g := 0; g < senders; g++ {
		typ := kcm.SeqPacket
		if g%2 == 0 {
			typ = kcm.Datagram
		}
		s := m.NewSocket(typ)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < per; i++ {
				msg := msgOf(uint32(g<<16|i), rng.Intn(200000))
				var err error
				switch rng.Intn(3) {
				case 0: // in several pieces
					cut := rng.Intn(len(msg))
					if err = s.SendMsg(msg[:cut], kcm.More); err == nil {
						err = s.SendMsg(msg[cut:], 0)
					}
				case 1: // in a batch, ended by an empty send
					if err = s.SendMsg(msg, kcm.Batch); err == nil {
						err = s.SendMsg(nil, 0)
					}
				default:
					err = s.Send(msg)
				}
				if err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}(g)
	}
	collect(t, peers, senders*per)
	wg.Wait()
}

// Spec 4: a psock whose peer resets while many senders write: no message
// is duplicated or interleaved on any stream, and every Send returns.
func TestConformanceTransmitFailureUnderLoad(t *testing.T) {
	m := newMux(t, kcm.Config{})
	bad, badPeer := attachPeer(t, m)
	badPeer.(*net.TCPConn).SetLinger(0)
	_, good1 := attachPeer(t, m)
	_, good2 := attachPeer(t, m)
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		s := m.NewSocket(kcm.Datagram)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for i := 0; i < 40; i++ {
				if err := s.Send(msgOf(uint32(g<<16|i), rng.Intn(300000))); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}(g)
	}
	ch := make(chan uint32, 1000)
	var rg sync.WaitGroup
	for _, c := range []net.Conn{good1, good2} {
		rg.Add(1)
		go func(c net.Conn) {
			defer rg.Done()
			for {
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
				msg := make([]byte, 4+n)
				copy(msg, hdr[:])
				if _, err := io.ReadFull(c, msg[4:]); err != nil {
					t.Error("stream ended inside a message")
					return
				}
				ch <- checkMsg(t, msg)
			}
		}(c)
	}
	waitProc(t, m, func(string) bool { return bad.Stats().TxMsgs > 0 }) // traffic flows on it
	badPeer.Close()
	if err := waitDone(t, bad); err == nil {
		t.Fatal("reset psock has no error")
	}
	if err := cfDo(t, 15*time.Second, "senders", func() error { wg.Wait(); return nil }); err != nil {
		t.Fatal(err)
	}
	// Everything is written: drain what the good peers got.
	seen := map[uint32]bool{}
	for {
		select {
		case id := <-ch:
			if seen[id] {
				t.Fatalf("message %x written twice", id)
			}
			seen[id] = true
			continue
		case <-time.After(300 * time.Millisecond): // no event marks "all read"
		}
		break
	}
	good1.SetReadDeadline(aLongTimeAgo)
	good2.SetReadDeadline(aLongTimeAgo)
	rg.Wait()
	t.Logf("%d messages on the good psocks, TxRetries %d", len(seen), m.Stats().TxRetries)
}

// Spec 4: Send after Socket.Close fails with ErrClosed; other sockets
// still send.
func TestConformanceSendAfterSocketClose(t *testing.T) {
	m := newMux(t, kcm.Config{})
	a := m.NewSocket(kcm.Datagram)
	b := a.Clone()
	_, peer := attachPeer(t, m)
	a.Close()
	if err := a.Send(msgOf(1, 10)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("send on closed socket: %v", err)
	}
	if _, err := a.Write(msgOf(1, 10)); !errors.Is(err, kcm.ErrClosed) {
		t.Fatalf("write on closed socket: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := b.Send(msgOf(2, 10)); err != nil {
		t.Fatal(err)
	}
	if id := checkMsg(t, readMsg(t, peer)); id != 2 {
		t.Fatal("wrong message")
	}
}

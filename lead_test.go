package kcm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"
)

// TestLeadYieldsToKeptRest: a leader that finds, once it has read its
// message, that another call on its socket was handed part of a message
// meanwhile (possible when a psock is attached during the read) returns
// that rest first and keeps its own message behind it, so the pieces of
// two messages never interleave on the socket. The race cannot be made to
// happen on demand, so the test sets the state up by hand.
func TestLeadYieldsToKeptRest(t *testing.T) {
	m, p, peer := attachedPsock(t, Config{})
	s := m.NewSocket(SeqPacket)
	frame := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

	// A first message, handed by the psock's background reader to a
	// receive waiting for it, takes the psock from that reader. (Had it
	// been queued, the reader would go on reading.)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	first := make(chan error, 1)
	go func() {
		n, err := s.Recv(make([]byte, 64))
		if err == nil && n != 9 {
			err = fmt.Errorf("%d bytes", n)
		}
		first <- err
	}()
	waitLocked(t, m, "the first receive never waited", func() bool { return m.waiters.follower() != nil || p.leader == s })
	m.mu.Unlock()
	peer.Write(frame("first"))
	if err := <-first; err != nil {
		t.Fatalf("first message: %v", err)
	}
	waitLocked(t, m, "the psock never became idle", func() bool { return m.leadableLocked() == p })
	// m.mu is held: another call's rest, then a lead for a piece-taking call.
	rest := []byte("rest of another message")
	s.keepRest(Message{b: rest, rest: true}, false)
	peer.Write(frame("second"))
	p.rx, p.leader = rxLed, s
	var out [1]Message
	n, err := m.lead(p, s, out[:], rxMode{limit: 64, partial: true})
	got, kept := out[0], append([]Message(nil), s.kept...)
	m.mu.Unlock()
	if n != 1 || err != nil || !bytes.Equal(got.b, rest) {
		t.Fatalf("lead returned %d, %v, %q; want the kept rest first", n, err, got.b)
	}
	if len(kept) != 1 || string(kept[0].b[4:]) != "second" {
		t.Fatalf("the socket keeps %d pieces after the lead; want its own message, whole", len(kept))
	}
	buf := make([]byte, 64)
	if n, _, err := s.RecvMsg(buf, 0); err != nil || string(buf[4:n]) != "second" {
		t.Fatalf("next receive: %q, %v; want the leader's message", buf[:n], err)
	}
}

// waitLocked polls cond under m.mu until it holds, and returns with m.mu
// held; after 5 s it fails the test with msg.
func waitLocked(t *testing.T, m *Mux, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		if cond() {
			return
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(time.Millisecond)
	}
}

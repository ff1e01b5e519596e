package kcm_test

import (
	"errors"
	"net"
	"testing"

	"github.com/gokcm/kcm"
)

// Spec 5: the mux's TX-Msgs aggregate counts every message completely
// written by any psock it ever had, including those a psock wrote in the
// very write that then failed. Here a batch of five 100-byte messages hits
// a connection that accepts two and a half of them: two went out on the
// failing psock, three are retried on the healthy one. Mux TxMsgs must be
// 5 (it reads 3: the failing psock's last write is counted in its own
// stats only after it already left the mux).
func TestReview2TxCountOfFailingPsockReachesMux(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, badPeer := tcpPair(t)
	msgs := make([][]byte, 5)
	for i := range msgs {
		msgs[i] = msgOf(uint32(i), 96) // 104 bytes framed
	}
	bad, err := m.Attach(&faultyConn{Conn: c, budget: 2*104 + 50}, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	s := m.NewSocket(kcm.Datagram)
	if err := s.SendBatch(msgs); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, bad); !errors.Is(err, errInjected) {
		t.Fatalf("psock err %v", err)
	}
	// Those two were written: the bad peer reads them whole.
	for i := 0; i < 2; i++ {
		if id := checkMsg(t, readMsg(t, badPeer)); id != uint32(i) {
			t.Fatalf("bad peer got %d", id)
		}
	}
	_, good := attachPeer(t, m) // the three others wait in the backlog
	for i := 2; i < 5; i++ {
		if id := checkMsg(t, readMsg(t, good)); id != uint32(i) {
			t.Fatalf("good peer got %d", id)
		}
	}
	_ = net.ErrClosed
	if got := bad.Stats().TxMsgs; got != 2 {
		t.Errorf("failed psock TxMsgs %d, want 2", got)
	}
	m.Close()
	if st := m.Stats(); st.TxMsgs != 5 || st.Psocks.TxMsgs != 5 {
		t.Fatalf("mux TxMsgs %d (psocks aggregate %d), want 5; TxRetries %d", st.TxMsgs, st.Psocks.TxMsgs, st.TxRetries)
	}
}

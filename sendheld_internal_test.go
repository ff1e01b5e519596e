package kcm

import "testing"

// TestCloseFreesHeldMessages: a socket's close lets go of the message it
// holds open (More) and of its batch, which it can never send: a closed
// socket that stays referenced keeps no copy of them.
func TestCloseFreesHeldMessages(t *testing.T) {
	m := NewMux(Config{})
	t.Cleanup(func() { m.Close() })
	s := m.NewSocket(Datagram)
	if err := s.SendMsg([]byte("batched"), Batch); err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg([]byte("open"), More); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.txmu.Lock()
	defer s.txmu.Unlock()
	if s.open != nil || s.batch != nil || s.state.Load()&sockHeld != 0 {
		t.Fatalf("after Close the socket holds open %q, batch %q", s.open, s.batch)
	}
}

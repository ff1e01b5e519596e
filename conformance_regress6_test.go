package kcm_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// A rejected duplicate Attach must not touch the attached connection: here
// it clears the read deadline the psock's reader set for the assembly
// deadline, so the stalled message is never timed out.
func TestConformanceProbeDuplicateAttachKeepsAssemblyDeadline(t *testing.T) {
	m := newMux(t, kcm.Config{MessageTimeout: 100 * time.Millisecond})
	c, peer := tcpPair(t)
	p, err := m.Attach(c, lenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte{0, 0}) // half a header: the message stalls
	for p.Stats().NeedMoreHdr == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond) // the reader is back in its read, deadline set: no event
	if _, err := m.Attach(c, lenPrefix); !errors.Is(err, kcm.ErrAlreadyAttached) {
		t.Fatalf("second attach: %v", err)
	}
	select {
	case <-p.Done():
		if !errors.Is(p.Err(), kcm.ErrMessageTimeout) {
			t.Fatalf("Err = %v", p.Err())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("stalled message never timed out after a rejected duplicate Attach of its connection")
	}
}

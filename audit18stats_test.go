package kcm_test

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gokcm/kcm"
)

// A send whose message waited, uncopied, in a busy psock's queue returns
// once the message is written; the psock's and the mux's TxMsgs count it
// by then ("Counters are updated before the event they count becomes
// visible to the application", spec section 3; MuxStats.TxMsgs: messages
// completely written to psocks).
func TestAudit18TxMsgsCountedBeforeWaitingSendReturns(t *testing.T) {
	const big = 1 << 20 // past the 64 KiB copy limit: the sender waits uncopied
	lagged := 0
	for iter := 0; iter < 3; iter++ {
		m := newMux(t, kcm.Config{})
		p, peer := attachPeer(t, m)
		a, b := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
		aDone := make(chan error, 1)
		go func() { aDone <- a.Send(msgOf(1, 48<<20)) }()
		// a writes its own message on p and blocks: the peer does not read.
		waitProc(t, m, func(d string) bool {
			f := procFields(d, "psock-0")
			return len(f) > 8 && f[8] != "0"
		})
		bDone := make(chan error, 1)
		go func() {
			err := b.Send(msgOf(2, big))
			if err == nil {
				// Send returned: its message was written whole.
				if ps, ms := p.Stats(), m.Stats(); ps.TxMsgs < 2 || ms.TxMsgs < 2 {
					err = errLag{ps.TxMsgs, ms.TxMsgs}
				}
			}
			bDone <- err
		}()
		waitSendQ(t, m, b, 1)
		go io.Copy(io.Discard, peer)
		if err := <-aDone; err != nil {
			t.Fatal(err)
		}
		if err := <-bDone; err != nil {
			if _, ok := err.(errLag); !ok {
				t.Fatal(err)
			}
			lagged++
			t.Logf("iteration %d: %v", iter, err)
		}
		m.Close()
		peer.Close()
	}
	if lagged > 0 {
		t.Errorf("%d of 3 waiting sends returned before TxMsgs counted their message", lagged)
	}
}

type errLag struct{ psock, mux uint64 }

func (e errLag) Error() string {
	return fmt.Sprintf("after the waiting Send returned: psock TxMsgs %d, mux TxMsgs %d, want 2", e.psock, e.mux)
}

func procFields(dump, obj string) []string {
	return strings.Fields(procLine(dump, obj))
}

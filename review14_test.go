package kcm_test

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression tests from the fourteenth review (of cafe6de..review13).

// r14SelfConn is a wrapper whose NetConn returns itself (a type with no
// lower layer of its own that still offers the method, or a cycle).
type r14SelfConn struct{ net.Conn }

func (c *r14SelfConn) NetConn() net.Conn { return c }

// TestReview14AttachSelfNetConn: layersOf walks NetConn up to maxLayers
// times without noticing that it returns a connection already in the list,
// so a conn whose NetConn returns itself is listed twice and claimConns
// finds it "already attached": it can never be attached. handshakerOf's
// maxLayers comment shows the case is meant to be handled.
func TestReview14AttachSelfNetConn(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	p, err := m.Attach(&r14SelfConn{c}, lenPrefix)
	if err != nil {
		t.Fatalf("attach of a conn whose NetConn returns itself: %v", err)
	}
	if _, err := p.Unattach(); err != nil {
		t.Fatal(err)
	}
}

// r14Unhashable is a conn type that cannot be a map key (its slice).
type r14Unhashable struct {
	net.Conn
	pad []byte
}

// r14Iface holds a conn in an interface field: its type is comparable
// (reflect says so), but its value is not when the field holds an
// r14Unhashable.
type r14Iface struct{ net.Conn }

// r14Outer is an ordinary pointer wrapper whose NetConn returns such a
// layer.
type r14Outer struct {
	net.Conn
	under net.Conn
}

func (c *r14Outer) NetConn() net.Conn { return c.under }

// TestReview14AttachUnhashableLayer: layersOf keeps a layer whose type
// reflect.Type.Comparable says is comparable, but an interface inside it
// may hold a value that is not: attachedConns.LoadOrStore then panics
// (hash of unhashable type) and Attach of a comparable *pointer* conn
// crashes the program. Before, only the top conn was a key.
func TestReview14AttachUnhashableLayer(t *testing.T) {
	m := newMux(t, kcm.Config{})
	c, _ := tcpPair(t)
	outer := &r14Outer{Conn: c, under: r14Iface{r14Unhashable{Conn: c, pad: []byte{1}}}}
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("Attach panicked: %v", r)
			}
		}()
		_, err = m.Attach(outer, lenPrefix)
	}()
	if err != nil {
		t.Fatal(err)
	}
}

// r14CloseHook is a conn whose Close closes a mux, as an application's
// wrapper may do ("the mux goes with its connection"). It waits at most
// 3 s for that Close, so that the test ends either way.
type r14CloseHook struct {
	net.Conn
	m       *kcm.Mux
	blocked chan bool
}

func (c *r14CloseHook) Close() error {
	done := make(chan struct{})
	go func() { c.m.Close(); close(done) }()
	select {
	case <-done:
		c.blocked <- false
	case <-time.After(3 * time.Second):
		c.blocked <- true
	}
	return c.Conn.Close()
}

// TestReview14CloseFromConnClose: Mux.Close closes attached connections in
// goroutines its WaitGroup counts (failLocked). A connection whose Close
// calls Mux.Close made a second, overlapping Close, which used to return
// at once; it now waits for the first (<-m.cold.closed), which waits for
// that very goroutine: a deadlock (here bounded by the hook's 3 s).
func TestReview14CloseFromConnClose(t *testing.T) {
	m := kcm.NewMux(kcm.Config{})
	c, _ := tcpPair(t)
	hook := &r14CloseHook{Conn: c, m: m, blocked: make(chan bool, 1)}
	if _, err := m.Attach(hook, lenPrefix); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Mux.Close took %v: the Close a connection's Close made waited for it", d)
	}
	if <-hook.blocked {
		t.Errorf("the Close called from the connection's Close blocked 3s")
	}
}

// TestReview14FlusherCloseKeepsPsock: sA's Send wrote its own message and,
// as the psock's writer, flushes the copied messages sB queued meanwhile;
// the peer is slow. Closing sA now interrupts that write (dropSocketLocked,
// t.flusher == s): the write stops inside one of sB's messages and the
// psock fails with ErrMidMessage (on TLS it always would), although sA has
// nothing of its own on the stream and sB's messages were accepted (Send
// returned nil). Socket.Close's doc and the spec (§4: only a psock the
// closing socket left mid-message goes) say another socket's message is
// not its business: "copied ones a write already holds ... go out whole".
func TestReview14FlusherCloseKeepsPsock(t *testing.T) {
	m := newMux(t, kcm.Config{})
	p, peer, sA, errA := flusherStalled(t, m, nil)
	sA.Close()
	waitErr(t, errA, "sA's Send")
	// The peer reads on: every one of sB's messages comes, whole, in order,
	// on the one psock, which stays.
	for i := range flusherMsgs {
		if id := checkMsg(t, readMsg(t, peer)); id != uint32(10+i) {
			t.Fatalf("message %d after sA's, want %d", id, 10+i)
		}
	}
	peer.SetReadDeadline(time.Time{})
	go io.Copy(io.Discard, peer)
	select {
	case <-p.Done():
		t.Fatalf("closing sA, whose send flushed sB's messages, failed the psock: %v", p.Err())
	default:
	}
}

// TestReview14OwnQueuesCountStallOthers: the receive buffer now bounds the
// number of queued messages too (maxQueued, fullLocked), and psocks paused
// on it resume only below half of it (resumeIfRoomLocked), but the sockets'
// own queues (Config.Affinity) are bounded by bytes alone (a quarter of
// RecvBuffer, steerLocked). Tiny messages steered to a socket that does not
// receive can thus take half of maxQueued or more: the psock, paused while
// the shared queue was full, stays paused (RxPause) after another socket
// drained that queue, and that socket waits for good for messages its peer
// sent: "sockets that do not receive cannot hold up the others' messages"
// (steerLocked) no longer holds. Here sB gets a few hundred of 3000, then
// times out, with the psock RxPause and nothing in the shared queue.
func TestReview14OwnQueuesCountStallOthers(t *testing.T) {
	m := newMux(t, kcm.Config{
		RecvBuffer: 48 << 10, // maxQueued 1024, own queues' budget 12 KiB
		Affinity: func(msg []byte, _ *kcm.Psock) int {
			if len(msg) < 5 || msg[4] == 0xff {
				return -1 // any socket
			}
			return int(msg[4])
		},
	})
	sA, sB := m.NewSocket(kcm.Datagram), m.NewSocket(kcm.Datagram)
	_, peer := attachPeer(t, m)
	const forA, forAny = 700, 3000 // 5-byte messages: 3.5 KB for sA, under its share
	var stream []byte
	for range forA {
		stream = append(stream, frame([]byte{byte(sA.Index())})...) // sA never receives
	}
	for range forAny {
		stream = append(stream, frame([]byte{0xff})...)
	}
	if _, err := peer.Write(stream); err != nil { // 18 KB: the socket buffers hold it
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	sB.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range forAny {
		if _, err := sB.Recv(buf); err != nil {
			t.Fatalf("sB received %d of %d messages, then: %v\n%s", i, forAny, err, proc(m))
		}
	}
}

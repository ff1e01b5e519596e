package kcm_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Tests from audit 17: Config.Affinity, unconnected use, SetRecvDisabled
// and their interplay with the receive limits.

// a17Tiny is an 8-byte message (4-byte header, 4-byte id) for bySocketID:
// the smallest message the tests' framing and Affinity function allow.
func a17Tiny(id uint32) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, 4)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

// Config.Affinity: "the psocks pause when the own and shared queues
// together hold RecvBuffer, so sockets that do not receive cannot stop
// the others'"; spec 6: affinity is "best effort, never blocking other
// sockets"; spec 3: "a socket that is not receiving never holds messages
// another socket could take".
//
// The psocks pause and resume on the number of queued messages too
// (RecvBuffer/48, at least 1024; resume below half of it), own queues
// included. The own queues were bounded by bytes only (a quarter of
// RecvBuffer), so a socket that does not receive could hold, within its
// byte share, more tiny messages than half the message bound: once the
// psock paused, no receive of another socket could bring it back. They
// are now bounded in number as in bytes (a quarter of the message bound,
// and each socket its share), and what does not fit goes to any socket.
// (RecvBuffer 48000: 1024 messages at most, resume below 512; a quarter of
// 12000 bytes, a share of 6000 for each of two sockets: 750 messages of 8
// bytes wait for t, which never receives. Then 400 messages for any
// socket: 274 fill the queue to 1024 and the psock pauses. u drains them,
// 286 messages stay unread in the kernel, and u waits for ever.)
func TestAudit17AffinityTinyOwnMessagesStallOtherSockets(t *testing.T) {
	const bound, forT, forAny = 48000, 750, 400
	m := newMux(t, kcm.Config{Affinity: bySocketID, RecvBuffer: bound})
	tt := m.NewSocket(kcm.Datagram)
	u := tt.Clone()
	_, peer := attachPeer(t, m)
	var all []byte
	for n := range forT {
		all = append(all, a17Tiny(affID(tt.Index(), n))...)
	}
	for n := range forAny {
		all = append(all, a17Tiny(affID(anySock, n))...)
	}
	all = append(all, a17Tiny(affID(u.Index(), 0))...)
	if _, err := peer.Write(all); err != nil {
		t.Fatal(err)
	}
	waitProc(t, m, func(d string) bool { return strings.Contains(d, "RxPause") })
	u.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	// Steering is best effort: what t's share cannot hold goes to any
	// socket, so u may take some of t's messages among its own, in order.
	next, lastT := 0, -1
	for next <= forAny {
		k, err := u.Recv(buf)
		if err != nil {
			t.Fatalf("u received %d of the %d messages it can take, then: %v (t holds %d messages it does not receive)\n%s",
				next, forAny+1, err, forT, proc(m))
		}
		if k != 8 {
			t.Fatalf("message of %d bytes", k)
		}
		id := binary.BigEndian.Uint32(buf[4:])
		want := affID(anySock, next)
		if next == forAny {
			want = affID(u.Index(), 0)
		}
		if id == want {
			next++
			continue
		}
		// One of t's, in stream order among those u takes.
		n := -1
		for i := lastT + 1; i < forT; i++ {
			if id == affID(tt.Index(), i) {
				n = i
				break
			}
		}
		if n < 0 {
			t.Fatalf("u got %#x, want %#x (or one of t's after its message %d, not steered)", id, want, lastT)
		}
		lastT = n
	}
}

// a17Run is one run of the randomized model test below.
type a17Run struct {
	t        *testing.T
	seed     int64
	affinity bool
	m        *kcm.Mux
	total    int          // messages the peers send
	sizes    [][]int      // sizes[psock][n]
	epoch    atomic.Int64 // odd while a release (disable, close) is under way

	mu       sync.Mutex
	got      map[uint32]int // id -> socket index that received it
	received atomic.Int64
	closed   []*kcm.Socket // sockets closed during the run, for their counters
	live     []*kcm.Socket
	done     chan struct{}
	log      []string
}

const a17Debug = false

func (r *a17Run) failf(format string, args ...any) {
	r.t.Helper()
	if a17Debug {
		r.mu.Lock()
		r.t.Log(strings.Join(r.log, "\n"))
		r.mu.Unlock()
	}
	r.t.Errorf("seed %d affinity %v: "+format, append([]any{r.seed, r.affinity}, args...)...)
}

// a17Last is the last message of a psock a receiver took: its place in
// the stream and the epoch when the call that took its first byte began.
type a17Last struct {
	n int
	e int64
}

// record notes a whole message received by s and checks it against the
// model: valid bytes, never received before, and, per psock, in stream
// order. With Affinity, a release (Close or SetRecvDisabled of a socket
// holding steered messages) may put earlier messages after later ones
// (Config.Affinity says so), so the order is checked only between messages
// taken with no release begun since the first of them was: startE is the
// epoch when the call that took the first byte of b began.
func (r *a17Run) record(s *kcm.Socket, b []byte, track map[int]a17Last, startE int64) {
	id := checkMsg(r.t, b)
	if id == badID {
		r.failf("socket %d: malformed message", s.Index())
		return
	}
	psock, n := int(id>>12&0xf), int(id&0xfff)
	if psock >= len(r.sizes) || n >= len(r.sizes[psock]) || len(b) != 4+r.sizes[psock][n] {
		r.failf("socket %d: unknown message %#x of %d bytes", s.Index(), id, len(b))
		return
	}
	r.mu.Lock()
	if prev, dup := r.got[id]; dup {
		r.mu.Unlock()
		r.failf("message %#x received twice: by socket %d and by socket %d", id, prev, s.Index())
		return
	}
	r.got[id] = s.Index()
	r.mu.Unlock()
	last, ok := track[psock]
	if ok && n <= last.n && (!r.affinity || last.e%2 == 0 && last.e == startE && last.e == r.epoch.Load()) {
		r.failf("socket %d got psock %d's message %d after its message %d", s.Index(), psock, n, last.n)
	}
	track[psock] = a17Last{n, startE}
	if r.received.Add(1) == int64(r.total) {
		close(r.done)
	}
}

// msgLen returns the full length of the message whose first bytes are b
// (at least 4 of them).
func a17Len(b []byte) int { return 4 + int(binary.BigEndian.Uint32(b)) }

// receiver runs random receive calls on s until the mux closes; it may
// close s (when no message is half read) and go on with a clone.
func (r *a17Run) receiver(s *kcm.Socket, rng *rand.Rand, mayClose bool, wg *sync.WaitGroup) {
	defer wg.Done()
	big := make([]byte, 80<<10)
	var partial []byte // bytes of a message read in pieces so far
	track := map[int]a17Last{}
	var startE int64 // epoch when the call that took the first piece began
	for {
		e1 := r.epoch.Load()
		op := rng.Intn(8)
		// whole appends piece to the message being read and records it
		// when complete; it reports whether it was.
		whole := func(piece []byte) bool {
			if partial == nil {
				startE = e1
			}
			partial = append(partial, piece...)
			if len(partial) >= 4 && len(partial) >= a17Len(partial) {
				if len(partial) != a17Len(partial) {
					r.failf("socket %d: read %d bytes of a %d-byte message", s.Index(), len(partial), a17Len(partial))
				}
				if a17Debug {
					r.mu.Lock()
					r.log = append(r.log, fmt.Sprintf("sock %d op %d e1 %d now %d start %d: %#x", s.Index(), op, e1, r.epoch.Load(), startE, binary.BigEndian.Uint32(partial[4:])))
					r.mu.Unlock()
				}
				r.record(s, partial, track, startE)
				partial = nil
				return true
			}
			return false
		}
		var err error
		switch op {
		case 0: // Recv / RecvMsg into a buffer that fits (no truncation)
			var n int
			var fl kcm.RecvFlags
			if rng.Intn(2) == 0 {
				n, err = s.Recv(big)
				fl = kcm.EOR
			} else {
				f := kcm.RecvFlags(0)
				if rng.Intn(3) == 0 {
					f = kcm.DontWait
				}
				n, fl, err = s.RecvMsg(big, f)
			}
			if err == nil {
				if !whole(big[:n]) {
					r.failf("socket %d: Recv returned part of a message", s.Index())
				} else if fl&kcm.EOR == 0 {
					r.failf("socket %d: whole message without EOR", s.Index())
				}
			}
		case 1: // pieces: Read, or RecvMsg on a SeqPacket socket
			b := big[:1+rng.Intn(300)]
			var n int
			if s.Type() == kcm.SeqPacket && rng.Intn(2) == 0 {
				var fl kcm.RecvFlags
				n, fl, err = s.RecvMsg(b, 0)
				if err == nil && whole(b[:n]) != (fl&kcm.EOR != 0) {
					r.failf("socket %d: EOR %v on a piece of %d bytes", s.Index(), fl&kcm.EOR != 0, n)
				}
			} else if n, err = s.Read(b); err == nil {
				whole(b[:n])
			}
		case 2: // RecvMessage
			var msg kcm.Message
			msg, err = s.RecvMessage()
			if err == nil {
				if !whole(msg.Bytes()) {
					r.failf("socket %d: RecvMessage returned part of a message", s.Index())
				}
				msg.Release()
			}
		case 3: // RecvBatch
			ms := make([]kcm.Message, 1+rng.Intn(8))
			var n int
			n, err = s.RecvBatch(ms)
			for i := range n {
				if !whole(ms[i].Bytes()) {
					r.failf("socket %d: RecvBatch returned part of a message", s.Index())
				}
			}
			kcm.ReleaseBatch(ms[:n])
		case 4: // Peek, maybe DontWait, into a buffer that may be short
			f := kcm.Peek
			if rng.Intn(2) == 0 {
				f |= kcm.DontWait
			}
			b := big[:1+rng.Intn(len(big))]
			var n int
			var fl kcm.RecvFlags
			n, fl, err = s.RecvMsg(b, f)
			if err == nil && partial != nil && len(partial)+n >= 4 {
				// The rest of the message s is reading comes first.
				all := append(append([]byte(nil), partial...), b[:n]...)
				if want := a17Len(all) - len(partial); n > want || (n == want) != (fl&kcm.EOR != 0) {
					r.failf("socket %d: peek of its kept rest (%d bytes) returned %d bytes, flags %v", s.Index(), want, n, fl)
				}
			} else if err == nil && n >= 4 && fl&kcm.EOR != 0 && n != a17Len(b) {
				r.failf("socket %d: peek with EOR returned %d bytes of a %d-byte message", s.Index(), n, a17Len(b))
			}
		case 5: // DontWait pieces on SeqPacket, whole on Datagram
			b := big
			if s.Type() == kcm.SeqPacket {
				b = big[:1+rng.Intn(2000)]
			}
			var n int
			var fl kcm.RecvFlags
			n, fl, err = s.RecvMsg(b, kcm.DontWait)
			if err == nil && whole(b[:n]) != (fl&kcm.EOR != 0) {
				r.failf("socket %d: DontWait EOR %v on %d bytes", s.Index(), fl&kcm.EOR != 0, n)
			}
		case 6: // close and go on with a clone
			if mayClose && partial == nil && rng.Intn(4) == 0 {
				next := s.Clone()
				r.mu.Lock()
				r.live = append(r.live, next)
				r.mu.Unlock()
				r.epoch.Add(1)
				s.Close()
				r.epoch.Add(1)
				r.mu.Lock()
				r.closed = append(r.closed, s)
				for i, x := range r.live {
					if x == s {
						r.live = append(r.live[:i], r.live[i+1:]...)
						break
					}
				}
				r.mu.Unlock()
				s = next
				clear(track)
				continue
			}
		default:
			runtime.Gosched()
		}
		if errors.Is(err, kcm.ErrClosed) {
			return
		}
		if err != nil && !errors.Is(err, kcm.ErrWouldBlock) {
			r.failf("socket %d: %v", s.Index(), err)
			return
		}
	}
}

// Spec 3 (steering, order, SetRecvDisabled, Close moving unread messages,
// pieces, Peek, DontWait) and 6 (Affinity), spec 5 counters: random runs
// of several psocks whose peers write messages (for a named socket, some
// that does not exist, or any) in random pieces, and several sockets of
// both types each receiving with every kind of call, while sockets are
// disabled and enabled, closed and replaced by clones: every message is
// received once, whole, each socket receives each psock's messages in
// stream order (with Affinity, only between releases, which Config.Affinity
// allows to reorder), nothing stays stuck, and the socket, psock and mux
// counters add up.
func TestAudit17SteeringModel(t *testing.T) {
	start := time.Now()
	for seed := int64(1); seed <= a17Seeds && time.Since(start) < a17Budget; seed++ {
		a17ModelRun(t, seed, seed%2 == 0)
		if t.Failed() {
			return
		}
	}
}

func a17ModelRun(t *testing.T, seed int64, affinity bool) {
	rng := rand.New(rand.NewSource(seed))
	cfg := kcm.Config{}
	switch rng.Intn(3) {
	case 1:
		cfg.RecvBuffer = 3000
	case 2:
		cfg.RecvBuffer = 20000
	}
	if affinity {
		cfg.Affinity = bySocketID
	}
	m := kcm.NewMux(cfg)
	defer m.Close()
	r := &a17Run{t: t, seed: seed, affinity: affinity, m: m, got: map[uint32]int{}, done: make(chan struct{})}
	nsock := 2 + rng.Intn(3)
	for i := range nsock {
		typ := kcm.Datagram
		if rng.Intn(2) == 0 {
			typ = kcm.SeqPacket
		}
		if i == 0 {
			r.live = append(r.live, m.NewSocket(typ))
		} else {
			r.live = append(r.live, r.live[0].Mux().NewSocket(typ))
		}
	}
	npsock := 1 + rng.Intn(3)
	var wire [][]byte
	for p := range npsock {
		count := 20 + rng.Intn(100)
		var sizes []int
		var all []byte
		for n := range count {
			size := 8 + rng.Intn(60)
			switch rng.Intn(10) {
			case 0:
				size = 200 + rng.Intn(5000)
			case 1:
				if rng.Intn(4) == 0 {
					size = 20000 + rng.Intn(50000)
				}
			}
			target := anySock
			if rng.Intn(3) > 0 {
				target = rng.Intn(nsock + 1) // sometimes an index nobody has
			}
			sizes = append(sizes, size)
			all = append(all, msgOf(r10ID(target, p, n), size)...)
		}
		r.sizes = append(r.sizes, sizes)
		r.total += count
		wire = append(wire, all)
	}
	var peers sync.WaitGroup
	for p := range npsock {
		_, peer := attachPeer(t, m)
		wseed := rng.Int63()
		peers.Add(1)
		go func() {
			defer peers.Done()
			writeChunked(peer, wire[p], rand.New(rand.NewSource(wseed)))
		}()
	}
	var rcv sync.WaitGroup
	for i, s := range slices.Clone(r.live) {
		rcv.Add(1)
		go r.receiver(s, rand.New(rand.NewSource(rng.Int63())), i > 0, &rcv)
	}
	// The controller disables and enables sockets meanwhile.
	stop := make(chan struct{})
	var ctl sync.WaitGroup
	ctl.Add(1)
	cseed := rng.Int63()
	go func() {
		defer ctl.Done()
		crng := rand.New(rand.NewSource(cseed))
		disabled := map[*kcm.Socket]bool{}
		for {
			select {
			case <-stop:
				r.epoch.Add(1)
				for s := range disabled {
					s.SetRecvDisabled(false)
				}
				r.epoch.Add(1)
				return
			default:
			}
			r.mu.Lock()
			s := r.live[crng.Intn(len(r.live))]
			r.mu.Unlock()
			d := crng.Intn(3) == 0
			r.epoch.Add(1)
			s.SetRecvDisabled(d)
			r.epoch.Add(1)
			if d {
				disabled[s] = true
			} else {
				delete(disabled, s)
			}
			time.Sleep(time.Duration(crng.Intn(300)) * time.Microsecond) // pacing only
			if crng.Intn(2) == 0 {
				// Enable everything again now and then, so that no
				// run keeps every socket disabled for long.
				r.epoch.Add(1)
				for s := range disabled {
					s.SetRecvDisabled(false)
				}
				r.epoch.Add(1)
				clear(disabled)
			}
		}
	}()
	peers.Wait()
	fail := false
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		fail = true
	}
	close(stop)
	ctl.Wait()
	if fail {
		// Enabled again: does anything arrive now?
		select {
		case <-r.done:
			t.Errorf("seed %d affinity %v: messages arrived only after the sockets were enabled again", seed, affinity)
		case <-time.After(2 * time.Second):
			t.Errorf("seed %d affinity %v: %d of %d messages received; stuck:\n%s", seed, affinity, r.received.Load(), r.total, proc(m))
		}
	}
	if !t.Failed() {
		// All received: the counters must add up.
		ms := m.Stats()
		var sockMsgs, sockBytes, psMsgs, psBytes uint64
		r.mu.Lock()
		for _, s := range append(append([]*kcm.Socket(nil), r.live...), r.closed...) {
			st := s.Stats()
			sockMsgs += st.RxMsgs
			sockBytes += st.RxBytes
		}
		r.mu.Unlock()
		for _, p := range m.Psocks() {
			st := p.Stats()
			psMsgs += st.RxMsgs
			psBytes += st.RxBytes
		}
		var wantBytes uint64
		for _, sz := range r.sizes {
			for _, n := range sz {
				wantBytes += uint64(4 + n)
			}
		}
		if ms.RxMsgs != uint64(r.total) || ms.RxBytes != wantBytes || psMsgs != ms.RxMsgs || psBytes != ms.RxBytes ||
			sockMsgs != ms.RxMsgs || sockBytes != ms.RxBytes || ms.RxReadyDrops != 0 {
			t.Errorf("seed %d affinity %v: counters: mux %d msgs %d bytes (drops %d), psocks %d/%d, sockets %d/%d; sent %d/%d",
				seed, affinity, ms.RxMsgs, ms.RxBytes, ms.RxReadyDrops, psMsgs, psBytes, sockMsgs, sockBytes, r.total, wantBytes)
		}
		if q, _ := m.Queued(); q != 0 {
			t.Errorf("seed %d: %d bytes still queued after every message was received", seed, q)
		}
	}
	m.Close()
	rcv.Wait()
}

var a17Seeds, a17Budget = int64(40), 2 * time.Second

// Config.Affinity: "A panic in it is a fault of the stream, as in a
// parser: the message goes to any socket, and p fails with ErrParse after
// delivering the complete messages it had read", also where a DontWait
// receive reads the psock itself and steers what it brings ("a DontWait
// receive may read one, steering what it brings as a background reader
// would"). The messages come in stream order, the counters agree, and the
// other psock goes on.
func TestAudit17AffinityPanicUnderDontWait(t *testing.T) {
	m := newMux(t, kcm.Config{Affinity: func(msg []byte, p *kcm.Psock) int {
		if msg[4] == 0xff {
			panic("bad message")
		}
		return bySocketID(msg, p)
	}})
	s := m.NewSocket(kcm.Datagram)
	other := s.Clone()
	bad, badPeer := attachPeer(t, m)
	_, goodPeer := attachPeer(t, m)
	var all []byte
	all = append(all, msgOf(affID(s.Index(), 1), 20)...)
	all = append(all, frame([]byte{0xff, 1, 2, 3, 4, 5, 6, 7})...)
	all = append(all, msgOf(affID(s.Index(), 3), 20)...)
	all = append(all, msgOf(affID(anySock, 4), 20)...)
	if _, err := badPeer.Write(all); err != nil {
		t.Fatal(err)
	}
	want := []uint32{affID(s.Index(), 1), 0xff010203, affID(s.Index(), 3), affID(anySock, 4)}
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < len(want); {
		n, _, err := s.RecvMsg(buf, kcm.DontWait)
		if errors.Is(err, kcm.ErrWouldBlock) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d messages came:\n%s", i, len(want), proc(m))
			}
			runtime.Gosched()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.BigEndian.Uint32(buf[4:n]); got != want[i] {
			t.Fatalf("message %d: got %#x, want %#x", i, got, want[i])
		}
		i++
	}
	if err := waitDone(t, bad); !errors.Is(err, kcm.ErrParse) {
		t.Fatalf("psock error %v, want ErrParse", err)
	}
	if st := s.Stats(); st.RxMsgs != 4 {
		t.Errorf("socket RxMsgs %d, want 4", st.RxMsgs)
	}
	if st := bad.Stats(); st.RxMsgs != 4 || st.Interrupted != 1 {
		t.Errorf("psock RxMsgs %d Interrupted %d, want 4 and 1", st.RxMsgs, st.Interrupted)
	}
	goodPeer.Write(msgOf(affID(other.Index(), 9), 20))
	if got := recvID(t, other); got != affID(other.Index(), 9) {
		t.Fatalf("other got %#x", got)
	}
	if st := m.Stats(); st.RxMsgs != 5 || st.RxReadyDrops != 0 {
		t.Errorf("mux RxMsgs %d drops %d, want 5 and 0", st.RxMsgs, st.RxReadyDrops)
	}
}

package kcm_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gokcm/kcm"
)

// Regression and stress tests from the seventh review: pieces of messages
// cut at the hand-off (9ff30e8), their kept rests, flags and counters.

// r7msg returns a message of size bytes (a multiple of 8, at least 16)
// that tells, in every aligned 8-byte word, which message it belongs to
// and where the word is: word 0 is the 4-byte frame header and the id,
// word k at offset p = 8k holds the id and p. Ids have their top bit set,
// frame headers never, so a piece that starts on a word boundary names
// its message and offset.
func r7msg(id uint32, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(size-4))
	binary.BigEndian.PutUint32(b[4:], id)
	for p := 8; p+8 <= size; p += 8 {
		binary.BigEndian.PutUint32(b[p:], id)
		binary.BigEndian.PutUint32(b[p+4:], uint32(p))
	}
	return b
}

// r7where decodes the message id and offset of a piece that starts on a
// word boundary.
func r7where(b []byte) (id uint32, off int, ok bool) {
	if len(b) < 8 {
		return 0, 0, false
	}
	a, c := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	if a&(1<<31) == 0 {
		return c, 0, c&(1<<31) != 0
	}
	return a, int(c), true
}

// r7piece is one receive's result in the stress test.
type r7piece struct {
	id   uint32
	off  int
	n    int
	eor  bool
	hasF bool // eor is known (RecvMsg, not Read)
}

// r7stress runs readers goroutines that receive pieces from one SeqPacket
// socket with buffers of random multiples of 8 bytes while psocks peers
// each write perPeer messages of random sizes, and checks that every
// message's pieces tile it exactly, EOR marks exactly the last piece, no
// reader sees a message again after it moved on, each psock's messages
// reach each reader in stream order, and the socket's counters account
// for every message and byte.
func r7stress(t *testing.T, cfg kcm.Config, psocks, readers, perPeer int) {
	r7stressOver(t, cfg, psocks, readers, perPeer, func(m *kcm.Mux) net.Conn {
		_, peer := attachPeer(t, m)
		return peer
	}, false)
}

// r7stressOver is r7stress over the psocks attach makes (it returns the
// peer's end); with kick, a goroutine keeps changing the socket's read
// deadline meanwhile, which interrupts whoever reads a psock for it.
func r7stressOver(t *testing.T, cfg kcm.Config, psocks, readers, perPeer int, attach func(*kcm.Mux) net.Conn, kick bool) {
	m := newMux(t, cfg)
	s := m.NewSocket(kcm.SeqPacket)
	var peers []net.Conn
	for range psocks {
		peers = append(peers, attach(m))
	}
	sizes := map[uint32]int{}
	total, totalMsgs := 0, 0
	streams := make([][]byte, psocks)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for p := range psocks {
		for i := range perPeer {
			id := uint32(1)<<31 | uint32(p)<<24 | uint32(i)
			var size int
			switch rng.Intn(4) {
			case 0:
				size = 16 + 8*rng.Intn(4) // smaller than most buffers
			case 1:
				size = 16 + 8*rng.Intn(64)
			case 2:
				size = 16 + 8*rng.Intn(1024)
			default:
				size = 16 + 8*rng.Intn(16<<10) // up to 128 KiB: several reads
			}
			sizes[id] = size
			total += size
			totalMsgs++
			streams[p] = append(streams[p], r7msg(id, size)...)
		}
	}

	var got atomic.Int64
	logs := make([][]r7piece, readers)
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for r := range readers {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(r) + time.Now().UnixNano()))
			buf := make([]byte, 256<<10)
			for {
				var size int
				switch rng.Intn(3) {
				case 0:
					size = 8 * (1 + rng.Intn(4))
				case 1:
					size = 8 * (1 + rng.Intn(512))
				default:
					size = 8 * (1 + rng.Intn(32<<10))
				}
				b := buf[:size]
				var p r7piece
				var err error
				switch rng.Intn(5) {
				case 0:
					p.n, err = s.Read(b)
				case 1:
					// A peek: check only that it shows a valid prefix.
					n, _, perr := s.RecvMsg(b, kcm.Peek)
					if perr == nil && n > 0 {
						if id, off, ok := r7where(b[:n]); !ok || sizes[id] == 0 {
							errs <- fmt.Errorf("reader %d: peek returned %d undecodable bytes", r, n)
							return
						} else if off+n > sizes[id] {
							errs <- fmt.Errorf("reader %d: peek of %#x at %d returned %d bytes past its end %d", r, id, off, n, sizes[id])
							return
						}
					}
					err = perr
					if err == nil {
						continue
					}
				case 2:
					var fl kcm.RecvFlags
					p.n, fl, err = s.RecvMsg(b, kcm.DontWait)
					p.eor, p.hasF = fl&kcm.EOR != 0, true
					if errors.Is(err, kcm.ErrWouldBlock) {
						time.Sleep(50 * time.Microsecond)
						continue
					}
				default:
					var fl kcm.RecvFlags
					p.n, fl, err = s.RecvMsg(b, 0)
					p.eor, p.hasF = fl&kcm.EOR != 0, true
					if fl&kcm.Trunc != 0 {
						errs <- fmt.Errorf("reader %d: Trunc on a SeqPacket socket", r)
						return
					}
				}
				if err != nil {
					if errors.Is(err, kcm.ErrClosed) {
						errs <- nil
						return
					}
					errs <- fmt.Errorf("reader %d: %v", r, err)
					return
				}
				id, off, ok := r7where(b[:p.n])
				if !ok || sizes[id] == 0 {
					errs <- fmt.Errorf("reader %d: a %d-byte piece (buffer %d) does not start on a word boundary of a known message: % x", r, p.n, size, b[:min(p.n, 16)])
					return
				}
				p.id, p.off = id, off
				exp := r7msg(id, sizes[id])
				if off+p.n > len(exp) || string(exp[off:off+p.n]) != string(b[:p.n]) {
					errs <- fmt.Errorf("reader %d: piece of %#x at %d (%d bytes) is corrupt", r, id, off, p.n)
					return
				}
				logs[r] = append(logs[r], p)
				got.Add(int64(p.n))
			}
		}(r)
	}
	var pw sync.WaitGroup
	for i, peer := range peers {
		pw.Add(1)
		go func(i int, peer net.Conn) {
			defer pw.Done()
			if err := writeChunked(peer, streams[i], rand.New(rand.NewSource(int64(i)))); err != nil {
				t.Errorf("peer write: %v", err)
			}
		}(i, peer)
	}
	kicked := make(chan struct{})
	stopKick := make(chan struct{})
	go func() {
		defer close(kicked)
		for kick {
			select {
			case <-stopKick:
				return
			default:
			}
			s.SetReadDeadline(time.Now().Add(time.Hour)) // interrupts the reader
			time.Sleep(100 * time.Microsecond)           // pacing, not synchronisation
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stopKick)
	<-kicked
	time.Sleep(20 * time.Millisecond) // anything extra would show now
	pw.Wait()
	st := s.Stats()
	s.Close()
	wg.Wait()
	for range readers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := got.Load(); n != int64(total) {
		t.Errorf("readers received %d bytes, want %d", n, total)
	}

	// Every message's pieces tile it; EOR on the last only.
	byMsg := map[uint32][]r7piece{}
	for _, log := range logs {
		for _, p := range log {
			byMsg[p.id] = append(byMsg[p.id], p)
		}
	}
	for id, size := range sizes {
		cov := make([]int, size)
		for _, p := range byMsg[id] {
			for i := p.off; i < p.off+p.n; i++ {
				cov[i]++
			}
			if p.hasF && p.eor != (p.off+p.n == size) {
				t.Errorf("message %#x (%d bytes): piece at %d of %d bytes has EOR=%v", id, size, p.off, p.n, p.eor)
			}
		}
		for i, c := range cov {
			if c != 1 {
				t.Errorf("message %#x (%d bytes): byte %d received %d times", id, size, i, c)
				break
			}
		}
	}
	// Per reader: a message it moved away from before its end never comes
	// back, and each psock's messages come in stream order.
	for r, log := range logs {
		last := map[uint32]uint32{} // psock -> last seq seen
		left := map[uint32]bool{}
		for i, p := range log {
			if i > 0 && log[i-1].id != p.id {
				left[log[i-1].id] = true
			}
			if left[p.id] {
				t.Errorf("reader %d: message %#x came back (piece at %d) after the reader had moved on: pieces of two messages interleaved", r, p.id, p.off)
				break
			}
			ps, seq := p.id>>24&0x7f, p.id&0xffffff
			if l, ok := last[ps]; ok && seq < l {
				t.Errorf("reader %d: psock %d's message %d after %d", r, ps, seq, l)
				break
			}
			last[ps] = seq
		}
	}
	if st.RxMsgs != uint64(totalMsgs) || st.RxBytes != uint64(total) {
		t.Errorf("socket counters: %d messages, %d bytes; want %d, %d", st.RxMsgs, st.RxBytes, totalMsgs, total)
	}
}

func TestStressConcurrentPiecesOnePsock(t *testing.T) {
	r7stress(t, kcm.Config{}, 1, 4, 400)
}

func TestStressConcurrentPiecesThreePsocks(t *testing.T) {
	r7stress(t, kcm.Config{}, 3, 4, 200)
}

// The same over TLS psocks attached before their handshakes, with the
// readers interrupted all along, inside TLS records: a tls.Conn's read
// that a deadline cuts resumes where it stopped.
func TestStressConcurrentPiecesTLS(t *testing.T) {
	for _, psocks := range []int{1, 3} {
		t.Run(fmt.Sprint(psocks), func(t *testing.T) {
			r7stressOver(t, kcm.Config{}, psocks, 4, 200, func(m *kcm.Mux) net.Conn {
				srv, cli := tlsPairNoHandshake(t)
				if _, err := m.Attach(srv, lenPrefix); err != nil {
					t.Fatal(err)
				}
				return cli
			}, true)
		})
	}
}

func TestStressConcurrentPiecesAffinity(t *testing.T) {
	r7stress(t, kcm.Config{Affinity: func(b []byte, p *kcm.Psock) int {
		if len(b) > 8 && b[7]&1 == 0 {
			return 0
		}
		return -1
	}}, 2, 4, 200)
}

// r7heap returns the live heap after a full collection.
func r7heap() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// r7keepBigRest makes SeqPacket socket s of m keep the rest of a 32 MiB
// message: it reads only its first 16 bytes.
func r7keepBigRest(t *testing.T, m *kcm.Mux, s *kcm.Socket) {
	t.Helper()
	c, peer := tcpPair(t)
	if _, err := m.Attach(c, lenPrefix); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	go func() {
		peer.Write(frame(make([]byte, size-4)))
	}()
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf [16]byte
	n, fl, err := s.RecvMsg(buf[:], 0)
	if err != nil || n != 16 || fl&kcm.EOR != 0 {
		t.Fatalf("first piece: %d, %v, %v; want 16 bytes without EOR", n, fl, err)
	}
	if recv, _ := m.Queued(); recv != size-16 {
		t.Fatalf("Queued reports %d bytes held for receivers, want the kept rest's %d", recv, size-16)
	}
}

// Mux.Close drops the rests its sockets keep, as Socket.Close does: a
// socket closed by its mux can never return them (every receive fails
// with ErrClosed) and its own Close then does nothing, so a rest kept
// there stayed referenced, up to MaxMessageSize, for as long as the
// application held the socket (review 7).
func TestMuxCloseReleasesKeptRests(t *testing.T) {
	// Socket.Close first is the control: it always dropped the rest.
	for _, first := range []string{"mux", "socket"} {
		t.Run(first+" first", func(t *testing.T) {
			m := kcm.NewMux(kcm.Config{MaxMessageSize: 64 << 20})
			defer m.Close()
			s := m.NewSocket(kcm.SeqPacket)
			r7keepBigRest(t, m, s)
			before := r7heap()
			if first == "mux" {
				m.Close()
				s.Close()
			} else {
				s.Close()
				m.Close()
			}
			after := r7heap()
			if after+16<<20 > before {
				t.Errorf("live heap %d MiB before the closes, %d MiB after them: the socket still holds the 32 MiB message's kept rest", before>>20, after>>20)
			}
			runtime.KeepAlive(s)
		})
	}
}

// r7multi: SeqPacket sockets, each read by several goroutines in pieces,
// and Datagram sockets read with RecvMsg into buffers of random size, on
// one mux with psocks psocks and optional affinity. Every message must go
// whole to one SeqPacket socket (its pieces tiling it, EOR on the last)
// or to one Datagram receive (its first bytes, with Trunc exactly when
// cut); counters must match.
func r7multi(t *testing.T, affinity bool, psocks, seqSocks, dgSocks, readersPer, perPeer int) {
	cfg := kcm.Config{}
	nsocks := seqSocks + dgSocks
	if affinity {
		cfg.Affinity = func(b []byte, p *kcm.Psock) int {
			if len(b) < 8 || b[7]%3 == 0 {
				return -1
			}
			return int(b[7]) % nsocks
		}
	}
	m := newMux(t, cfg)
	var socks []*kcm.Socket
	for i := range nsocks {
		typ := kcm.SeqPacket
		if i >= seqSocks {
			typ = kcm.Datagram
		}
		socks = append(socks, m.NewSocket(typ))
	}
	var peers []net.Conn
	for range psocks {
		_, peer := attachPeer(t, m)
		peers = append(peers, peer)
	}
	sizes := map[uint32]int{}
	total := 0
	streams := make([][]byte, psocks)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for p := range psocks {
		for i := range perPeer {
			id := uint32(1)<<31 | uint32(p)<<24 | uint32(i)
			size := 16 + 8*rng.Intn([]int{4, 64, 1024, 8 << 10}[rng.Intn(4)])
			sizes[id] = size
			total += size
			streams[p] = append(streams[p], r7msg(id, size)...)
		}
	}
	type rec struct {
		sock int
		r7piece
		trunc bool
	}
	var mu sync.Mutex
	var recs []rec
	var done atomic.Int64 // message bytes accounted for
	var wg sync.WaitGroup
	errc := make(chan error, nsocks*readersPer)
	for si, s := range socks {
		for r := range readersPer {
			wg.Add(1)
			go func(si, r int, s *kcm.Socket) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(si*100+r) + time.Now().UnixNano()))
				buf := make([]byte, 128<<10)
				var mine []rec
				defer func() { mu.Lock(); recs = append(recs, mine...); mu.Unlock() }()
				for {
					size := 8 * (1 + rng.Intn([]int{4, 512, 16 << 10}[rng.Intn(3)]))
					b := buf[:size]
					n, fl, err := s.RecvMsg(b, 0)
					if err != nil && !errors.Is(err, kcm.ErrTruncated) {
						if !errors.Is(err, kcm.ErrClosed) {
							errc <- fmt.Errorf("socket %d reader %d: %v", si, r, err)
						}
						return
					}
					id, off, ok := r7where(b[:n])
					if !ok || sizes[id] == 0 {
						errc <- fmt.Errorf("socket %d reader %d: undecodable %d-byte piece", si, r, n)
						return
					}
					exp := r7msg(id, sizes[id])
					if off+n > len(exp) || string(exp[off:off+n]) != string(b[:n]) {
						errc <- fmt.Errorf("socket %d reader %d: corrupt piece of %#x at %d", si, r, id, off)
						return
					}
					p := rec{sock: si, r7piece: r7piece{id: id, off: off, n: n, eor: fl&kcm.EOR != 0, hasF: true}, trunc: fl&kcm.Trunc != 0}
					if (err != nil) != p.trunc {
						errc <- fmt.Errorf("socket %d: Trunc %v with error %v", si, p.trunc, err)
						return
					}
					mine = append(mine, p)
					if p.trunc {
						done.Add(int64(sizes[id] - off))
					} else {
						done.Add(int64(n))
					}
				}
			}(si, r, s)
		}
	}
	for i, peer := range peers {
		go writeChunked(peer, streams[i], rand.New(rand.NewSource(int64(i))))
	}
	deadline := time.Now().Add(30 * time.Second)
	for done.Load() < int64(total) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	var stats []kcm.SocketStats
	for _, s := range socks {
		stats = append(stats, s.Stats())
	}
	m.Close()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if d := done.Load(); d != int64(total) {
		t.Errorf("%d message bytes accounted for, want %d", d, total)
	}
	byMsg := map[uint32][]rec{}
	for _, p := range recs {
		byMsg[p.id] = append(byMsg[p.id], p)
	}
	wantMsgs := make([]uint64, nsocks)
	wantBytes := make([]uint64, nsocks)
	for id, size := range sizes {
		ps := byMsg[id]
		if len(ps) == 0 {
			t.Errorf("message %#x lost", id)
			continue
		}
		si := ps[0].sock
		cov := make([]int, size)
		for _, p := range ps {
			if p.sock != si {
				t.Errorf("message %#x split across sockets %d and %d", id, si, p.sock)
			}
			if si >= seqSocks {
				if !p.eor || p.off != 0 || p.trunc != (p.n < size) || len(ps) != 1 {
					t.Errorf("Datagram socket %d: message %#x (%d bytes) received as %d pieces, this one at %d, %d bytes, EOR %v Trunc %v", si, id, size, len(ps), p.off, p.n, p.eor, p.trunc)
				}
				for i := range size {
					cov[i]++
				}
			} else {
				if p.trunc || p.eor != (p.off+p.n == size) {
					t.Errorf("SeqPacket socket %d: message %#x (%d bytes): piece at %d of %d bytes, EOR %v Trunc %v", si, id, size, p.off, p.n, p.eor, p.trunc)
				}
				for i := p.off; i < p.off+p.n; i++ {
					cov[i]++
				}
			}
			wantBytes[si] += uint64(p.n)
		}
		wantMsgs[si]++
		for i, c := range cov {
			if c != 1 {
				t.Errorf("message %#x (%d bytes): byte %d received %d times", id, size, i, c)
				break
			}
		}
	}
	for i, st := range stats {
		if st.RxMsgs != wantMsgs[i] || st.RxBytes != wantBytes[i] {
			t.Errorf("socket %d counters: %d messages, %d bytes; received %d, %d", i, st.RxMsgs, st.RxBytes, wantMsgs[i], wantBytes[i])
		}
	}
}

func TestStressPiecesSeveralSockets(t *testing.T) {
	r7multi(t, false, 1, 2, 1, 3, 300)
}

func TestStressPiecesSeveralSocketsPsocks(t *testing.T) {
	r7multi(t, false, 3, 2, 2, 3, 150)
}

func TestStressPiecesSeveralSocketsAffinity(t *testing.T) {
	r7multi(t, true, 2, 2, 1, 3, 200)
}

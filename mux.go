package kcm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// attachedConns records every connection attached to any mux in the
// process, so a connection cannot be attached twice (the kernel marks the
// TCP socket itself). It is the package's only shared state.
var attachedConns sync.Map

// layersOf returns c and the connections it is layered on, as far as
// NetConn methods tell (a tls.Conn's, the one Unattach returns): one
// stream, which must not be attached twice, under any of its layers.
// Layers of a type that cannot be a map key are left out.
func layersOf(c net.Conn) []net.Conn {
	layers := []net.Conn{c}
	for range maxLayers {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		// Only pointers below the top: they are always map keys (a
		// comparable struct may hold an interface whose value is not),
		// and their equality ends a NetConn that returns its own conn
		// or a cycle.
		if c = u.NetConn(); nilConn(c) || reflect.TypeOf(c).Kind() != reflect.Pointer || slices.Contains(layers, c) {
			break
		}
		layers = append(layers, c)
	}
	return layers
}

// claimConns records layers as attached, or none of them when one already
// is, which it returns.
func claimConns(layers []net.Conn) (dup net.Conn) {
	for i, l := range layers {
		if _, taken := attachedConns.LoadOrStore(l, struct{}{}); taken {
			releaseConns(layers[:i])
			return l
		}
	}
	return nil
}

// releaseConns forgets layers as attached.
func releaseConns(layers []net.Conn) {
	for _, l := range layers {
		attachedConns.Delete(l)
	}
}

// Mux is a connection multiplexor: it joins Sockets, on which the
// application sends and receives whole messages, with attached stream
// connections (psocks). A message sent on any socket is written atomically
// on one psock; a message parsed from any psock goes to whichever socket is
// receiving.
//
// All methods are safe for concurrent use.
type Mux struct {
	// Fields the data path touches come first, so a message touches few
	// cache lines; the mutex guards them except where noted.
	mu       sync.Mutex
	rxActive int32 // psocks attached and not being unattached
	nPaused  int32 // psocks not read because ready is full
	closed   bool
	affine   bool                     // cfg.Affinity is set: see affinity.go
	txOne    atomic.Pointer[Psock]    // the psock taking new messages when it is the only one (no lock)
	rxOne    *Psock                   // the receiving psock when rxActive == 1, or a stale one: see leadableLocked
	waiters  waitList                 // receivers blocked in a receive call
	ready    msgQueue                 // parsed messages no receiver has taken yet
	txps     atomic.Pointer[[]*Psock] // psocks that take new messages (no lock)
	psocks   []*Psock
	cfg      Config

	sockets  []*Socket
	ownBytes int // bytes in the sockets' own queues (affinity)
	ownMsgs  int // messages in them
	// maxQueued bounds the queued messages' number, as RecvBuffer their
	// bytes: see fullLocked.
	maxQueued int
	backlog   backlog // messages sent while no psock was attached
	// Cold state behind a pointer, to keep the mux in a size class of
	// whole cache lines (TestHotFieldLayout).
	cold *muxCold

	// Senders waiting, uncopied, in a psock's queue look again when a
	// psock goes idle: see noteTxIdle.
	txWaiting atomic.Int32
	idleMu    sync.Mutex
	seq       uint32        // next Message.seq (affinity; mu): fills a hole here
	idleCh    chan struct{} // closed at the next noteTxIdle; nil until asked for

	pool  *bufPool
	stats muxCounters
	wg    sync.WaitGroup // background readers and writers
}

// muxCold is the part of a mux that no message touches.
type muxCold struct {
	departed PsockStats    // counters of psocks that left and went quiet
	done     chan struct{} // closed by Close
	byIndex  []*Socket     // open sockets by index, with Affinity only; mu
	epoch    time.Time     // the origin of the sockets' write deadlines (Socket.wdl)
	sockIdx  indexSet      // mu
	leaving  []*Psock      // psocks that left while a reader or writer still ran; mu
	psockIdx indexSet      // mu
	// Reservations are counted in the totals as they happen, not folded
	// from a departing psock: a sender may reserve a psock, or release it,
	// after the psock left and its counters were folded.
	reserved, unreserved atomic.Uint64
}

// Done returns a channel that is closed when the mux is closed.
func (m *Mux) Done() <-chan struct{} { return m.cold.done }

// NewMux returns a mux configured by cfg; zero fields take their
// documented defaults.
func NewMux(cfg Config) *Mux {
	m := &Mux{cfg: cfg.withDefaults(), pool: newBufPool(), cold: &muxCold{done: make(chan struct{}), epoch: time.Now()}}
	m.affine = m.cfg.Affinity != nil
	m.maxQueued = max(m.cfg.RecvBuffer/msgCost, minMaxQueued)
	m.txps.Store(new([]*Psock))
	m.backlog.init(m)
	return m
}

// NewSocket returns a new socket of type t on the mux. Every socket of a
// mux is equivalent: any may send or receive any message. On a closed mux
// the socket is closed, and not one of the mux's sockets.
func (m *Mux) NewSocket(t SocketType) *Socket {
	s := &Socket{mux: m, typ: t}
	m.mu.Lock()
	defer m.mu.Unlock()
	s.index = m.cold.sockIdx.alloc()
	if m.closed {
		s.shutLocked()
		m.cold.sockIdx.free(s.index)
		return s
	}
	if m.affine {
		s.aff = &sockAff{}
		for len(m.cold.byIndex) <= s.index {
			m.cold.byIndex = append(m.cold.byIndex, nil)
		}
		m.cold.byIndex[s.index] = s
	}
	m.sockets = append(m.sockets, s)
	return s
}

// Attach attaches the connected stream c to the mux with parser p, using
// the mux's limits. See AttachConfig.
func (m *Mux) Attach(c net.Conn, p Parser) (*Psock, error) {
	return m.AttachConfig(c, p, PsockConfig{})
}

// AttachConfig attaches the connected stream c to the mux: from now on its
// bytes are parsed into messages with p, and messages sent on the mux's
// sockets may be written to it. Bytes already buffered on c are parsed
// right away. The application must not use c directly until Unattach
// returns it. A tls.Conn may be attached before its handshake, bare or
// behind a wrapper that exposes it with a NetConn method: the psock makes
// the handshake before its first read, and takes messages to send once it is
// done (until then they go to other psocks, or wait as with no psock
// attached; those sent to it with SendTo wait in its queue). A nil or
// closed connection fails with ErrBadConn, one that is already attached
// to a mux with ErrAlreadyAttached (so does one layered on an attached
// connection, or under one, as NetConn methods tell: the same stream), and
// any on a closed mux with ErrClosed.
func (m *Mux) AttachConfig(c net.Conn, p Parser, pc PsockConfig) (*Psock, error) {
	if nilConn(c) {
		return nil, fmt.Errorf("kcm: attach: nil connection: %w", ErrBadConn)
	}
	if p == nil {
		return nil, errors.New("kcm: attach: nil parser")
	}
	if !reflect.TypeOf(c).Comparable() {
		return nil, fmt.Errorf("kcm: attach: connection type %T is not comparable: %w", c, ErrBadConn)
	}
	layers := layersOf(c)
	if dup := claimConns(layers); dup != nil {
		return nil, fmt.Errorf("kcm: attach %v: %w", c.RemoteAddr(), ErrAlreadyAttached)
	}
	// Probe for a closed connection, now that nobody else may touch it.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		releaseConns(layers)
		return nil, fmt.Errorf("kcm: attach: %w: %w", ErrBadConn, err)
	}
	ps := m.newPsock(c, p, pc)
	ps.layers = layers
	ps.coupled = readWaitsForWrite(layers)

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		releaseConns(layers)
		return nil, fmt.Errorf("kcm: attach: %w", ErrClosed)
	}
	ps.index = m.cold.psockIdx.alloc()
	m.psocks = append(m.psocks, ps)
	m.rxActive++
	m.stats.psockAttach.Add(1)
	if m.rxActive == 2 {
		// Receivers lead only a lone psock: one reading the other psock
		// must let go so the new one's messages cannot wait behind it.
		for _, q := range m.psocks {
			m.interruptLocked(q)
		}
	}
	m.startReaderLocked(ps)
	// The backlog goes first in the new psock's queue, before senders can
	// find the psock: a socket's new message must not overtake its older,
	// held ones. A psock whose handshake is pending takes messages once it
	// is done (see handshakeDoneTxLocked).
	if ps.hs == nil {
		m.backlog.flushLocked(ps)
	}
	m.publishTxLocked()
	m.noteTxIdle(nil) // senders waiting on busy psocks may move to it
	return ps, nil
}

// nilConn reports whether c is nil, or a nil pointer of a concrete type,
// whose methods may dereference it.
func nilConn(c net.Conn) bool {
	return c == nil || (reflect.TypeOf(c).Kind() == reflect.Pointer && reflect.ValueOf(c).IsNil())
}

func (m *Mux) newPsock(c net.Conn, p Parser, pc PsockConfig) *Psock {
	ps := &Psock{mux: m, conn: c, done: make(chan struct{})}
	ps.sp = strparser{
		parser:  p,
		max:     m.cfg.MaxMessageSize,
		timeout: m.cfg.MessageTimeout,
		pool:    m.pool,
		stats:   &ps.stats,
		colour:  newColour(),
	}
	if pc.MaxMessageSize > 0 {
		ps.sp.max = pc.MaxMessageSize
	}
	if pc.MessageTimeout > 0 {
		ps.sp.timeout = pc.MessageTimeout
	}
	ps.sp.timed = ps.sp.timeout > 0
	ps.wto, ps.tx.timed = m.cfg.WriteTimeout, m.cfg.WriteTimeout > 0
	ps.raw = rawConnOf(c)
	ps.readFn = ps.rawRead
	// Any connection kcm does not write itself may be a tls.Conn, behind
	// a wrapper that hides it: see disarmWrite.
	ps.disarm = ps.raw == nil && ps.tx.timed
	if h := handshakerOf(c); h != nil {
		ps.hs = h
		ps.hsCtx, ps.hsCancel = context.WithCancel(context.Background())
		ps.tx.writing = true // the handshake holds the transmit side: see handshaker
	}
	return ps
}

// handshakerOf returns the handshaker c is, or the one it is layered on
// (as a wrapper that exposes what it wraps with a NetConn method, the way
// tls.Conn does), when that handshake is still to be made; nil otherwise.
// A wrapper above TLS sees only the data after the handshake, so making
// the handshake on the TLS connection itself is what reading through the
// wrapper would have done.
func handshakerOf(c net.Conn) handshaker {
	for range maxLayers {
		if h, ok := c.(handshaker); ok {
			if h.ConnectionState().HandshakeComplete {
				return nil
			}
			return h
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		if c = u.NetConn(); nilConn(c) {
			return nil
		}
	}
	return nil
}

// readWaitsForWrite reports whether a read of the connection with these
// layers may wait for a write to end. A TLS connection's Read answers the
// peer's key update (TLS 1.3) or renegotiation (1.2) itself, under the
// connection's write lock: a writer stuck on a peer that stopped reading
// holds that reader up, and no read deadline wakes it.
func readWaitsForWrite(layers []net.Conn) bool {
	for _, l := range layers {
		if _, ok := l.(handshaker); ok {
			return true
		}
	}
	return false
}

// maxLayers bounds the walk down a connection's layers, in case a NetConn
// method returns its own connection.
const maxLayers = 8

// Close closes the mux: every socket, and every attached connection
// (unattach a psock first to keep its connection). Blocked calls return
// ErrClosed, and Close waits for the mux's own goroutines to end. A Close
// called while another is under way returns at once: it may be called from
// one of the goroutines the first waits for (a connection's Close). A
// connection layered on another (one with a NetConn method, as tls.Conn)
// may say goodbye (close_notify) for up to 250 ms, then the connection
// under it is closed, so a peer that stopped reading cannot hold Close up;
// a psock that fails is closed without a goodbye, unless its peer closed
// cleanly (io.EOF): it gets one as here.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.cold.done)
	for len(m.psocks) > 0 {
		m.failLocked(m.psocks[0], ErrClosed)
	}
	for _, s := range m.sockets {
		s.shutLocked()
		s.kickSenders()
		s.dropKept()
		m.dropOwnLocked(s)
	}
	m.sockets, m.cold.byIndex = nil, nil
	m.waiters.wakeAll()
	m.dropReadyLocked()
	m.backlog.dropLocked()
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// dropReadyLocked discards parsed messages nobody can receive any more.
func (m *Mux) dropReadyLocked() {
	for m.ready.len() > 0 {
		msg := m.ready.pop()
		msg.Release()
		m.stats.rxReadyDrops.Add(1)
	}
	if m.nPaused > 0 && !m.closed {
		m.resumeLocked()
	}
}

// Queued returns the bytes the mux holds for the application now. recv
// counts parsed messages no receive call has taken (the shared queue and
// the messages steered to sockets, which Config.RecvBuffer bounds
// together, and the rests of messages sockets began reading); send counts
// the messages the mux copied from senders and has not yet written,
// bounded by Config.SendBuffer. Bytes buffered in a psock before they
// make a whole message, and messages whose senders wait uncopied, are not
// counted.
func (m *Mux) Queued() (recv, send int) {
	m.mu.Lock()
	recv = m.ready.bytes + m.ownBytes
	for _, s := range m.sockets {
		for _, r := range s.kept {
			recv += len(r.b)
		}
	}
	m.mu.Unlock()
	return recv, int(m.backlog.queued.Load())
}

// Stats returns the mux's counters.
func (m *Mux) Stats() MuxStats {
	m.mu.Lock()
	m.foldLeavingLocked()
	agg := m.cold.departed
	for _, p := range m.psocks {
		agg.add(p.statsLocked())
	}
	for _, p := range m.cold.leaving {
		agg.add(p.statsLocked())
	}
	m.mu.Unlock()
	// Released ones first: a reservation is counted before its release.
	agg.Unreserved = m.cold.unreserved.Load()
	agg.Reserved = m.cold.reserved.Load()
	return MuxStats{
		RxMsgs:            agg.RxMsgs,
		RxBytes:           agg.RxBytes,
		TxMsgs:            agg.TxMsgs,
		TxBytes:           agg.TxBytes,
		TxRetries:         m.stats.txRetries.Load(),
		PsockAttach:       m.stats.psockAttach.Load(),
		PsockUnattach:     m.stats.psockUnattach.Load(),
		PsockUnattachRsvd: m.stats.psockUnattachRsvd.Load(),
		RxReadyDrops:      m.stats.rxReadyDrops.Load(),
		Psocks:            agg,
	}
}

// Psocks returns the psocks attached to the mux, in index order.
func (m *Mux) Psocks() []*Psock {
	m.mu.Lock()
	ps := append([]*Psock(nil), m.psocks...)
	m.mu.Unlock()
	sortByIndex(ps, func(p *Psock) int { return p.index })
	return ps
}

// Sockets returns the mux's open sockets, in index order.
func (m *Mux) Sockets() []*Socket {
	m.mu.Lock()
	ss := append([]*Socket(nil), m.sockets...)
	m.mu.Unlock()
	sortByIndex(ss, func(s *Socket) int { return s.index })
	return ss
}

// indexSet hands out the lowest free small integer, like the kernel's
// socket and psock indexes.
type indexSet struct {
	used []bool
	low  int // no index below is free: a server's tens of thousands of attaches stay linear
}

func (x *indexSet) alloc() int {
	for i := x.low; i < len(x.used); i++ {
		if !x.used[i] {
			x.used[i] = true
			x.low = i + 1
			return i
		}
	}
	x.used = append(x.used, true)
	x.low = len(x.used)
	return len(x.used) - 1
}

func (x *indexSet) free(i int) {
	if i >= 0 && i < len(x.used) {
		x.used[i] = false
		x.low = min(x.low, i)
	}
}

// sortByIndex sorts xs by the index idx returns; after churn the mux's
// lists are far from index order.
func sortByIndex[T any](xs []T, idx func(T) int) {
	slices.SortFunc(xs, func(a, b T) int { return cmp.Compare(idx(a), idx(b)) })
}

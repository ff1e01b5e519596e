package kcm

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rxState says who reads a psock's stream at the moment.
type rxState uint8

const (
	rxIdle    rxState = iota // nobody; a grace timer starts a background reader
	rxLed                    // a receiving goroutine reads for itself (no handoff)
	rxBg                     // the psock's background reader
	rxPaused                 // the mux's receive queue is full: backpressure
	rxStopped                // leaving the mux
)

// A psock may go unread for a grace period while no receiver is waiting
// before a background reader takes over. Receivers that come back within it
// read the stream themselves, without a goroutine handoff; past it, the
// background reader queues messages, notices EOF and enforces deadlines.
// The period doubles, up to graceMax, while receivers keep coming back or
// one is reading when it ends, so a busy psock costs few timer wake-ups.
const (
	graceMin = 5 * time.Millisecond
	graceMax = 160 * time.Millisecond
)

// goodbyeGrace is how long Mux.Close lets a layered connection (tls.Conn)
// try to say goodbye before the transport under it is closed.
const goodbyeGrace = 250 * time.Millisecond

// closeConn closes a psock's connection. Closing a layered connection can
// write: tls.Conn.Close sends close_notify, and waits up to 5 s for room in
// a send buffer that a peer who stopped reading keeps full, which would
// hold up Mux.Close. A deliberate close, or one that answers the peer's
// own clean close (polite), gives the goodbye goodbyeGrace, then closes
// the transport under it; a psock that failed gets none, its transport is
// closed first.
func closeConn(c net.Conn, polite bool) {
	l, ok := c.(interface{ NetConn() net.Conn })
	var under net.Conn
	if ok {
		under = l.NetConn()
	}
	if under == nil {
		c.Close()
		return
	}
	if !polite {
		under.Close()
		c.Close()
		return
	}
	cut := make(chan struct{})
	t := time.AfterFunc(goodbyeGrace, func() {
		under.Close()
		close(cut)
	})
	c.Close()
	if !t.Stop() {
		<-cut // no goroutine outlives Mux.Close
	}
}

// Psock is one stream connection attached to a Mux, with its parser, its
// receive assembly state and its transmit queue.
//
// A psock leaves its mux when it is unattached, when the mux closes, or when
// it fails; Done is then closed and Err says why.
type Psock struct {
	// Fields are grouped by when they are touched: the receive path's
	// (three cache lines), the transmit path's (a line of its own), then
	// the rest. With hundreds of muxes busy, each line a message touches is
	// likely a cache miss, so layout is throughput.
	//
	// The runtime puts an 8-byte header before objects this large that
	// hold pointers, so a psock starts 8 bytes past a line boundary: 56
	// bytes of cold fields come first, and the receive group starts a line
	// (TestHotFieldLayout checks it on real allocations).
	err        error         // why it left; mux.mu
	done       chan struct{} // closed when it left
	index      int
	graceGen   uint64
	graceDelay time.Duration
	graceAt    int64 // when the armed grace timer fires, Unix ns

	conn net.Conn
	intr atomic.Bool // the reader must let go and re-check

	// Receive ownership and lifecycle, guarded by mux.mu.
	rx          rxState
	graceArmed  bool
	gone        bool
	unattaching bool

	// The read side, owned by whoever reads the psock (state rxLed or rxBg;
	// ownership passes under mux.mu).
	noWait   bool // the reader must not block (a DontWait receive)
	rdlValid bool // rdl is the deadline set on conn
	rdlSet   bool // and it is not the zero time (spares a look at rdl)
	pending  bool // pendingErr is set

	leader   *Socket       // guarded by mux.mu
	releases uint64        // read sessions ended, for the grace timer; mux.mu
	rxCount  msgCount      // messages parsed; mux.mu
	rxWait   chan struct{} // closed when the reader lets go; mux.mu
	sp       strparser     // its rarely used fields last

	pendingErr error     // to report at the next read
	rdl        time.Time // read deadline last set on conn (here: tx starts a line)

	tx txState

	readFn func(fd uintptr) bool
	raw    syscall.RawConn
	rn     int
	rerr   syscall.Errno // of the last raw read, 0 for none
	parked atomic.Bool   // the background reader waits for readability: see pollLocked

	mux   *Mux
	grace *time.Timer
	stats psockCounters

	// The handshake the background reader makes before the first read,
	// while it is pending (see handshaker); mux.mu.
	hs       handshaker
	hsCtx    context.Context
	hsCancel context.CancelFunc
	hsFailed bool // the handshake failed, or was cancelled; mux.mu

	layers  []net.Conn    // conn and those it is layered on, as attached: see layersOf
	removed atomic.Bool   // it left the mux's tables (gone, but read without mux.mu): see Socket.reserve
	coupled bool          // its reads may wait for its writes: see readWaitsForWrite
	wto     time.Duration // Config.WriteTimeout; tx.timed says it is set
	disarm  bool          // timed writes take their deadline off after (no raw descriptor): see disarmWrite
}

// handshaker is a connection that begins with a handshake which a read
// deadline must not cut: a tls.Conn fails its handshake for good when a
// read times out during it. The mux's interrupts are read deadlines, so
// the first reader of such a psock makes the handshake alone
// (Mux.handshake), and interrupts meanwhile only ask it to let go after.
// A write deadline cuts it too, and a tls.Conn's Write waits for the
// handshake where no deadline (nor a closing socket) can stop it, so
// meanwhile nobody writes: the handshake holds the transmit side
// (tx.writing), the psock takes no new messages (publishTxLocked), and
// only messages sent to it with SendTo wait in its queue.
type handshaker interface {
	HandshakeContext(ctx context.Context) error
	ConnectionState() tls.ConnectionState
}

// Index returns the psock's index in its mux: the lowest free one when it
// was attached.
func (p *Psock) Index() int { return p.index }

// Done returns a channel that is closed when the psock has left its mux.
func (p *Psock) Done() <-chan struct{} { return p.done }

// left reports whether the psock has left its mux (Done is closed).
func (p *Psock) left() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns why the psock left its mux: nil while attached and after
// Unattach, ErrClosed after Mux.Close, io.EOF or io.ErrUnexpectedEOF after
// the peer ended the stream, or the failure that aborted it.
func (p *Psock) Err() error {
	p.mux.mu.Lock()
	defer p.mux.mu.Unlock()
	return p.err
}

// Stats returns the psock's counters.
func (p *Psock) Stats() PsockStats {
	p.mux.mu.Lock()
	defer p.mux.mu.Unlock()
	return p.statsLocked()
}

func (p *Psock) statsLocked() PsockStats {
	st := p.stats.snapshot()
	st.RxMsgs, st.RxBytes = p.rxCount.msgs, p.rxCount.bytes
	p.tx.mu.Lock()
	st.TxMsgs, st.TxBytes = p.tx.count.msgs, p.tx.count.bytes
	p.tx.mu.Unlock()
	return st
}

// Conn returns the psock's connection, for its addresses. The application
// must not read or write it while the psock is attached.
func (p *Psock) Conn() net.Conn { return p.conn }

// Unattach takes the psock out of its mux without losing anything and
// returns its connection. Messages already parsed stay deliverable on the
// mux's sockets; queued transmit messages go out on other psocks, except
// those sent to p with SendTo, which are dropped (their senders still
// waiting get ErrNotAttached). The returned connection's reads first yield
// every byte read from the stream but not delivered as a message, then the
// live stream, so the caller can continue exactly where the mux stopped.
//
// If a transmitted message was cut by the unattach, it is sent again on
// another psock (unless sent with SendTo), and Unattach returns the
// connection with an error wrapping ErrMidMessage: the stream no longer
// ends at a message boundary. On a connection kcm cannot write to directly
// (TLS, any wrapper of a TCP or Unix connection, any connection on other
// than Unix systems), it cannot tell whether an interrupted write put any
// byte on the stream, so any interrupted write counts as cut. Unattach of
// a psock that already left fails with ErrNotAttached, a second concurrent
// Unattach with ErrUnattachInProgress, and one that the mux's Close
// overtakes with ErrClosed (the connection is then closed). A TLS
// connection attached before its handshake, unattached before the
// handshake completed, has it cancelled, which closes the connection:
// Unattach returns it with an error wrapping net.ErrClosed.
func (p *Psock) Unattach() (net.Conn, error) {
	m := p.mux
	m.mu.Lock()
	switch {
	case p.gone:
		m.mu.Unlock()
		return nil, fmt.Errorf("kcm: unattach psock %d: %w", p.index, ErrNotAttached)
	case p.unattaching:
		m.mu.Unlock()
		return nil, fmt.Errorf("kcm: unattach psock %d: %w", p.index, ErrUnattachInProgress)
	}
	p.unattaching = true
	m.rxActive--
	m.publishTxLocked()
	rxDone := m.stopReadLocked(p)
	hsCut := p.hs != nil
	if hsCut {
		// Its handshake is cancelled, which closes the connection: an
		// Unattach cannot wait for a peer that may never finish it.
		p.hsCancel()
	}
	m.mu.Unlock()
	// The kernel stops the read side first; but a reader that may wait
	// for the writer cannot be waited for while the writer is stuck.
	var idle chan struct{}
	if p.coupled {
		idle = m.stopTx(p)
	}
	if rxDone != nil {
		<-rxDone
	}
	if !p.coupled {
		idle = m.stopTx(p)
	}
	cut := p.txStopped(idle)

	m.mu.Lock()
	if p.gone { // the mux closed meanwhile
		m.mu.Unlock()
		return nil, fmt.Errorf("kcm: unattach psock %d: %w", p.index, ErrClosed)
	}
	// The handshake may have been made before the cancel, which then
	// closed nothing: the connection is returned as it is.
	hsCut = hsCut && p.hsFailed
	rest := p.sp.takeRest()
	m.removeLocked(p)
	m.stats.psockUnattach.Add(1)
	if cut {
		m.stats.psockUnattachRsvd.Add(1)
	}
	close(p.done)
	m.mu.Unlock()

	p.conn.SetReadDeadline(time.Time{})
	p.conn.SetWriteDeadline(time.Time{})
	var c net.Conn = p.conn
	if len(rest) > 0 {
		c = &prefixConn{Conn: p.conn, rest: rest}
	}
	switch {
	case hsCut:
		return c, fmt.Errorf("kcm: unattach psock %d: its handshake was cancelled: %w", p.index, net.ErrClosed)
	case cut:
		return c, fmt.Errorf("kcm: unattach psock %d: %w", p.index, ErrMidMessage)
	}
	return c, nil
}

// stopReadLocked takes the read side away from whoever has it. It returns
// a channel to wait on when a reader must first let go.
func (m *Mux) stopReadLocked(p *Psock) chan struct{} {
	switch p.rx {
	case rxLed, rxBg:
		if p.rxWait == nil {
			p.rxWait = make(chan struct{})
		}
		m.interruptLocked(p)
		return p.rxWait
	case rxPaused:
		m.nPaused--
	}
	p.rx = rxStopped
	if p.grace != nil {
		p.grace.Stop()
		p.graceArmed = false
	}
	return nil
}

// aLongTimeAgo is a read deadline in the past, which wakes a blocked reader.
var aLongTimeAgo = time.Unix(1, 0)

// interruptLocked wakes the goroutine reading p so it lets go of the read
// side and looks at the mux again.
func (m *Mux) interruptLocked(p *Psock) {
	if p.rx != rxLed && p.rx != rxBg {
		return
	}
	p.intr.Store(true)
	if p.hs == nil { // a handshake is let finish: see handshaker
		p.conn.SetReadDeadline(aLongTimeAgo)
	}
}

// failLocked makes p leave the mux because of err, closing its connection.
// Its queued messages go to other psocks.
func (m *Mux) failLocked(p *Psock, err error) { m.failTxLocked(p, err, nil, nil) }

// failTxLocked is failLocked for a writer whose failed write left head
// unwritten: those go out again first.
func (m *Mux) failTxLocked(p *Psock, err error, head []txEntry, headBuf []byte) {
	if p.gone {
		for i := range head {
			m.requeueLocked(p, &head[i], headBuf)
		}
		return
	}
	p.err = err
	if p.rx != rxLed && p.rx != rxBg {
		// Nobody reads p: its complete messages are delivered here (a
		// reader would deliver them before it read again), before p's
		// counters are folded into the mux's; only a partial one is lost.
		m.stopReadLocked(p)
		m.salvageLocked(p)
		p.sp.takeRest()
	}
	m.removeLocked(p)
	// Close outside the lock: some connections block in Close.
	m.wg.Add(1)
	go func(c net.Conn, polite bool) {
		defer m.wg.Done()
		closeConn(c, polite)
	}(p.conn, err == ErrClosed || err == io.EOF) // io.EOF: the peer closed cleanly
	m.abortTxLocked(p, head, headBuf)
	close(p.done)
	if cb := m.cfg.OnPsockError; cb != nil && err != ErrClosed {
		go cb(p, err)
	}
}

// salvageLocked delivers the complete messages buffered on p, which
// nobody reads, to receivers or the ready queue, whatever its limit: the
// bytes are already in memory and their psock is leaving.
func (m *Mux) salvageLocked(p *Psock) {
	for {
		msg, ok, _ := p.sp.next(p)
		if !ok {
			break
		}
		p.publishRxLocked()
		m.deliverLocked(msg)
	}
}

// removeLocked takes p out of the mux's tables.
func (m *Mux) removeLocked(p *Psock) {
	if p.gone {
		return
	}
	p.gone = true
	if !p.unattaching {
		m.rxActive--
	}
	if m.rxOne == p {
		m.rxOne = nil
	}
	for i, q := range m.psocks {
		if q == p {
			m.psocks = append(m.psocks[:i], m.psocks[i+1:]...)
			break
		}
	}
	m.cold.psockIdx.free(p.index)
	p.removed.Store(true) // before the scan: see Socket.reserve
	m.publishTxLocked()
	// Sockets give up their reservation of p now.
	for _, s := range m.sockets {
		if s.txp.CompareAndSwap(p, nil) {
			m.countUnreserved(p)
		}
	}
	if p.grace != nil {
		p.grace.Stop()
		p.graceArmed = false
	}
	// Its reader or writer may still count what it was doing: fold its
	// counters into the mux's once they are quiet.
	m.cold.leaving = append(m.cold.leaving, p)
	m.foldLeavingLocked()
	releaseConns(p.layers)
}

// foldLeavingLocked adds the counters of psocks that left the mux, and
// whose reader and writer have let go, to the mux's aggregate.
func (m *Mux) foldLeavingLocked() {
	kept := m.cold.leaving[:0]
	for _, p := range m.cold.leaving {
		p.tx.mu.Lock()
		busy := p.tx.writing
		p.tx.mu.Unlock()
		if busy || p.rx == rxLed || p.rx == rxBg {
			kept = append(kept, p)
			continue
		}
		m.cold.departed.add(p.statsLocked())
	}
	clear(m.cold.leaving[len(kept):])
	m.cold.leaving = kept
}

// prefixConn is a connection handed back by Unattach: its reads first
// return the bytes the mux had read but not delivered.
type prefixConn struct {
	net.Conn
	mu   sync.Mutex
	rest []byte
}

// Read returns the bytes left over from the mux first, then reads the
// connection.
func (c *prefixConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// NetConn returns the underlying connection.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

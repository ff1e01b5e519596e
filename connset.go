package kcm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// ConnSetConfig configures a ConnSet. Dial and Parser are required; the
// other zero fields take the documented defaults.
type ConnSetConfig struct {
	// Size is the number of connections to keep attached. Zero means 1.
	Size int
	// Dial opens one connection. Its context is cancelled by
	// ConnSet.Close, so a dial in progress ends with the set.
	Dial func(ctx context.Context) (net.Conn, error)
	// Parser parses every connection of the set; PsockConfig overrides
	// the mux's receive limits for them.
	Parser      Parser
	PsockConfig PsockConfig
	// MinBackoff and MaxBackoff bound the wait before dialling again after
	// a failed dial or attach, or after losing a connection that stayed
	// attached less than MaxBackoff: it doubles from MinBackoff up to
	// MaxBackoff, with random jitter. A connection lost after a longer life
	// is replaced at once, and the wait starts again from MinBackoff.
	// Zero means 10 ms and 5 s; a MaxBackoff below MinBackoff is raised
	// to it.
	MinBackoff, MaxBackoff time.Duration
	// OnDialError, if set, is called with each failed dial or attach,
	// from the goroutine that tends that slot of the set. Close waits for
	// that goroutine, so a callback that gives up on the set must call
	// Close from a goroutine of its own.
	OnDialError func(err error)
}

// ConnSet keeps a number of connections attached to a mux, dialling a new
// one whenever one leaves it (its peer closed it, it failed, or it was
// unattached): a self-healing set of connections to one service. Messages
// the mux could not write on a connection that failed are retried on the
// others, as for any psock; the set only replaces the connection.
type ConnSet struct {
	m      *Mux
	cfg    ConnSetConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	psocks []*Psock // by slot; nil while the slot dials
}

// NewConnSet starts keeping cfg.Size connections attached to m and returns
// at once; the connections are dialled in the background. It stops when
// Close is called or the mux closes (which cancels dials in progress too).
// Dial must honour its context: Close waits for it. It fails only when
// Dial or Parser is nil.
func NewConnSet(m *Mux, cfg ConnSetConfig) (*ConnSet, error) {
	if cfg.Dial == nil || cfg.Parser == nil {
		return nil, errors.New("kcm: connection set: Dial and Parser are required")
	}
	if cfg.Size <= 0 {
		cfg.Size = 1
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 10 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	ctx, cancel := context.WithCancel(context.Background())
	cs := &ConnSet{m: m, cfg: cfg, cancel: cancel, psocks: make([]*Psock, cfg.Size)}
	cs.wg.Add(1)
	go func() { // the set ends with its mux, dials in progress included
		defer cs.wg.Done()
		select {
		case <-m.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	for slot := range cfg.Size {
		cs.wg.Add(1)
		go cs.tend(ctx, slot)
	}
	return cs, nil
}

// Psocks returns the set's connections attached now: a psock whose Done
// channel is closed is not among them, also before the set has noticed
// and dialled again.
func (cs *ConnSet) Psocks() []*Psock {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	var ps []*Psock
	for _, p := range cs.psocks {
		if p != nil && !p.left() {
			ps = append(ps, p)
		}
	}
	return ps
}

// Close stops the set: it dials no more, unattaches its connections and
// closes them (messages queued on them go out on the mux's other psocks,
// as on any Unattach), and returns when its goroutines have ended. It
// always returns nil.
func (cs *ConnSet) Close() error {
	cs.cancel()
	cs.wg.Wait()
	return nil
}

// tend keeps one slot of the set attached until ctx ends or the mux closes.
func (cs *ConnSet) tend(ctx context.Context, slot int) {
	defer cs.wg.Done()
	backoff := cs.cfg.MinBackoff
	for !cs.stopped(ctx) {
		p, err := cs.attach(ctx)
		if cs.stopped(ctx) {
			if p != nil {
				detach(p)
			}
			return
		}
		// An error wrapping ErrClosed here is a connection's or a dialer's
		// own (a socket of another mux, say): the set's mux is open.
		if err != nil {
			if cs.cfg.OnDialError != nil {
				cs.cfg.OnDialError(err)
			}
			if !cs.sleep(ctx, cs.wait(backoff)) {
				return
			}
			backoff = min(2*backoff, cs.cfg.MaxBackoff)
			continue
		}
		cs.setSlot(slot, p)
		attached := time.Now()
		select {
		case <-p.Done():
			cs.setSlot(slot, nil)
			if cs.stopped(ctx) {
				return // the mux closed: Done is closed before its psocks leave
			}
			if time.Since(attached) >= cs.cfg.MaxBackoff {
				backoff = cs.cfg.MinBackoff // it was healthy: dial again at once
				continue
			}
			// Lost soon after it was attached (a peer that accepts and
			// closes, or fails every stream): back off as after a failed
			// dial, so the set does not dial in a tight loop.
			if !cs.sleep(ctx, cs.wait(backoff)) {
				return
			}
			backoff = min(2*backoff, cs.cfg.MaxBackoff)
		case <-ctx.Done():
			cs.setSlot(slot, nil)
			detach(p)
			return
		}
	}
}

// detach unattaches p and closes its connection, as Mux.Close would. If p
// left the mux meanwhile, its connection is closed already, or, after an
// Unattach of the application's, the application's.
func detach(p *Psock) {
	if c, _ := p.Unattach(); c != nil {
		if pc, ok := c.(*prefixConn); ok {
			c = pc.Conn // the bytes it kept go with it; its NetConn counts
		}
		closeConn(c, true)
	}
}

// attach dials one connection and attaches it.
func (cs *ConnSet) attach(ctx context.Context) (*Psock, error) {
	c, err := cs.cfg.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("kcm: connection set: dial: %w", err)
	}
	if nilConn(c) { // not to be closed either
		return nil, fmt.Errorf("kcm: connection set: dial returned no connection: %w", ErrBadConn)
	}
	if cs.stopped(ctx) { // a Dial that did not heed ctx
		c.Close()
		return nil, nil
	}
	p, err := cs.m.AttachConfig(c, cs.cfg.Parser, cs.cfg.PsockConfig)
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

func (cs *ConnSet) setSlot(slot int, p *Psock) {
	cs.mu.Lock()
	cs.psocks[slot] = p
	cs.mu.Unlock()
}

// wait returns how long to wait before dialling again at backoff d: a
// random duration between d/2 and d, so that the slots of many clients do
// not dial in step, and never below MinBackoff.
func (cs *ConnSet) wait(d time.Duration) time.Duration {
	return max(d/2+rand.N(d/2+1), cs.cfg.MinBackoff)
}

// stopped reports whether the set must end: Close was called or the mux
// closed (checked here too, not only through ctx, which a goroutine
// cancels a moment after the mux closes).
func (cs *ConnSet) stopped(ctx context.Context) bool {
	select {
	case <-cs.m.Done():
		return true
	default:
		return ctx.Err() != nil
	}
}

// sleep waits for d, and reports whether it passed before the set had to
// end.
func (cs *ConnSet) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return !cs.stopped(ctx)
	case <-ctx.Done():
		return false
	case <-cs.m.Done():
		return false
	}
}

package kcm

import (
	"errors"
	"os"
)

// fill reads more bytes of the stream into the psock's strparser. keep says
// whether the read buffer may stay borrowed while the read waits for data:
// readers serving a waiting receiver keep it, background readers give it
// back so an idle psock holds no buffer.
func (p *Psock) fill(keep bool) error {
	if p.pending {
		err := p.pendingErr
		p.pending, p.pendingErr = false, nil
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		// A timeout that came with bytes (as io.Reader allows) belongs to
		// the deadline of that read, an interrupt perhaps, long cleared:
		// read again, under the deadline waitRead set for this one, which
		// reports it if it still applies. Returned as it is, a reader
		// finding no interrupt and no deadline of the mux's would fail the
		// psock (see plainReadErr).
	}
	if p.raw != nil && (!keep || p.noWait) {
		// Waiting without a buffer, or not waiting at all, needs the raw
		// descriptor; a reader that keeps its buffer anyway reads the
		// plain way, which touches less memory.
		return p.fillRaw()
	}
	if p.noWait {
		return ErrWouldBlock // a plain connection cannot be read without blocking
	}
	n, err := p.conn.Read(p.sp.space())
	if n > 0 {
		p.commitRead(n, err)
		return nil
	}
	if err == nil {
		return nil
	}
	return err
}

// fillNow is fill without waiting: ErrWouldBlock when nothing arrived, or
// the connection cannot be read so (it has no raw descriptor).
func (p *Psock) fillNow(keep bool) error {
	saved := p.noWait
	p.noWait = true
	err := p.fill(keep)
	p.noWait = saved
	return err
}

// commitRead takes in the n bytes a read returned together with err: they
// are delivered first and err is reported by the next read. pending must
// be false, as it is after any read.
func (p *Psock) commitRead(n int, err error) {
	p.sp.commit(n)
	if err != nil {
		p.pending, p.pendingErr = true, err
	}
}

// takeDirectRead takes in the rn bytes a direct read of room bytes put at
// the start of dst, and returns the length of the message they begin with
// when they hold it whole, else 0. It is out of recvFast, whose frame
// stays small (see there): a read that dst cut short is cutShort's.
func (p *Psock) takeDirectRead(dst []byte, rn, room int) int {
	if rn == len(dst) && rn < p.sp.readSize() {
		p.cutShort(dst[:rn])
		return 0
	}
	return p.sp.takeDirect(dst[:rn], room)
}

// cutShort takes in the bytes b of a direct read that the receiver's
// buffer cut short: a read into the psock's buffer would have been offered
// more, and the parser must see what it would have seen (NeedMoreHdr
// counts what the stream did, not how kcm read it). So b goes to the
// psock's buffer unparsed, and what else already arrived is read after it
// without waiting, up to what the buffered read would have taken.
// Connections without a raw descriptor cannot be read without blocking:
// the parser sees b alone there. Direct reads stop until a read brings one
// whole message again.
func (p *Psock) cutShort(b []byte) {
	p.sp.direct = 0
	p.sp.keep(b)
	if p.pending {
		return
	}
	if err := p.fillNow(true); err != nil && err != ErrWouldBlock && !errors.Is(err, os.ErrDeadlineExceeded) {
		p.pending, p.pendingErr = true, err // after the bytes read before it
	}
}

package router

import (
	"errors"
	"io"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/moonwire/moonwire/router/internal/bufpool"
	"github.com/moonwire/moonwire/router/wsconn"
)

// The read path. A connection is read in turns: the poller reports it
// readable (or its reader goroutine wakes), the turn's holder reads what the
// socket has, decodes every complete frame, answers control frames, queues
// data messages on the connection's lane, and gives the turn back. The turn
// stays held while those messages are pending, so the read buffer they point
// into stays valid and a connection whose handler is slow stops being read
// (TCP backpressure instead of unbounded memory). The last message to finish
// releases the turn: the buffer goes back to the pool if it holds no partial
// frame, and the turn goes back to the poller.
//
// The poller is edge-triggered: it reports data as it arrives, once, and
// the turn is never re-armed with a system call. A report records itself
// and tries to take the turn in one atomic step (Conn.turn), and whoever
// gives the turn back does it in one step that fails if a report came
// while it was held; so no report is lost: one of the two takes the turn
// and reads again. A read that fills its buffer may have left data behind,
// and counts as a report too; a hangup counts as one until a read ends
// the connection, since reading the data before it does not consume it.

const readBufferSize = 4096

// maxFrameOverhead is the largest frame header, which the read buffer must
// hold on top of a maximum-size payload.
const maxFrameOverhead = 14

// sockReader is a poll worker's read scratch: one non-blocking read(2)
// made inside RawConn.Read (so the descriptor cannot be closed under it),
// with the function bound once so a read allocates nothing.
type sockReader struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func newSockReader() *sockReader {
	r := new(sockReader)
	r.fn = r.read
	return r
}

func (r *sockReader) read(fd uintptr) bool {
	if len(r.buf) > rawReadMax || len(r.buf) == 0 {
		r.n, r.err = unix.Read(int(fd), r.buf)
		return true // never wait: the poller said there is something
	}
	// A raw system call, as the flushers' small writes are (see
	// wsconn's rawWriter): the socket is non-blocking, so the call never
	// sleeps, and the scheduler's bookkeeping around it costs more than
	// the copy. A read buffer grown for a large frame takes the usual
	// path, so the processor is never held through a long copy.
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
	r.n, r.err = int(n), nil
	if e != 0 {
		r.n, r.err = -1, e
	}
	return true
}

// rawReadMax is the largest read made as a raw system call.
const rawReadMax = 16 << 10

// The bits of Conn.turn.
const (
	turnArmed    uint32 = 1 << iota // the poller may take the read turn
	turnReported                    // data came since the turn's last read began
	// turnHangup: the peer hung up or the socket failed. It is never
	// cleared: a read that returns data does not say whether the end of
	// the stream is behind it, so every turn reads until it sees it.
	turnHangup
)

// report records a readiness report (hangup: the poller's flag) and takes
// the read turn if it is the poller's to give; the caller then runs
// readTurn.
func (c *Conn) report(hangup bool) bool {
	set := turnReported
	if hangup {
		set |= turnHangup
	}
	for {
		old := c.turn.Load()
		if c.turn.CompareAndSwap(old, (old|set)&^turnArmed) {
			return old&turnArmed != 0
		}
	}
}

// readTurn reads once and decodes what came, with the turn taken from the
// poller, again while the turn comes back with a report pending.
func (c *Conn) readTurn(r *sockReader) {
	for {
		c.pending.Store(1)
		c.turn.And(^turnReported) // before the read: it sees what was reported
		c.prepareBuffer()
		r.buf, r.n, r.err = c.rbuf[c.w:], 0, nil
		if err := c.rc().Read(r.fn); err != nil {
			r.err = err // the socket was closed under us
		}
		n, err := r.n, r.err
		full := n == len(r.buf)
		r.buf = nil
		switch {
		case err == unix.EAGAIN:
			// Nothing to read after all (a report for data an earlier
			// turn read). Nor the end of the stream: a hangup flag with
			// nothing behind it (the kernel should not make one) must
			// not send every turn back to read, forever.
			c.turn.And(^turnHangup)
			n, err = 0, nil
		case err == unix.EINTR:
			// Interrupted before it read: whatever was reported is
			// still there, and the turn reads again.
			c.turn.Or(turnReported)
			n, err = 0, nil
		case err == nil && n == 0:
			err = io.EOF
		}
		if full {
			c.turn.Or(turnReported) // the socket may hold more: no edge will say so
		}
		if !c.consume(max(n, 0), err) {
			return
		}
	}
}

// readLoop is the reader of a connection not on the poller (TLS, or a
// platform without epoll): a goroutine blocked in Read.
func (c *Conn) readLoop() {
	defer c.srv.wg.Done()
	for {
		c.pending.Store(1)
		c.prepareBuffer()
		n, err := c.ext.nc.Read(c.rbuf[c.w:])
		_ = c.consume(n, err) // false: the turn comes back on resume
		<-c.ext.resume
		if c.stopRead || !c.wantRead() {
			c.releaseBuffers()
			return
		}
	}
}

// prepareBuffer makes room in the read buffer: compacting what is left of
// a partial frame and growing toward the frame's size as its bytes actually
// arrive (never allocating on a peer-declared length up front).
func (c *Conn) prepareBuffer() {
	if c.rbuf == nil {
		c.rbuf = bufpool.Get(readBufferSize)
		c.rbuf = c.rbuf[:cap(c.rbuf)]
		c.r, c.w = 0, 0
		return
	}
	if c.r > 0 {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.rbuf) {
		size := 2 * len(c.rbuf)
		if c.need > len(c.rbuf) {
			size = min(size, c.need)
		}
		size = min(size, int(c.parser.MaxMessage)+maxFrameOverhead)
		if size <= len(c.rbuf) {
			size = len(c.rbuf) + readBufferSize // cannot happen: parser limits frames
		}
		grown := bufpool.Get(size)
		grown = grown[:cap(grown)]
		copy(grown, c.rbuf[:c.w])
		bufpool.Put(c.rbuf)
		c.rbuf = grown
	}
}

// consume decodes the n new bytes and ends the read with err, if any. It
// reports again when it has released the turn and taken it back for a
// report that came meanwhile: the caller must read again.
func (c *Conn) consume(n int, err error) (again bool) {
	if n > 0 {
		c.w += n
		c.lastSeen.Store(c.srv.nowNs())
		c.bytesIn.Add(int64(n))
		c.route.bytesIn.Add(int64(n))
	}
	c.parse()
	if err != nil {
		if !errors.Is(err, io.EOF) && !isClosedErr(err) {
			c.srv.log.Debug("read failed", "route", c.route.Pattern(), "conn", c.ID(), "err", err)
		}
		c.teardown()
	}
	return c.release()
}

// parse decodes complete frames from the read buffer.
func (c *Conn) parse() {
	for c.r < c.w {
		ev, n, err := c.parser.Next(c.rbuf[c.r:c.w])
		if err != nil {
			code, reason, _ := wsconn.CloseStatus(err)
			c.srv.stats.protocolErrors.Add(1)
			c.finishAfterDelivered(func() { c.closeWith(int(code), reason, true, false) })
			return
		}
		if n == 0 {
			c.need = ev.Need
			return
		}
		c.r += n
		switch ev.Kind {
		case wsconn.Text, wsconn.Binary:
			if c.rate != nil && !c.rate.allow() {
				if ev.Owned {
					bufpool.Put(ev.Payload)
				}
				c.finishAfterDelivered(func() { c.closeWith(ClosePolicy, "rate limit", true, false) })
				return
			}
			c.deliver(ev)
		case wsconn.Ping:
			_ = c.sendControl(ws.OpPong, ev.Payload) // a pong echoes the ping payload
		case wsconn.Close:
			// RFC 6455 §5.5.1: nothing after a close frame counts.
			code, reason := int(ev.Code), ev.Reason
			c.finishAfterDelivered(func() { c.onPeerClose(code, reason) })
			return
		}
	}
}

// finishAfterDelivered stops reading and runs act — failing the connection
// or answering the peer's close — after the messages this read delivered.
// When some are still queued on the lane, act is queued behind them, so
// their replies go out before the close frame and nothing the peer sent
// before the end is lost; otherwise it runs now.
func (c *Conn) finishAfterDelivered(act func()) {
	c.stopRead = true
	c.r = c.w
	if c.pending.Load() == 1 { // only the read turn: nothing is queued
		act()
		return
	}
	c.mu.Lock()
	queued := c.state != stateClosed && c.lane.push(task{kind: taskFunc, c: c, fn: act})
	c.mu.Unlock()
	if !queued {
		act()
	}
}

// deliver queues a data message on the lane. The message keeps the read
// turn until the lane has run it.
func (c *Conn) deliver(ev wsconn.Event) {
	c.mu.Lock()
	if c.state == stateClosed || c.byServer {
		c.mu.Unlock()
		if ev.Owned {
			bufpool.Put(ev.Payload)
		}
		return
	}
	c.pending.Add(1)
	if !c.lane.push(task{kind: taskMessage, c: c, msg: ev.Kind, data: ev.Payload, owned: ev.Owned, compressed: ev.Compressed}) {
		c.pending.Add(-1)
		if ev.Owned {
			bufpool.Put(ev.Payload)
		}
	}
	c.mu.Unlock()
}

// inflate decompresses a compressed message on the lane, just before its
// handler runs, into a pooled buffer the caller returns (releaseOwned).
// A message that does not inflate, is too big once inflated, or is not
// UTF-8 text fails the connection, as a bad frame would, and inflate
// returns nil.
func (c *Conn) inflate(kind Kind, compressed []byte) (data []byte, ok bool) {
	out, err := wsconn.Inflate(kind, compressed, c.parser.MaxMessage)
	if err != nil {
		code, reason, _ := wsconn.CloseStatus(err)
		c.srv.stats.protocolErrors.Add(1)
		c.closeWith(int(code), reason, true, false)
		return nil, false
	}
	return out, true
}

// allow takes a token from the connection's rate-limit bucket.
func (b *rateState) allow() bool {
	rl := &b.limit
	now := time.Now().UnixNano()
	if b.refilled == 0 {
		b.tokens, b.refilled = float64(rl.Burst), now
	}
	rate := float64(rl.Messages) / float64(rl.Per)
	b.tokens = min(float64(rl.Burst), b.tokens+float64(now-b.refilled)*rate)
	b.refilled = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// taskDone releases one hold on the read turn, from a lane: the last one
// gives the turn back, and a worker reads again if a report came
// meanwhile. (The send cannot outlive the workers' channel: it is closed
// with the poller, after every connection is finished, and a finished
// connection's turn is never taken back: it no longer wants reading.)
func (c *Conn) taskDone() {
	if c.release() {
		c.srv.ready <- c
	}
}

// release releases one hold on the read turn; the last one resumes
// reading, and reports again when the caller must read (see consume).
func (c *Conn) release() (again bool) {
	if c.pending.Add(-1) != 0 {
		return false
	}
	return c.resumeReading()
}

// resumeReading runs with the turn released by everyone: it returns an
// empty buffer to the pool and gives the turn to the poller, or keeps it,
// reporting again, when a report came while it was held.
func (c *Conn) resumeReading() (again bool) {
	if c.rc() == nil {
		c.ext.resume <- struct{}{}
		return false
	}
	if c.stopRead || !c.wantRead() {
		c.releaseBuffers()
		return false
	}
	if c.r == c.w && c.rbuf != nil {
		bufpool.Put(c.rbuf)
		c.rbuf, c.r, c.w = nil, 0, 0
	}
	if !c.registered {
		// Registering reports what is already waiting.
		c.registered = true
		c.turn.Or(turnArmed)
		if err := c.srv.poller.Add(&c.desc); err != nil && c.turn.And(^turnArmed)&turnArmed != 0 {
			// The socket was closed meanwhile (or the poller is gone).
			c.teardown()
			c.releaseBuffers()
		}
		return false
	}
	// Hand the turn over unless a report came while it was held: then
	// keep it and read again. One atomic step, so that a report either
	// comes before it (and is seen) or after it (and takes the turn).
	for {
		old := c.turn.Load()
		if old&(turnReported|turnHangup) != 0 {
			return true
		}
		if c.turn.CompareAndSwap(old, old|turnArmed) {
			return false
		}
	}
}

// releaseBuffers drops the read-side buffers of a connection that will not
// be read again. Only the turn's holder may call it.
func (c *Conn) releaseBuffers() {
	if c.rbuf != nil {
		bufpool.Put(c.rbuf)
		c.rbuf, c.r, c.w = nil, 0, 0
	}
	c.parser.Reset()
}

package wsconn

import (
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Queue is a connection's bounded outbound queue of encoded frames.
//
// Producers (scripts sending, broadcasts, control replies) Push frames
// without doing I/O; the first Push onto an idle queue tells its caller to
// start one flusher, which calls Flush until the queue is drained. This keeps
// at most one writer per connection and coalesces everything queued while a
// write is in progress into the next vectored write.
//
// Lock order: Queue.mu is a leaf; no other lock is taken while holding it.
type Queue struct {
	// Limit is the byte budget of queued, unwritten frames. Zero means no
	// limit.
	Limit int

	mu       sync.Mutex
	frames   []*Frame // queued, not yet taken by the flusher
	bytes    int      // sum of len(frame) over frames
	flushing bool     // a flusher owns the write side
	sealed   bool     // a close frame was queued: no more data frames
	// last: the close frame answers the peer's, and the socket closes
	// once it is written (see Seal). Set with sealed, never changed.
	last bool
	dead bool // the connection is gone: everything is refused
	// The pings and the pongs waiting (see PushControl): how many, and
	// the latest one's index in frames. Small types, laid out to fill the
	// padding after the flags: a Conn must stay in its 416-byte size class.
	pingN, pongN   uint8
	pingAt, pongAt int32

	// pushed counts the frames Push queued, for the connection's
	// messages_out: under mu, where an atomic counter of its own made a
	// broadcast touch one more cache line per recipient.
	pushed int64
}

// Push queues f, taking a reference to it. start reports that the queue was
// idle and the caller must now run a flusher. It fails with ErrClosed once
// the queue is sealed or dead and with ErrFull when f would exceed Limit; in
// both cases f is not queued and no reference is taken.
func (q *Queue) Push(f *Frame) (start bool, err error) {
	q.mu.Lock()
	switch {
	case q.sealed || q.dead:
		err = ErrClosed
	case q.Limit > 0 && q.bytes+len(f.b) > q.Limit && q.bytes > 0:
		// A single frame larger than the limit still goes through an empty
		// queue: the limit bounds the backlog, not the message size.
		err = ErrFull
	default:
		f.Retain()
		q.frames = append(q.frames, f)
		q.bytes += len(f.b)
		q.pushed++
		start = !q.flushing
		q.flushing = true
	}
	q.mu.Unlock()
	return start, err
}

// Pushed returns how many frames Push has queued over the queue's life.
func (q *Queue) Pushed() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushed
}

// PushControl queues a control frame (ping, pong) past the byte limit, since
// control frames are tiny and dropping a pong would look like a dead peer.
// It fails only with ErrClosed.
//
// Past maxQueuedControl pings (or pongs) waiting in the queue, a new one
// replaces the latest of them, in its place, instead of queuing behind
// it: only the latest ping needs a pong (RFC 6455 §5.5.3). A peer that
// floods pings and never reads thus holds a few pongs here, however fast it
// sends (each used to cost a queued frame and its buffer, and a flood grew
// the process by gigabytes), while one that sends a handful at once gets
// a pong for each, as Autobahn's case 2.10 expects.
func (q *Queue) PushControl(f *Frame) (start bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sealed || q.dead {
		return false, ErrClosed
	}
	var n *uint8
	var at *int32
	switch ws.OpCode(f.b[0] & 0x0f) {
	case ws.OpPing:
		n, at = &q.pingN, &q.pingAt
	case ws.OpPong:
		n, at = &q.pongN, &q.pongAt
	}
	f.Retain()
	if n != nil && *n >= maxQueuedControl {
		g := q.frames[*at]
		q.bytes += len(f.b) - len(g.b)
		q.frames[*at] = f
		g.Release()
		return false, nil // a flusher already owns the queued frames
	}
	q.frames = append(q.frames, f)
	if n != nil {
		*n++
		*at = int32(len(q.frames) - 1)
	}
	q.bytes += len(f.b)
	start = !q.flushing
	q.flushing = true
	return start, nil
}

// maxQueuedControl is how many pings, and how many pongs, may wait in a
// queue before new ones replace the latest.
const maxQueuedControl = 16

// Seal queues the close frame f as the last frame and refuses every later
// Push. With discard set, frames not yet taken by the flusher are dropped
// first, so a peer that stopped reading gets its close frame without
// waiting behind the backlog that made it slow. With last set, f answers
// the peer's close frame and the caller closes the socket as soon as it
// is written: the write that carries it holds it back for the FIN (see
// Flusher's doc). It reports false (and takes no reference) if the queue
// was already sealed or dead.
func (q *Queue) Seal(f *Frame, discard, last bool) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sealed || q.dead {
		return false, false
	}
	if discard {
		q.releaseLocked()
	}
	q.sealed, q.last = true, last
	f.Retain()
	q.frames = append(q.frames, f)
	q.bytes += len(f.b)
	start = !q.flushing
	q.flushing = true
	return start, true
}

// Kill refuses every later Push and drops what is queued. A flusher that is
// running finishes its current write and then stops.
func (q *Queue) Kill() {
	q.mu.Lock()
	q.dead = true
	q.releaseLocked()
	q.mu.Unlock()
}

// Sealed reports whether a close frame has been queued.
func (q *Queue) Sealed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sealed
}

// Buffered returns the number of queued, unwritten bytes.
func (q *Queue) Buffered() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// releaseLocked drops every queued frame. q.mu must be held.
func (q *Queue) releaseLocked() {
	for i, f := range q.frames {
		f.Release()
		q.frames[i] = nil
	}
	q.frames = q.frames[:0]
	q.bytes = 0
	q.pingN, q.pongN = 0, 0
}

// take moves the queued frames into batch, or, when there are none, ends
// the flusher's ownership and reports done. The sealed flag is returned so
// the flusher knows whether the batch ends with the close frame.
func (q *Queue) take(batch []*Frame) (_ []*Frame, sealed, done bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 || q.dead {
		q.flushing = false
		return batch, q.sealed, true
	}
	batch = append(batch, q.frames...)
	for i := range q.frames {
		q.frames[i] = nil
	}
	q.frames = q.frames[:0]
	q.bytes = 0
	q.pingN, q.pongN = 0, 0
	if cap(q.frames) > 64 {
		// A burst grew the slice; do not keep it for the connection's life.
		q.frames = nil
	}
	return batch, q.sealed, false
}

// Flusher writes a Queue to its connection. It is the queue's only writer
// between the Push that returned start == true and the flush call that
// reports done; it holds the frames it took until they are written.
//
// There are two ways to flush. TryFlush writes without ever waiting (a
// raw writev on the socket): the common case, where the socket has room,
// costs one system call and no goroutine. When the socket is full it
// reports blocked, keeping what is unwritten, and the caller hands the
// Flusher to a goroutine of its own that finishes with Flush, which waits
// under a write deadline. So a peer that stops reading holds a goroutine
// for at most the write timeout, and never holds a shared worker.
//
// The write of a batch that ends with a close frame sealed as the last
// (Seal's last: the answer to the peer's close) carries MSG_MORE, so the
// kernel keeps its segment back for the FIN, which joins it: the peer
// gets the close frame and the end of the stream in one segment, where
// two cost two deliveries (on loopback, the sender's CPU runs both through
// the peer's receive path) and two wake-ups of the peer. Only then:
// MSG_MORE holds a part-filled segment until more comes, so the socket
// must close once the write is done; and closing a socket with data left
// unread is a reset, which discards what the socket still holds, the frame
// among it, so not when the peer may still be sending.
type Flusher struct {
	batch []*Frame    // taken from the queue; released once all written
	bufs  net.Buffers // what remains to write of batch, front first
	cur   net.Buffers // what WriteTo consumes; a field so it does not escape
	raw   rawWriter
	want  int // the bytes the prepared write covers (see Prepare)
}

// pending reports whether the flusher holds unwritten bytes.
func (fl *Flusher) pending() bool { return len(fl.bufs) > 0 }

// next releases a fully written batch and takes the next one. done means
// the queue is empty and the flusher's ownership has ended.
func (fl *Flusher) next(q *Queue) (sealed, done bool) {
	for i, f := range fl.batch {
		f.Release()
		fl.batch[i] = nil
	}
	fl.batch, sealed, done = q.take(fl.batch[:0])
	if done {
		return sealed, true
	}
	// q.last was set with the sealed that take saw, under the same lock.
	fl.raw.more = sealed && q.last
	fl.bufs = fl.bufs[:0]
	for _, f := range fl.batch {
		fl.bufs = append(fl.bufs, f.b)
	}
	return sealed, false
}

// Abandon gives the queue up without writing, when there is no socket to
// write to any more: it kills the queue and ends the flusher's ownership,
// as a write error would.
func (fl *Flusher) Abandon(q *Queue) { fl.fail(q) }

// fail kills the queue after a write error and ends the flusher's
// ownership.
func (fl *Flusher) fail(q *Queue) {
	for i, f := range fl.batch {
		f.Release()
		fl.batch[i] = nil
	}
	fl.batch, fl.bufs = fl.batch[:0], fl.bufs[:0]
	q.Kill()
	q.mu.Lock()
	q.flushing = false
	q.mu.Unlock()
}

// Flush drains q into conn with vectored writes, each under a fresh write
// deadline of timeout (0: none), starting with whatever an earlier
// TryFlush left. It returns when the queue is empty, with sealed reporting
// that the close frame was among what it wrote, or with the first write
// error, after which the queue is killed.
func (fl *Flusher) Flush(q *Queue, conn net.Conn, timeout time.Duration) (sealed bool, written int64, err error) {
	if timeout > 0 {
		// The deadline must not outlive this flush: a later TryFlush on the
		// same socket would find it expired and fail.
		defer conn.SetWriteDeadline(time.Time{})
	}
	for {
		if !fl.pending() {
			var done bool
			if sealed, done = fl.next(q); done {
				return sealed, written, nil
			}
		}
		if timeout > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		}
		fl.cur = fl.bufs // WriteTo consumes its receiver; keep fl.bufs' array
		n, werr := fl.cur.WriteTo(conn)
		fl.cur = nil
		written += n
		fl.bufs = fl.bufs[:0]
		if werr != nil {
			fl.fail(q)
			return sealed, written, werr
		}
	}
}

// TryFlush drains q into the socket behind rc without waiting. It returns
// blocked when the socket cannot take more: the flusher then still owns
// the queue and holds the rest, for Flush to finish. Otherwise it returns
// like Flush.
func (fl *Flusher) TryFlush(q *Queue, rc syscall.RawConn) (sealed bool, written int64, blocked bool, err error) {
	for {
		var done bool
		if sealed, done = fl.Prepare(q); done {
			return sealed, written, false, nil
		}
		n, werr := fl.WriteRaw(rc)
		written += int64(n)
		if blocked, err = fl.Wrote(q, n, werr); blocked || err != nil {
			return sealed, written, blocked, err
		}
	}
}

// Prepare readies the flusher's next write to q: what an earlier write
// left, or else the frames queued since, taken now. done reports that the
// queue is empty and the flusher's ownership has ended, with sealed
// reporting that the close frame was written. Otherwise the caller makes
// the write (TryFlush's raw system call, or a batch on a ring: QueueOn)
// and reports it with Wrote.
func (fl *Flusher) Prepare(q *Queue) (sealed, done bool) {
	if !fl.pending() {
		if sealed, done = fl.next(q); done {
			return sealed, true
		}
	}
	fl.want = fl.raw.prepare(fl.bufs)
	return sealed, false
}

// Readied returns how many bytes the write Prepare readied covers.
func (fl *Flusher) Readied() int { return fl.want }

// WriteRaw makes the write Prepare readied on the socket behind rc, with
// a system call of its own; report its result with Wrote.
func (fl *Flusher) WriteRaw(rc syscall.RawConn) (int, error) {
	if err := rc.Write(fl.raw.fn); err != nil {
		return 0, err
	}
	return fl.raw.n, fl.raw.err
}

// Wrote accounts the prepared write: n bytes written, or the error werr.
// blocked reports a socket that could not take it all (EAGAIN, or part
// of it), after which the flusher still owns the queue and holds the
// rest, for Flush to finish. err is werr when it is fatal, after which
// the queue is killed and the flusher's ownership has ended.
func (fl *Flusher) Wrote(q *Queue, n int, werr error) (blocked bool, err error) {
	if werr == syscall.EAGAIN || werr == syscall.EINTR {
		return true, nil
	}
	if werr != nil {
		fl.fail(q)
		return false, werr
	}
	fl.consume(n)
	// Less than asked: the socket is full now.
	return n < fl.want, nil
}

// consume drops n written bytes from the front of bufs.
func (fl *Flusher) consume(n int) {
	i := 0
	for i < len(fl.bufs) && n >= len(fl.bufs[i]) {
		n -= len(fl.bufs[i])
		fl.bufs[i] = nil
		i++
	}
	if i < len(fl.bufs) && n > 0 {
		fl.bufs[i] = fl.bufs[i][n:]
	}
	rest := copy(fl.bufs, fl.bufs[i:])
	clear(fl.bufs[rest:])
	fl.bufs = fl.bufs[:rest]
}

// Reset drops the flusher's scratch space if a burst made it large.
func (fl *Flusher) Reset() {
	if cap(fl.batch) > 64 {
		fl.batch, fl.bufs = nil, nil
	}
	clear(fl.bufs[:cap(fl.bufs)])
	fl.bufs = fl.bufs[:0]
	fl.raw.reset()
}

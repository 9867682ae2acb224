package wsconn

import (
	"net"
	"sync"
	"time"
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
	dead     bool     // the connection is gone: everything is refused
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
		start = !q.flushing
		q.flushing = true
	}
	q.mu.Unlock()
	return start, err
}

// PushControl queues a control frame (ping, pong) past the byte limit, since
// control frames are tiny and dropping a pong would look like a dead peer.
// It fails only with ErrClosed.
func (q *Queue) PushControl(f *Frame) (start bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sealed || q.dead {
		return false, ErrClosed
	}
	f.Retain()
	q.frames = append(q.frames, f)
	q.bytes += len(f.b)
	start = !q.flushing
	q.flushing = true
	return start, nil
}

// Seal queues the close frame f as the last frame and refuses every later
// Push. With discard set, frames not yet taken by the flusher are dropped
// first, so a peer that stopped reading gets its close frame without
// waiting behind the backlog that made it slow. It reports false (and takes
// no reference) if the queue was already sealed or dead.
func (q *Queue) Seal(f *Frame, discard bool) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sealed || q.dead {
		return false, false
	}
	if discard {
		q.releaseLocked()
	}
	q.sealed = true
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
	if cap(q.frames) > 64 {
		// A burst grew the slice; do not keep it for the connection's life.
		q.frames = nil
	}
	return batch, q.sealed, false
}

// Flusher writes a Queue to its connection. It is the queue's only writer
// between the Push that returned start == true and the Flush call that
// returns; its scratch space lives only that long.
type Flusher struct {
	batch []*Frame
	bufs  net.Buffers
	cur   net.Buffers // what WriteTo consumes; a field so it does not escape per call
}

// Flush drains q into conn with vectored writes, each under a fresh write
// deadline of timeout (0: none). It returns when the queue is empty, with
// sealed reporting that the close frame was among what it wrote, or with
// the first write error. After an error the queue is killed.
func (fl *Flusher) Flush(q *Queue, conn net.Conn, timeout time.Duration) (sealed bool, written int64, err error) {
	for {
		var done bool
		fl.batch, sealed, done = q.take(fl.batch[:0])
		if done {
			return sealed, written, nil
		}
		fl.bufs = fl.bufs[:0]
		for _, f := range fl.batch {
			fl.bufs = append(fl.bufs, f.b)
		}
		if timeout > 0 {
			_ = conn.SetWriteDeadline(time.Now().Add(timeout))
		}
		fl.cur = fl.bufs // WriteTo consumes its receiver; keep fl.bufs' array
		n, werr := fl.cur.WriteTo(conn)
		fl.cur = nil
		written += n
		for i, f := range fl.batch {
			f.Release()
			fl.batch[i] = nil
		}
		if werr != nil {
			q.Kill()
			q.mu.Lock()
			q.flushing = false
			q.mu.Unlock()
			return sealed, written, werr
		}
	}
}

// Reset drops the flusher's scratch space if a burst made it large.
func (fl *Flusher) Reset() {
	if cap(fl.batch) > 64 {
		fl.batch, fl.bufs = nil, nil
	}
	clear(fl.bufs[:cap(fl.bufs)])
	fl.bufs = fl.bufs[:0]
}

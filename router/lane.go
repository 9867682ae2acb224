package router

import (
	"log/slog"
	"runtime/debug"
	"sync"
)

type taskKind uint8

const (
	taskMessage taskKind = iota
	taskOpen
	taskClose
	taskHandshake
	taskFunc
)

// task is one unit of work on a lane. Tasks are stored by value in the
// lane's queue, so queuing a message allocates nothing.
type task struct {
	kind  taskKind
	msg   Kind
	owned bool // data is a pooled buffer the lane returns after use
	// compressed: data is a permessage-deflate message the lane inflates
	// just before the handler takes it (see wsconn.Event.Compressed).
	compressed bool
	code       int
	c          *Conn
	data       []byte
	reason     string
	fn         func()
	hs         *pendingHandshake
}

// lane is a serial executor: one goroutine running tasks in order. A route
// has a fixed set of lanes and pins each connection to one of them, which is
// what lets a handler keep unsynchronised per-lane state.
//
// Lock order: lane.mu is a leaf.
type lane struct {
	rt    *Route
	index int
	// h is the handler this lane runs. Only the lane touches it: a
	// reconfiguration swaps it with a task, so every event queued before
	// the swap runs on the old handler and every later one on the new.
	h Handler
	// gen counts the handlers the lane has run, from 1; it changes with
	// h, on the lane. A connection records the one its Open ran on
	// (Conn.openedOn), for Resume.
	gen uint32

	mu      sync.Mutex
	queue   []task
	spare   []task
	waiting bool // the goroutine is parked on wake
	running bool // the goroutine is running a batch
	lent    bool // a caller runs a task inline (see tryInline)
	stopped bool
	wake    chan struct{}
	done    chan struct{}

	// holds are the lane's connections whose handler suspended an event
	// (Conn.Hold). Lane only; kept here rather than in Conn, which must
	// stay in its size class, and empty on every lane that never waits.
	holds map[*Conn]*connHold
}

// holdOf returns c's hold, or nil. Lane only.
func (l *lane) holdOf(c *Conn) *connHold {
	if len(l.holds) == 0 {
		return nil
	}
	return l.holds[c]
}

func newLane(rt *Route, index int, h Handler) *lane {
	return &lane{rt: rt, index: index, h: h, gen: 1, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push queues t. It reports false, dropping t, once the lane is stopped.
func (l *lane) push(t task) bool {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, t)
	// While the lane is lent, its borrower wakes the goroutine on return.
	wake := l.waiting && !l.lent
	if wake {
		l.waiting = false
	}
	l.mu.Unlock()
	if wake {
		l.wake <- struct{}{}
	}
	return true
}

// stop makes the lane finish what is queued and exit.
func (l *lane) stop() {
	l.mu.Lock()
	already := l.stopped
	l.stopped = true
	wake := l.waiting && !l.lent
	if wake {
		l.waiting = false
	}
	l.mu.Unlock()
	if wake && !already {
		l.wake <- struct{}{}
	}
}

func (l *lane) run() {
	defer close(l.done)
	for {
		l.mu.Lock()
		for len(l.queue) == 0 || l.lent {
			if l.stopped && len(l.queue) == 0 && !l.lent {
				l.mu.Unlock()
				return
			}
			l.waiting = true
			l.mu.Unlock()
			<-l.wake
			l.mu.Lock()
		}
		batch := l.queue
		l.queue = l.spare[:0]
		l.running = true
		l.mu.Unlock()

		for i := range batch {
			l.runTask(&batch[i])
			batch[i] = task{} // drop references for the GC
		}
		if cap(batch) > 1024 {
			batch = nil // a burst grew it; do not keep it
		}
		l.mu.Lock()
		l.spare = batch
		l.running = false
		l.mu.Unlock()
	}
}

// busy reports whether the lane is running a task (its goroutine, or a
// caller it lent itself to).
func (l *lane) busy() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running || l.lent
}

// tryInline runs fn on the calling goroutine as one of the lane's tasks,
// if the lane is idle: nothing queued and nothing running. It reports
// false, without running fn, otherwise. Meanwhile the lane is lent: tasks
// queue up behind fn as they would behind any task, and the lane's
// goroutine takes them when fn returns. An upgrade asks its handler this
// way, saving two goroutine hand-offs on a path where connection churn
// makes them the cost that shows.
func (l *lane) tryInline(fn func()) bool {
	l.mu.Lock()
	if l.stopped || l.running || l.lent || len(l.queue) > 0 {
		l.mu.Unlock()
		return false
	}
	l.lent = true
	l.mu.Unlock()
	defer l.giveBack()
	fn()
	return true
}

func (l *lane) giveBack() {
	l.mu.Lock()
	l.lent = false
	wake := l.waiting && (len(l.queue) > 0 || l.stopped)
	if wake {
		l.waiting = false
	}
	l.mu.Unlock()
	if wake {
		l.wake <- struct{}{}
	}
}

func (l *lane) runTask(t *task) {
	if t.c != nil && len(l.holds) > 0 {
		if h := l.holds[t.c]; h != nil && h.on {
			// The connection's handler is suspended (Conn.Hold): its
			// later events wait, in order, until Release. A held message
			// keeps its place in the read turn, so the socket stays
			// unarmed meanwhile.
			h.queue = append(h.queue, *t)
			return
		}
	}
	switch t.kind {
	case taskMessage:
		c := t.c
		if !c.closedByServer() {
			data, inflated := t.data, false
			if t.compressed {
				data, inflated = c.inflate(t.msg, t.data)
			}
			if data != nil {
				c.countIn()
				l.message(c, t.msg, data)
			}
			if inflated {
				releaseOwned(data)
			}
		}
		if t.owned {
			releaseOwned(t.data)
		}
		if h := l.holdOf(c); h != nil && h.on {
			// The handler suspended this message: the read turn stays
			// held (the socket is not read: TCP backpressure) until
			// Release.
			h.owed++
		} else {
			c.taskDone()
		}
	case taskOpen:
		l.open(t.c)
	case taskClose:
		t.c.announceLeft()
		l.close(t.c, t.code, t.reason)
		t.c.finished()
	case taskHandshake:
		v := l.handshake(t.hs.req)
		if !t.hs.req.deferred {
			t.hs.finish(v)
		}
	case taskFunc:
		l.call(t.fn)
	default:
		slog.Error("router: unknown task kind", "kind", t.kind)
	}
}

// The wrappers below keep a panicking handler from taking its lane down: a
// panic in Go code behind a script costs only the connection involved.

func (l *lane) message(c *Conn, kind Kind, data []byte) {
	defer l.recoverFor(c)
	l.h.Message(l.index, c, kind, data)
}

func (l *lane) open(c *Conn) {
	defer l.recoverFor(c)
	c.openedOn = l.gen
	l.h.Open(l.index, c)
}

// setHandler switches the lane to h; it runs on the lane.
func (l *lane) setHandler(h Handler) {
	l.h = h
	l.gen++
}

// resume runs rs.Resume for c, rs being the lane's handler, if c is one
// rs takes over: open, and opened on an earlier handler. A connection
// accepted while a reconfiguration runs is in the table before its Open
// is queued, so the reconfiguration may queue its Resume too; its Open
// then runs on the new handler, before or after the Resume, and Resume
// must leave it alone (a script would arm its timers twice, or before
// on_open).
func (l *lane) resume(rs Resumer, c *Conn) {
	if c.openedOn == 0 || c.openedOn == l.gen || c.Closed() {
		return
	}
	rs.Resume(l.index, c)
}

func (l *lane) close(c *Conn, code int, reason string) {
	defer l.recoverFor(nil)
	l.h.Close(l.index, c, code, reason)
}

func (l *lane) handshake(req *Request) (v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			// A deferred verdict that will never come: answer now.
			req.deferred = false
			l.logPanic(r, nil)
			v = Verdict{Reject: true, Status: 500, Body: "internal error"}
		}
	}()
	return l.h.Handshake(l.index, req)
}

func (l *lane) call(fn func()) {
	defer l.recoverFor(nil)
	fn()
}

func (l *lane) recoverFor(c *Conn) {
	if r := recover(); r != nil {
		l.logPanic(r, c)
		if c != nil {
			c.Close(CloseInternalError, "internal error")
		}
	}
}

func (l *lane) logPanic(r any, c *Conn) {
	attrs := []any{"route", l.rt.Pattern(), "lane", l.index, "panic", r, "stack", string(debug.Stack())}
	if c != nil {
		attrs = append(attrs, "conn", c.ID())
	}
	l.rt.srv.log.Error("handler panic", attrs...)
}

// connHold is the state of a connection whose handler suspended one of
// its events (Conn.Hold). Lane only.
type connHold struct {
	on    bool
	queue []task // the connection's events that came meanwhile, in order
	owed  int    // read-turn releases (taskDone) deferred by held messages
}

// Hold tells the connection's lane that the handler has suspended the
// event it is running for c (a script waiting on the network): until
// Release, c's later events — messages, Close, Resume, the router's own
// tasks for c — wait, in order, while the lane serves its other
// connections. A message suspended this way keeps the read turn, so
// nothing more is read from c's socket (TCP backpressure) until Release.
// Only c's lane may call it, while running one of c's events or a task
// posted to that lane.
func (c *Conn) Hold() {
	l := c.lane
	h := l.holdOf(c)
	if h == nil {
		if l.holds == nil {
			l.holds = make(map[*Conn]*connHold)
		}
		h = new(connHold)
		l.holds[c] = h
	}
	h.on = true
}

// Held reports whether c is held (see Hold). Only c's lane may call it.
func (c *Conn) Held() bool {
	h := c.lane.holdOf(c)
	return h != nil && h.on
}

// Release ends a Hold: the events held for c run now, in order, on the
// calling task (c's lane), until one of them holds c again. Releasing a
// connection that is not held does nothing.
func (c *Conn) Release() {
	h := c.lane.holdOf(c)
	if h == nil || !h.on {
		return
	}
	h.on = false
	for !h.on && h.owed > 0 {
		h.owed--
		c.taskDone()
	}
	for !h.on && len(h.queue) > 0 {
		t := h.queue[0]
		h.queue[0] = task{}
		h.queue = h.queue[1:]
		c.lane.runTask(&t)
	}
	if !h.on && len(h.queue) == 0 && c.lane.holds[c] == h {
		delete(c.lane.holds, c) // nothing kept once it is over
	}
}

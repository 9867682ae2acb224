package lua

import (
	"context"
	"errors"
	"fmt"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/suspend"
	"github.com/moonwire/moonwire/router"
)

// Resumable callbacks.
//
// A route that has a module whose functions wait (SuspendingModule: the
// http module) runs its callbacks as coroutines on threads of the VM
// (gopher-lua's LState.NewThread, sharing the VM's globals). A function
// that waits (suspend.Do) starts its work on a goroutine and yields; the
// lane goes on with other work; when the work is done, a task posted to
// the same lane resumes the thread with the results. The callback's
// connection is held (router.Conn.Hold) meanwhile: its later events wait,
// in order, and its socket is not read. Routes without such a module run
// callbacks as before, on the VM's own state: nothing changes on their
// hot path.
//
// A server whose broker waits for the network (router.Server.BrokerWaits:
// Redis or NATS) makes every route resumable too, from Route.Start on:
// the ws calls that wait for the broker (brokerWait) suspend a
// connection's callback the same way, so that a lane is not idle while
// the broker answers, and many joins' appends are in flight together
// (which the NATS broker batches).
//
// Threads are pooled per VM: a callback that ends without an error gives
// its thread back, so the common path (a callback that never waits)
// makes no new state. A thread a callback failed in, or that was
// suspended when its VM closed, is dropped: its stack may be half
// unwound.
//
// The handler timeout applies to each run of the callback between waits,
// on the VM's CPU time: time spent waiting is not the script's (the
// waiting function has its own timeout). Errors, panics, the memory
// watchdog and the observer behave as for a plain callback; the
// observer's duration is the callback's running time, without its waits.

// SuspendingModule is a Module whose functions may suspend the calling
// callback (see package suspend). A route that has one runs its callbacks
// as coroutines. The method's result says whether it does.
type SuspendingModule interface {
	Module
	Suspends() bool
}

// maxIdleThreads bounds the threads a VM keeps for reuse; a burst of
// suspended callbacks makes more, which go once they finish.
const maxIdleThreads = 8

// errDropped ends a suspended callback whose VM closed (a reload, the
// route stopping) before its work finished.
// It wraps ErrStopping: an on_http dropped this way answers 503.
var errDropped = fmt.Errorf("the route was reloaded or stopped while the callback waited: %w", ErrStopping)

// resumable is one callback run as a coroutine.
type resumable struct {
	th   *glua.LState
	name string       // the callback, for logs and the observer
	c    *router.Conn // the connection it runs for; nil for timers and handshakes
	// finish takes the callback's results (or its error) once it ends; it
	// runs on the lane.
	finish     func(rets []glua.LValue, err error)
	coroutines int           // created so far: the limit is per callback, not per run
	busy       time.Duration // running time so far, for the observer
	waiting    bool          // a Suspend started work during this run
	held       bool          // c is held for it
	dropped    bool
}

// suspender is a VM's suspend.Suspender, offered through its context.
type suspender struct{ v *vm }

// Suspend implements suspend.Suspender: only the running callback's own
// thread, outside any nested Go call, can yield to the lane.
func (s suspender) Suspend(L *glua.LState, work suspend.Work) (int, error) {
	v := s.v
	p := v.cb
	if p == nil || p.th != L {
		if !v.resumable {
			return 0, errors.New("cannot wait here: the route does not list a module that waits")
		}
		return 0, errors.New("cannot wait here: only a route callback's own code can (not on_start, the script's top level or a coroutine)")
	}
	if p.waiting {
		return 0, errors.New("cannot wait twice at once")
	}
	if nestedCall(L) {
		return 0, errors.New("cannot wait inside pcall, xpcall or a function a builtin calls (table.sort, string.gsub): call it from the callback's code")
	}
	if v.route.rt == nil || v.closed {
		return 0, errors.New("cannot wait here: the route is not running")
	}
	return v.suspend(L, p, work), nil
}

// suspend starts work on a goroutine of its own and yields p, the
// running callback (on its own thread L, outside any nested call: the
// caller checked); the lane resumes it once work is done.
func (v *vm) suspend(L *glua.LState, p *resumable, work suspend.Work) int {
	rt, lane, ctx := v.route.rt, v.lane, v.workCtx
	p.waiting = true
	v.eng.work.Add(1)
	go func() {
		defer v.eng.work.Done()
		res := work(ctx)
		// A stopped lane means the VM is closed: nothing to resume.
		rt.Post(lane, func() { v.wake(p, res) })
	}()
	return L.Yield()
}

// maxBrokerWaits bounds the callbacks of one VM suspended on the broker
// at once (each holds a thread and a goroutine): past it a call waits on
// the lane, as it did before calls could suspend. It is admission
// control as much as a memory bound: a lane that never waits takes on
// new connections (and their join announcements, fanned out to every
// member) as fast as they come. In moonbench's reconnect storm (5,000
// followers, 3 nodes on 2 CPUs) 1,024 per VM let the warm-up's joins
// outrun the fan-out into a spiral of reconnects that never caught up;
// 16, with reads bounded as well (maxBrokerReads), keeps the warm-up's
// pace and still has a room's appends in flight together, to batch.
const maxBrokerWaits = 16

// maxBrokerReads bounds the reads (conn:recover, ws.history,
// ws.presence, ws.room_size) one VM has in flight at the broker; the
// others wait for a slot off the lane, their callbacks suspended. A read
// is a round trip or more (a JetStream consumer) per call and cannot be
// batched: many at once only make each slower, past the 500 ms a read
// may take (then recover returns nil and chat.lua closes 1013).
const maxBrokerReads = 2

// brokerWait runs wait, a router call that may wait for a network broker
// (an offset, a history or presence read), and returns what the Resume
// it returns pushes on L.
//
// On a connection's callback (on_open, on_message, on_close, on_reload)
// of a server whose broker is a network one, the callback is suspended
// while wait runs on a goroutine, as http.request suspends it: the lane
// serves other connections meanwhile, and the connection's own events
// wait behind it (router.Conn.Hold), so its order holds, and so does the
// order of its broadcasts (each waits for the one before). Everywhere
// else wait runs here, blocking the lane as before, rather than failing
// as http.request does: on_start and the top level, timers, on_http and
// on_handshake (their runs are not one connection's, and a timer's next
// run must not overtake its last broadcast), inside pcall, a coroutine or
// a builtin's callback, and past maxBrokerWaits. The router bounds every
// wait itself (Config.OffsetWait, Config.BrokerWait), so a dropped
// callback's goroutine ends soon without being cancelled.
//
// read marks a read (see maxBrokerReads): suspended, it waits for one of
// the VM's read slots before it starts, so that the router's bound on its
// wait covers the broker's answer, not the queue. A VM closed meanwhile
// (its route reloaded or stopped) gives up the queue at once.
func (v *vm) brokerWait(L *glua.LState, read bool, wait func() suspend.Resume) int {
	if p := v.cb; v.brokerSuspends && p != nil && p.th == L && p.c != nil && !p.waiting && !v.closed &&
		v.route.rt != nil && v.brokerInFlight.Load() < maxBrokerWaits && !nestedCall(L) {
		v.brokerInFlight.Add(1)
		slots := v.readSlots
		return v.suspend(L, p, func(ctx context.Context) suspend.Resume {
			defer v.brokerInFlight.Add(-1)
			if read {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return nil // dropped: nothing resumes it
				}
				defer func() { <-slots }()
			}
			return wait()
		})
	}
	return wait()(L)
}

// enableBrokerWaits lets the VM's connection callbacks suspend on srv's
// broker (see brokerWait) when its calls wait for the network, running
// the VM's callbacks resumably from now on. It runs on the VM's lane,
// before the route's first event there (Route.Start posts it).
func (v *vm) enableBrokerWaits(srv *router.Server) {
	if v.closed || srv == nil || !srv.BrokerWaits() {
		return
	}
	if !v.resumable {
		v.resumable = true
		v.newWorkCtx()
	}
	v.brokerSuspends = true
	v.readSlots = make(chan struct{}, maxBrokerReads)
}

// nestedCall reports whether L's running Go function was called from
// anything but Lua code on L's own stack: a pcall, or a Go function
// calling back into Lua (table.sort's comparator). gopher-lua runs those
// in a nested Go call that a yield cannot suspend. (A Lua metamethod is
// called the same way but leaves no Go frame to see: waiting inside one
// is documented as unsupported.)
func nestedCall(L *glua.LState) bool {
	for level := 1; level < 1024; level++ {
		dbg, ok := L.GetStack(level)
		if !ok {
			return false
		}
		if _, err := L.GetInfo("S", dbg, glua.LNil); err != nil {
			return true
		}
		switch dbg.What {
		case "G":
			return true
		case "main":
			return false
		}
	}
	return true
}

// thread returns an idle thread of the VM, or a new one.
func (v *vm) thread() *glua.LState {
	if n := len(v.threads); n > 0 {
		th := v.threads[n-1]
		v.threads[n-1] = nil
		v.threads = v.threads[:n-1]
		return th
	}
	th, cancel := v.L.NewThread()
	if cancel != nil {
		// NewThread derives a context from the VM's; the thread runs on
		// the VM's own instead (set before each run), registering nothing.
		cancel()
	}
	return th
}

// putThread keeps a thread whose callback returned, for the next one.
func (v *vm) putThread(th *glua.LState) {
	if len(v.threads) >= maxIdleThreads || v.closed {
		return
	}
	// A returned coroutine is dead with an empty stack: reviving it is
	// what starting a fresh one would do.
	th.Dead = false
	v.threads = append(v.threads, th)
}

// start runs fn(args...) as the callback name, resumably. finish gets its
// results when it ends, which may be now or after it waited.
func (v *vm) start(name string, c *router.Conn, fn *glua.LFunction, finish func([]glua.LValue, error), args ...glua.LValue) *resumable {
	p := v.spare
	if p != nil {
		v.spare = nil
		*p = resumable{}
	} else {
		p = new(resumable)
	}
	p.th, p.name, p.c, p.finish = v.thread(), name, c, finish
	v.step(p, fn, args...)
	return p
}

// step runs p until it ends or waits.
func (v *vm) step(p *resumable, fn *glua.LFunction, args ...glua.LValue) {
	v.cb, v.cur = p, p.c
	began := monotonic()
	v.begin()
	v.coroutines = p.coroutines
	p.th.SetContext(v.ctx)
	st, err, rets := v.L.Resume(p.th, fn, args...)
	timedOut := v.end()
	p.busy += monotonic() - began
	p.coroutines = v.coroutines
	v.cb, v.cur = nil, nil
	switch {
	case st == glua.ResumeYield && p.waiting:
		if v.suspended == nil {
			v.suspended = make(map[*resumable]struct{})
		}
		v.suspended[p] = struct{}{}
		if p.c != nil && !p.held {
			p.c.Hold()
			p.held = true
		}
		return
	case st == glua.ResumeYield:
		// coroutine.yield in the callback's own code: in a plain callback
		// it is an error, and so it is here.
		err = errors.New(p.name + ": attempt to yield from outside a coroutine")
	case st == glua.ResumeOK:
		v.putThread(p.th)
	}
	p.th = nil
	if err != nil {
		err = v.scriptError(err, timedOut)
	}
	if rec := v.recorder(p.name); rec != nil {
		rec.Record(p.busy, err)
	}
	v.end1(p, rets, err)
	// Done: the next callback may reuse it (start's caller reads it only
	// until then).
	v.spare = p
}

// end1 delivers p's outcome and lets its connection's held events run.
func (v *vm) end1(p *resumable, rets []glua.LValue, err error) {
	// Deferred: a panic in finish (a bug) must not leave the connection
	// held, its events (its Close above all) waiting for ever.
	defer func() {
		v.cur, v.ending = nil, ""
		if p.held {
			p.held = false
			p.c.Release()
		}
	}()
	v.cur, v.ending = p.c, p.name
	p.finish(rets, err)
}

// wake resumes p with its work's results; it runs on the lane.
func (v *vm) wake(p *resumable, res suspend.Resume) {
	if p.dropped || v.closed {
		return
	}
	delete(v.suspended, p)
	p.waiting = false
	// The thread is suspended, not running: the values pushed on its stack
	// are what its waiting function returns when it resumes.
	if res != nil {
		res(p.th)
	}
	v.step(p, nil)
}

// dropSuspended ends the callbacks still waiting when the VM closes: their
// work is cancelled (workCtx), their finish hears errDropped, and their
// connections' held events go on (to the handler now running the lane).
func (v *vm) dropSuspended() {
	v.stopWork()
	for p := range v.suspended {
		p.dropped = true
		p.th = nil
		v.end1(p, nil, errDropped)
	}
	v.suspended = nil
	v.threads = nil
}

// finishConn is the finish of a connection callback (v.finishConnFn, made
// once per VM: a callback allocates no closure for it). The callback and
// its connection are v.ending and v.cur (set by end1). An error closes the
// connection with 1011, as for a plain callback; a dropped callback is
// only logged.
func (v *vm) finishConn(_ []glua.LValue, err error) {
	name, c := v.ending, v.cur
	switch {
	case err == nil:
	case errors.Is(err, errDropped):
		v.logger().Warn("callback dropped while waiting", "callback", name, "reason", err.Error())
	default:
		v.fail(name, err)
		_ = c.Close(router.CloseInternalError, "internal error")
	}
}

// newWorkCtx makes the context the VM's waiting work runs under.
func (v *vm) newWorkCtx() {
	v.finishConnFn = v.finishConn
	v.workCtx, v.stopWork = context.WithCancel(context.Background())
}

package lua

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// vm is one Lua state, bound to one lane of its route. Everything in it
// runs on that lane's goroutine, except checkDeadline (the watchdog).
type vm struct {
	eng   *Engine
	route *Route
	lane  int
	L     *glua.LState

	loaded *glua.LTable // require cache
	mod    *glua.LTable // the table the script returned
	ws     *glua.LTable // the ws module

	onHandshake, onOpen, onMessage, onClose, onStart, onReload *glua.LFunction
	onHTTP                                                     *glua.LFunction // see onhttp.go

	recs []vmRecorder // the Observer's recorders, by callback (see recorder)

	origFormat, origCreate *glua.LFunction

	pats []*patState // idle pattern matchers (see vm.pat)

	kindText, kindBinary glua.LValue // boxed once: no allocation per message

	cur    *router.Conn // the connection whose callback is running
	timers timers
	closed bool

	// Deadline state, shared with the watchdog.
	wmu     sync.Mutex
	ctx     *vmCtx
	running bool // a call is running
	// seenAt is the watchdog's clock at the first tick that saw the call
	// running (0: not seen yet), and heapAtStart the heap then. The call's
	// time and the heap's growth are measured from there, on the
	// watchdog's own clock and samples: a watchdog delayed on a busy
	// machine finds its clock jumped, and a call that began just before it
	// woke must not look as old as the jump; nor must what ran before the
	// call count in its growth.
	seenAt      int64
	heapAtStart uint64
	timedOut    bool
	overMem     bool // stopped because the heap passed the memory limit
	// loading is set while the route script's top level runs (a route
	// being built), and aborted when Engine.StopLoading stopped it.
	loading, aborted bool

	coroutines int // created during the current callback

	// Resumable callbacks (see resume.go). resumable is fixed at build:
	// the route has a module that waits.
	resumable bool
	threads   []*glua.LState          // idle threads, for reuse
	cb        *resumable              // the resumable callback running now
	suspended map[*resumable]struct{} // callbacks waiting for their work
	workCtx   context.Context         // cancelled when the VM closes
	stopWork  context.CancelFunc
	spare     *resumable // a finished callback's record, for the next
	ending    string     // the callback whose finish runs (end1)
	// finishConnFn is finishConn as a value, made once.
	finishConnFn func([]glua.LValue, error)
	// brokerSuspends: connection callbacks suspend while the router
	// waits for a network broker (see brokerWait); set at Route.Start.
	brokerSuspends bool
	// brokerInFlight counts the broker waits running off the lane.
	brokerInFlight atomic.Int32
	// readSlots holds a token per broker read in flight (maxBrokerReads).
	readSlots chan struct{}

	// spent counts the bytes the builtins made for the running callback
	// (string.rep, gsub, table.concat, json.encode, ...): the memory
	// watchdog blames the callback that allocates, not whichever runs.
	spent atomic.Int64
}

// newVM builds a VM and runs the route script's top level in it.
func newVM(r *Route, lane int) (*vm, error) {
	v := &vm{
		eng:        r.eng,
		route:      r,
		lane:       lane,
		L:          glua.NewState(vmOptions),
		kindText:   glua.LString("text"),
		kindBinary: glua.LString("binary"),
	}
	v.timers.init(v)
	v.resumable = r.suspends()
	if v.resumable {
		v.newWorkCtx()
	}
	v.ctx = newVMCtx(v)
	v.L.SetContext(v.ctx)
	v.loaded = v.L.NewTable()
	if err := v.openSandbox(); err != nil {
		v.L.Close()
		return nil, err
	}
	v.openModules()

	// The watchdog must see the top level too: a script that loops at load
	// time is a script error, not a hung start.
	v.eng.addVM(v)
	v.wmu.Lock()
	v.loading = true
	stopping := v.eng.loadStop.Load()
	v.wmu.Unlock()
	if stopping {
		v.close()
		return nil, fmt.Errorf("route %s: %w", r.cfg.Pattern, ErrStopping)
	}
	v.L.Push(v.L.NewFunctionFromProto(r.proto))
	err := v.pcall(0, 1)
	v.wmu.Lock()
	v.loading = false
	v.wmu.Unlock()
	if err != nil {
		v.close()
		return nil, err
	}
	ret := v.L.Get(-1)
	v.L.Pop(1)
	mod, ok := ret.(*glua.LTable)
	if !ok {
		v.close()
		return nil, &ScriptError{File: r.display(r.cfg.Script), Msg: "the script must return a table of callbacks (got " + ret.Type().String() + ")"}
	}
	v.mod = mod
	for _, cb := range []struct {
		name string
		dst  **glua.LFunction
	}{
		{"on_handshake", &v.onHandshake},
		{"on_open", &v.onOpen},
		{"on_message", &v.onMessage},
		{"on_close", &v.onClose},
		{"on_start", &v.onStart},
		{"on_reload", &v.onReload},
		{"on_http", &v.onHTTP},
	} {
		switch f := mod.RawGetString(cb.name).(type) {
		case *glua.LFunction:
			*cb.dst = f
		case *glua.LNilType:
		default:
			v.close()
			return nil, &ScriptError{File: r.display(r.cfg.Script), Msg: cb.name + " must be a function (got " + f.Type().String() + ")"}
		}
	}
	return v, nil
}

// openModules installs every module as a global and in the require cache.
func (v *vm) openModules() {
	L := v.L
	install := func(name string, open glua.LGFunction) {
		L.Push(L.NewFunction(open))
		L.Call(0, 1)
		mod := L.Get(-1)
		L.Pop(1)
		L.SetGlobal(name, mod)
		v.loaded.RawSetString(name, mod)
	}
	open := func(m Module) {
		if rm, ok := m.(RouteModule); ok {
			route := v.route.cfg.Pattern
			install(m.Name(), func(L *glua.LState) int { return rm.OpenRoute(L, route) })
			return
		}
		install(m.Name(), m.Open)
	}
	for _, m := range v.eng.modules {
		open(m)
	}
	install("ws", v.openWS)
	install("timer", v.openTimer)
	install("log", v.openLog)
	install("time", v.openTime)
	for _, m := range v.route.cfg.Modules {
		open(m)
	}
}

// call runs a callback (the function and nargs arguments on the stack)
// and reports it to the engine's observer.
func (v *vm) call(callback string, nargs, nret int) error {
	rec := v.recorder(callback)
	if rec == nil {
		return v.pcall(nargs, nret)
	}
	start := monotonic()
	err := v.pcall(nargs, nret)
	rec.Record(monotonic()-start, err)
	return err
}

// recorder returns the recorder of callback's runs on this VM's route,
// nil without an Observer. The names are the engine's few callback kinds
// ("on_message", "timer", ...), so the VM keeps them in a short list.
func (v *vm) recorder(callback string) CallbackRecorder {
	for i := range v.recs {
		if v.recs[i].callback == callback {
			return v.recs[i].rec
		}
	}
	obs := v.eng.obs
	if obs == nil {
		return nil
	}
	var rec CallbackRecorder
	if ro, ok := obs.(RecorderObserver); ok {
		rec = ro.Recorder(v.route.cfg.Pattern, callback)
	} else {
		rec = observerRecorder{obs, v.route.cfg.Pattern, callback}
	}
	v.recs = append(v.recs, vmRecorder{callback, rec})
	return rec
}

// vmRecorder is one entry of vm.recs.
type vmRecorder struct {
	callback string
	rec      CallbackRecorder
}

// clockBase is where monotonic counts from.
var clockBase = time.Now()

// monotonic reads the monotonic clock: one clock read where time.Now
// makes two (the wall clock too), on a path timed twice per callback.
func monotonic() time.Duration { return time.Since(clockBase) }

// pcall calls the function and nargs arguments on the stack under the
// route's handler timeout, returning a *ScriptError on failure.
func (v *vm) pcall(nargs, nret int) error {
	v.begin()
	err := protectedCall(v.L, nargs, nret)
	timedOut := v.end()
	if err == nil {
		return nil
	}
	return v.scriptError(err, timedOut)
}

// scriptError turns a failed call's error into a *ScriptError, naming
// the watchdog's reason when it stopped the call.
func (v *vm) scriptError(err error, timedOut bool) error {
	se := scriptErrorFrom(err, v.route.display(v.route.cfg.Script))
	switch {
	case timedOut && v.aborted:
		se.Msg = "stopped: the server is shutting down"
		se.cause = ErrStopping
	case timedOut && v.overMem:
		se.Msg = "memory limit exceeded: the server's heap passed its limit while this callback made it grow"
		se.cause = ErrMemory
		// What the callback built is garbage now. The watchdog collects
		// it, at its next tick, on its own goroutine: a collection here
		// would hold up every connection of this lane for as long as
		// marking a big heap takes (seconds), and the next callback's
		// measure does not need it (a baseline that counts garbage leans
		// towards innocence).
		v.eng.gcSoon.Store(true)
	case timedOut:
		se.Msg = "handler timeout (" + v.route.cfg.HandlerTimeout.String() + ") exceeded"
		se.cause = ErrTimeout
	}
	return se
}

func (v *vm) begin() {
	v.wmu.Lock()
	if v.ctx.Err() != nil {
		// The last call was stopped; its context is spent.
		v.ctx = newVMCtx(v)
		v.L.SetContext(v.ctx)
	}
	v.timedOut, v.overMem, v.aborted = false, false, false
	v.running, v.seenAt = true, 0
	v.wmu.Unlock()
	v.coroutines = 0
	v.spent.Store(0)
}

// charge accounts n bytes that a builtin is about to allocate on behalf of
// the running callback, raising a Lua error when n alone passes the
// engine's string limit (what names the builtin: "string.rep", ...). Every
// builtin that builds a result whose size the script controls calls it
// before allocating.
func (v *vm) charge(L *glua.LState, what string, n int64) {
	if err := (vmCharger{v}).Charge(what, n); err != nil {
		L.RaiseError("%s", err.Error())
	}
}

func (v *vm) end() (timedOut bool) {
	v.wmu.Lock()
	v.running = false
	timedOut = v.timedOut
	v.wmu.Unlock()
	return timedOut
}

// checkDeadline runs on the watchdog every tick, with the heap it
// sampled: it stops the running callback when it is past its deadline.
func (v *vm) checkDeadline(now int64, heap uint64) {
	v.wmu.Lock()
	if v.running && v.seenAt == 0 {
		v.seenAt, v.heapAtStart = now, heap
	}
	if v.running && v.loading && v.eng.loadStop.Load() {
		v.aborted = true
		v.timedOut = true
		v.running = false
		v.ctx.cancel()
	} else if v.running && now-v.seenAt >= int64(v.route.cfg.HandlerTimeout) {
		v.timedOut = true
		v.running = false
		v.ctx.cancel()
	}
	v.wmu.Unlock()
}

// suspect runs on the watchdog when the heap is over the memory limit: it
// reports, for a callback that has run a whole tick (a runaway runs long;
// a legitimate callback that merely runs while the heap is high does
// not), what its builtins made and how much the heap grew since it began.
func (v *vm) suspect(now int64, heap uint64) (spent, growth uint64, ok bool) {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	if !v.running || v.seenAt == 0 || now-v.seenAt < int64(watchTick) {
		return 0, 0, false
	}
	if heap > v.heapAtStart {
		growth = heap - v.heapAtStart
	}
	return uint64(max(v.spent.Load(), 0)), growth, true
}

// stopForMemory stops the running callback as the cause of the heap
// passing the memory limit.
func (v *vm) stopForMemory() {
	v.wmu.Lock()
	if v.running {
		v.timedOut, v.overMem = true, true
		v.running = false
		v.ctx.cancel()
	}
	v.wmu.Unlock()
}

// logger returns the log tagged with the route and, inside a connection's
// callback, the connection.
func (v *vm) logger() *slog.Logger {
	l := v.eng.log.With("route", v.route.cfg.Pattern)
	if v.cur != nil {
		l = l.With("conn", v.cur.ID())
	}
	return l
}

// fail logs a script error; callers decide what it costs.
func (v *vm) fail(callback string, err error) {
	attrs := []any{"route", v.route.cfg.Pattern, "callback", callback, "error", err.Error()}
	var conn, tb string
	if v.cur != nil {
		conn = strings.Clone(v.cur.ID()) // kept with the error (see router.Conn.ID)
		attrs = append(attrs, "conn", conn)
	}
	if se, ok := err.(*ScriptError); ok && se.Traceback != "" {
		tb = nameCallback(se.Traceback, callback)
		attrs = append(attrs, "traceback", tb)
	}
	v.eng.log.Error("script error", attrs...)
	if eo, ok := v.eng.obs.(ErrorObserver); ok {
		eo.ScriptError(v.route.cfg.Pattern, callback, conn, err, tb)
	}
}

// nameCallback names the callback's own frame in a traceback. gopher-lua
// calls a function with no Lua caller "main chunk", which for a callback
// the router called points the reader at the script's top level instead
// of, say, on_message.
func nameCallback(traceback, callback string) string {
	name := "function '" + callback + "'"
	if callback == "timer" {
		name = "a timer callback"
	}
	return strings.ReplaceAll(traceback, ": in main chunk", ": in "+name)
}

// close releases the VM. It runs on the VM's lane (or before the VM was
// ever used).
func (v *vm) close() {
	if v.closed {
		return
	}
	v.closed = true
	v.timers.close()
	if v.resumable {
		v.dropSuspended()
	}
	v.eng.removeVM(v)
	v.L.Close()
}

// now is wall-clock seconds, as Lua sees time.
func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

package lua

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// Module is a Lua module plugin: json, crypto, store, or one of the
// project's users. Open is an lua.LGFunction that pushes the module table.
// A module must be safe to Open in many VMs and to call from them
// concurrently.
type Module interface {
	Name() string
	Open(L *glua.LState) int
}

// RouteModule is a Module whose table depends on the route it is opened
// for (the metrics module labels what a route records with the route).
type RouteModule interface {
	Name() string
	OpenRoute(L *glua.LState, route string) int
}

// Observer is told about every callback a script runs: the route, the
// callback ("on_message", "timer", ...), how long it took, and its error
// (a Lua error or a timeout; nil on success). The admin listener turns
// these into the handler duration histogram and error counters.
type Observer interface {
	Callback(route, callback string, d time.Duration, err error)
}

// Options configure an Engine.
type Options struct {
	Logger *slog.Logger // nil: slog.Default()
	// Modules are the plugin modules every script gets, by name, as
	// globals and through require. The engine adds ws, timer, log and time.
	Modules []Module
	// MaxStringSize bounds strings built by string.rep and friends; 0:
	// 64 MiB.
	MaxStringSize int
	// MaxTimers bounds the live timers of one VM; 0: 10000.
	MaxTimers int
	// Observer, when set, is told about every callback.
	Observer Observer
}

// Engine runs route scripts. One Engine serves every route of a process: it
// owns the watchdog that enforces handler timeouts and the module registry.
type Engine struct {
	log     *slog.Logger
	modules []Module
	maxStr  int
	maxTmr  int
	obs     Observer
	started time.Time

	// The watchdog's coarse clock, in nanoseconds since started, and the
	// VMs it watches.
	clock    atomic.Int64
	wmu      sync.Mutex
	watched  map[*vm]struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// watchTick is the watchdog's resolution: a runaway callback is stopped
// within handler_timeout plus this.
const watchTick = 10 * time.Millisecond

// New starts an engine; Close stops it.
func New(opts Options) *Engine {
	e := &Engine{
		log:     opts.Logger,
		modules: opts.Modules,
		maxStr:  opts.MaxStringSize,
		maxTmr:  opts.MaxTimers,
		obs:     opts.Observer,
		started: time.Now(),
		watched: make(map[*vm]struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.maxStr <= 0 {
		e.maxStr = 64 << 20
	}
	if e.maxTmr <= 0 {
		e.maxTmr = 10000
	}
	go e.watch()
	return e
}

// Close stops the watchdog. Routes must be stopped first.
func (e *Engine) Close() {
	e.stopOnce.Do(func() { close(e.stop) })
	<-e.done
}

// now returns the coarse clock: good to a watch tick, and free.
func (e *Engine) now() int64 { return e.clock.Load() }

func (e *Engine) watch() {
	defer close(e.done)
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			n := int64(now.Sub(e.started))
			e.clock.Store(n)
			e.wmu.Lock()
			for v := range e.watched {
				v.checkDeadline(n)
			}
			e.wmu.Unlock()
		}
	}
}

func (e *Engine) addVM(v *vm) {
	e.wmu.Lock()
	e.watched[v] = struct{}{}
	e.wmu.Unlock()
}

func (e *Engine) removeVM(v *vm) {
	e.wmu.Lock()
	delete(e.watched, v)
	e.wmu.Unlock()
}

package lua

import (
	"crypto/rand"
	"log/slog"
	"runtime"
	"runtime/metrics"
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

// ReservedName reports whether a module may not take name: a global of
// the sandbox (string, require, ...) or a module the engine adds itself
// (ws, timer, log, time).
func ReservedName(name string) bool { return reserved[name] }

var reserved = map[string]bool{
	"ws": true, "timer": true, "log": true, "time": true,
	"_G": true, "_VERSION": true, "assert": true, "collectgarbage": true, "coroutine": true,
	"debug": true, "dofile": true, "error": true, "getfenv": true, "getmetatable": true,
	"io": true, "ipairs": true, "load": true, "loadfile": true, "loadstring": true,
	"math": true, "module": true, "newproxy": true, "next": true, "os": true,
	"package": true, "pairs": true, "pcall": true, "print": true, "rawequal": true,
	"rawget": true, "rawlen": true, "rawset": true, "require": true, "select": true,
	"setfenv": true, "setmetatable": true, "string": true, "table": true,
	"tonumber": true, "tostring": true, "type": true, "unpack": true, "xpcall": true,
	"channel": true,
	// Keywords cannot name a global a script can write.
	"and": true, "break": true, "do": true, "else": true, "elseif": true, "end": true,
	"false": true, "for": true, "function": true, "goto": true, "if": true, "in": true,
	"local": true, "nil": true, "not": true, "or": true, "repeat": true, "return": true,
	"then": true, "true": true, "until": true, "while": true,
}

// Observer is told about every callback a script runs: the route, the
// callback ("on_message", "timer", ...), how long it took, and its error
// (a Lua error or a timeout; nil on success). The admin listener turns
// these into the handler duration histogram and error counters.
type Observer interface {
	Callback(route, callback string, d time.Duration, err error)
}

// RecorderObserver is an Observer that hands out a CallbackRecorder for
// one (route, callback) pair. A VM asks once per pair and keeps it, so
// that a callback's run is recorded without the Observer looking the pair
// up each time (two strings hashed, on every message).
type RecorderObserver interface {
	Observer
	Recorder(route, callback string) CallbackRecorder
}

// CallbackRecorder records the runs of one (route, callback) pair, as
// Observer.Callback would. It must be safe for concurrent use: a route's
// VMs (one per lane) may share a pair's recorder.
type CallbackRecorder interface {
	Record(d time.Duration, err error)
}

// observerRecorder is the CallbackRecorder of an Observer that does not
// hand them out.
type observerRecorder struct {
	obs             Observer
	route, callback string
}

func (r observerRecorder) Record(d time.Duration, err error) {
	r.obs.Callback(r.route, r.callback, d, err)
}

// ErrorObserver is an Observer that is also told about each script error
// the engine logs ("script error"): the route, the callback, the
// connection it ran for ("" outside one), the error and, for a runtime
// error, the Lua traceback with the callback's frame named. The admin
// dashboard keeps the latest of them.
type ErrorObserver interface {
	Observer
	ScriptError(route, callback, conn string, err error, traceback string)
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
	// MaxTimers bounds the live timers of one VM (started and neither
	// fired, for timer.after, nor cancelled); 0: 1000.
	MaxTimers int
	// Observer, when set, is told about every callback.
	Observer Observer
	// MemoryLimit stops the callbacks that are running when the process's
	// heap grows past it, as a runaway script would make it (a loop
	// concatenating strings, a table that keeps growing). 0 or negative:
	// no limit, as scripts.memory_limit = 0. It is a safety net that fires
	// after the fact (the watchdog samples the heap every 10ms, and
	// collects garbage when the heap is over the limit), not an allocator
	// quota; and the heap is the whole process's, so a program that
	// embeds moonwire should set it only if moonwire is what the process
	// runs.
	MemoryLimit int64
	// MaxCoroutines bounds the coroutines one callback may create; each
	// is a full Lua state. 0: 1000.
	MaxCoroutines int
}

// Engine runs route scripts. One Engine serves every route of a process: it
// owns the watchdog that enforces handler timeouts and the module registry.
type Engine struct {
	log     *slog.Logger
	modules []Module
	maxStr  int
	maxTmr  int
	maxCo   int
	memMax  int64
	lastGC  time.Time // when the watchdog last asked for a collection
	// gcRunning is set while a collection the watchdog asked for runs;
	// gcDone brings the heap it left. Only the watchdog goroutine touches
	// gcRunning.
	gcRunning bool
	gcDone    chan uint64
	// gcSoon is set by a VM whose callback was stopped for memory, once
	// that callback has unwound: what it built is garbage, and the next
	// tick over the limit collects it without waiting out the gap
	// between collections (see sampleHeap).
	gcSoon atomic.Bool
	// lastWarn is when the watchdog last said the heap is over the limit
	// with no one to blame; lastConvict when it last stopped a callback.
	lastWarn, lastConvict time.Time
	// versionKey salts route versions (see Route.computeVersion).
	versionKey [32]byte
	// heap is the watchdog's last sample of the heap (heapBytes), which a
	// callback notes when it starts.
	heap    atomic.Uint64
	obs     Observer
	started time.Time
	// timerClock is the script timers' time source: wallClock, or a
	// test's.
	timerClock timerClock

	// loadStop is set by StopLoading: no route script's top level runs
	// any more.
	loadStop atomic.Bool

	// work counts the goroutines running suspended callbacks' work
	// (resume.go); Close waits for them.
	work sync.WaitGroup

	// The VMs the watchdog watches.
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
		maxCo:   opts.MaxCoroutines,
		memMax:  opts.MemoryLimit,
		obs:     opts.Observer,
		started: time.Now(),
		watched: make(map[*vm]struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		gcDone:  make(chan uint64, 1),

		timerClock: wallClock,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	_, _ = rand.Read(e.versionKey[:])
	if e.maxStr <= 0 {
		e.maxStr = 64 << 20
	}
	if e.maxTmr <= 0 {
		e.maxTmr = 1000
	}
	if e.maxCo <= 0 {
		e.maxCo = 1000
	}
	if e.memMax < 0 {
		e.memMax = 0
	}
	go e.watch()
	return e
}

// MemoryLimit returns the heap size past which the engine stops the
// callbacks making it grow; 0: none.
func (e *Engine) MemoryLimit() int64 { return e.memMax }

// LimitArrays caps the array part of every gopher-lua table in the
// process at 2^20 slots (gopher-lua's MaxArrayIndex, a package variable;
// larger integer keys go to the hash part, where they cost what they
// hold). gopher-lua keeps integer keys below MaxArrayIndex (64M by
// default) in a slice and fills the gap up to a new key with nils, so
// `t[60000000] = 1` allocates a gigabyte in one instruction, before any
// deadline can fire: a script that indexes a table with a number a peer
// sent is an attack surface. Creating an Engine does not call it, since
// it changes every gopher-lua state of the process, moonwire's or not:
// the moonwire command does, and so should a program that embeds
// moonwire and runs no other Lua. The one visible difference: `#t` of a
// table past 2^20 elements counts only its array part.
func LimitArrays() {
	limitArrays.Do(func() { glua.MaxArrayIndex = min(glua.MaxArrayIndex, maxArrayIndex) })
}

// maxArrayIndex caps the array part of Lua tables: at most 16 MiB of nils
// for a sparse key.
const maxArrayIndex = 1 << 20

var limitArrays sync.Once

// StopLoading stops route builds for good: a script's top level that is
// running now is stopped within a watchdog tick (its NewRoute returns an
// error whose cause is ErrStopping), and NewRoute fails from now on.
// Callbacks of routes already built are not touched. A shutdown calls it
// first, so that a reload building slow scripts (each top level may run
// up to its handler timeout, on every VM) does not hold the shutdown up.
func (e *Engine) StopLoading() { e.loadStop.Store(true) }

// Close stops the watchdog. Routes must be stopped first.
func (e *Engine) Close() {
	e.stopOnce.Do(func() { close(e.stop) })
	<-e.done
	// Stopped routes cancelled their work; it ends promptly.
	e.work.Wait()
}

func (e *Engine) watch() {
	defer close(e.done)
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			n := e.tickOf(now)
			over := e.sampleHeap(now)
			heap := e.heap.Load()
			e.wmu.Lock()
			for v := range e.watched {
				v.checkDeadline(n, heap)
			}
			if over {
				e.blame(n, now, false)
			}
			e.wmu.Unlock()
		case heap := <-e.gcDone:
			e.gcRunning = false
			e.heap.Store(heap)
			if heap > uint64(e.memMax) {
				now := time.Now()
				e.wmu.Lock()
				e.blame(e.tickOf(now), now, true)
				e.wmu.Unlock()
			}
		}
	}
}

// tickOf returns the watchdog's clock for a time: never 0, which a VM's
// seenAt uses for "not seen".
func (e *Engine) tickOf(now time.Time) int64 {
	return int64(now.Sub(e.started)) + 1
}

// blame stops the callbacks that made the heap pass the memory limit. The
// heap is the process's, so the running callbacks are suspects, not
// culprits: a script that filled the store an hour ago, or another
// route's runaway, must not cost an innocent callback that merely runs
// now. Among the callbacks running for a tick or more it stops, first,
// those whose builtins made at least the threshold, an eighth of the
// limit and 16 MiB at least (string.rep, gsub, json.encode ... account
// what they make, see vm.charge); failing that, those during which the
// heap grew by at least the threshold (what Lua code
// allocates itself, `..` above all, is not accounted).
//
// Growth is judged on a heap figure fresh from a collection (live): a
// callback's garbage (every number a Lua loop computes is boxed) is not
// memory it holds, and its baseline, taken before that collection, counts
// garbage too, so the comparison leans towards innocence. A collection
// can take seconds to finish while a runaway doubles a string with every
// instruction (it cannot start until the copy in progress ends), so
// growth past runawayBytes is enough without one: the collector lets the
// heap grow past the live heap by GOGC percent before it collects, so
// garbage alone reaches that only when the heap's live part is already
// twice the limit. When no one is found on a live figure, the memory is
// held by something that is not running: nothing is stopped, and a
// warning says so. e.wmu must be held.
func (e *Engine) blame(now int64, wall time.Time, live bool) {
	threshold := max(uint64(e.memMax)/8, 16<<20)
	runaway := e.runawayBytes()
	heap := e.heap.Load()
	var spenders, growers []*vm
	for v := range e.watched {
		spent, growth, ok := v.suspect(now, heap)
		if !ok {
			continue
		}
		if spent >= threshold {
			spenders = append(spenders, v)
		}
		if (live && growth >= threshold) || (runaway > 0 && growth >= runaway) {
			growers = append(growers, v)
		}
	}
	culprits := spenders
	if len(culprits) == 0 {
		culprits = growers
	}
	for _, v := range culprits {
		v.stopForMemory()
	}
	if len(culprits) > 0 {
		e.lastConvict = wall
	}
	// A callback stopped while the collection ran still holds what it
	// made until it unwinds: that is not memory held by nothing.
	if len(culprits) == 0 && live && e.lastConvict.Before(e.lastGC) && wall.Sub(e.lastWarn) > 10*time.Second {
		e.lastWarn = wall
		e.log.Warn("the heap is over scripts.memory_limit, but no running callback is making it grow; nothing stopped",
			"heap_bytes", heap, "limit_bytes", e.memMax)
	}
}

// runawayBytes is the growth during one callback that convicts it without
// a collection: twice the limit, scaled up when GOGC lets garbage pile up
// further than the default 100 percent; 0 (never) with GOGC=off.
func (e *Engine) runawayBytes() uint64 {
	gogc := readMetric(gogcMetric)
	if gogc == 0 || gogc > 1<<20 { // off reads as a huge or zero figure
		return 0
	}
	return 2 * uint64(e.memMax) * max(1, gogc/100)
}

// sampleHeap records the heap and reports whether it is past the memory
// limit. The heap counts garbage not yet collected, so before blaming on
// growth alone the watchdog asks for a collection, at most once a second
// (a heap legitimately over the limit must not turn into a collection
// every tick), or ten times a second once the heap is at twice the limit,
// which a runaway reaches within moments. The collection runs on its own
// goroutine: it waits for every goroutine to reach a safe point, which a
// callback copying a huge string does not for a long while, and the
// handler deadlines must not wait with it; its result arrives on gcDone.
// A callback stopped for memory asks for the next collection at once
// (gcSoon), since what it built has just become garbage.
func (e *Engine) sampleHeap(now time.Time) (over bool) {
	if e.memMax <= 0 {
		return false
	}
	heap := heapBytes()
	e.heap.Store(heap)
	if heap <= uint64(e.memMax) {
		e.gcSoon.Store(false) // nothing to hurry: the heap is under the limit
		return false
	}
	gap := time.Second
	if heap > 2*uint64(e.memMax) {
		gap = 100 * time.Millisecond
	}
	if !e.gcRunning && (now.Sub(e.lastGC) >= gap || e.gcSoon.Load()) {
		e.gcSoon.Store(false)
		e.lastGC, e.gcRunning = now, true
		go func() {
			runtime.GC()
			e.gcDone <- heapBytes()
		}()
	}
	return true
}

const (
	heapMetric = "/memory/classes/heap/objects:bytes"
	gogcMetric = "/gc/gogc:percent"
)

// heapBytes returns the bytes of live and not yet swept heap objects; it
// does not stop the world, so sampling it every tick is cheap.
func heapBytes() uint64 { return readMetric(heapMetric) }

// readMetric reads one runtime/metrics figure; 0 when the runtime does
// not offer it.
func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
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

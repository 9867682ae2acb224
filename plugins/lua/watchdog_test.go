package lua

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// TestWatchdogLateTickIsNotATimeout: on a busy machine the watchdog can
// wake long after its tick; a callback that began just before it woke
// must not look as old as the watchdog's jump. Its time counts from the
// first tick that saw it running, so it is stopped one handler timeout
// after that, not at once.
func TestWatchdogLateTickIsNotATimeout(t *testing.T) {
	t.Parallel()
	v := &vm{route: &Route{cfg: RouteConfig{HandlerTimeout: time.Second}}, ctx: newVMCtx(nil)}
	v.begin()
	late := int64(5 * time.Second) // the watchdog's first tick in five seconds
	v.checkDeadline(late, 0)
	if v.timedOut || v.ctx.Err() != nil {
		t.Fatal("a callback first seen by a late tick was stopped at once")
	}
	v.checkDeadline(late+int64(999*time.Millisecond), 0)
	if v.timedOut {
		t.Fatal("stopped before a handler timeout had passed since it was seen")
	}
	v.checkDeadline(late+int64(time.Second), 0)
	if !v.timedOut || v.ctx.Err() == nil {
		t.Fatal("not stopped a handler timeout after it was first seen")
	}
	if v.end() != true {
		t.Fatal("end does not report the timeout")
	}
}

// TestWatchdogConvictsARunawayWithoutACollection: a collection can take
// seconds while a callback doubles a string each instruction, so growth
// past twice the limit (at the default GOGC) convicts without waiting for
// one, while growth that garbage could explain waits for a live figure.
// And neither rule touches a callback that has not run for a tick.
func TestWatchdogConvictsARunawayWithoutACollection(t *testing.T) {
	if readMetric(gogcMetric) != 100 {
		t.Skip("the bound scales with GOGC; this test assumes the default")
	}
	const limit = 100 << 20
	e := &Engine{memMax: limit, watched: map[*vm]struct{}{}, log: slog.New(slog.DiscardHandler)}
	start := func(tick int64, heapAtStart uint64) *vm {
		v := &vm{route: &Route{cfg: RouteConfig{HandlerTimeout: time.Hour}}, ctx: newVMCtx(nil)}
		v.begin()
		v.checkDeadline(tick, heapAtStart)
		e.watched[v] = struct{}{}
		return v
	}
	now := int64(1 + watchTick)

	grower := start(1, 10<<20)
	e.heap.Store(10<<20 + 2*limit - 1) // garbage could explain it
	e.blame(now, time.Now(), false)
	if grower.ctx.Err() != nil {
		t.Fatal("stopped on growth below twice the limit without a collection")
	}
	e.blame(now, time.Now(), true) // the same figure, fresh from a collection
	if grower.ctx.Err() == nil || !grower.overMem {
		t.Fatal("a callback during which the live heap grew past the limit was not stopped")
	}
	delete(e.watched, grower)

	runaway := start(1, 10<<20)
	fresh := start(now-1, 10<<20) // began less than a tick ago
	e.heap.Store(10<<20 + 2*limit)
	e.blame(now, time.Now(), false)
	if runaway.ctx.Err() == nil || !runaway.overMem {
		t.Fatal("growth of twice the limit did not convict without a collection")
	}
	if fresh.ctx.Err() != nil {
		t.Fatal("a callback running for less than a tick was stopped")
	}
}

// TestMemoryConvictionDoesNotCollectOnTheLane: a callback stopped for
// memory leaves the collection of what it built to the watchdog's
// goroutine. vm.pcall used to run runtime.GC itself, on the lane, which
// held up every connection of the lane for as long as marking the heap
// took. Not parallel: it counts the process's forced collections, and
// retries in case some other goroutine forced one meanwhile.
func TestMemoryConvictionDoesNotCollectOnTheLane(t *testing.T) {
	// No memory limit: the watchdog itself never collects.
	v := newTestVM(t, Options{MemoryLimit: -1}, time.Minute)
	v.L.SetGlobal("convict", v.L.NewFunction(func(L *glua.LState) int {
		v.stopForMemory() // as the watchdog's blame does
		return 0
	}))
	const forcedMetric = "/gc/cycles/forced:gc-cycles"
	for attempt := 1; ; attempt++ {
		before := readMetric(forcedMetric)
		_, err := runLua(v, `convict() while true do end`)
		forced := readMetric(forcedMetric) - before
		if !errors.Is(err, ErrMemory) {
			t.Fatalf("the callback ended with %v, want ErrMemory", err)
		}
		if forced == 0 {
			break
		}
		if attempt == 3 {
			t.Fatalf("%d collections forced while the stopped callback returned", forced)
		}
	}
	if !v.eng.gcSoon.Load() {
		t.Fatal("the watchdog was not asked to collect")
	}
}

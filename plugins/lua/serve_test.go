package lua

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// served is a route started on a router server that listens nowhere: its
// lanes run, so timers fire, and the test reaches a VM's state on its lane
// with onLane.
type served struct {
	eng   *Engine
	route *Route
	srv   *router.Server
	rt    *router.Route
	// hits counts the script's probe.hit() calls.
	hits *atomic.Int64
}

// serve starts script as the only route, with opts (a nil Logger discards
// the log) and, when clock is not nil, its timers on clock; it stops the
// route when the test ends unless the test stops it first. The script
// gets the probe module.
func serve(tb testing.TB, script string, opts Options, clock *fakeClock) *served {
	tb.Helper()
	hits := new(atomic.Int64)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Modules = append(opts.Modules, probe{hits, clock})
	e := New(opts)
	if clock != nil {
		e.timerClock = clock.timerClock()
	}
	r, err := e.NewRoute(RouteConfig{Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte(script)}}, Script: "t.lua",
		HandlerTimeout: 10 * time.Second}) // generous: the race detector on a loaded machine is slow
	if err != nil {
		e.Close()
		tb.Fatal(err)
	}
	srv, err := router.New(router.Config{
		Routes:   []router.RouteSpec{{Pattern: "/t", Handler: r}},
		Logger:   opts.Logger,
		NoPoller: true,
	})
	if err != nil {
		r.Release()
		e.Close()
		tb.Fatal(err)
	}
	s := &served{eng: e, route: r, srv: srv, rt: srv.Routes()[0], hits: hits}
	tb.Cleanup(s.stop)
	return s
}

// stop stops the server (the route's VMs close on their lanes, which then
// exit) and the engine. It may run more than once.
func (s *served) stop() {
	_ = s.srv.Close()
	s.eng.Close()
}

// onLane runs fn on lane 0, with its VM, behind what is queued there, and
// waits for it.
func (s *served) onLane(tb testing.TB, fn func(v *vm)) {
	tb.Helper()
	done := make(chan struct{})
	if !s.rt.Post(0, func() { defer close(done); fn(s.route.vms[0]) }) {
		tb.Fatal("the route has stopped")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Fatal("the lane did not run the task")
	}
}

// seen returns the strings the script's module table keeps in its seen
// array, joined with commas.
func (s *served) seen(tb testing.TB) string {
	tb.Helper()
	var parts []string
	s.onLane(tb, func(v *vm) {
		if t, ok := v.mod.RawGetString("seen").(*glua.LTable); ok {
			for i := 1; i <= t.Len(); i++ {
				parts = append(parts, t.RawGetInt(i).String())
			}
		}
	})
	return strings.Join(parts, ",")
}

// waitFor polls cond until it holds, failing the test after ten seconds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d := time.Millisecond; !cond(); d = min(2*d, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(d)
	}
}

// probe is the test scripts' window to Go: probe.hit() counts, and
// probe.advance(seconds) moves the fake clock (a callback that takes that
// long).
type probe struct {
	hits  *atomic.Int64
	clock *fakeClock
}

func (probe) Name() string { return "probe" }

func (p probe) Open(L *glua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"hit": func(L *glua.LState) int { p.hits.Add(1); return 0 },
		"advance": func(L *glua.LState) int {
			p.clock.advance(time.Duration(float64(L.CheckNumber(1)) * float64(time.Second)))
			return 0
		},
	}))
	return 1
}

// fakeClock stands behind the timerClock seam for tests that need to
// know which timers share a batch: its time moves only when the test
// says, and its alarms ring then, on the caller's goroutine.
type fakeClock struct {
	mu     sync.Mutex
	start  time.Time
	now    time.Time
	alarms []*fakeAlarm
}

func newFakeClock() *fakeClock {
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &fakeClock{start: t, now: t}
}

func (c *fakeClock) timerClock() timerClock {
	return timerClock{now: c.Now, afterFunc: c.afterFunc}
}

// Now is the clock's time.
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) alarm {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := &fakeAlarm{c: c, f: f, at: c.now.Add(d), set: true}
	c.alarms = append(c.alarms, a)
	return a
}

// advance moves the clock by d and rings the alarms due by then.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var ring []func()
	for _, a := range c.alarms {
		if a.set && !a.at.After(c.now) {
			a.set = false
			ring = append(ring, a.f)
		}
	}
	c.mu.Unlock()
	for _, f := range ring {
		f()
	}
}

// state returns how many alarms were made and, for those set, when they
// ring (since the clock's start).
func (c *fakeClock) state() (made int, set []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.alarms {
		if a.set {
			set = append(set, a.at.Sub(c.start))
		}
	}
	return len(c.alarms), set
}

type fakeAlarm struct {
	c   *fakeClock
	f   func()
	at  time.Time
	set bool
}

func (a *fakeAlarm) Reset(d time.Duration) bool {
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	was := a.set
	a.at, a.set = a.c.now.Add(d), true
	return was
}

func (a *fakeAlarm) Stop() bool {
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	was := a.set
	a.set = false
	return was
}

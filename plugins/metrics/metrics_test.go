package metrics

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

// newState returns a sandbox state of route with the module opened for
// route by the engine's own code: the global `metrics`, and require's.
// Scripts also get value(name, route) -> number|nil and help(name) ->
// string|nil, read through gather, and type(name) -> "counter"|"gauge"|nil
// as kind.
func newState(t testing.TB, m *Module, route string, gather prometheus.Gatherer) *lua.LState {
	t.Helper()
	L := luatest.NewRouteState(t, route, m)
	if gather != nil {
		L.SetGlobal("value", L.NewFunction(func(L *lua.LState) int {
			v, ok := lookup(t, gather, L.CheckString(1), L.CheckString(2))
			if !ok {
				L.Push(lua.LNil)
			} else {
				L.Push(lua.LNumber(v))
			}
			return 1
		}))
		L.SetGlobal("help", L.NewFunction(func(L *lua.LState) int {
			if help, _, _, ok := describe(t, gather, L.CheckString(1)); ok {
				L.Push(lua.LString(help))
			} else {
				L.Push(lua.LNil)
			}
			return 1
		}))
		L.SetGlobal("kind", L.NewFunction(func(L *lua.LState) int {
			if _, typ, _, ok := describe(t, gather, L.CheckString(1)); ok {
				L.Push(lua.LString(typ))
			} else {
				L.Push(lua.LNil)
			}
			return 1
		}))
	}
	return L
}

// describe returns the help and type ("counter", "gauge") of the family
// called name, or ok == false.
func describe(t testing.TB, g prometheus.Gatherer, name string) (help, typ string, series int, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Errorf("gather: %v", err)
		return "", "", 0, false
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp(), strings.ToLower(mf.GetType().String()), len(mf.GetMetric()), true
		}
	}
	return "", "", 0, false
}

// lookup returns the value of the series name{route=route}.
func lookup(t testing.TB, g prometheus.Gatherer, name, route string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Errorf("gather: %v", err)
		return 0, false
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := m.GetLabel()
			if len(labels) != 1 || labels[0].GetName() != RouteLabel {
				t.Errorf("%s: labels %v, want only %s", name, labels, RouteLabel)
				continue
			}
			if labels[0].GetValue() != route {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			}
		}
	}
	return 0, false
}

const prelude = luatest.Asserts

func run(t testing.TB, L *lua.LState, code string) {
	t.Helper()
	luatest.Run(t, L, prelude, code)
}

// TestLua runs one script per case in a single VM of route "/r".
func TestLua(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		code string
	}{
		{"counter inc", Options{}, `
			local c = metrics.counter("hits_total")
			eq(value("hits_total", "/r"), 0, "registered at zero")
			eq(kind("hits_total"), "counter")
			c:inc()
			eq(value("hits_total", "/r"), 1)
			c:inc(2.5)
			c:inc(0)
			c:inc(nil)
			eq(value("hits_total", "/r"), 4.5)
			c:inc("2")
			eq(value("hits_total", "/r"), 6.5, "numeric string")`},
		{"gauge set add inc dec", Options{}, `
			local g = metrics.gauge("queue_depth")
			eq(kind("queue_depth"), "gauge")
			eq(value("queue_depth", "/r"), 0)
			g:set(10)
			eq(value("queue_depth", "/r"), 10)
			g:add(-2.5)
			eq(value("queue_depth", "/r"), 7.5)
			g:add(0.5)
			g:inc()
			eq(value("queue_depth", "/r"), 9)
			g:dec() g:dec()
			eq(value("queue_depth", "/r"), 7)
			g:set(-3)
			eq(value("queue_depth", "/r"), -3)
			g:set(0/0)
			eq(value("queue_depth", "/r"), 0/0, "NaN is a gauge value")
			g:set(1/0)
			eq(value("queue_depth", "/r"), 1/0, "+Inf is a gauge value")`},
		{"same object in one VM", Options{}, `
			local a = metrics.counter("a_total", "first")
			eq(metrics.counter("a_total"), a, "second call")
			eq(metrics.counter("a_total", "other help"), a, "with help")
			eq(metrics.gauge("g"), metrics.gauge("g"))`},
		{"help", Options{}, `
			metrics.counter("h1_total")
			eq(help("h1_total"), "Defined by a moonwire script.", "default")
			metrics.counter("h2_total", "")
			eq(help("h2_total"), "Defined by a moonwire script.", "empty")
			metrics.gauge("h3", "Things in flight.")
			metrics.gauge("h3", "Ignored.")
			eq(help("h3"), "Things in flight.", "first wins")
			raises("bad argument #2 to counter (string expected, got table)", function() metrics.counter("h4_total", {}) end)
			raises("help must be valid UTF-8", metrics.counter, "h5_total", "\255")
			eq(help("h5_total"), nil, "not defined")`},
		{"name syntax", Options{}, `
			for _, name in ipairs({"a", "_", ":", "a:b_C9", "_total", "Go_x", "goroutines", "processing_ms", "moonwire"}) do
				metrics.gauge(name)
				eq(value(name, "/r"), 0, name)
			end
			for _, name in ipairs({"", "9lives", "a-b", "a b", "a.b", "caf\195\169", "a\0b", "a{b}"}) do
				raises("bad argument #1 to counter (metrics: invalid name", function() metrics.counter(name) end)
				raises("must match [a-zA-Z_:][a-zA-Z0-9_:]*)", metrics.gauge, name)
			end
			raises("bad argument #1 to counter (string expected, got nil)", function() metrics.counter() end)
			raises("invalid name \"42\"", metrics.counter, 42)`},
		{"reserved prefixes", Options{}, `
			for _, p in ipairs({"moonwire_", "go_", "process_", "promhttp_"}) do
				raises('metrics: name "' .. p .. 'x" uses the reserved prefix "' .. p .. '"', metrics.counter, p .. "x")
				raises("reserved prefix", metrics.gauge, p .. "x")
				eq(kind(p .. "x"), nil)
			end`},
		{"type conflicts", Options{}, `
			metrics.counter("x")
			raises("metrics: x is already a counter", metrics.gauge, "x")
			metrics.gauge("y")
			raises("metrics: y is already a gauge", metrics.counter, "y")
			eq(kind("x"), "counter")
			eq(kind("y"), "gauge")`},
		{"max metrics", Options{MaxMetrics: 2}, `
			metrics.counter("one_total")
			metrics.gauge("two")
			raises("metrics: too many metrics (limit 2)", metrics.counter, "three_total")
			raises("metrics: too many metrics (limit 2)", metrics.gauge, "three")
			metrics.counter("one_total"):inc()
			metrics.gauge("two"):inc()
			eq(value("one_total", "/r"), 1)
			raises("metrics: two is already a gauge", metrics.counter, "two")`},
		{"bad counter increments", Options{}, `
			local c = metrics.counter("c_total")
			c:inc(3)
			raises("bad argument #2 to inc (metrics: counter increment must be a finite number >= 0)", function() c:inc(-1) end)
			raises("finite number >= 0", c.inc, c, -0.001)
			raises("finite number >= 0", c.inc, c, 0/0)
			raises("finite number >= 0", c.inc, c, 1/0)
			raises("finite number >= 0", c.inc, c, -1/0)
			raises("bad argument #2 to inc (number expected, got string)", function() c:inc("x") end)
			raises("bad argument #2 to inc (number expected, got boolean)", function() c:inc(false) end)
			c:inc(-0)
			eq(value("c_total", "/r"), 3, "unchanged")`},
		{"bad gauge arguments", Options{}, `
			local g = metrics.gauge("g")
			g:set(5)
			raises("bad argument #2 to add (metrics: gauge increment must be a finite number)", function() g:add(0/0) end)
			raises("must be a finite number", g.add, g, 1/0)
			raises("bad argument #2 to add (number expected, got nil)", function() g:add() end)
			raises("bad argument #2 to set (number expected, got nil)", function() g:set() end)
			raises("bad argument #2 to set (number expected, got boolean)", function() g:set(true) end)
			raises("bad argument #2 to set (number expected, got string)", function() g:set("x") end)
			g:add("1")
			eq(value("g", "/r"), 6, "numeric string")
			g:set("5")
			eq(value("g", "/r"), 5, "unchanged")`},
		{"methods need their object", Options{}, `
			local c, g = metrics.counter("c_total"), metrics.gauge("g")
			raises("bad argument #1 to inc (counter expected (call it as c:inc()))", function() c.inc() end)
			raises("counter expected", c.inc, g)
			raises("counter expected", c.inc, 1)
			raises("bad argument #1 to set (gauge expected (call it as g:set(v)))", function() g.set(1) end)
			raises("gauge expected", g.inc, c)
			raises("gauge expected", g.dec, {})
			eq(type(c), "userdata")
			eq(c.set, nil, "a counter cannot be set")
			raises("attempt to call a non-function object", function() c:set(1) end)
			raises("attempt to index", function() c.x = 1 end)`},
		{"tostring", Options{}, `
			eq(tostring(metrics.counter("t_total")), 'counter t_total{route="/r"}')
			eq(tostring(metrics.gauge("t")), 'gauge t{route="/r"}')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			L := newState(t, New(reg, tt.opts), "/r", reg)
			run(t, L, tt.code)
		})
	}
}

// TestSharing checks that VMs and routes share one family per name, and
// that values live in the Module, not the VM.
func TestSharing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// steps run in order; each in the VM with the given index, opened
		// for routes[index].
		routes []string
		steps  []step
	}{
		{"two VMs of one route share a series", []string{"/chat", "/chat"}, []step{
			{0, `metrics.counter("msgs_total", "Messages."):inc()`},
			{1, `metrics.counter("msgs_total", "Other."):inc(2)`},
			{0, `eq(value("msgs_total", "/chat"), 3) eq(help("msgs_total"), "Messages.")`},
			{1, `metrics.gauge("users"):set(4)`},
			{0, `metrics.gauge("users"):dec()`},
			{1, `eq(value("users", "/chat"), 3)`},
		}},
		{"two routes are two series of one family", []string{"/a", "/b/{id}"}, []step{
			{0, `metrics.counter("msgs_total"):inc()`},
			{1, `metrics.counter("msgs_total"):inc(5)`},
			{0, `eq(value("msgs_total", "/a"), 1) eq(value("msgs_total", "/b/{id}"), 5)`},
			{0, `metrics.gauge("users"):set(1)`},
			{1, `eq(value("users", "/b/{id}"), nil, "series appears when its route touches it")`},
			{1, `metrics.gauge("users"):add(-1)`},
			{0, `eq(value("users", "/b/{id}"), -1) eq(value("users", "/a"), 1)`},
		}},
		{"type conflicts across routes", []string{"/a", "/b"}, []step{
			{0, `metrics.counter("x")`},
			{1, `raises("metrics: x is already a counter", metrics.gauge, "x")`},
			{1, `metrics.gauge("y")`},
			{0, `raises("metrics: y is already a gauge", metrics.counter, "y")`},
		}},
		{"reload keeps values", []string{"/a", "/a"}, []step{
			{0, `metrics.counter("n_total"):inc(7) metrics.gauge("g"):set(2)`},
			{-1, "close VM 0"},
			{1, `local c = metrics.counter("n_total") eq(value("n_total", "/a"), 7) c:inc() eq(value("n_total", "/a"), 8)`},
			{1, `metrics.gauge("g"):inc() eq(value("g", "/a"), 3)`},
		}},
		{"Open uses the empty route", []string{"", "/a"}, []step{
			{0, `metrics.counter("n_total"):inc()`},
			{1, `metrics.counter("n_total"):inc()`},
			{0, `eq(value("n_total", ""), 1) eq(value("n_total", "/a"), 1)`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m := New(reg, Options{})
			states := make([]*lua.LState, len(tt.routes))
			for i, r := range tt.routes {
				if r == "" {
					states[i] = newState(t, m, "", reg)
					// Replace the OpenRoute table with Open's.
					states[i].Push(states[i].NewFunction(m.Open))
					states[i].Call(0, 1)
					states[i].SetGlobal("metrics", states[i].Get(-1))
					states[i].Pop(1)
					continue
				}
				states[i] = newState(t, m, r, reg)
			}
			for _, s := range tt.steps {
				if s.vm < 0 {
					states[0].Close()
					continue
				}
				run(t, states[s.vm], s.code)
			}
		})
	}
}

type step struct {
	vm   int
	code string
}

// TestRegistererErrors: a name taken by someone else's collector is a Lua
// error with the registerer's message, does not count against MaxMetrics,
// and keeps failing.
func TestRegistererErrors(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	taken := prometheus.NewCounter(prometheus.CounterOpts{Name: "taken_total", Help: "Go's."})
	reg.MustRegister(taken)
	L := newState(t, New(reg, Options{MaxMetrics: 1}), "/r", reg)
	run(t, L, `
		raises("metrics: a previously registered descriptor with the same fully-qualified name", metrics.counter, "taken_total")
		raises("metrics: a previously registered descriptor", metrics.counter, "taken_total")
		raises("metrics: a previously registered descriptor", metrics.gauge, "taken_total")
		metrics.counter("mine_total"):inc()
		eq(value("mine_total", "/r"), 1)`)
	if got := testutil.ToFloat64(taken); got != 0 {
		t.Errorf("taken_total = %v, want 0", got)
	}
	if help, _, n, _ := describe(t, reg, "taken_total"); help != "Go's." || n != 1 {
		t.Errorf("taken_total changed: help %q, %d series", help, n)
	}
}

// TestNilRegisterer: metrics still work without a registry (moonwire check).
func TestNilRegisterer(t *testing.T) {
	t.Parallel()
	m := New(nil, Options{})
	L := newState(t, m, "/r", nil)
	run(t, L, `
		local c = metrics.counter("c_total")
		c:inc()
		eq(metrics.counter("c_total"), c)
		raises("metrics: c_total is already a counter", metrics.gauge, "c_total")`)
	f, err := m.family("c_total", "", kindCounter)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.counter("/r")
	if got := testutil.ToFloat64(c); got != 1 {
		t.Errorf("c_total = %v, want 1", got)
	}
}

// TestConcurrent: many goroutines, each with its own LState (some per
// route), define and increment the same metrics while /metrics is scraped.
// Run with -race.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	const (
		workers = 8
		incs    = 2000
	)
	routes := []string{"/a", "/b"}
	reg := prometheus.NewRegistry()
	m := New(reg, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		L := newState(t, m, routes[w%len(routes)], nil)
		wg.Go(func() {
			code := fmt.Sprintf(`
				local c = metrics.counter("shared_total")
				local g = metrics.gauge("shared_gauge")
				for i = 1, %d do
					c:inc()
					g:inc()
					if i %% 100 == 0 then
						metrics.counter("shared_total"):inc(0.5)
						metrics.gauge("w%d_gauge"):set(i)
					end
				end`, incs, w)
			if err := L.DoString(code); err != nil {
				errs <- err
			}
		})
	}
	stop := make(chan struct{})
	scraped := make(chan struct{})
	go func() { // scrape while they count
		defer close(scraped)
		for {
			select {
			case <-stop:
				return
			default:
				if _, err := reg.Gather(); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-scraped
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	per := float64(workers/len(routes)) * (incs + 0.5*incs/100)
	for _, r := range routes {
		if v, _ := lookup(t, reg, "shared_total", r); v != per {
			t.Errorf("shared_total{route=%q} = %v, want %v", r, v, per)
		}
		if v, _ := lookup(t, reg, "shared_gauge", r); v != float64(workers/len(routes)*incs) {
			t.Errorf("shared_gauge{route=%q} = %v, want %v", r, v, workers/len(routes)*incs)
		}
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 2*len(routes)+workers {
		t.Errorf("series = %d, %v; want %d", n, err, 2*len(routes)+workers)
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, want string
	}{
		{"ok_total", ""},
		{"a:b", ""},
		{"_9", ""},
		{"", "invalid name"},
		{"9", "invalid name"},
		{"a-b", "invalid name"},
		{"ünïcode", "invalid name"},
		{"moonwire_up", `reserved prefix "moonwire_"`},
		{"go_goroutines", `reserved prefix "go_"`},
		{"process_cpu_seconds_total", `reserved prefix "process_"`},
		{"promhttp_metric_handler_requests_total", `reserved prefix "promhttp_"`},
	}
	for _, tt := range tests {
		got := checkName(tt.name)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("checkName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// BenchmarkCounterInc measures c:inc() called from a Lua loop: ns/op and
// allocs/op are per inc (the loop itself is included).
func BenchmarkCounterInc(b *testing.B) {
	benchLua(b, `local c = metrics.counter("bench_total")
		function run(n) for i = 1, n do c:inc() end end`)
}

// BenchmarkCounterIncN is c:inc(n) with an argument.
func BenchmarkCounterIncN(b *testing.B) {
	benchLua(b, `local c = metrics.counter("bench_total")
		function run(n) for i = 1, n do c:inc(2) end end`)
}

// BenchmarkGaugeAdd is g:add(n) with a negative n (the float CAS path).
func BenchmarkGaugeAdd(b *testing.B) {
	benchLua(b, `local g = metrics.gauge("bench")
		function run(n) for i = 1, n do g:add(-0.5) end end`)
}

// BenchmarkEmptyLoop is the loop and a Lua-to-Lua no-op call, for scale.
func BenchmarkEmptyLoop(b *testing.B) {
	benchLua(b, `local t = {} function t.f() end
		function run(n) for i = 1, n do t:f() end end`)
}

// BenchmarkLookupInc is metrics.counter(name):inc() in the loop: the
// pattern of a script that does not hoist its metrics.
func BenchmarkLookupInc(b *testing.B) {
	benchLua(b, `function run(n) for i = 1, n do metrics.counter("bench_total"):inc() end end`)
}

func benchLua(b *testing.B, code string) {
	reg := prometheus.NewRegistry()
	L := newState(b, New(reg, Options{}), "/bench", nil)
	if err := L.DoString(code); err != nil {
		b.Fatal(err)
	}
	fn := L.GetGlobal("run")
	b.ReportAllocs()
	b.ResetTimer()
	if err := L.CallByParam(lua.P{Fn: fn, NRet: 0, Protect: true}, lua.LNumber(b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if v, ok := lookup(b, reg, "bench_total", "/bench"); ok && (v != float64(b.N) && v != 2*float64(b.N)) {
		b.Fatalf("bench_total = %v after %d incs", v, b.N)
	}
	if v, ok := lookup(b, reg, "bench", "/bench"); ok && v != -0.5*float64(b.N) && !math.IsNaN(v) {
		b.Fatalf("bench = %v after %d adds", v, b.N)
	}
}

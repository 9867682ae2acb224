package metrics

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	lua "github.com/yuin/gopher-lua"
)

// Name is the name scripts require: "metrics".
func (m *Module) Name() string { return "metrics" }

// Open pushes a module table whose metrics carry the route label "". It is
// an lua.LGFunction; the engine uses OpenRoute instead.
func (m *Module) Open(L *lua.LState) int { return m.OpenRoute(L, "") }

// OpenRoute pushes a module table bound to m whose metrics carry the route
// label route. Each call makes a table of its own, meant for one LState;
// every table shares m.
func (m *Module) OpenRoute(L *lua.LState, route string) int {
	o := &opened{
		m:       m,
		route:   route,
		objects: make(map[string]*lua.LUserData),
		counter: methods(L, map[string]lua.LGFunction{"inc": counterInc}, counterString),
		gauge: methods(L, map[string]lua.LGFunction{
			"set": gaugeSet,
			"add": gaugeAdd,
			"inc": gaugeInc,
			"dec": gaugeDec,
		}, gaugeString),
	}
	mod := L.CreateTable(0, 2)
	mod.RawSetString("counter", L.NewFunction(o.luaCounter))
	mod.RawSetString("gauge", L.NewFunction(o.luaGauge))
	L.Push(mod)
	return 1
}

// opened is one module table: the route it labels with and, since an
// LState runs one thing at a time, an unlocked cache of the objects it has
// handed out, so asking again for a metric in a callback costs a map
// lookup instead of the Module's lock.
type opened struct {
	m       *Module
	route   string
	objects map[string]*lua.LUserData // by name; bounded by MaxMetrics
	counter *lua.LTable               // metatables
	gauge   *lua.LTable
}

func methods(L *lua.LState, fns map[string]lua.LGFunction, str lua.LGFunction) *lua.LTable {
	index := L.CreateTable(0, len(fns))
	for name, fn := range fns {
		index.RawSetString(name, L.NewFunction(fn))
	}
	mt := L.CreateTable(0, 2)
	mt.RawSetString("__index", index)
	mt.RawSetString("__tostring", L.NewFunction(str))
	return mt
}

// The userdata values. Each keeps its resolved series, so an update is one
// atomic operation: no map lookup, no lock, no allocation.
type (
	counter struct {
		c           prometheus.Counter
		name, route string
	}
	gauge struct {
		g           prometheus.Gauge
		name, route string
	}
)

// counter(name [, help]) -> counter
func (o *opened) luaCounter(L *lua.LState) int { return o.define(L, kindCounter) }

// gauge(name [, help]) -> gauge
func (o *opened) luaGauge(L *lua.LState) int { return o.define(L, kindGauge) }

func (o *opened) define(L *lua.LState, k kind) int {
	name := L.CheckString(1)
	help := L.OptString(2, "")
	if msg := checkName(name); msg != "" {
		L.ArgError(1, msg)
	}
	if !utf8.ValidString(help) {
		L.ArgError(2, "metrics: help must be valid UTF-8")
	}
	if ud, ok := o.objects[name]; ok {
		// A family never changes kind, so the cached object's kind is the
		// family's.
		if have := kindOf(ud); have != k {
			L.RaiseError("metrics: %s is already a %s", name, have)
		}
		L.Push(ud)
		return 1
	}
	f, err := o.m.family(name, help, k)
	if err != nil {
		L.RaiseError("%s", err.Error())
	}
	ud := L.NewUserData()
	switch k {
	case kindCounter:
		c, err := f.counter(o.route)
		if err != nil {
			L.RaiseError("metrics: %s", err.Error())
		}
		ud.Value = &counter{c: c, name: name, route: o.route}
		ud.Metatable = o.counter
	default:
		g, err := f.gauge(o.route)
		if err != nil {
			L.RaiseError("metrics: %s", err.Error())
		}
		ud.Value = &gauge{g: g, name: name, route: o.route}
		ud.Metatable = o.gauge
	}
	o.objects[name] = ud
	L.Push(ud)
	return 1
}

func kindOf(ud *lua.LUserData) kind {
	if _, ok := ud.Value.(*counter); ok {
		return kindCounter
	}
	return kindGauge
}

func checkCounter(L *lua.LState) *counter {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if c, ok := ud.Value.(*counter); ok {
			return c
		}
	}
	L.ArgError(1, "counter expected (call it as c:inc())")
	return nil
}

func checkGauge(L *lua.LState) *gauge {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if g, ok := ud.Value.(*gauge); ok {
			return g
		}
	}
	L.ArgError(1, "gauge expected (call it as g:set(v))")
	return nil
}

// finite reports whether n is neither NaN nor infinite.
func finite(n float64) bool { return !math.IsNaN(n) && !math.IsInf(n, 0) }

// c:inc([n])
func counterInc(L *lua.LState) int {
	c := checkCounter(L)
	n := 1.0
	if L.Get(2) != lua.LNil { // L.OptNumber would refuse numeric strings
		n = float64(L.CheckNumber(2))
	}
	if !finite(n) || n < 0 {
		L.ArgError(2, "metrics: counter increment must be a finite number >= 0")
	}
	c.c.Add(n)
	return 0
}

// g:set(v): any number, NaN and ±inf included (they are valid gauge values).
func gaugeSet(L *lua.LState) int {
	g := checkGauge(L)
	g.g.Set(float64(L.CheckNumber(2)))
	return 0
}

// g:add(n)
func gaugeAdd(L *lua.LState) int {
	g := checkGauge(L)
	n := float64(L.CheckNumber(2))
	if !finite(n) {
		L.ArgError(2, "metrics: gauge increment must be a finite number")
	}
	g.g.Add(n)
	return 0
}

// g:inc()
func gaugeInc(L *lua.LState) int {
	checkGauge(L).g.Inc()
	return 0
}

// g:dec()
func gaugeDec(L *lua.LState) int {
	checkGauge(L).g.Dec()
	return 0
}

func counterString(L *lua.LState) int {
	c := checkCounter(L)
	L.Push(lua.LString(series("counter", c.name, c.route)))
	return 1
}

func gaugeString(L *lua.LState) int {
	g := checkGauge(L)
	L.Push(lua.LString(series("gauge", g.name, g.route)))
	return 1
}

// series renders `counter name{route="/chat"}`.
func series(kind, name, route string) string {
	return kind + " " + name + "{" + RouteLabel + "=" + strconv.Quote(route) + "}"
}

var _ interface {
	Name() string
	Open(*lua.LState) int
	OpenRoute(*lua.LState, string) int
} = (*Module)(nil)

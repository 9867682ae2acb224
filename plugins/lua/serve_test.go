package lua

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// served is a route started on a router server that listens nowhere: its
// lanes run, so timers fire.
type served struct {
	eng   *Engine
	route *Route
	srv   *router.Server
	rt    *router.Route
	// hits counts the script's probe.hit() calls.
	hits *atomic.Int64
}

// serve starts script as the only route, with opts (a nil Logger discards
// the log), and stops it when the test ends unless the test stops it
// first.
func serve(tb testing.TB, script string, opts Options) *served {
	tb.Helper()
	hits := new(atomic.Int64)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Modules = append(opts.Modules, probe{hits})
	e := New(opts)
	r, err := e.NewRoute(RouteConfig{Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte(script)}}, Script: "t.lua"})
	if err != nil {
		e.Close()
		tb.Fatal(err)
	}
	srv, err := router.New(router.Config{
		Routes:   []router.RouteSpec{{Pattern: "/t", Handler: r, Lanes: r.Lanes()}},
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

// probe is the test scripts' window to Go: probe.hit() counts.
type probe struct{ hits *atomic.Int64 }

func (probe) Name() string { return "probe" }

func (p probe) Open(L *glua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"hit": func(L *glua.LState) int { p.hits.Add(1); return 0 },
	}))
	return 1
}

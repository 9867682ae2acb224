package scripttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// Limits of one test, each tested by trying to exceed it.
const (
	maxClients     = 256             // connections one test (subtests included) may open
	defaultWait    = 5 * time.Second // c:recv, c:expect, c:close, c:closed without a timeout
	maxLogLines    = 100             // server log lines kept per test, shown with a failure
	maxValueDepth  = 32              // nesting of a settings or store table
	maxShownLength = 2000            // bytes of a value in a failure message
)

// testDecl is one test("name", [opts,] fn) of a file.
type testDecl struct {
	name     string
	where    string
	fn       *lua.LFunction
	settings map[string]any
	store    map[string]any
}

// fileRun runs one file's tests in one Lua state, in order.
type fileRun struct {
	opts  *Options
	file  testFile
	em    emitter
	L     *lua.LState
	tests []*testDecl
}

// stop is raised (as a Lua error) to end a test whose failure or skip is
// already recorded.
var stop = &lua.LUserData{}

func (f *fileRun) run() Summary {
	start := time.Now()
	var sum Summary
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	f.L = L
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}, {lua.LoadLibName, lua.OpenPackage}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	// Test files may not load other files: they test the folder's scripts
	// through the server, and the runner's process is not a sandbox.
	for _, name := range []string{"dofile", "loadfile"} {
		L.SetGlobal(name, lua.LNil)
	}
	jm := json.New(json.Limits{})
	L.PreloadModule("json", jm.Open)
	L.Push(L.NewFunction(jm.Open))
	L.Call(0, 1)
	L.SetGlobal("json", L.Get(-1))
	L.Pop(1)
	f.registerTypes()
	L.SetGlobal("test", L.NewFunction(f.declare))

	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	L.SetContext(ctx)
	fn, err := L.Load(bytes.NewReader(f.file.src), f.file.name)
	if err == nil {
		L.Push(fn)
		err = L.PCall(0, 0, nil)
	}
	L.RemoveContext()
	cancel()
	if err != nil {
		sum.Broken++
		f.em.output("", "", strings.TrimSpace(errorText(err)))
		f.em.fileResult(false, time.Since(start), "load error")
		return sum
	}
	ran := 0
	for _, d := range f.tests {
		if f.opts.Run != nil && !f.opts.Run.MatchString(d.name) {
			continue
		}
		ran++
		switch f.runTest(d) {
		case "pass":
			sum.Passed++
		case "fail":
			sum.Failed++
		case "skip":
			sum.Skipped++
		}
	}
	note := ""
	if ran == 0 {
		note = "no tests to run"
	}
	f.em.fileResult(sum.Failed == 0, time.Since(start), note)
	return sum
}

// declare is the global test(name, [opts,] fn).
func (f *fileRun) declare(L *lua.LState) int {
	d := &testDecl{name: L.CheckString(1), where: where(L)}
	if d.name == "" {
		L.ArgError(1, "a test needs a name")
	}
	for _, o := range f.tests {
		if o.name == d.name {
			L.ArgError(1, fmt.Sprintf("test %q is declared twice (first at %s)", d.name, o.where))
		}
	}
	fnArg := 2
	if opts, ok := L.Get(2).(*lua.LTable); ok {
		fnArg = 3
		var bad error
		opts.ForEach(func(k, v lua.LValue) {
			if bad != nil {
				return
			}
			switch k.String() {
			case "settings", "store":
				t, ok := v.(*lua.LTable)
				if !ok {
					bad = fmt.Errorf("%s must be a table", k)
					return
				}
				m, err := tableMap(t, maxValueDepth)
				if err != nil {
					bad = fmt.Errorf("%s: %w", k, err)
					return
				}
				if k.String() == "settings" {
					d.settings = m
				} else {
					d.store = m
				}
			default:
				bad = fmt.Errorf("unknown option %q (want settings, store)", k.String())
			}
		})
		if bad != nil {
			L.ArgError(2, bad.Error())
		}
	}
	d.fn = L.CheckFunction(fnArg)
	f.tests = append(f.tests, d)
	return 0
}

// tstate is one running test or subtest.
type tstate struct {
	f       *fileRun
	name    string
	ctx     context.Context
	srv     Server
	shared  *shared
	failed  bool
	skipped bool
	where   string   // of the failure or skip
	text    []string // failure, skip and t:log lines, printed at the end unless verbose
}

// shared is what a test and its subtests have in common.
type shared struct {
	mu      sync.Mutex
	clients []*client
	logs    *logBuffer
	clock   *router.VirtualClock // the server's time, moved by t:advance
}

func (s *shared) add(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) >= maxClients {
		return false
	}
	s.clients = append(s.clients, c)
	return true
}

// runTest runs one top-level test on a fresh server; it returns "pass",
// "fail" or "skip".
func (f *fileRun) runTest(d *testDecl) string {
	start := time.Now()
	f.em.testRun(d.name)
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.Timeout)
	defer cancel()
	logs := &logBuffer{}
	t := &tstate{f: f, name: d.name, ctx: ctx, shared: &shared{logs: logs}, where: d.where}
	defer func() {
		for _, c := range t.shared.clients {
			c.shutdown()
		}
	}()
	// The clock starts at the wall clock's time, so that time.now() reads
	// plausibly; from there it moves only with t:advance.
	t.shared.clock = router.NewVirtualClock(time.Now())
	srv, err := f.opts.Start(Fresh{
		Config: FreshConfig(f.opts.Config, d.settings),
		Store:  d.store,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Clock:  t.shared.clock,
	})
	if err != nil {
		t.failed = true
		t.text = append(t.text, "starting the server: "+err.Error())
		return t.finish(start)
	}
	defer func() { _ = srv.Close() }()
	t.srv = srv
	t.call(d.fn)
	if t.failed {
		if l := logs.lines(); l != "" {
			t.text = append(t.text, "server log:\n"+l)
		}
	}
	return t.finish(start)
}

// call runs fn(t) protected, recording how it ended.
func (t *tstate) call(fn *lua.LFunction) {
	L := t.f.L
	L.SetContext(t.ctx)
	defer L.RemoveContext()
	err := L.CallByParam(lua.P{Fn: fn, NRet: 0, Protect: true}, t.userdata())
	if err == nil || t.failed || t.skipped {
		return
	}
	t.failed = true
	if t.ctx.Err() != nil {
		t.text = append(t.text, fmt.Sprintf("test timed out after %s", t.f.opts.Timeout))
		return
	}
	msg := errorText(err)
	// A runtime error's message starts with its position: show it as
	// the failure's.
	if pos, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(pos, t.f.file.name+":") {
		t.where, msg = pos, rest
	}
	t.text = append(t.text, msg)
}

// finish reports the test's end: the verdict line, then what the test
// said (a failure's message, its t:log lines, the server's log).
func (t *tstate) finish(start time.Time) string {
	em := t.f.em
	action := "pass"
	switch {
	case t.failed:
		action = "fail"
	case t.skipped:
		action = "skip"
	}
	em.result(t.name, action, t.where, time.Since(start))
	if action == "fail" || (action == "skip" && (em.verbose || em.json)) {
		for _, l := range t.text {
			em.output(t.name, "", l)
		}
	}
	return action
}

// fail records a failure at the caller's line and ends the test.
func (t *tstate) fail(L *lua.LState, msg string) int {
	t.failed = true
	t.where = where(L)
	t.text = append(t.text, msg)
	L.Error(stop, 0)
	return 0
}

// errorText is an error's message without gopher-lua's traceback.
func errorText(err error) string {
	var ae *lua.ApiError
	if errors.As(err, &ae) && ae.Object != nil {
		if ae.Object == stop {
			return "test stopped"
		}
		return ae.Object.String()
	}
	return err.Error()
}

// where returns the calling Lua line as "file:line".
func where(L *lua.LState) string {
	return strings.TrimSuffix(L.Where(1), ":")
}

// testVMs caps a route's VMs in tests: a server starts per test, and
// its cost is one compile and sandbox per VM, so it must not grow with
// the machine's CPUs; two still show state that is per VM.
const testVMs = 2

// FreshConfig returns a copy of cfg for one test: settings merged over
// every route's, at most testVMs VMs per route, nothing shared with other
// tests or other servers (the broker and store in memory, no admin or API
// listener).
func FreshConfig(cfg *config.Config, settings map[string]any) *config.Config {
	c := *cfg
	c.Admin.Listen = ""
	c.API.Listen = ""
	c.Broker = config.Broker{Kind: "memory"}
	c.Store.Kind, c.Store.URL = "memory", ""
	c.Routes = make([]config.Route, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		if len(settings) > 0 {
			m := maps.Clone(rc.Settings)
			if m == nil {
				m = map[string]any{}
			}
			maps.Copy(m, settings)
			rc.Settings = m
		}
		rc.VMs = min(rc.VMs, testVMs)
		c.Routes[i] = rc
	}
	return &c
}

// logBuffer keeps the last maxLogLines lines of a test's server log.
type logBuffer struct {
	mu sync.Mutex
	l  []string
}

// Write implements io.Writer for a slog handler (one record per call).
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.l) == maxLogLines {
		b.l = append(b.l[:0], b.l[1:]...)
	}
	b.l = append(b.l, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (b *logBuffer) lines() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.l, "\n")
}

// tableMap converts a Lua table with string keys to Go data (numbers as
// float64, sequences as []any), as settings and store values are.
func tableMap(t *lua.LTable, depth int) (map[string]any, error) {
	v, err := toGo(t, depth)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		if s, isList := v.([]any); isList && len(s) == 0 {
			return map[string]any{}, nil
		}
		return nil, errors.New("want a table with string keys")
	}
	return m, nil
}

func toGo(v lua.LValue, depth int) (any, error) {
	switch v := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(v), nil
	case lua.LNumber:
		return float64(v), nil
	case lua.LString:
		return string(v), nil
	case *lua.LTable:
		if depth <= 0 {
			return nil, errors.New("nested too deep")
		}
		n := v.Len()
		count := 0
		v.ForEach(func(lua.LValue, lua.LValue) { count++ })
		if n == count {
			out := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				x, err := toGo(v.RawGetInt(i), depth-1)
				if err != nil {
					return nil, err
				}
				out = append(out, x)
			}
			return out, nil
		}
		out := make(map[string]any, count)
		var err error
		v.ForEach(func(k, x lua.LValue) {
			if err != nil {
				return
			}
			ks, ok := k.(lua.LString)
			if !ok {
				err = fmt.Errorf("key %s: keys must be strings", k)
				return
			}
			out[string(ks)], err = toGo(x, depth-1)
		})
		return out, err
	}
	return nil, fmt.Errorf("a %s cannot be stored", v.Type())
}

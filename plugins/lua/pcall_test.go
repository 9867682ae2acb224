package lua_test

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router"
)

// TestPcallKeepsSharedUpvalues is gopher-lua issue 448 as a route script: a
// caught error at the top level used to give add and on_open two copies
// of r, so on_open sent 0.
func TestPcallKeepsSharedUpvalues(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local r = {}
local function add(x) r[#r+1] = x end
pcall(error, "x")
function M.on_open(c) r = {}; add("a"); c:send(#r) end
return M
`, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Expect("1")
}

// goModule is a test module: a global function that runs fn.
type goModule struct {
	name string
	fn   glua.LGFunction
}

func (m goModule) Name() string { return m.name }

func (m goModule) Open(L *glua.LState) int {
	L.Push(L.NewFunction(m.fn))
	return 1
}

// stockModule exposes gopher-lua's own pcall and xpcall, which the sandbox
// replaces, as stock.pcall and stock.xpcall.
type stockModule struct{}

var stockFuncs = sync.OnceValue(func() map[string]glua.LGFunction {
	L := glua.NewState()
	defer L.Close()
	return map[string]glua.LGFunction{
		"pcall":  L.GetGlobal("pcall").(*glua.LFunction).GFunction,
		"xpcall": L.GetGlobal("xpcall").(*glua.LFunction).GFunction,
	}
})

func (stockModule) Name() string { return "stock" }

func (stockModule) Open(L *glua.LState) int {
	t := L.NewTable()
	for name, fn := range stockFuncs() {
		t.RawSetString(name, L.NewFunction(fn))
	}
	L.Push(t)
	return 1
}

// luaCheck runs a chunk as a route script's top level and then its check()
// as on_handshake, and returns what check returned, as a string.
func luaCheck(t testing.TB, code string, mods ...lua.Module) string {
	t.Helper()
	return runCheck(t, checkRoute(t, code, mods...))
}

// checkRoute loads code, followed by a return of the callback that runs
// check(), as a route. Its logs go to the test's log on failure.
func checkRoute(t testing.TB, code string, mods ...lua.Module) *lua.Route {
	t.Helper()
	var logs syncBuffer
	eng := lua.New(lua.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Modules: mods})
	t.Cleanup(eng.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	script := code + "\nreturn { on_handshake = function() return { result = tostring(check()) } end }\n"
	r, err := eng.NewRoute(lua.RouteConfig{
		Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte(script)}}, Script: "t.lua",
		// No check is meant to time out, and a loaded machine (or the race
		// detector) must not make one: a benchmark's callback makes 1000
		// protected calls.
		HandlerTimeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(r.Release)
	return r
}

// runCheck runs r's check() (on_handshake, on its one VM).
func runCheck(t testing.TB, r *lua.Route) string {
	t.Helper()
	v := r.Handshake(0, &router.Request{Path: "/t"})
	res, ok := v.Attrs["result"].(string)
	if v.Reject || !ok {
		t.Fatalf("check() failed: %+v", v)
	}
	return res
}

// syncBuffer is a bytes.Buffer for a logger the watchdog may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProtectedCallsMatchReferenceLua runs the ways a caught error used to
// split or alias variables in gopher-lua, and the rest of pcall's and
// xpcall's contract, against what Lua 5.1 does (each want was also checked
// with the reference interpreter, lua5.1).
//
// The rule most cases check is the manual's §2.6: each execution of a
// local declaration makes one variable, and every closure made in its scope
// refers to that variable, not a copy; catching an error (§2.7, pcall)
// ends only the calls it unwinds, so the variables of the functions still
// running carry on, shared as before. Closures made inside the failed call
// keep their variables (closed over, §2.6) and share them with nothing
// else.
func TestProtectedCallsMatchReferenceLua(t *testing.T) {
	t.Parallel()
	// counter is a local that a closure and its own scope both update:
	// after "n = 10; inc()", n is 11 if they share it.
	const counter = "local n = 0\nlocal function inc() n = n + 1 end\n"
	const shared = "\nn = 10; inc()\n"
	cases := []struct{ name, code, want string }{
		{"top level, error(string)", `
local r = {}
local function add(x) r[#r+1] = x end
pcall(error, "x")
r = {}; add("a")
local function check() return #r end`, "1"},
		{"top level, error(table)", counter + `pcall(error, {})` + shared + `local function check() return n end`, "11"},
		{"top level, error(nil)", counter + `pcall(error, nil)` + shared + `local function check() return n end`, "11"},
		{"top level, runtime error", counter + `pcall(function() local t; return t.x end)` + shared + `local function check() return n end`, "11"},
		{"top level, builtin argument error", counter + `pcall(string.rep)` + shared + `local function check() return n end`, "11"},
		{"top level, error in a builtin's Lua callback", counter +
			`pcall(table.sort, {3, 2, 1}, function() error("cmp") end)` + shared + `local function check() return n end`, "11"},
		{"top level, stack overflow", counter + `
local f
local function rec(d) local v = d; if d == 5 then f = function() return v end end; return rec(d + 1) + 1 end
local ok = pcall(rec, 1)` + shared + `local function check() return tostring(ok) .. " " .. n .. " " .. f() end`, "false 11 5"},
		{"top level, xpcall", counter + `xpcall(function() error("x") end, function(e) return e end)` + shared +
			`local function check() return n end`, "11"},
		// The callback's own locals, with the script's top level long
		// returned.
		{"inside a callback", `
local function check()
  local n = 0
  local function inc() n = n + 1 end
  pcall(error, "x")
  n = 10; inc()
  return n
end`, "11"},
		{"inside a callback, xpcall", `
local function check()
  local n = 0
  local function inc() n = n + 1 end
  xpcall(function() pcall(error, "inner"); error("outer") end, function(e) return e end)
  n = 10; inc()
  return n
end`, "11"},
		// Every function still running keeps its variables, not just the
		// one that called pcall.
		{"callers of the function that called pcall", counter + `
local function g() pcall(error, "deep") end
g()` + shared + `local function check() return n end`, "11"},
		{"loop body locals", `
local fs = {}
for i = 1, 3 do
  local v = i
  fs[i] = function() return v end
  pcall(error, "x")
  v = v * 100
end
local function check() return fs[1]() .. " " .. fs[2]() .. " " .. fs[3]() end`, "100 200 300"},
		{"nested pcall", counter + `pcall(function() pcall(error, "inner"); error("outer") end)` + shared +
			`local function check() return n end`, "11"},
		// gopher-lua resets its error-handler flag when any protected call
		// returns, so a pcall inside an xpcall used to bring the bug back.
		{"pcall inside xpcall", counter + `xpcall(function() pcall(error, "inner"); error("outer") end, function(e) return e end)` + shared +
			`local function check() return n end`, "11"},
		// gopher-lua's xpcall closed nothing: the failed call's upvalue stayed
		// on a stack slot that g's locals then took over.
		{"closure made inside a failed xpcall", `
local f
xpcall(function() local x = "captured"; f = function() return x end; error("e") end, function(e) return e end)
local function g(a, b, c, d) local y = "other"; return f() end
local function check() return g(1, 2, 3, 4) end`, "captured"},
		{"closure made inside a failed pcall inside xpcall", `
local f
xpcall(function()
  pcall(function() local x = "captured"; f = function() return x end; error("e") end)
end, function(e) return e end)
local function g(a, b, c, d) local y = "other"; return f() end
local function check() return g(1, 2, 3, 4) end`, "captured"},
		{"closures made inside failed pcalls are separate", `
local fs = {}
for i = 1, 3 do
  pcall(function() local x = i; fs[i] = function() x = x + 10; return x end; error("e") end)
end
local function check() return fs[1]() .. " " .. fs[2]() .. " " .. fs[3]() .. " " .. fs[1]() end`, "11 12 13 21"},
		// A coroutine's frames are affected the same way, within the
		// coroutine.
		{"pcall inside a coroutine", `
local co = coroutine.create(function()
  local n = 0
  local function inc() n = n + 1 end
  pcall(error, "x")
  n = 10; inc(); coroutine.yield(n)
end)
local function check() local ok, n = coroutine.resume(co); return tostring(ok) .. " " .. n end`, "true 11"},
		{"error caught by coroutine.resume", counter + `coroutine.resume(coroutine.create(function() error("in co") end))` + shared +
			`local function check() return n end`, "11"},
		{"coroutine.wrap error caught by pcall", counter + `pcall(coroutine.wrap(function() error("in co") end))` + shared +
			`local function check() return n end`, "11"},
		// Lua 5.1 cannot yield across pcall (a C call): the yield fails,
		// and pcall returns that error inside the coroutine. gopher-lua
		// used to resume the caller with the coroutine's stack broken.
		{"yield across pcall", `
local co = coroutine.create(function()
  return pcall(function() coroutine.yield(1) end)
end)
local function check()
  local ok, inner, err = coroutine.resume(co)
  return tostring(ok) .. " " .. tostring(inner) .. " " .. err .. " " .. coroutine.status(co)
end`, "true false attempt to yield across metamethod/C-call boundary dead"},
		{"yield in a coroutine made inside pcall", `
local function check()
  return select(2, pcall(function()
    local co = coroutine.wrap(function() coroutine.yield(1); return 2 end)
    return co() + co()
  end))
end`, "3"},
		{"xpcall handler runs before the failed frames unwind", `
local get
local ok, e = xpcall(function() local x = 5; get = function() return x end; x = 6; error("e") end,
  function(e) return get() end)
local function check() return tostring(ok) .. " " .. e .. " " .. get() end`, "false 6 6"},
		{"error in the xpcall handler", counter + `local ok = xpcall(function() error("a") end, function() error("b") end)` + shared +
			`local function check() return tostring(ok) .. " " .. n end`, "false 11"},
		// The rest of the contract (§5.1).
		{"results", `
local function check()
  local a = table.concat({tostring(select("#", pcall(function(...) return ... end, 1, nil, 3, nil)))}, "")
  local ok, x, y = pcall(function(p, q) return q, p end, "p", "q")
  return a .. " " .. tostring(ok) .. " " .. x .. y
end`, "5 true qp"},
		{"error values keep their type", `
local t = {}
local function check()
  local r = {}
  r[#r + 1] = tostring(select(2, pcall(error, t)) == t)
  r[#r + 1] = tostring(select(2, pcall(error, nil)))
  r[#r + 1] = type(select(2, pcall(error, 42)))
  r[#r + 1] = select(2, pcall(error, "plain", 0))
  r[#r + 1] = tostring(select(2, pcall(error, false)))
  return table.concat(r, " ")
end`, "true nil number plain false"},
		{"error position", `
local function check() return select(2, pcall(function() error("here") end)) end`, `t.lua:2: here`},
		{"not callable", `
local function check() return select(2, pcall(42)) end`, "attempt to call a number value"},
		{"__call", `
local obj = setmetatable({}, {__call = function(self, a) return a * 2 end})
local function check() return select(2, pcall(obj, 21)) end`, "42"},
		{"xpcall results", `
local function check()
  local a = {xpcall(function() return 1, 2 end, print)}
  local b = {xpcall(function() error({1}) end, function(e) return "h" .. e[1] end)}
  return #a .. tostring(a[1]) .. a[2] .. a[3] .. " " .. tostring(b[1]) .. b[2]
end`, "3true12 falseh1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := luaCheck(t, tc.code); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPcallAfterGoPanic: a Go panic in a builtin (a bug, not a Lua error)
// never goes through Lua's error path. xpcall still keeps the failed
// call's closures right; pcall only learns of it once gopher-lua has
// cleared the failed frames, so their closures read nil, but never
// another function's variable.
func TestPcallAfterGoPanic(t *testing.T) {
	t.Parallel()
	gopanic := goModule{"gopanic", func(*glua.LState) int { panic("boom") }}
	got := luaCheck(t, `
local f, h
local ok, err = pcall(function() local x = "captured"; f = function() return x end; gopanic() end)
local xok, xerr = xpcall(function() local x = "captured"; h = function() return x end; gopanic() end, function(e) return "handled " .. e end)
local function g(a, b, c, d) local y = "other"; return tostring(f()) .. " " .. h() end
local function check() return tostring(ok) .. " " .. err .. " " .. tostring(xok) .. " " .. xerr .. " " .. g(1, 2, 3, 4) end`, gopanic)
	if want := "false boom false handled boom nil captured"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestPcallCannotCatchTimeout: a stopped callback ends even where no Lua
// instruction follows the pcall that caught the timeout (gopher-lua raises
// it again only at the next instruction), in a coroutine too.
func TestPcallCannotCatchTimeout(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "200ms"
vms = 1

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", `
local M = {}
local loop = function() while true do end end
local calls = {
  pcall = function() return pcall(loop) end,
  xpcall = function() return xpcall(loop, function(e) return e end) end,
  handler = function() return xpcall(error, loop) end,
  coroutine = function() return coroutine.wrap(function() return pcall(loop) end)() end,
}
function M.on_message(conn, data)
  if calls[data] then return calls[data]() end
  conn:send(data)
end
return M
`))
	other := moontest.Dial(t, s.URL("/t"))
	for _, msg := range []string{"pcall", "xpcall", "handler", "coroutine"} {
		c := moontest.Dial(t, s.URL("/t"))
		c.Send(msg)
		c.ExpectClose(1011)
		s.WaitLog(t, "script error", "handler timeout (200ms) exceeded")
		other.Send("after " + msg)
		other.Expect("after " + msg)
	}
}

// BenchmarkPcall compares the sandbox's pcall and xpcall (impl=moonwire)
// with gopher-lua's own (impl=gopher-lua): an op is one on_handshake that
// makes 1000 protected calls of a function that returns its argument (ok)
// or raises an error; ns/call is per protected call.
//
//	go test -run '^$' -bench Pcall -count 10 ./plugins/lua/ | benchstat -col /impl -
func BenchmarkPcall(b *testing.B) {
	for _, call := range []struct{ name, code string }{
		{"pcall-ok", "pcall(f, i)"},
		{"pcall-error", "pcall(error, 'x')"},
		{"xpcall-ok", "xpcall(f, f)"},
		{"xpcall-error", "xpcall(g, f)"},
	} {
		for _, impl := range []struct{ name, prefix string }{
			{"gopher-lua", "stock."},
			{"moonwire", ""},
		} {
			b.Run("call="+call.name+"/impl="+impl.name, func(b *testing.B) {
				r := checkRoute(b, `
local function f(a) return a end
local function g() error("x") end
local function check() for i = 1, 1000 do `+impl.prefix+call.code+` end return "done" end`, stockModule{})
				b.ReportAllocs()
				for b.Loop() {
					runCheck(b, r)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/call")
			})
		}
	}
}

// Package luatest builds the Lua states the module plugins are tested in,
// and the Lua assertion helpers those tests share. A state is not a
// look-alike of the sandbox but the sandbox itself: lua.NewSandboxState
// builds it the way every route's VM is built, so a module is tested with
// the libraries, replaced builtins (the bounded string library, pcall,
// require ...), limits and read-only values scripts have, and with ws,
// timer, log and time beside it. The modules under test are installed as
// the engine installs Options.Modules: as globals, and in require's cache,
// so that tests reach them through require, as scripts do.
//
// It is imported by tests only. It imports plugins/lua, which the module
// plugins themselves must not (internal/layout), and which imports
// plugins/internal/luavalue: that package's tests are therefore an
// external test package.
package luatest

import (
	"testing"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/lua"
)

// Module is what a module plugin offers require: a lua.Module.
type Module = lua.Module

// NewState returns a sandbox state (lua.NewSandboxState) with mods
// installed. It is closed when t ends, unless the test closed it.
func NewState(t testing.TB, mods ...Module) *glua.LState {
	t.Helper()
	return NewRouteState(t, "", mods...)
}

// NewRouteState is NewState for a state that stands for the route
// pattern route: ws.route, and the route a lua.RouteModule among mods is
// opened for.
//
// It caps gopher-lua's table array part for the test binary
// (lua.LimitArrays), as the moonwire command does for its process.
func NewRouteState(t testing.TB, route string, mods ...Module) *glua.LState {
	t.Helper()
	lua.LimitArrays()
	L, err := lua.NewSandboxState(lua.SandboxOptions{Modules: mods, Route: route})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !L.IsClosed() { // LState.Close is not idempotent
			L.Close()
		}
	})
	return L
}

// Run runs prelude and code as one chunk in L (so that errors name the
// lines of both as one file would); an error fails the test.
func Run(t testing.TB, L *glua.LState, prelude, code string) {
	t.Helper()
	if err := L.DoString(prelude + code); err != nil {
		t.Fatal(err)
	}
}

// Asserts is Lua source defining the assertion helpers the module tests
// share, as locals; a test prepends it to its chunk:
//
//	eq(got, want[, what])      got == want (NaN equals NaN)
//	fails(want, v, err)        v is nil and err == want
//	raises(pattern, f, ...)    f(...) raises an error containing pattern
//
// Each reports the caller's line.
const Asserts = `
local function eq(got, want, what)
	if got ~= want and not (got ~= got and want ~= want) then
		error(string.format("%s: got %q, want %q", what or "value", tostring(got), tostring(want)), 2)
	end
end
local function fails(want, ...)
	local v, err = ...
	if v ~= nil or err ~= want then
		error(string.format("want nil, %q; got %s, %s", want, tostring(v), tostring(err)), 2)
	end
end
local function raises(pattern, f, ...)
	local ok, err = pcall(f, ...)
	if ok or not string.find(tostring(err), pattern, 1, true) then
		error(string.format("want an error containing %q, got %s, %s", pattern, tostring(ok), tostring(err)), 2)
	end
end
`

// Package luatest builds the Lua states the module plugins are tested in:
// the libraries a moonwire sandbox opens (base, package, table, string,
// math — never io, os or debug), with modules preloaded so that tests
// reach them through require, as scripts do; and the Lua assertion
// helpers those tests share. It is imported by tests
// only, and knows gopher-lua and nothing of moonwire.
package luatest

import (
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// Module is what a module plugin offers require.
type Module interface {
	Name() string
	Open(L *lua.LState) int
}

// NewState returns a state with the sandbox's libraries open and mods
// preloaded. It is closed when t ends, unless the test closed it.
func NewState(t testing.TB, mods ...Module) *lua.LState {
	t.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	for _, m := range mods {
		L.PreloadModule(m.Name(), m.Open)
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
func Run(t testing.TB, L *lua.LState, prelude, code string) {
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

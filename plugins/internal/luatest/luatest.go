// Package luatest builds the Lua states the module plugins are tested in:
// the libraries a moonwire sandbox opens (base, package, table, string,
// math — never io, os or debug), with modules preloaded so that tests
// reach them through require, as scripts do. It is imported by tests
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

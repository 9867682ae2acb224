package lua_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/lua"
)

// routeMod is a RouteModule whose table says which route it was opened
// for.
type routeMod struct{}

func (routeMod) Name() string { return "routemod" }
func (routeMod) Open(L *glua.LState) int {
	return routeMod{}.OpenRoute(L, "(none)")
}
func (routeMod) OpenRoute(L *glua.LState, route string) int {
	t := L.NewTable()
	t.RawSetString("route", glua.LString(route))
	L.Push(t)
	return 1
}

// TestSandboxStateOptions: NewSandboxState's options reach the state as
// Options and RouteConfig reach a route's VM.
func TestSandboxStateOptions(t *testing.T) {
	t.Parallel()
	var log bytes.Buffer
	L, err := lua.NewSandboxState(lua.SandboxOptions{
		Modules:       []lua.Module{routeMod{}},
		Route:         "/chat",
		Logger:        slog.New(slog.NewTextHandler(&log, nil)),
		MaxStringSize: 1000,
		MaxCoroutines: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer L.Close()
	err = L.DoString(`
		-- modules: globals and require's cache, RouteModules opened for the route
		assert(require("routemod") == routemod and routemod.route == "/chat", routemod.route)
		assert(ws.route == "/chat")
		local ok, err = pcall(require, "sandbox")
		assert(not ok and err:find('require "sandbox": not found in the scripts folder', 1, true), err)
		ok, err = pcall(require, ".sandbox")
		assert(not ok and err:find("dotted paths", 1, true), err)
		-- the limits
		assert(#string.rep("x", 1000) == 1000)
		ok, err = pcall(string.rep, "x", 1001)
		assert(not ok and err:find("exceeds the limit of 1000", 1, true), err)
		coroutine.create(print)
		coroutine.create(print)
		ok, err = pcall(coroutine.create, print)
		assert(not ok and err:find("too many coroutines", 1, true), err)
		print("hello", 1)
	`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), `msg="hello\t1" route=/chat`) {
		t.Fatalf("print logged %q", log.String())
	}
}

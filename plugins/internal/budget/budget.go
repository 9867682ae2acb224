// Package budget lets a module plugin account what its builtins make for
// the Lua callback that called them, without knowing the engine: the
// engine's context for a VM answers Value(Key{}) with a Charger, and Charge
// finds it through L.Context() (coroutines included, whose contexts are
// children of the VM's). The memory watchdog uses the account to blame the
// callback that allocates rather than whichever happens to run.
//
// It knows nothing of moonwire's engine or router; outside an engine (a
// test's bare LState) Charge does nothing.
package budget

import (
	lua "github.com/yuin/gopher-lua"
)

// Key is the context key under which an engine offers its Charger.
type Key struct{}

// Charger accounts n bytes made by the builtin what, or refuses them.
type Charger interface {
	Charge(what string, n int64) error
}

// Charge accounts n bytes that the builtin what is about to make for the
// running callback, raising a Lua error when the engine refuses them (a
// result past its size limit).
func Charge(L *lua.LState, what string, n int64) {
	ctx := L.Context()
	if ctx == nil {
		return
	}
	if c, ok := ctx.Value(Key{}).(Charger); ok {
		if err := c.Charge(what, n); err != nil {
			L.RaiseError("%s", err.Error())
		}
	}
}

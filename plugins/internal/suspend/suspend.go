// Package suspend lets a module plugin suspend the Lua callback that
// called it while Go work runs elsewhere (an HTTP request), without
// knowing the engine: the engine's context for a VM answers Value(Key{})
// with a Suspender, as it answers budget.Key with a Charger.
//
// A module function calls Do and returns what Do returns. When the engine
// can suspend the caller, the work runs on a goroutine of its own, the
// callback yields, and its lane serves other work; once the work is done,
// the engine resumes the callback on its lane, and the values the work's
// Resume pushes are what the module function returns. When it cannot (no
// engine, or a caller that cannot yield: inside pcall, a coroutine, a
// function a builtin calls), the function returns nil and an error
// message at once, and the work does not run.
//
// It knows nothing of moonwire's engine or router.
package suspend

import (
	"context"
	"errors"

	lua "github.com/yuin/gopher-lua"
)

// Key is the context key under which an engine offers its Suspender.
type Key struct{}

// Resume pushes a finished work's results on L, the resumed callback's
// thread, and returns how many it pushed. It runs on the callback's lane.
type Resume func(L *lua.LState) int

// Work runs off the lane. ctx is cancelled when the callback can no
// longer be resumed (its route stopped): the work should then end soon.
type Work func(ctx context.Context) Resume

// Suspender is what an engine offers to suspend the calling callback.
type Suspender interface {
	// Suspend starts work and suspends the callback running on L,
	// returning what the Lua function must return (a yield); or, when the
	// callback cannot be suspended, returns the error and does not start
	// work.
	Suspend(L *lua.LState, work Work) (int, error)
}

// ErrNoEngine is what Do answers outside an engine.
var ErrNoEngine = errors.New("cannot wait here: not inside a moonwire callback")

// Do suspends the calling callback while work runs (see the package
// documentation). what prefixes the error message a caller that cannot
// be suspended gets ("http.request: ...").
func Do(L *lua.LState, what string, work Work) int {
	err := ErrNoEngine
	if ctx := L.Context(); ctx != nil {
		if s, ok := ctx.Value(Key{}).(Suspender); ok {
			var n int
			if n, err = s.Suspend(L, work); err == nil {
				return n
			}
		}
	}
	L.Push(lua.LNil)
	L.Push(lua.LString(what + ": " + err.Error()))
	return 2
}

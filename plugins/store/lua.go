package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync/atomic"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// Module is the `store` Lua module over any Backend. Every LState opened
// with it shares the backend, and so does every node whose backend shares
// a server.
//
// The module turns Lua arguments into plain Go data and back, raises on
// arguments of the wrong type (a bug in the script), and returns every
// other failure as nil plus an error string starting with "store: ": a
// bound, or a network that failed, is a runtime condition the script can
// act on. Incr on a non-number and Push on a non-list raise, as documented.
type Module struct {
	b Backend
	// limit returns MaxValueBytes: the bound of the conversion, which
	// stops walking a table the backend would refuse anyway.
	limit    func() int
	maxValue atomic.Int64 // limit's value for NewModule
}

// NewModule returns the store module over b with opts's limits (see
// SetLimits). The module owns b from then on: Close closes it.
func NewModule(b Backend, opts Options) *Module {
	m := &Module{b: b}
	m.limit = func() int { return int(m.maxValue.Load()) }
	m.SetLimits(opts)
	return m
}

// Name is the name scripts require: "store".
func (m *Module) Name() string { return "store" }

// Backend returns the backend the module works over.
func (m *Module) Backend() Backend { return m.b }

// SetLimits changes the limits of the module and its backend: zero fields
// take the defaults; MaxValueBytes applies on every backend, MaxKeys and
// MaxBytes on the memory backend only. What the backend holds stays.
func (m *Module) SetLimits(opts Options) {
	m.maxValue.Store(int64(ValueLimit(opts)))
	m.b.SetLimits(opts)
}

// Close closes the backend.
func (m *Module) Close() error { return m.b.Close() }

// Open pushes a module table bound to m. It is an lua.LGFunction meant for
// L.PreloadModule(m.Name(), m.Open); every LState opened this way shares m.
func (m *Module) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 7)
	for name, fn := range map[string]lua.LGFunction{
		"get":    m.luaGet,
		"set":    m.luaSet,
		"incr":   m.luaIncr,
		"push":   m.luaPush,
		"cas":    m.luaCAS,
		"delete": m.luaDelete,
		"keys":   m.luaKeys,
	} {
		mod.RawSetString(name, L.NewFunction(fn))
	}
	L.Push(mod)
	return 1
}

// get(k) -> value | nil [, err]
func (m *Module) luaGet(L *lua.LState) int {
	v, _, err := m.b.Get(L.CheckString(1))
	if err != nil {
		return fail(L, err)
	}
	L.Push(luavalue.ToLua(L, v))
	return 1
}

// set(k, v [, ttl]) -> true | nil, err
func (m *Module) luaSet(L *lua.LState) int {
	key := L.CheckString(1)
	v, err := m.checkValue(L, 2, key)
	if err != nil {
		return fail(L, err)
	}
	ttl := checkTTL(L, 3)
	if err := m.b.Set(key, v, ttl); err != nil {
		return fail(L, err)
	}
	L.Push(lua.LTrue)
	return 1
}

// push(k, v, max [, ttl]) -> length | nil, err
func (m *Module) luaPush(L *lua.LState) int {
	key := L.CheckString(1)
	if L.Get(2) == lua.LNil {
		L.ArgError(2, "a value to push expected, got nil")
	}
	v, err := m.checkValue(L, 2, key)
	if err != nil {
		return fail(L, err)
	}
	limit := float64(L.CheckNumber(3))
	if !(limit >= 1 && limit <= MaxPushLength) || limit != math.Trunc(limit) {
		L.ArgError(3, fmt.Sprintf("max must be a whole number from 1 to %d", MaxPushLength))
	}
	n, err := m.b.Push(key, v, int(limit), checkTTL(L, 4))
	if errors.Is(err, ErrNotList) {
		L.RaiseError("%s", err.Error())
	}
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LNumber(n))
	return 1
}

// cas(k, old, new [, ttl]) -> swapped | nil, err
func (m *Module) luaCAS(L *lua.LState) int {
	key := L.CheckString(1)
	var old any
	switch o := L.Get(2).(type) {
	case *lua.LNilType:
	case lua.LString:
		old = string(o)
	case lua.LNumber:
		old = float64(o)
	case lua.LBool:
		old = bool(o)
	default:
		L.ArgError(2, "string, number, boolean or nil expected, got "+o.Type().String())
	}
	v, err := m.checkValue(L, 3, key)
	if err != nil {
		return fail(L, err)
	}
	ok, err := m.b.CompareAndSet(key, old, v, checkTTL(L, 4))
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LBool(ok))
	return 1
}

// checkValue converts argument n to a value the store can hold, raising on
// one it never could.
func (m *Module) checkValue(L *lua.LState, n int, key string) (any, error) {
	lv := L.Get(n)
	switch lv.(type) {
	case *lua.LNilType, lua.LString, lua.LNumber, lua.LBool, *lua.LTable:
	default:
		if !luavalue.IsNull(lv) {
			L.ArgError(n, "string, number, boolean, table or nil expected, got "+lv.Type().String())
		}
	}
	// Convert before calling the backend (which may hold a lock or wait
	// for a server): conversion walks the Lua table. The walk is bounded
	// by what the store would accept, so that a table reaching one
	// sub-table by many paths (22 levels of t = {t, t} are 2^22 paths)
	// fails once past MaxValueBytes instead of being converted in full
	// first; the bound is only an early exit, the backend still judges
	// exactly. The context lets a handler timeout end the walk, which the
	// VM cannot.
	v, err := luavalue.FromLuaWith(lv, luavalue.Options{
		MaxSize: max(m.limit()-len(key), 1),
		Context: L.Context(),
	})
	switch {
	case errors.Is(err, luavalue.ErrTooLarge), errors.Is(err, luavalue.ErrTooMany):
		return nil, ErrValueTooLarge
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Returned, as json.decode does; the VM stops the callback anyway
		// on its next instruction.
		return nil, fmt.Errorf("store: %w", err)
	case err != nil:
		L.ArgError(n, err.Error())
	}
	return v, nil
}

// checkTTL reads an optional ttl in seconds at argument n.
func checkTTL(L *lua.LState, n int) time.Duration {
	ttl := float64(L.OptNumber(n, 0))
	if ttl < 0 || math.IsNaN(ttl) {
		L.ArgError(n, "ttl must be a non-negative number of seconds")
	}
	return ttlDuration(ttl)
}

// incr(k [, n [, ttl]]) -> number | nil, err
func (m *Module) luaIncr(L *lua.LState) int {
	key := L.CheckString(1)
	n := float64(L.OptNumber(2, 1))
	v, err := m.b.Incr(key, n, checkTTL(L, 3))
	if errors.Is(err, ErrNotNumber) {
		L.RaiseError("%s", err.Error())
	}
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LNumber(v))
	return 1
}

// delete(k) -> existed | nil, err
func (m *Module) luaDelete(L *lua.LState) int {
	ok, err := m.b.Delete(L.CheckString(1))
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LBool(ok))
	return 1
}

// keys([prefix]) -> sorted array of live keys | nil, err
func (m *Module) luaKeys(L *lua.LState) int {
	keys, err := m.b.Keys(L.OptString(1, ""))
	if err != nil {
		return fail(L, err)
	}
	t := luavalue.NewArray(L, len(keys))
	for _, k := range keys {
		t.Append(lua.LString(k))
	}
	L.Push(t)
	return 1
}

// fail returns nil and err's text to the script, which always starts with
// "store: " so that a script can tell whose error it is whatever backend
// made it.
func fail(L *lua.LState, err error) int {
	msg := err.Error()
	if !strings.HasPrefix(msg, "store: ") {
		msg = "store: " + msg
	}
	L.Push(lua.LNil)
	L.Push(lua.LString(msg))
	return 2
}

// Name is the name scripts require: "store".
func (s *Store) Name() string { return "store" }

// Open pushes a module table bound to s (the module over s.Backend()). It
// is an lua.LGFunction meant for L.PreloadModule(s.Name(), s.Open); every
// LState opened this way shares s.
func (s *Store) Open(L *lua.LState) int { return s.mod.Open(L) }

var (
	_ interface {
		Name() string
		Open(*lua.LState) int
	} = (*Store)(nil)
	_ io.Closer = (*Store)(nil)
	_ interface {
		Name() string
		Open(*lua.LState) int
	} = (*Module)(nil)
	_ io.Closer = (*Module)(nil)
)

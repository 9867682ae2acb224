package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// Name is the name scripts require: "store".
func (s *Store) Name() string { return "store" }

// Open pushes a module table bound to s. It is an lua.LGFunction meant for
// L.PreloadModule(s.Name(), s.Open); every LState opened this way shares s.
func (s *Store) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 7)
	for name, fn := range map[string]lua.LGFunction{
		"get":    s.luaGet,
		"set":    s.luaSet,
		"incr":   s.luaIncr,
		"push":   s.luaPush,
		"cas":    s.luaCAS,
		"delete": s.luaDelete,
		"keys":   s.luaKeys,
	} {
		mod.RawSetString(name, L.NewFunction(fn))
	}
	L.Push(mod)
	return 1
}

// get(k) -> value | nil
func (s *Store) luaGet(L *lua.LState) int {
	v, _ := s.Get(L.CheckString(1))
	L.Push(luavalue.ToLua(L, v))
	return 1
}

// set(k, v [, ttl]) -> true | nil, err
func (s *Store) luaSet(L *lua.LState) int {
	key := L.CheckString(1)
	v, err := s.checkValue(L, 2, key)
	if err != nil {
		return fail(L, err)
	}
	ttl := checkTTL(L, 3)
	if err := s.Set(key, v, ttl); err != nil {
		return fail(L, err)
	}
	L.Push(lua.LTrue)
	return 1
}

// push(k, v, max [, ttl]) -> length | nil, err
func (s *Store) luaPush(L *lua.LState) int {
	key := L.CheckString(1)
	if L.Get(2) == lua.LNil {
		L.ArgError(2, "a value to push expected, got nil")
	}
	v, err := s.checkValue(L, 2, key)
	if err != nil {
		return fail(L, err)
	}
	limit := float64(L.CheckNumber(3))
	if !(limit >= 1 && limit <= MaxPushLength) || limit != math.Trunc(limit) {
		L.ArgError(3, fmt.Sprintf("max must be a whole number from 1 to %d", MaxPushLength))
	}
	n, err := s.Push(key, v, int(limit), checkTTL(L, 4))
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
func (s *Store) luaCAS(L *lua.LState) int {
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
	v, err := s.checkValue(L, 3, key)
	if err != nil {
		return fail(L, err)
	}
	ok, err := s.CompareAndSet(key, old, v, checkTTL(L, 4))
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LBool(ok))
	return 1
}

// checkValue converts argument n to a value the store can hold, raising on
// one it never could.
func (s *Store) checkValue(L *lua.LState, n int, key string) (any, error) {
	lv := L.Get(n)
	switch lv.(type) {
	case *lua.LNilType, lua.LString, lua.LNumber, lua.LBool, *lua.LTable:
	default:
		if !luavalue.IsNull(lv) {
			L.ArgError(n, "string, number, boolean, table or nil expected, got "+lv.Type().String())
		}
	}
	// Convert before taking any lock: conversion walks the Lua table. The
	// walk is bounded by what the store would accept, so that a table
	// reaching one sub-table by many paths (22 levels of t = {t, t} are
	// 2^22 paths) fails once past MaxValueBytes instead of being converted
	// in full first; the bound is only an early exit, the write still
	// judges exactly. The context lets a handler timeout end the walk,
	// which the VM cannot.
	v, err := luavalue.FromLuaWith(lv, luavalue.Options{
		MaxSize: max(s.maxValueBytes()-len(key), 1),
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
func (s *Store) luaIncr(L *lua.LState) int {
	key := L.CheckString(1)
	n := float64(L.OptNumber(2, 1))
	v, err := s.Incr(key, n, checkTTL(L, 3))
	if errors.Is(err, ErrNotNumber) {
		L.RaiseError("%s", err.Error())
	}
	if err != nil {
		return fail(L, err)
	}
	L.Push(lua.LNumber(v))
	return 1
}

// delete(k) -> existed
func (s *Store) luaDelete(L *lua.LState) int {
	L.Push(lua.LBool(s.Delete(L.CheckString(1))))
	return 1
}

// keys([prefix]) -> sorted array of live keys
func (s *Store) luaKeys(L *lua.LState) int {
	keys := s.Keys(L.OptString(1, ""))
	t := luavalue.NewArray(L, len(keys))
	for _, k := range keys {
		t.Append(lua.LString(k))
	}
	L.Push(t)
	return 1
}

func fail(L *lua.LState, err error) int {
	L.Push(lua.LNil)
	L.Push(lua.LString(err.Error()))
	return 2
}

var (
	_ interface {
		Name() string
		Open(*lua.LState) int
	} = (*Store)(nil)
	_ io.Closer = (*Store)(nil)
)

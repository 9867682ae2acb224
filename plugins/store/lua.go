package store

import (
	"errors"
	"io"
	"math"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// Name is the name scripts require: "store".
func (s *Store) Name() string { return "store" }

// Open pushes a module table bound to s. It is an lua.LGFunction meant for
// L.PreloadModule(s.Name(), s.Open); every LState opened this way shares s.
func (s *Store) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 5)
	for name, fn := range map[string]lua.LGFunction{
		"get":    s.luaGet,
		"set":    s.luaSet,
		"incr":   s.luaIncr,
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
	lv := L.Get(2)
	switch lv.(type) {
	case *lua.LNilType, lua.LString, lua.LNumber, lua.LBool, *lua.LTable:
	default:
		if !luavalue.IsNull(lv) {
			L.ArgError(2, "string, number, boolean, table or nil expected, got "+lv.Type().String())
		}
	}
	ttl := float64(L.OptNumber(3, 0))
	if ttl < 0 || math.IsNaN(ttl) {
		L.ArgError(3, "ttl must be a non-negative number of seconds")
	}
	// Convert before taking any lock: conversion walks the Lua table.
	v, err := luavalue.FromLua(lv)
	if err != nil {
		L.ArgError(2, err.Error())
	}
	if err := s.Set(key, v, ttlDuration(ttl)); err != nil {
		return fail(L, err)
	}
	L.Push(lua.LTrue)
	return 1
}

// incr(k [, n [, ttl]]) -> number | nil, err
func (s *Store) luaIncr(L *lua.LState) int {
	key := L.CheckString(1)
	n := float64(L.OptNumber(2, 1))
	ttl := float64(L.OptNumber(3, 0))
	if ttl < 0 || math.IsNaN(ttl) {
		L.ArgError(3, "ttl must be a non-negative number of seconds")
	}
	v, err := s.Incr(key, n, ttlDuration(ttl))
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

package luavalue

import lua "github.com/yuin/gopher-lua"

// TypeField is the metatable field that marks a table's JSON type. It is the
// field dkjson reads, so tables marked by scripts written for dkjson
// (setmetatable(t, {__jsontype = "array"})) are recognised too.
const TypeField = "__jsontype"

// Registry keys: one array metatable and one null per LState, created on first
// use so that states that never touch JSON pay nothing.
const (
	arrayMetatableKey = "moonwire.luavalue.array"
	nullKey           = "moonwire.luavalue.null"
)

// ArrayMetatable returns L's shared array-marker metatable. Every array made by
// this package carries the same table, so marking costs no allocation.
func ArrayMetatable(L *lua.LState) *lua.LTable {
	reg := L.G.Registry
	if mt, ok := reg.RawGetString(arrayMetatableKey).(*lua.LTable); ok {
		return mt
	}
	mt := L.CreateTable(0, 1)
	mt.RawSetString(TypeField, lua.LString("array"))
	reg.RawSetString(arrayMetatableKey, mt)
	return mt
}

// NewArray returns an empty table marked as an array, with room for n
// elements, so that it encodes as [] even while it is empty.
func NewArray(L *lua.LState, n int) *lua.LTable {
	t := L.CreateTable(n, 0)
	t.Metatable = ArrayMetatable(L)
	return t
}

// MarkArray sets t's metatable to the array marker, replacing any other
// metatable; callers that must not clobber a script's own metatable check
// t.Metatable first.
func MarkArray(L *lua.LState, t *lua.LTable) {
	t.Metatable = ArrayMetatable(L)
}

// IsArray reports whether t carries an array marker: any metatable whose raw
// __jsontype field is "array", not only the one from ArrayMetatable.
func IsArray(t *lua.LTable) bool {
	mt, ok := t.Metatable.(*lua.LTable)
	return ok && mt.RawGetString(TypeField) == lua.LString("array")
}

// nullValue is unexported so that no other Go code can make a userdata that
// IsNull mistakes for null.
type nullValue struct{}

// Null returns L's JSON null sentinel: a userdata that prints as "null", is
// the same value for every call on one state, and becomes Go nil in FromLua.
// Scripts compare against it with v == json.null.
func Null(L *lua.LState) *lua.LUserData {
	reg := L.G.Registry
	if ud, ok := reg.RawGetString(nullKey).(*lua.LUserData); ok {
		return ud
	}
	mt := L.CreateTable(0, 3)
	mt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString("null"))
		return 1
	}))
	mt.RawSetString("__name", lua.LString("json.null"))
	// A protected metatable keeps scripts from giving null methods or
	// changing how it prints for every other script in the VM.
	mt.RawSetString("__metatable", lua.LString("json.null"))
	ud := L.NewUserData()
	ud.Value = nullValue{}
	ud.Metatable = mt
	reg.RawSetString(nullKey, ud)
	return ud
}

// IsNull reports whether v is a JSON null sentinel from any LState.
func IsNull(v lua.LValue) bool {
	ud, ok := v.(*lua.LUserData)
	if !ok {
		return false
	}
	_, ok = ud.Value.(nullValue)
	return ok
}

package lua

import (
	glua "github.com/yuin/gopher-lua"
)

// Read-only values. A VM serves many connections one after another, so
// whatever one callback changes in a shared value, every later callback of
// that VM sees: a script that wrote ws.settings.admin = conn:get("user"),
// or set getmetatable("").__index to its own table, changed the route for
// everyone after it. The values every callback relies on (ws, ws.settings,
// the string metatable and library) are therefore read-only:
//
//   - ws and ws.settings (deeply) are empty proxy tables whose metatable
//     reads from a private copy and refuses writes. The metatable is
//     protected (__metatable), so getmetatable cannot reach the copy and
//     setmetatable cannot remove the guard; rawset, table.insert,
//     table.remove and table.sort, the raw writers, refuse a proxy, and
//     pairs iterates it without handing out the copy.
//   - the string metatable is protected the same way: getmetatable("")
//     returns a message instead of the table strings index, and the
//     string library (the global string) is a read-only view of that
//     table.

// frozenKey marks a read-only proxy's metatable. Scripts cannot read a
// protected metatable, so only Go sees it.
const frozenKey = "\x00moonwire.frozen"

// freeze returns a read-only view of t, and of every table inside it; name
// is what errors call it ("ws.settings"). t becomes the view's private copy
// (its nested tables are replaced by their views): the caller keeps it to
// change what the view shows, and must not hand it to scripts.
func freeze(L *glua.LState, t *glua.LTable, name string) *glua.LTable {
	var nested []glua.LValue
	t.ForEach(func(k, val glua.LValue) {
		if _, ok := val.(*glua.LTable); ok && frozenName(val) == "" {
			nested = append(nested, k)
		}
	})
	for _, k := range nested {
		t.RawSet(k, freeze(L, t.RawGet(k).(*glua.LTable), name))
	}
	inner := t
	proxy := L.NewTable()
	mt := L.NewTable()
	mt.RawSetString("__index", inner)
	mt.RawSetString("__newindex", L.NewFunction(func(L *glua.LState) int {
		L.RaiseError("%s is read-only", name)
		return 0
	}))
	mt.RawSetString("__len", L.NewFunction(func(L *glua.LState) int {
		L.Push(glua.LNumber(inner.Len()))
		return 1
	}))
	// pairs walks the copy with an iterator of its own: handing the
	// script next and the copy, as a plain table's pairs would, gives it
	// the copy itself (local _, inner = pairs(ws.settings)) to write
	// through. The iterator closes over the copy, whose nested tables are
	// their views, so the script sees only what indexing shows.
	iter := L.NewFunction(func(L *glua.LState) int {
		k, val := inner.Next(L.Get(2))
		if k == glua.LNil {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(k)
		L.Push(val)
		return 2
	})
	mt.RawSetString("__pairs", L.NewFunction(func(L *glua.LState) int {
		L.Push(iter)
		L.Push(proxy)
		L.Push(glua.LNil)
		return 3
	}))
	mt.RawSetString("__metatable", glua.LString(name+" is read-only"))
	mt.RawSetString(frozenKey, glua.LString(name))
	proxy.Metatable = mt
	return proxy
}

// frozenName returns what a read-only proxy is called, or "" for any other
// value.
func frozenName(v glua.LValue) string {
	t, ok := v.(*glua.LTable)
	if !ok {
		return ""
	}
	mt, ok := t.Metatable.(*glua.LTable)
	if !ok {
		return ""
	}
	if s, ok := mt.RawGetString(frozenKey).(glua.LString); ok {
		return string(s)
	}
	return ""
}

// guardRawWriters wraps the functions that write a table without its
// metatable's consent so that they refuse read-only proxies, and protects
// the string metatable and library. It runs once the libraries are open.
func guardRawWriters(L *glua.LState) {
	guard := func(tbl *glua.LTable, fname, shown string) {
		orig, ok := tbl.RawGetString(fname).(*glua.LFunction)
		if !ok {
			return
		}
		tbl.RawSetString(fname, L.NewFunction(func(L *glua.LState) int {
			if name := frozenName(L.Get(1)); name != "" {
				L.RaiseError("%s: %s is read-only", shown, name)
			}
			top := L.GetTop()
			L.Push(orig)
			for i := 1; i <= top; i++ {
				L.Push(L.Get(i))
			}
			L.Call(top, glua.MultRet)
			return L.GetTop() - top
		}))
	}
	guard(L.G.Global, "rawset", "rawset")
	if tbl, ok := L.GetGlobal("table").(*glua.LTable); ok {
		for _, f := range []string{"insert", "remove", "sort"} {
			guard(tbl, f, "table."+f)
		}
	}
	// pairs honours __pairs even behind a protected metatable (the Lua
	// prelude's version goes through getmetatable, which sees only the
	// protection): Lua 5.2's rule, so read-only proxies iterate like the
	// tables they stand for.
	next := L.GetGlobal("next")
	L.SetGlobal("pairs", L.NewFunction(func(L *glua.LState) int {
		v := L.CheckAny(1)
		if t, ok := v.(*glua.LTable); ok {
			if mt, ok := t.Metatable.(*glua.LTable); ok {
				if f := mt.RawGetString("__pairs"); f != glua.LNil {
					L.Push(f)
					L.Push(v)
					L.Call(1, 3)
					return 3
				}
			}
		}
		L.CheckTable(1)
		L.Push(next)
		L.Push(v)
		L.Push(glua.LNil)
		return 3
	}))
	// The string library is what every string's methods are looked up in:
	// with string.upper = f, ("abc"):upper() would call f in every later
	// callback, the hole the protected metatable closes. gopher-lua makes
	// the library its own metatable (string.__index is string), which
	// would hand the table out through the view, so strings get a
	// metatable of their own, protected, whose __index is the library; the
	// global becomes a read-only view of it. Method calls still find the
	// library in one lookup.
	if str, ok := L.GetGlobal("string").(*glua.LTable); ok {
		str.RawSetString("__index", glua.LNil)
		mt := L.NewTable()
		mt.RawSetString("__index", str)
		mt.RawSetString("__metatable", glua.LString("the string metatable is read-only"))
		L.SetMetatable(glua.LString(""), mt)
		L.SetGlobal("string", freeze(L, str, "string"))
	}
}

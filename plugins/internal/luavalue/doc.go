// Package luavalue converts between Go values and gopher-lua values, and
// writes Lua values as JSON, so that the json, crypto and store modules (and
// the Lua engine, for route settings) agree on one mapping instead of each
// inventing its own.
//
// The mapping, in both directions:
//
//	Go                        Lua
//	nil                       nil (or json.null inside an array)
//	bool                      boolean
//	int*, uint*, float*       number (float64: integers beyond ±2^53 lose precision)
//	string, []byte            string
//	[]any                     table with the array marker
//	map[string]any            table with string keys
//
// Lua has one table type, so arrays are told apart by shape: a table whose keys
// are exactly 1..n (n >= 1) is an array, and so is any table carrying the array
// marker, a metatable with __jsontype = "array" (the dkjson convention). The
// marker is how an empty array survives a round trip: {} is an object,
// ArrayMetatable-marked {} is an array. Any other table is an object and every
// key must be a string; a table mixing 1..n and string keys is rejected rather
// than silently losing half of its keys.
//
// JSON null is a per-state userdata sentinel (Null) that FromLua turns into Go
// nil; it exists so that arrays can hold a null without leaving a hole.
//
// This package is a leaf: it imports gopher-lua and the standard library only
// and must not know about the engine, the router or any module built on it.
package luavalue

// Package json is the `json` Lua module: encode and decode between Lua values
// and JSON text for route scripts.
//
// Scripts parse untrusted client messages with it, so bad input is an
// ordinary value, never a Lua error: decode returns nil and a message, and the
// script decides what to tell the client. Only misuse by the script itself (a
// non-string passed to decode) raises. Every call is bounded by Limits.
//
// Shapes are those of package luavalue, which this module shares with crypto
// (jwt_sign) and store so that all three agree on what an array is: JSON
// arrays decode to tables carrying the array marker, objects to plain tables,
// and json.null stands for null where a nil would lose an array position.
//
// The module knows nothing of the engine, the router, connections or other
// modules; it is a self-describing value (Name, Open) that the engine holds in
// an explicit registry and preloads into each VM it builds.
package json

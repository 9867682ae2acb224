// Package store is the `store` Lua module: a key/value map shared by every VM
// and every route of one moonwire process, with optional per-key expiry.
//
// Lua globals are per VM and die with a reload; the store is where scripts
// keep what must be seen by all connections and must outlive a reload
// (counters, rate windows, the latest reading per client). Its state lives in
// a Go *Store that the process owns and hands to each VM it builds, so a
// reload that throws every LState away keeps the data.
//
// Values cross the Lua/Go boundary by copy (package luavalue): set stores
// plain Go data, get builds fresh Lua values, so no table is ever shared
// between two VMs and a script mutating what get returned changes nothing in
// the store. Bounds (MaxKeys, MaxValueBytes) are reported to the script as a
// value it can act on, not raised, because hitting them is a runtime
// condition, not a bug.
//
// The store knows nothing of the engine, the router, connections, the broker
// or other modules; it is one process's memory, not replicated across nodes.
package store

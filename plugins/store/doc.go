// Package store is the `store` Lua module: a key/value map shared by every VM
// and every route, with optional per-key expiry, kept in a Backend.
//
// Lua globals are per VM and die with a reload; the store is where scripts
// keep what must be seen by all connections and must outlive a reload
// (counters, rate windows, the latest reading per client). Its state lives
// in a Go value the process owns and hands to each VM it builds, so a
// reload that throws every LState away keeps the data.
//
// Two layers:
//
//   - Module is the Lua side: it converts arguments, enforces the calling
//     convention documented in scripts/README.md (bad argument types
//     raise; a bound, a full store or a failed network return nil and a
//     "store: ..." string; incr on a non-number and push on a non-list
//     raise) and calls a Backend.
//   - A Backend keeps the data. Store, this package's own, is one
//     process's memory, bounded by MaxKeys, MaxBytes and MaxValueBytes and
//     not replicated. plugins/store/redis and plugins/store/nats keep it on
//     a server that several moonwire nodes share; there the atomic
//     operations (incr, push with its trim, cas, and their TTLs) are atomic
//     across nodes, MaxValueBytes still applies, and the server's own
//     limits (Redis's maxmemory, the bucket's max bytes) replace MaxKeys
//     and MaxBytes. Every backend passes one conformance suite
//     (internal/storetest), which is what "the same meaning on every
//     backend" rests on.
//
// Store is itself a Lua module (Name, Open) over its own Backend, which is
// how the server has always installed it.
//
// Values cross the Lua/Go boundary by copy (package luavalue): set stores
// plain Go data, get builds fresh Lua values, so no table is ever shared
// between two VMs and a script mutating what get returned changes nothing in
// the store. Network backends encode that data so that it reads back with
// exactly its type (internal/codec). Bounds are reported to the script as a
// value it can act on, not raised, because hitting them is a runtime
// condition, not a bug; so is a network failure.
//
// The store knows nothing of the engine, the router, connections, the broker
// or other modules, and this package nothing of Redis or NATS: it must not
// import its subpackages (internal/layout checks that module plugins import
// no moonwire package but their own internals).
package store

// Package config turns a moonwire TOML file into a validated [Config].
//
// It exists so that everything that can be wrong with a configuration is
// found before the router starts (or before a reload is applied), and is
// reported in one go with the file and the key that is wrong: a user fixing a
// config should never have to restart the server once per typo.
//
// The package knows TOML and the config schema of the product spec
// (SPEC.md section 2): defaults, units, the route pattern syntax and which
// keys exist. Decoding is strict — an unknown key is an error — except inside
// a route's free-form settings table, which belongs to the route's script.
// Paths in the file are resolved here, once, so the rest of the program only
// sees absolute OS paths or [io/fs.FS] values.
//
// It must know nothing of sockets, Lua or the router's runtime: it never
// listens, never compiles a script (it only checks that the script file
// exists) and imports no other moonwire package. The router, the Lua engine
// and cmd/moonwire read the resulting plain Go values; keeping this package a
// leaf is what lets `moonwire check` validate a file without starting
// anything.
package config

// Package scripts holds moonwire's built-in route scripts (echo, chat,
// auth, monitor) and the default configuration that serves them, embedded
// in the binary so that `moonwire` runs with no files at all.
//
// It is data only: it knows nothing of the router or the Lua engine.
package scripts

import "embed"

// FS holds default.toml and the .lua scripts.
//
//go:embed default.toml *.lua
var FS embed.FS

// DefaultConfig is the name of the default configuration inside FS.
const DefaultConfig = "default.toml"

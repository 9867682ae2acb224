// Package lua runs moonwire route scripts: it compiles a route's script
// once, keeps one sandboxed gopher-lua VM per router lane (so a connection,
// pinned to a lane, always meets the same VM and its events run in order),
// and implements router.Handler by calling the script's on_handshake,
// on_open, on_message, on_close and on_start.
//
// It owns the sandbox (an allow-list of libraries, no file or OS access,
// require confined to the scripts folder, bounded string building, a
// deadline on every callback) and the modules that need the router or the
// VM: ws, timer, log and time. Modules that need neither (json, crypto,
// store) are plugins of their own, handed in through Options.Modules.
//
// It must not know TOML or sockets: cmd/moonwire turns the config file into
// RouteConfig values, and the router does all I/O.
package lua

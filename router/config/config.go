package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Config is a loaded, validated and defaulted moonwire configuration. Every
// relative path in the file has been resolved and every route carries its
// effective values, so consumers never re-apply defaults or inheritance and
// never look at the file again.
type Config struct {
	// File is the config file as given to Load, or "<embedded>/NAME" for
	// LoadFS, so messages about a built-in config are not mistaken for a
	// file in the working directory.
	File string
	// Dir is the absolute OS folder of the config file; "" for LoadFS.
	Dir string

	Server    Server
	Heartbeat Heartbeat
	Scripts   Scripts
	Admin     Admin
	Broker    Broker
	Store     Store
	API       API        // [api]: the server HTTP API (api.go)
	HTTP      HTTPClient // [http]: outbound HTTP from scripts (httpclient.go)
	// History lists the rooms that keep a history ([history]), most
	// specific first; see HistoryFor.
	History []HistoryRule
	Routes  []Route
	// Plugins are the [plugins.NAME] tables, by NAME, undecoded: each is
	// for the plugin registered under that name (see Plugin).
	Plugins map[string]Plugin

	// Warnings are settings that work but that an operator should look
	// at (an admin listener reachable from other hosts without a token):
	// "key: message". moonwire check prints them; the server logs them.
	Warnings []string
}

// Server is the [server] table: the listener and per-connection limits.
type Server struct {
	Listen string // host:port; port 0 picks a free port

	// TLSCert and TLSKey are OS paths, absolute when the config came from
	// disk (relative values are resolved against Config.Dir). For LoadFS they
	// are kept as written, i.e. relative to the working directory: keys do
	// not belong in an embedded filesystem. Both or neither are set.
	TLSCert, TLSKey string

	// StaticDir is the folder served as plain HTTP files, resolved like
	// TLSCert; "" when off. StaticFS is the same folder as a filesystem
	// (inside the LoadFS filesystem when loaded from one), so the server can
	// serve embedded example pages without touching the disk. nil when off.
	StaticDir string
	StaticFS  fs.FS

	// AllowedOrigins are lower-cased "scheme://host[:port]" patterns whose
	// host may contain "*" wildcards; the single entry "*" means any origin,
	// and so does an empty list. Lower-casing here lets the server compare a
	// lower-cased Origin header without case-folding on every handshake.
	AllowedOrigins []string

	MaxMessageSize   int64         // bytes; a larger reassembled message closes 1009
	MaxConnections   int           // 0 = no limit
	HandshakeTimeout time.Duration // a slow or silent handshake is dropped after this
	WriteQueue       int64         // bytes queued per connection before SlowConsumer applies
	SlowConsumer     string        // "close" or "drop"
	DrainTimeout     time.Duration // upper bound on a graceful shutdown
	// WriteTimeout drops a connection whose queued writes make no progress
	// for this long, so a client that stops reading cannot pin its queue.
	WriteTimeout time.Duration
	Compression  bool // permessage-deflate when the client offers it
	// Console is the dev console and the served JavaScript client
	// (console.go).
	Console Console
}

// Heartbeat is the protocol-level ping/pong policy: [heartbeat], or a
// route's effective copy.
type Heartbeat struct {
	Interval time.Duration // ping a connection that has been quiet this long
	Timeout  time.Duration // close 1001 after this long without any frame; always > Interval
}

// Scripts is the [scripts] table.
type Scripts struct {
	// Dir is the absolute OS path of the scripts folder (relative values are
	// relative to the config file's folder); "" for LoadFS.
	Dir string
	// FS is the scripts folder as a filesystem. For a config on disk it
	// opens every name with os.OpenInRoot(Dir, name), so no path, symlinks
	// included, resolves outside Dir; for LoadFS it is a sub-filesystem of
	// the LoadFS filesystem. Route scripts and `require` resolve inside it,
	// which is what keeps scripts from reaching outside their folder.
	FS             fs.FS
	Reload         bool
	VMs            int           // as written: 0 means one per CPU; Route.VMs is already resolved
	HandlerTimeout time.Duration // a callback running longer is stopped and its connection closed 1011
	// MemoryLimit stops running callbacks when the process heap passes it
	// (a runaway script's safety net); 0 = no limit. Default 1 GiB.
	MemoryLimit int64
	// MemoryLimitSet says the file sets memory_limit: a program that
	// embeds moonwire applies only a limit it was given (see
	// moonwire.Options.OwnProcess).
	MemoryLimitSet bool
}

// Admin is the [admin] table.
type Admin struct {
	Listen string // host:port for /metrics, /healthz, /routes; "" = off
	// Pprof also serves the Go profiler under /debug/pprof/ on the admin
	// port: heap, CPU, goroutines of the running server. Default off, and
	// refused on a listener that is not loopback unless PprofPublic.
	Pprof       bool
	PprofPublic bool
	// Token, when set, is required of every admin request as
	// "Authorization: Bearer TOKEN".
	Token string
}

// Store is the [store] table: the bounds of the shared store scripts
// write to. Any script can fill it, so it is bounded by default.
type Store struct {
	// Kind is a registered store backend: "memory" (default: this
	// process), "redis" or "nats" (shared by every node), or a plugin's.
	Kind string
	// URL locates a network backend; default broker.url when the broker
	// is of the same kind. Keys are namespaced by broker.prefix.
	URL          string
	MaxBytes     int64 // what all keys and values may take, approximately in heap bytes; default 64 MiB
	MaxKeys      int   // default 100,000
	MaxValueSize int64 // one key and its value (about its JSON length); default 1 MiB, at most MaxBytes
}

// Broker is the [broker] table: how broadcasts reach other nodes.
type Broker struct {
	Kind string // a registered broker: "memory" (default), "redis", "nats" or a plugin's
	URL  string // "" for memory; redis:// rediss:// for redis; nats:// tls:// (comma-separated list allowed) for nats
	// Prefix starts every key, channel and subject the broker uses, so
	// that several apps (or test runs) can share one Redis or NATS;
	// default "moonwire". Letters, digits, '_' and '-'.
	Prefix string
	// Timeout bounds connecting and each broker command; default 5s.
	Timeout time.Duration
	// Outbox is how many messages may wait to be published; past it they
	// are dropped and counted (publishing never makes a lane wait).
	// Default 10,000.
	Outbox int
	// PresenceTTL is how long a node's room members stay listed after its
	// last refresh (every third of it): how long a dead node's members
	// linger in ws.presence and ws.room_size. Default 15s.
	PresenceTTL time.Duration
	// StartDegraded starts the server when the broker cannot be reached,
	// serving local traffic and connecting in the background; by default
	// an unreachable broker fails the start with an error.
	StartDegraded bool
}

// RateLimit is a token bucket per connection: Burst tokens, refilled at
// Messages per Per.
type RateLimit struct {
	Messages int
	Per      time.Duration
	Burst    int // >= Messages; defaults to Messages
}

// Route is one [[routes]] entry with every inherited value already applied.
type Route struct {
	// Path is the pattern as written: literal segments and whole-segment
	// {name} parameters. No two routes match the same request shape; a
	// literal segment and a parameter in the same position may coexist, and
	// the router is expected to prefer the literal.
	Path string
	// Script is a clean slash-separated path inside Scripts.FS ("echo.lua",
	// "rooms/chat.lua"); it never starts with "/" or contains "..".
	Script string

	Heartbeat           Heartbeat  // the route's override merged over [heartbeat]
	MaxMessageSize      int64      // the route's override, else server.max_message_size
	RateLimit           *RateLimit // nil when the route sets none
	MaxConnectionsPerIP int        // 0 = no limit
	VMs                 int        // the route's vms, else scripts.vms; 0 resolved to runtime.NumCPU()
	// Settings is the route's free-form table exactly as TOML decoded it
	// (strings, int64, float64, bool, time values, []any, map[string]any,
	// []map[string]any); never nil. Treat it as read-only: it is handed to
	// every VM of the route as is.
	Settings map[string]any
	// Modules are the optional modules the route's scripts get, by name,
	// in the order listed; nil when the route lists none. Whether each is
	// registered is checked when the server is built, not here.
	Modules []string
}

// Load reads, validates and defaults the config file at path. Relative paths
// inside it are resolved against the file's folder. On failure the error is
// an Errors listing every problem found.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, readError(path, err)
	}
	return parse(data, source{file: path, dir: filepath.Dir(abs)})
}

// LoadFS is Load for a config inside fsys, such as the embedded default.
// name is an fs.ValidPath; scripts.dir and static_dir are resolved inside
// fsys relative to name's folder and may not leave fsys. Config.File is
// "<embedded>/" + name and Config.Dir and Scripts.Dir are "".
func LoadFS(fsys fs.FS, name string) (*Config, error) {
	file := embeddedPrefix + name
	if !fs.ValidPath(name) {
		return nil, Errors{{File: file, Msg: "invalid file name: want a slash-separated path inside the filesystem, without \"..\""}}
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, readError(file, err)
	}
	return parse(data, source{file: file, fsys: fsys, fsDir: pathDir(name)})
}

// embeddedPrefix marks names inside an fs.FS in messages.
const embeddedPrefix = "<embedded>/"

func readError(file string, err error) error {
	msg := err.Error()
	if pe, ok := err.(*fs.PathError); ok {
		// The path is already in front of the message; say only what failed.
		msg = "cannot read: " + pe.Err.Error()
	}
	return Errors{{File: file, Msg: msg, err: err}}
}

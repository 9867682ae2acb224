package lua

import (
	"io/fs"
	"log/slog"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// SandboxOptions configure NewSandboxState. Zero values mean what they
// mean in Options.
type SandboxOptions struct {
	// Modules are installed as Options.Modules are in a route's VM: opened
	// once, as globals and in require's cache. A RouteModule is opened for
	// Route.
	Modules []Module
	// Route is the route pattern the state stands for: ws.route, and the
	// route a RouteModule is opened for.
	Route string
	// Logger receives print and log.*; nil: slog.Default().
	Logger *slog.Logger
	// MaxStringSize bounds what string.rep and the other builtins build,
	// and what module plugins may charge through budget.Charge; 0: 64 MiB.
	MaxStringSize int
	// MaxCoroutines bounds the coroutines created. A route's VM counts
	// them per callback; a standalone state has no callbacks, so it counts
	// them over its whole life. 0: 1000.
	MaxCoroutines int
}

// NewSandboxState returns a Lua state that is a route's VM: the production
// sandbox (the same libraries, replaced builtins, limits, prelude,
// read-only values and require), the engine's modules ws, timer, log and
// time, and opts.Modules. It is for tests of module plugins, which have
// no route of their own: they run where scripts will meet them.
//
// The state is not a copy of the sandbox's recipe but the product of it:
// NewSandboxState builds a route whose script does nothing ("return {}")
// through the path every route takes (New, Engine.NewRoute), and hands out
// its one VM's state. So it cannot drift from production. What it lacks is
// what only a running route has:
//
//   - no watchdog: a chunk run in the state has no handler timeout and no
//     memory limit (the engine's watchdog is stopped at once, having no
//     callback to watch);
//   - no server: like a script's top level, the state cannot reach the
//     router (ws.send and the other ws functions raise, timers cannot
//     start);
//   - no scripts folder: require finds the modules, and no script;
//   - accounting without a reader: the state's context offers the VM's
//     budget.Charger, so a module's builtins are refused results past
//     MaxStringSize as in production, but what they charge adds up for no
//     one. A test that sets a context of its own (L.SetContext) replaces
//     that one, and budget.Charge does nothing under it, as outside an
//     engine.
//
// One limit is not the state's but the process's: like New, it leaves
// gopher-lua's table array part alone; call LimitArrays as the moonwire
// command does (luatest does). The caller closes the state with L.Close.
func NewSandboxState(opts SandboxOptions) (*glua.LState, error) {
	eng := New(Options{
		Logger:        opts.Logger,
		Modules:       opts.Modules,
		MaxStringSize: opts.MaxStringSize,
		MaxCoroutines: opts.MaxCoroutines,
		MemoryLimit:   -1,
	})
	// The engine is kept for its settings and the VM's bookkeeping; its
	// watchdog would only watch a VM that runs no callback, and would
	// outlive the state.
	eng.Close()
	r, err := eng.NewRoute(RouteConfig{Pattern: opts.Route, FS: sandboxFS{}, Script: sandboxScript})
	if err != nil {
		return nil, err
	}
	return r.vms[0].L, nil
}

// sandboxScript is the script of the route NewSandboxState builds, and
// sandboxSource its source. The name starts with a dot, as no module name
// may (see resolveModule), so require cannot reach it.
const (
	sandboxScript = ".sandbox.lua"
	sandboxSource = "return {}"
)

// sandboxFS is a scripts folder holding sandboxScript only.
type sandboxFS struct{}

func (sandboxFS) Open(name string) (fs.File, error) {
	if name != sandboxScript {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return sandboxFile{strings.NewReader(sandboxSource)}, nil
}

// sandboxFile is sandboxScript, open.
type sandboxFile struct{ *strings.Reader }

func (sandboxFile) Stat() (fs.FileInfo, error) { return sandboxInfo{}, nil }
func (sandboxFile) Close() error               { return nil }

// sandboxInfo describes sandboxScript.
type sandboxInfo struct{}

func (sandboxInfo) Name() string       { return sandboxScript }
func (sandboxInfo) Size() int64        { return int64(len(sandboxSource)) }
func (sandboxInfo) Mode() fs.FileMode  { return 0o444 }
func (sandboxInfo) ModTime() time.Time { return time.Time{} }
func (sandboxInfo) IsDir() bool        { return false }
func (sandboxInfo) Sys() any           { return nil }

// Package greet is an example moonwire plugin: an optional Lua module,
// greet, configured by [plugins.greet] and taking a reload's changes
// live. A program adds it by importing the package; its init registers
// it. It depends only on the moonwire package, its config and gopher-lua,
// as any third-party plugin would.
//
// In a route that lists it (modules = ["greet"]):
//
//	greet.hello(name)   -- "<greeting>, <name>!", or nil, "name too long"
//	greet.greeting()    -- the greeting now configured
package greet

import (
	"sync/atomic"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/plugins/lua"
)

func init() {
	moonwire.RegisterModule(moonwire.ModuleInfo{Name: "greet", Optional: true, New: New})
}

// Config is [plugins.greet].
type Config struct {
	Greeting string `toml:"greeting"` // required
	MaxName  int    `toml:"max_name"` // the longest name hello takes, in bytes; default 64
}

// Module is the greet module of one server.
type Module struct {
	cfg atomic.Pointer[Config] // swapped whole by a reload
}

// New makes the module from its table: the registry's ModuleInfo.New.
func New(ctx moonwire.ModuleContext) (lua.Module, error) {
	cfg, err := decode(ctx)
	if err != nil {
		return nil, err
	}
	m := &Module{}
	m.cfg.Store(cfg)
	return m, nil
}

// decode reads and checks the table; its errors name the file and key.
func decode(ctx moonwire.ModuleContext) (*Config, error) {
	cfg := Config{MaxName: 64}
	if err := ctx.Config.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Greeting == "" {
		return nil, ctx.Config.Errorf("greeting", "required")
	}
	if cfg.MaxName < 1 || cfg.MaxName > 1<<16 {
		return nil, ctx.Config.Errorf("max_name", "must be between 1 and 65536, not %d", cfg.MaxName)
	}
	return &cfg, nil
}

// Reconfigure implements moonwire.Reconfigurer: a reload checks the new
// table aside and swaps it in once the whole reload has succeeded.
func (m *Module) Reconfigure(ctx moonwire.ModuleContext) (func(), error) {
	cfg, err := decode(ctx)
	if err != nil {
		return nil, err
	}
	return func() { m.cfg.Store(cfg) }, nil
}

// Name implements lua.Module.
func (m *Module) Name() string { return "greet" }

// Open implements lua.Module: it pushes the module table. It runs once per
// VM; the functions read the configuration at each call, so a reload
// reaches VMs that are already running.
func (m *Module) Open(L *glua.LState) int {
	t := L.NewTable()
	L.SetField(t, "hello", L.NewFunction(m.hello))
	L.SetField(t, "greeting", L.NewFunction(func(L *glua.LState) int {
		L.Push(glua.LString(m.cfg.Load().Greeting))
		return 1
	}))
	L.Push(t)
	return 1
}

func (m *Module) hello(L *glua.LState) int {
	cfg := m.cfg.Load()
	name := L.CheckString(1)
	if len(name) > cfg.MaxName {
		L.Push(glua.LNil)
		L.Push(glua.LString("name too long"))
		return 2
	}
	L.Push(glua.LString(cfg.Greeting + ", " + name + "!"))
	return 1
}

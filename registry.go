package moonwire

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/config"
)

// ModuleInfo registers a Lua module: a table scripts reach as a global and
// through require, under Name.
type ModuleInfo struct {
	// Name is the module's global name, its require name and the NAME of
	// its [plugins.NAME] table: a Lua identifier that no global of the
	// sandbox (string, require, ws, timer, ...) and no other plugin has.
	Name string
	// Optional modules are absent from a route's sandbox unless the route
	// lists them (modules = ["NAME"]); the others every route gets.
	Optional bool
	// New makes the module's instance for one server, from its
	// [plugins.NAME] table (empty when the file has none), which it decodes
	// and validates itself (config.Plugin.Decode, Errorf). It runs when the
	// server is built, and by moonwire check, for every module that is not
	// optional, that a route lists or whose table the file has. The
	// instance serves every VM of every route that has the module, from
	// many goroutines at once (see lua.Module); a lua.RouteModule gets a
	// table per route. When the server stops, an instance that is an
	// io.Closer is closed.
	//
	// A reload hands a changed table to the instance's Reconfigure, when it
	// is a Reconfigurer; otherwise the reload is refused ("reload not
	// supported for plugins.NAME").
	New func(ModuleContext) (lua.Module, error)
}

// ModuleContext is what a module's New, or Reconfigure, is given.
type ModuleContext struct {
	// Config is the module's [plugins.NAME] table, undecoded.
	Config config.Plugin
	// Server is the whole configuration; read-only. (The built-in store
	// reads [store].)
	Server *config.Config
	// Logger is the server's, with plugin=NAME.
	Logger *slog.Logger
	// Metrics is where the module registers its Prometheus collectors:
	// the server's /metrics.
	Metrics prometheus.Registerer
}

// Reconfigurer is a module instance that takes a new configuration live.
// Reconfigure checks it and prepares what it needs without touching what
// runs, like the rest of a reload (build aside, then swap): an error fails
// the whole reload and nothing changes; apply runs only once every other
// part of the reload has succeeded, and must not fail.
type Reconfigurer interface {
	Reconfigure(ModuleContext) (apply func(), err error)
}

// BrokerInfo registers a broker backend: how broadcasts reach the other
// nodes of a cluster, chosen with [broker] kind = "NAME".
type BrokerInfo struct {
	// Name is what broker.kind names: a Lua identifier unique among
	// plugins.
	Name string
	// New makes the server's broker. The server closes it when it stops.
	New func(BrokerContext) (broker.Broker, error)
}

// StoreInfo registers a backend for the shared store (the `store` Lua
// module), chosen with [store] kind = "NAME". Store kinds are a namespace
// of their own: "redis" names both a broker and a store.
type StoreInfo struct {
	// Name is what store.kind names: a Lua identifier.
	Name string
	// New makes the backend. The server closes it when it stops.
	New func(StoreContext) (store.Backend, error)
}

// StoreContext is what a store's New is given.
type StoreContext struct {
	// Store is the [store] table (kind, url and bounds).
	Store config.Store
	// Broker is the [broker] table: its prefix and timeout apply to the
	// store's keys and commands too.
	Broker config.Broker
	// Logger is the server's, with store=NAME.
	Logger *slog.Logger
}

// RegisterStore adds a store backend, selectable with [store] kind. As
// with RegisterModule, problems are reported when a server is built.
func RegisterStore(st StoreInfo) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	by := caller()
	switch {
	case st.New == nil:
		registry.errs = append(registry.errs, fmt.Sprintf("store %q (registered at %s) has no New function", st.Name, by))
	case !config.ValidName(st.Name):
		registry.errs = append(registry.errs, fmt.Sprintf("store %q (registered at %s): a store name is a Lua identifier (letters, digits, _; not starting with a digit)", st.Name, by))
	case registry.stores[st.Name].by != "":
		registry.errs = append(registry.errs, fmt.Sprintf("store %q is registered twice: at %s and at %s", st.Name, by, registry.stores[st.Name].by))
	default:
		if registry.stores == nil {
			registry.stores = map[string]registered[StoreInfo]{}
		}
		registry.stores[st.Name] = registered[StoreInfo]{st, by}
	}
}

// lookup returns the registration of name in m (the brokers or the
// stores), or the error for [what] kind that names the registered ones.
func lookup[T any](m map[string]registered[T], what, name, file string) (T, error) {
	registry.mu.Lock()
	r, ok := m[name]
	var names []string
	if !ok {
		names = slices.Sorted(maps.Keys(m))
	}
	registry.mu.Unlock()
	if !ok {
		return r.info, config.Errors{{File: file, Key: what + ".kind",
			Msg: fmt.Sprintf("no %s %q is registered in this build (registered: %s)", what, name, strings.Join(names, ", "))}}
	}
	return r.info, nil
}

// newStore makes the store backend [store] kind names.
func newStore(cfg *config.Config, log *slog.Logger) (store.Backend, error) {
	st, err := lookup(registry.stores, "store", cfg.Store.Kind, cfg.File)
	if err != nil {
		return nil, err
	}
	b, err := st.New(StoreContext{Store: cfg.Store, Broker: cfg.Broker, Logger: log.With("store", cfg.Store.Kind)})
	if err != nil {
		return nil, config.Errors{{File: cfg.File, Key: "store.url", Msg: fmt.Sprintf("store %s: %v", cfg.Store.Kind, err)}}
	}
	return b, nil
}

// BrokerContext is what a broker's New is given.
type BrokerContext struct {
	// Broker is the [broker] table (kind and url).
	Broker config.Broker
	// Config is the broker's own [plugins.NAME] table, undecoded.
	Config config.Plugin
	// Server is the whole configuration; read-only.
	Server *config.Config
	// Logger is the server's, with plugin=NAME.
	Logger *slog.Logger
}

// The registry is process-wide, like database/sql's drivers: plugins
// register from init functions, before any server exists, and a server
// reads it when it is built. Registering changes no server already built.
var registry struct {
	mu      sync.Mutex
	modules map[string]registered[ModuleInfo]
	brokers map[string]registered[BrokerInfo]
	stores  map[string]registered[StoreInfo]
	errs    []string // duplicate or unusable names, reported when a server is built
}

type registered[T any] struct {
	info T
	by   string // the registering file:line, for duplicate reports
}

// RegisterModule adds a Lua module to every server built from now on. It
// is meant for a plugin package's init function: a program adds the
// plugin by importing it. A name that is taken, or that cannot name a
// module, does not panic: New and Check fail with an error that names
// both registrations.
func RegisterModule(m ModuleInfo) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	by := caller()
	if m.New == nil {
		registry.errs = append(registry.errs, fmt.Sprintf("module %q (registered at %s) has no New function", m.Name, by))
		return
	}
	if !registerName("module", m.Name, by) {
		return
	}
	if registry.modules == nil {
		registry.modules = map[string]registered[ModuleInfo]{}
	}
	registry.modules[m.Name] = registered[ModuleInfo]{m, by}
}

// RegisterBroker adds a broker backend, selectable with [broker] kind. As
// with RegisterModule, problems are reported when a server is built.
func RegisterBroker(b BrokerInfo) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	by := caller()
	if b.New == nil {
		registry.errs = append(registry.errs, fmt.Sprintf("broker %q (registered at %s) has no New function", b.Name, by))
		return
	}
	if !registerName("broker", b.Name, by) {
		return
	}
	if registry.brokers == nil {
		registry.brokers = map[string]registered[BrokerInfo]{}
	}
	registry.brokers[b.Name] = registered[BrokerInfo]{b, by}
}

// registerName checks that name is free and usable; registry.mu is held.
// Modules and brokers share one namespace: [plugins.NAME] must say whose
// table it is.
func registerName(kind, name, by string) bool {
	var first string
	if m, ok := registry.modules[name]; ok {
		first = "module at " + m.by
	} else if b, ok := registry.brokers[name]; ok {
		first = "broker at " + b.by
	}
	switch {
	case !config.ValidName(name):
		registry.errs = append(registry.errs, fmt.Sprintf("%s %q (registered at %s): a plugin name is a Lua identifier (letters, digits, _; not starting with a digit)", kind, name, by))
	case kind == "module" && lua.ReservedName(name):
		registry.errs = append(registry.errs, fmt.Sprintf("module %q (registered at %s): the name is a Lua keyword or a global every script has", name, by))
	case first != "":
		registry.errs = append(registry.errs, fmt.Sprintf("%s %q is registered twice: at %s and as a %s", kind, name, by, first))
	default:
		return true
	}
	return false
}

// caller names the file:line that called RegisterModule or RegisterBroker.
func caller() string {
	_, file, line, ok := runtime.Caller(2)
	if !ok {
		return "an unknown place"
	}
	return fmt.Sprintf("%s:%d", file, line)
}

// Modules lists the registered modules, by name.
func Modules() []ModuleInfo {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return sortedInfos(registry.modules)
}

// Brokers lists the registered brokers, by name.
func Brokers() []BrokerInfo {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return sortedInfos(registry.brokers)
}

func sortedInfos[T any](m map[string]registered[T]) []T {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]T, len(names))
	for i, n := range names {
		out[i] = m[n].info
	}
	return out
}

// registryError reports the registrations that went wrong.
func registryError() error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if len(registry.errs) == 0 {
		return nil
	}
	return fmt.Errorf("plugin registry: %s", strings.Join(registry.errs, "; "))
}

// modules is one server's module instances, by name, and what it built
// them from.
type modules struct {
	all      map[string]lua.Module
	optional map[string]bool
	// applied is the [plugins.NAME] table each instance runs with: the
	// one it was made or last reconfigured with, which for an idle
	// instance may be older than the running config's.
	applied map[string]config.Plugin
	// idle instances were made for an earlier config and no route of the
	// running one lists them. They are kept, not closed: a retired route
	// still draining may use one, and a route that lists the module again
	// gets it back instead of a new instance each reload. They are closed
	// with the server.
	idle map[string]bool
}

// buildModules makes the instances cfg needs: every module that is not
// optional, every one a route lists, and every one the file configures (so
// that moonwire check reports a table's mistakes even if no route uses it
// yet). keep holds instances to reuse as they are. On error the instances
// made here are closed.
func buildModules(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, keep map[string]lua.Module) (*modules, error) {
	if err := registryError(); err != nil {
		return nil, err
	}
	registry.mu.Lock()
	infos := make(map[string]ModuleInfo, len(registry.modules))
	for n, m := range registry.modules {
		infos[n] = m.info
	}
	brokers := make(map[string]bool, len(registry.brokers))
	names := make([]string, 0, len(registry.brokers)+len(infos))
	for n := range registry.brokers {
		brokers[n] = true
		names = append(names, n)
	}
	registry.mu.Unlock()
	for n := range infos {
		names = append(names, n)
	}
	slices.Sort(names)

	want := map[string]bool{}
	for n, m := range infos {
		if !m.Optional {
			want[n] = true
		}
	}
	for name := range cfg.Plugins {
		if _, isModule := infos[name]; isModule {
			want[name] = true
			continue
		}
		if !brokers[name] {
			return nil, cfg.Plugin(name).Errorf("", "no plugin of that name is registered (registered: %s)", strings.Join(names, ", "))
		}
	}
	for i, rc := range cfg.Routes {
		for j, name := range rc.Modules {
			if _, ok := infos[name]; !ok {
				return nil, config.Errors{{File: cfg.File, Key: fmt.Sprintf("routes[%d].modules[%d]", i, j),
					Msg: fmt.Sprintf("no module %q is registered (registered: %s)", name, strings.Join(names, ", "))}}
			}
			want[name] = true
		}
	}
	ms := &modules{all: map[string]lua.Module{}, optional: map[string]bool{}, applied: map[string]config.Plugin{}, idle: map[string]bool{}}
	order := make([]string, 0, len(want))
	for n := range want {
		order = append(order, n)
	}
	slices.Sort(order)
	for _, name := range order {
		info := infos[name]
		ms.optional[name] = info.Optional
		if m, ok := keep[name]; ok {
			ms.all[name] = m
			continue
		}
		m, err := info.New(moduleContext(cfg, name, log, reg))
		if err == nil && m == nil {
			err = fmt.Errorf("New returned no module")
		}
		if err == nil && m.Name() != name {
			err = fmt.Errorf("New returned a module named %q", m.Name())
		}
		if err != nil {
			ms.close(keep)
			return nil, fmt.Errorf("module %s: %w", name, err)
		}
		ms.all[name] = m
		ms.applied[name] = cfg.Plugin(name)
	}
	return ms, nil
}

func moduleContext(cfg *config.Config, name string, log *slog.Logger, reg prometheus.Registerer) ModuleContext {
	return ModuleContext{Config: cfg.Plugin(name), Server: cfg, Logger: log.With("plugin", name), Metrics: reg}
}

// global returns the instances every route gets, by name.
func (ms *modules) global() []lua.Module {
	var out []lua.Module
	for _, n := range ms.names() {
		if !ms.optional[n] && !ms.idle[n] {
			out = append(out, ms.all[n])
		}
	}
	return out
}

// route returns the optional instances a route lists, in its order; one
// that every route gets anyway is not repeated.
func (ms *modules) route(rc config.Route) []lua.Module {
	var out []lua.Module
	for _, n := range rc.Modules {
		if ms.optional[n] {
			out = append(out, ms.all[n])
		}
	}
	return out
}

func (ms *modules) names() []string {
	out := make([]string, 0, len(ms.all))
	for n := range ms.all {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// close closes the instances that are io.Closers, except those in keep.
func (ms *modules) close(keep map[string]lua.Module) {
	for n, m := range ms.all {
		if keep[n] == m {
			continue
		}
		if c, ok := m.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// newBroker makes the broker [broker] kind names.
func newBroker(cfg *config.Config, log *slog.Logger) (broker.Broker, error) {
	b, err := lookup(registry.brokers, "broker", cfg.Broker.Kind, cfg.File)
	if err != nil {
		return nil, err
	}
	name := cfg.Broker.Kind
	br, err := b.New(BrokerContext{Broker: cfg.Broker, Config: cfg.Plugin(name), Server: cfg, Logger: log.With("plugin", name)})
	if err != nil {
		if _, ok := errors.AsType[config.Errors](err); ok {
			return nil, err // the plugin named its key already
		}
		// Unreachable, refused credentials, missing permissions: about
		// the server the URL names.
		return nil, config.Errors{{File: cfg.File, Key: "broker.url", Msg: fmt.Sprintf("broker %s: %v", name, err)}}
	}
	return br, nil
}

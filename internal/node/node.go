// Package node assembles a running moonwire node from a loaded
// configuration: the Lua engine and its modules, one scripted handler per
// route, and the router; and it reloads them. cmd/moonwire adds flags,
// signals and output; tests and examples use it to run the real thing
// in-process.
//
// It is wiring only: it holds no protocol or scripting logic of its own.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/internal/admin"
	"github.com/moonwire/moonwire/internal/static"
	"github.com/moonwire/moonwire/plugins/crypto"
	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/metrics"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// Node is a configured moonwire server.
type Node struct {
	Router   *router.Server
	Engine   *lua.Engine
	Store    *store.Store
	Registry *prometheus.Registry // what /metrics exposes

	log      *slog.Logger
	tune     []func(*router.Config)
	ln       net.Listener
	served   chan error
	admin    *http.Server
	adminLn  net.Listener
	draining atomic.Bool
	certs    *certStore // nil without TLS

	mu       sync.Mutex // serialises reloads; guards cfg, handlers, closing, unwatch
	cfg      *config.Config
	handlers map[string]*lua.Route // by route path
	// live is what the node serves, for readers (Config, Routes, the drain)
	// that must not wait for a reload building slow scripts under mu; a
	// reload replaces it when it is applied.
	live atomic.Pointer[served]
	// status has its own lock: /healthz reads it, and must not wait for a
	// reload that is building slow scripts under mu.
	statusMu sync.Mutex
	status   ReloadStatus
	closing  bool                 // Shutdown or Close began: no more reloads
	unwatch  []context.CancelFunc // stops the file watchers
	watchers sync.WaitGroup       // the file watchers' goroutines
}

// Modules returns the plugin modules every script gets: json, crypto, the
// shared store st and metrics registered on reg (nil: counted, not
// exported).
func Modules(st *store.Store, reg prometheus.Registerer) []lua.Module {
	return []lua.Module{
		json.New(json.Limits{}),
		crypto.New(crypto.Options{}),
		st,
		metrics.New(reg, metrics.Options{}),
	}
}

// storeOptions translates [store] into the store's terms.
func storeOptions(cfg *config.Config) store.Options {
	return store.Options{MaxBytes: cfg.Store.MaxBytes, MaxKeys: cfg.Store.MaxKeys, MaxValueBytes: int(cfg.Store.MaxValueSize)}
}

// RouteConfig translates a config route into the Lua engine's terms.
func RouteConfig(cfg *config.Config, rc config.Route) lua.RouteConfig {
	source := cfg.Scripts.Dir
	if source == "" {
		source = path.Dir(cfg.File)
	}
	return lua.RouteConfig{
		Pattern:        rc.Path,
		FS:             cfg.Scripts.FS,
		Script:         rc.Script,
		Source:         source,
		VMs:            rc.VMs,
		HandlerTimeout: cfg.Scripts.HandlerTimeout,
		Settings:       rc.Settings,
	}
}

// Check compiles every route's script and runs its top level in a
// sandbox, returning one error per failing route (*lua.ScriptError values,
// whose text is "file:line: message").
func Check(cfg *config.Config) []error {
	st := store.New(store.Options{})
	defer st.Close()
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler), Modules: Modules(st, nil)})
	defer eng.Close()
	var problems []error
	for _, rc := range cfg.Routes {
		spec := RouteConfig(cfg, rc)
		spec.VMs = 1 // one VM proves the script
		r, err := eng.NewRoute(spec)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		r.Release()
	}
	return problems
}

// Inactive reports the config settings this version parses but does not
// act on. Those whose absence would change security or reach (TLS, a
// cluster broker) are returned as an error; the rest are logged.
func Inactive(cfg *config.Config, log *slog.Logger) error {
	if cfg.Broker.Kind != "memory" {
		return fmt.Errorf("%s: broker.kind = %q: only \"memory\" is available in this version", cfg.File, cfg.Broker.Kind)
	}
	return nil
}

// adminSource shows the node to the admin surface.
type adminSource struct{ n *Node }

func (a adminSource) Stats() router.Stats             { return a.n.Router.Stats() }
func (a adminSource) RouteStats() []router.RouteStats { return a.n.Router.RouteStats() }
func (a adminSource) Routes() []admin.Route           { return a.n.Routes() }
func (a adminSource) Draining() bool                  { return a.n.draining.Load() }
func (a adminSource) Reload() admin.ReloadState {
	st := a.n.Status()
	return admin.ReloadState{Reloads: st.Reloads, Failures: st.Failures, At: st.At, OK: st.OK, Err: st.Err}
}

// New builds a node: it compiles every script and starts the routes'
// lanes, but does not listen. tune, if given, adjusts the router's
// configuration last (tests use it to pick the goroutine reader or share a
// broker).
func New(cfg *config.Config, log *slog.Logger, tune ...func(*router.Config)) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := Inactive(cfg, log); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, tune: tune, Store: store.New(storeOptions(cfg)), Registry: prometheus.NewRegistry()}
	for _, w := range cfg.Warnings {
		log.Warn(cfg.File + ": " + w)
	}
	obs, err := admin.NewObserver(n.Registry)
	if err != nil {
		return nil, err
	}
	if cfg.Server.TLSCert != "" {
		n.certs = &certStore{certFile: cfg.Server.TLSCert, keyFile: cfg.Server.TLSKey}
		if err := n.certs.load(); err != nil {
			return nil, fmt.Errorf("%s: server.tls_cert: %w", cfg.File, err)
		}
	}
	memLimit := cfg.Scripts.MemoryLimit
	if memLimit == 0 {
		memLimit = -1 // the engine's "no limit"
	}
	n.Engine = lua.New(lua.Options{Logger: log, Modules: Modules(n.Store, n.Registry), Observer: obs, MemoryLimit: memLimit})

	handlers, err := n.build(cfg, nil)
	if err != nil {
		n.release()
		return nil, err
	}
	srv, err := router.New(n.routerConfig(cfg, handlers))
	if err != nil {
		releaseAll(handlers, nil)
		n.release()
		return nil, err
	}
	n.Router, n.handlers = srv, handlers
	n.live.Store(&served{cfg, handlers})
	return n, nil
}

// build compiles a handler for every route of cfg. A route whose version
// (script, modules, settings) is unchanged from current keeps its running
// handler. On error nothing is kept: new handlers are released.
func (n *Node) build(cfg *config.Config, current map[string]*lua.Route) (map[string]*lua.Route, error) {
	out := make(map[string]*lua.Route, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		r, err := n.Engine.NewRoute(RouteConfig(cfg, rc))
		if err != nil {
			releaseAll(out, current)
			return nil, err
		}
		if old := current[rc.Path]; old != nil && old.Version() == r.Version() {
			r.Release()
			r = old
		}
		out[rc.Path] = r
	}
	return out, nil
}

// releaseAll frees built handlers that are not also in keep.
func releaseAll(built, keep map[string]*lua.Route) {
	for p, r := range built {
		if keep[p] != r {
			r.Release()
		}
	}
}

// routerConfig translates cfg into the router's terms.
func (n *Node) routerConfig(cfg *config.Config, handlers map[string]*lua.Route) router.Config {
	rcfg := router.Config{
		MaxMessageSize:   cfg.Server.MaxMessageSize,
		MaxConnections:   cfg.Server.MaxConnections,
		HandshakeTimeout: cfg.Server.HandshakeTimeout,
		WriteQueue:       int(cfg.Server.WriteQueue),
		WriteTimeout:     cfg.Server.WriteTimeout,
		Heartbeat:        router.Heartbeat(cfg.Heartbeat),
		AllowedOrigins:   cfg.Server.AllowedOrigins,
		Compression:      cfg.Server.Compression,
		Logger:           n.log,
	}
	if cfg.Server.SlowConsumer == "drop" {
		rcfg.SlowConsumer = router.SlowConsumerDrop
	}
	if cfg.Server.StaticFS != nil {
		rcfg.HTTP = static.Handler(cfg.Server.StaticFS)
	}
	for _, rc := range cfg.Routes {
		h := handlers[rc.Path]
		spec := router.RouteSpec{
			Pattern:             rc.Path,
			Key:                 rc.Script,
			Handler:             h,
			Lanes:               h.Lanes(),
			Heartbeat:           router.Heartbeat(rc.Heartbeat),
			MaxMessageSize:      rc.MaxMessageSize,
			MaxConnectionsPerIP: rc.MaxConnectionsPerIP,
		}
		if rl := rc.RateLimit; rl != nil {
			spec.RateLimit = &router.RateLimit{Messages: rl.Messages, Per: rl.Per, Burst: rl.Burst}
		}
		rcfg.Routes = append(rcfg.Routes, spec)
	}
	for _, f := range n.tune {
		f(&rcfg)
	}
	return rcfg
}

// Config returns the configuration the node currently runs.
func (n *Node) Config() *config.Config { return n.live.Load().cfg }

// served is a config and the handlers built from it.
type served struct {
	cfg      *config.Config
	handlers map[string]*lua.Route
}

// Routes describes the routes the node serves, in config order.
func (n *Node) Routes() []admin.Route {
	live := n.live.Load()
	cfg, handlers := live.cfg, live.handlers
	conns := map[string]int64{}
	for _, rt := range n.Router.Routes() {
		conns[rt.Pattern()] = rt.Connections()
	}
	out := make([]admin.Route, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		out = append(out, admin.Route{Path: rc.Path, Script: rc.Script, Version: handlers[rc.Path].Version(), Connections: conns[rc.Path]})
	}
	return out
}

// Listen binds server.listen (or addr, when not empty) and starts serving,
// and the admin listener when admin.listen is set (adminAddr, when not
// empty, overrides it).
func (n *Node) Listen(addr string, adminAddr ...string) error {
	cfg := n.Config()
	if addr == "" {
		addr = cfg.Server.Listen
	}
	aaddr := cfg.Admin.Listen
	if len(adminAddr) > 0 && adminAddr[0] != "" {
		aaddr = adminAddr[0]
	}
	if aaddr != "" {
		h, err := admin.New(adminSource{n}, n.Registry, admin.Options{Pprof: cfg.Admin.Pprof, Token: cfg.Admin.Token})
		if err != nil {
			return err
		}
		aln, err := net.Listen("tcp", aaddr)
		if err != nil {
			return fmt.Errorf("%s: admin.listen: %w", cfg.File, err)
		}
		n.adminLn = aln
		n.admin = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
		go func() { _ = n.admin.Serve(aln) }()
	}
	ln, err := router.Listen(context.Background(), addr)
	if err != nil {
		n.closeAdmin()
		return fmt.Errorf("%s: server.listen: %w", cfg.File, err)
	}
	if n.certs != nil {
		ln = tls.NewListener(ln, &tls.Config{
			GetCertificate: n.certs.get,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1"},
		})
	}
	n.Serve(ln)
	return nil
}

// Scheme returns "wss" when the node serves TLS, else "ws".
func (n *Node) Scheme() string {
	if n.certs != nil {
		return "wss"
	}
	return "ws"
}

// AdminAddr returns the admin listener's address, or "" when it is off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// Draining reports whether the node is shutting down; /healthz fails then.
func (n *Node) Draining() bool { return n.draining.Load() }

func (n *Node) closeAdmin() {
	if n.admin != nil {
		_ = n.admin.Close()
	}
}

// Serve serves on ln in the background; Done reports when it stops.
func (n *Node) Serve(ln net.Listener) {
	n.ln = ln
	n.served = make(chan error, 1)
	go func() {
		err := n.Router.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		n.served <- err
	}()
}

// Addr returns the listening address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// URLs returns the ws:// URL of every route, in config order.
func (n *Node) URLs() []string {
	var urls []string
	for _, rc := range n.Config().Routes {
		urls = append(urls, n.Scheme()+"://"+n.Addr()+rc.Path)
	}
	return urls
}

// Done receives the serve loop's error (nil after a shutdown).
func (n *Node) Done() <-chan error { return n.served }

// Shutdown drains the node: /healthz fails first (load balancers stop
// sending), then the router drains (see router.Server.Shutdown); the admin
// listener stays up until the end so the drain can be watched.
func (n *Node) Shutdown(ctx context.Context) error {
	n.draining.Store(true)
	n.Engine.StopLoading() // a reload in progress fails within a tick
	n.stopReloads()
	err := n.Router.Shutdown(ctx)
	n.closeAdmin()
	n.release()
	return err
}

// Close drops every connection and releases the node.
func (n *Node) Close() error {
	n.draining.Store(true)
	n.Engine.StopLoading()
	n.stopReloads()
	err := n.Router.Close()
	n.closeAdmin()
	n.release()
	return err
}

// stopReloads ends reloading for good: a reload in progress finishes
// first (it holds mu; Engine.StopLoading has cut its script builds short), later ones are refused, and the file watchers are
// stopped and waited for, so none reloads into a node being torn down.
func (n *Node) stopReloads() {
	n.mu.Lock()
	n.closing = true
	unwatch := n.unwatch
	n.unwatch = nil
	n.mu.Unlock()
	for _, stop := range unwatch {
		stop()
	}
	n.watchers.Wait()
}

func (n *Node) release() {
	n.Engine.Close()
	n.Store.Close()
}

// Package node assembles a running moonwire node from a loaded
// configuration: the Lua engine and its modules, one scripted handler per
// route, and the router. cmd/moonwire adds flags, signals and output; tests
// and examples use it to run the real thing in-process.
//
// It is wiring only: it holds no protocol or scripting logic of its own.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"

	"github.com/moonwire/moonwire/plugins/crypto"
	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/config"
)

// Node is a configured moonwire server.
type Node struct {
	Config *config.Config
	Router *router.Server
	Engine *lua.Engine
	Store  *store.Store

	log    *slog.Logger
	ln     net.Listener
	served chan error
}

// Modules returns the plugin modules every script gets, sharing st.
func Modules(st *store.Store) []lua.Module {
	return []lua.Module{
		json.New(json.Limits{}),
		crypto.New(crypto.Options{}),
		st,
	}
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
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler), Modules: Modules(st)})
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
	if cfg.Server.TLSCert != "" {
		return fmt.Errorf("%s: server.tls_cert: TLS is not available in this version", cfg.File)
	}
	if cfg.Broker.Kind != "memory" {
		return fmt.Errorf("%s: broker.kind = %q: only \"memory\" is available in this version", cfg.File, cfg.Broker.Kind)
	}
	if cfg.Server.Compression {
		log.Warn("server.compression is not available in this version; messages are sent uncompressed")
	}
	if cfg.Admin.Listen != "" {
		log.Warn("admin.listen is not available in this version; no admin listener started", "listen", cfg.Admin.Listen)
	}
	if cfg.Scripts.Reload && cfg.Dir != "" {
		log.Info("scripts.reload: hot reload is not available in this version; restart to apply changes")
	}
	return nil
}

// New builds a node: it compiles every script and starts the routes'
// lanes, but does not listen. tune, if given, adjusts the router's
// configuration last (tests use it to pick the goroutine reader).
func New(cfg *config.Config, log *slog.Logger, tune ...func(*router.Config)) (*Node, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := Inactive(cfg, log); err != nil {
		return nil, err
	}
	n := &Node{Config: cfg, log: log, Store: store.New(store.Options{})}
	n.Engine = lua.New(lua.Options{Logger: log, Modules: Modules(n.Store)})

	rcfg := router.Config{
		MaxMessageSize:   cfg.Server.MaxMessageSize,
		MaxConnections:   cfg.Server.MaxConnections,
		HandshakeTimeout: cfg.Server.HandshakeTimeout,
		WriteQueue:       int(cfg.Server.WriteQueue),
		WriteTimeout:     cfg.Server.WriteTimeout,
		Heartbeat:        router.Heartbeat(cfg.Heartbeat),
		AllowedOrigins:   cfg.Server.AllowedOrigins,
		Logger:           log,
	}
	if cfg.Server.SlowConsumer == "drop" {
		rcfg.SlowConsumer = router.SlowConsumerDrop
	}
	if cfg.Server.StaticFS != nil {
		rcfg.HTTP = http.FileServerFS(cfg.Server.StaticFS)
	}
	var routes []*lua.Route
	for _, rc := range cfg.Routes {
		r, err := n.Engine.NewRoute(RouteConfig(cfg, rc))
		if err != nil {
			for _, r := range routes {
				r.Release()
			}
			n.release()
			return nil, err
		}
		routes = append(routes, r)
		spec := router.RouteSpec{
			Pattern:             rc.Path,
			Handler:             r,
			Lanes:               r.Lanes(),
			Heartbeat:           router.Heartbeat(rc.Heartbeat),
			MaxMessageSize:      rc.MaxMessageSize,
			MaxConnectionsPerIP: rc.MaxConnectionsPerIP,
		}
		if rl := rc.RateLimit; rl != nil {
			spec.RateLimit = &router.RateLimit{Messages: rl.Messages, Per: rl.Per, Burst: rl.Burst}
		}
		rcfg.Routes = append(rcfg.Routes, spec)
	}
	for _, f := range tune {
		f(&rcfg)
	}
	srv, err := router.New(rcfg)
	if err != nil {
		for _, r := range routes {
			r.Release()
		}
		n.release()
		return nil, err
	}
	n.Router = srv
	return n, nil
}

// Listen binds server.listen (or addr, when not empty) and starts serving.
func (n *Node) Listen(addr string) error {
	if addr == "" {
		addr = n.Config.Server.Listen
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: server.listen: %w", n.Config.File, err)
	}
	n.Serve(ln)
	return nil
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
	for _, rc := range n.Config.Routes {
		urls = append(urls, "ws://"+n.Addr()+rc.Path)
	}
	return urls
}

// Done receives the serve loop's error (nil after a shutdown).
func (n *Node) Done() <-chan error { return n.served }

// Shutdown drains the node (see router.Server.Shutdown) and releases it.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.Router.Shutdown(ctx)
	n.release()
	return err
}

// Close drops every connection and releases the node.
func (n *Node) Close() error {
	err := n.Router.Close()
	n.release()
	return err
}

func (n *Node) release() {
	n.Engine.Close()
	n.Store.Close()
}

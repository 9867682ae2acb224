// Package moonwire runs the moonwire WebSocket router: it is the package a
// Go program imports to run moonwire in its own process, and what the
// moonwire command is built from. It assembles a server from a loaded
// configuration (the Lua engine, the modules plugins registered, one
// scripted handler per route, the router, the admin listener, TLS),
// reloads it without dropping connections, and drains it.
//
// Plugins extend it through the registry: RegisterModule adds a Lua
// module, RegisterBroker a broker backend, each from a plugin package's
// init function, so that a custom build is a main that imports them.
//
// It is wiring only: it holds no protocol or scripting logic of its own,
// and creating a server changes nothing process-wide unless
// Options.OwnProcess says the process is moonwire's.
package moonwire

import (
	"cmp"
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
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/plugins/store"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/config"
	"github.com/moonwire/moonwire/scripts"
)

// historyCheckWait bounds the start-up check that the broker may keep
// histories (broker.HistoryChecker): one broadcast and one read.
const historyCheckWait = 10 * time.Second

// Options configure a Server. The zero value serves the built-in default
// configuration, as the moonwire command does without -config.
type Options struct {
	// Config is what the server runs, as config.Load or config.LoadFS
	// made it; nil: the built-in default (scripts.DefaultConfig, the
	// built-in scripts). Its zero values mean what they mean in the file.
	Config *config.Config
	// Logger receives the server's logs; nil: slog.Default().
	Logger *slog.Logger
	// Listen and AdminListen override server.listen and admin.listen for
	// Start; "": the config's.
	Listen, AdminListen string
	// OwnProcess says moonwire is what this process runs, as in the
	// moonwire command, so the server may tune process-wide state: it caps
	// gopher-lua's array part (lua.LimitArrays) and applies
	// scripts.memory_limit's default of 1 GiB of the process's heap. When
	// false (a program embedding moonwire among other work), neither
	// happens unless asked for: the memory limit applies only when the
	// config sets scripts.memory_limit, since it measures, and collects
	// garbage in, the whole process.
	OwnProcess bool
	// Version is the moonwire version the node reports (the admin
	// dashboard shows it); "": "devel".
	Version string
	// Router, if set, adjusts the router's configuration last, at New and
	// at every reload (tests use it to pick the goroutine reader or share
	// a broker between servers).
	Router func(*router.Config)
}

// Server is a configured moonwire server.
type Server struct {
	Router  *router.Server
	Engine  *lua.Engine
	Store   *store.Store         // the shared store scripts reach as store, when [store] kind is "memory"; nil otherwise
	Metrics *prometheus.Registry // what /metrics exposes

	opts     Options
	log      *slog.Logger
	ln       net.Listener
	served   chan error
	admin    *http.Server
	adminLn  net.Listener
	api      atomic.Pointer[apiServer] // the server API listener (api.go); nil: off
	draining atomic.Bool
	certs    *certStore    // nil without TLS
	broker   broker.Broker // made by the broker plugin; nil: the router's own
	started  time.Time
	obs      *admin.Observer // Lua callback timings and errors, for /metrics and the dashboard
	// adminStop ends the admin surface's sampler; beaconStop the cluster
	// beacon (dashboard.go), once.
	adminStop  context.CancelFunc
	beaconStop func()
	beaconOnce sync.Once

	mu       sync.Mutex // serialises reloads; guards cfg, mods, handlers, closing, unwatch
	cfg      *config.Config
	mods     *modules
	handlers map[string]*lua.Route // by route path
	// live is what the server serves, for readers (Config, Routes, the
	// drain) that must not wait for a reload building slow scripts under
	// mu; a reload replaces it when it is applied.
	live atomic.Pointer[served]
	// status has its own lock: /healthz reads it, and must not wait for a
	// reload that is building slow scripts under mu.
	statusMu sync.Mutex
	status   ReloadStatus
	reloads  []admin.ReloadEntry  // the latest attempts, newest first (maxReloadHistory)
	closing  bool                 // Shutdown or Close began: no more reloads
	unwatch  []context.CancelFunc // stops the file watchers
	watchers sync.WaitGroup       // the file watchers' goroutines
}

// DefaultConfig loads the built-in configuration: /echo, /chat,
// /chat/{room}, /auth and /monitor on 127.0.0.1:8765.
func DefaultConfig() (*config.Config, error) {
	return config.LoadFS(scripts.FS, scripts.DefaultConfig)
}

// RouteConfig translates a config route into the Lua engine's terms.
func RouteConfig(cfg *config.Config, rc config.Route) lua.RouteConfig {
	source := cfg.Scripts.Dir
	if source == "" {
		source = path.Dir(cfg.File)
	}
	return lua.RouteConfig{
		Pattern:        rc.Path,
		FS:             scripts.WithShared(cfg.Scripts.FS),
		Script:         rc.Script,
		Source:         source,
		VMs:            rc.VMs,
		HandlerTimeout: cfg.Scripts.HandlerTimeout,
		Settings:       rc.Settings,
	}
}

// Check builds what cfg asks for without serving it: every plugin's
// module from its table, and every route's script, whose top level runs
// in a sandbox. It returns one error per problem: *lua.ScriptError values
// ("file:line: message") for scripts, config.Errors for plugin tables.
func Check(cfg *config.Config) []error {
	problems, _ := CheckLint(cfg)
	return problems
}

// CheckLint is Check that also lints every route's scripts (see
// lua.Route.Lint and lintRoute): the warnings, deduplicated, in route
// order. A script that failed to build is not linted.
func CheckLint(cfg *config.Config) ([]error, []lua.Diagnostic) {
	log := slog.New(slog.DiscardHandler)
	b, err := newBroker(cfg, log)
	if err != nil {
		return []error{err}, nil
	}
	if b != nil {
		_ = b.Close()
	}
	mods, err := buildModules(cfg, log, nil, nil)
	if err != nil {
		return []error{err}, nil
	}
	defer mods.close(nil)
	eng := lua.New(lua.Options{Logger: log, Modules: mods.global()})
	defer eng.Close()
	var problems []error
	var warnings []lua.Diagnostic
	for i, rc := range cfg.Routes {
		spec := RouteConfig(cfg, rc)
		spec.Modules = mods.route(rc)
		spec.VMs = 1 // one VM proves the script
		r, err := eng.NewRoute(spec)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		warnings = appendNew(warnings, lintRoute(cfg, i, r)...)
		r.Release()
	}
	return problems, warnings
}

// adminSource shows the node to the admin surface.
type adminSource struct{ s *Server }

func (a adminSource) Stats() router.Stats             { return a.s.Router.Stats() }
func (a adminSource) RouteStats() []router.RouteStats { return a.s.Router.RouteStats() }
func (a adminSource) Routes() []admin.Route           { return a.s.Routes() }
func (a adminSource) Draining() bool                  { return a.s.draining.Load() }

// Broker implements admin.BrokerSource.
func (a adminSource) Broker() (string, broker.Stats, bool) {
	r, ok := a.s.broker.(broker.Reporter)
	if !ok {
		return "", broker.Stats{}, false
	}
	return a.s.Config().Broker.Kind, r.Stats(), true
}

func (a adminSource) Reload() admin.ReloadState {
	st := a.s.Status()
	return admin.ReloadState{Reloads: st.Reloads, Failures: st.Failures, At: st.At, OK: st.OK, Err: st.Err}
}

// New builds a server: it makes the modules and the broker the
// configuration asks for, compiles every script and starts the routes'
// lanes, but does not listen (Start, Serve).
func New(opts Options) (*Server, error) {
	cfg := opts.Config
	if cfg == nil {
		var err error
		if cfg, err = DefaultConfig(); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.OwnProcess {
		lua.LimitArrays()
	}
	s := &Server{opts: opts, cfg: cfg, log: log, Metrics: prometheus.NewRegistry(), started: time.Now()}
	for _, w := range cfg.Warnings {
		log.Warn(cfg.File + ": " + w)
	}
	obs, err := admin.NewObserver(s.Metrics)
	if err != nil {
		return nil, err
	}
	s.obs = obs
	if cfg.Server.TLSCert != "" {
		s.certs = &certStore{certFile: cfg.Server.TLSCert, keyFile: cfg.Server.TLSKey}
		if err := s.certs.load(); err != nil {
			return nil, fmt.Errorf("%s: server.tls_cert: %w", cfg.File, err)
		}
	}
	if s.broker, err = newBroker(cfg, log); err != nil {
		return nil, err
	}
	if _, ok := s.broker.(broker.History); len(cfg.History) > 0 && s.broker != nil && !ok {
		s.closeBroker()
		return nil, config.Errors{{File: cfg.File, Key: "history",
			Msg: fmt.Sprintf("broker %q keeps no history: remove [history] or use a broker that does", cfg.Broker.Kind)}}
	}
	if hc, ok := s.broker.(broker.HistoryChecker); ok && len(cfg.History) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), historyCheckWait)
		err := hc.CheckHistory(ctx)
		cancel()
		if err != nil {
			s.closeBroker()
			return nil, config.Errors{{File: cfg.File, Key: "broker.url",
				Msg: fmt.Sprintf("broker %s: [history] cannot be kept: %v", cfg.Broker.Kind, err)}}
		}
	}
	if s.mods, err = buildModules(cfg, log, s.Metrics, nil); err != nil {
		s.closeBroker()
		return nil, err
	}
	if st, ok := s.mods.all["store"].(*storeModule); ok {
		s.Store = st.mem
	}
	s.Engine = lua.New(lua.Options{Logger: log, Modules: s.mods.global(), Observer: obs, MemoryLimit: s.memoryLimit(cfg)})

	handlers, err := s.build(cfg, s.mods, nil)
	if err != nil {
		s.release()
		return nil, err
	}
	srv, err := router.New(s.routerConfig(cfg, handlers))
	if err != nil {
		releaseAll(handlers, nil)
		s.release()
		return nil, err
	}
	s.Router, s.handlers = srv, handlers
	s.live.Store(&served{cfg, handlers, loadedTimes(nil, handlers, s.started)})
	s.startBeacon()
	return s, nil
}

// memoryLimit is the Lua engine's memory limit for cfg: the config's, but
// its default only for a server that owns its process (Options.OwnProcess).
func (s *Server) memoryLimit(cfg *config.Config) int64 {
	if !s.opts.OwnProcess && !cfg.Scripts.MemoryLimitSet {
		return 0
	}
	return cfg.Scripts.MemoryLimit
}

// build compiles a handler for every route of cfg. A route whose version
// (script, modules, settings) is unchanged from current keeps its running
// handler. On error nothing is kept: new handlers are released.
func (s *Server) build(cfg *config.Config, mods *modules, current map[string]*lua.Route) (map[string]*lua.Route, error) {
	out := make(map[string]*lua.Route, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		spec := RouteConfig(cfg, rc)
		spec.Modules = mods.route(rc)
		r, err := s.Engine.NewRoute(spec)
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
func (s *Server) routerConfig(cfg *config.Config, handlers map[string]*lua.Route) router.Config {
	rcfg := router.Config{
		MaxMessageSize:   cfg.Server.MaxMessageSize,
		MaxConnections:   cfg.Server.MaxConnections,
		HandshakeTimeout: cfg.Server.HandshakeTimeout,
		WriteQueue:       int(cfg.Server.WriteQueue),
		WriteTimeout:     cfg.Server.WriteTimeout,
		Heartbeat:        router.Heartbeat(cfg.Heartbeat),
		AllowedOrigins:   cfg.Server.AllowedOrigins,
		Compression:      cfg.Server.Compression,
		Logger:           s.log,
	}
	if cfg.Server.SlowConsumer == "drop" {
		rcfg.SlowConsumer = router.SlowConsumerDrop
	}
	if cfg.Server.StaticFS != nil {
		rcfg.HTTP = static.Handler(cfg.Server.StaticFS)
	}
	rcfg.HTTP = consoleHTTP(cfg, rcfg.HTTP) // the dev console and /_moonwire.js, when on (console.go)
	for _, rc := range cfg.Routes {
		h := handlers[rc.Path]
		spec := router.RouteSpec{
			Pattern:             rc.Path,
			Key:                 rc.Script,
			Handler:             h,
			Heartbeat:           router.Heartbeat(rc.Heartbeat),
			MaxMessageSize:      rc.MaxMessageSize,
			MaxConnectionsPerIP: rc.MaxConnectionsPerIP,
		}
		if rl := rc.RateLimit; rl != nil {
			spec.RateLimit = &router.RateLimit{Messages: rl.Messages, Per: rl.Per, Burst: rl.Burst}
		}
		rcfg.Routes = append(rcfg.Routes, spec)
	}
	if s.broker != nil {
		rcfg.Broker = s.broker
	}
	if len(cfg.History) > 0 {
		rcfg.History = cfg.HistoryFor
	}
	if s.opts.Router != nil {
		s.opts.Router(&rcfg)
	}
	return rcfg
}

// Config returns the configuration the server currently runs.
func (s *Server) Config() *config.Config { return s.live.Load().cfg }

// served is a config and the handlers built from it.
type served struct {
	cfg      *config.Config
	handlers map[string]*lua.Route
	loaded   map[string]time.Time // by route path: when its handler was built
}

// Routes describes the routes the node serves, in config order.
func (s *Server) Routes() []admin.Route {
	live := s.live.Load()
	cfg, handlers := live.cfg, live.handlers
	conns := map[string]int64{}
	for _, rt := range s.Router.Routes() {
		conns[rt.Pattern()] = rt.Connections()
	}
	out := make([]admin.Route, 0, len(cfg.Routes))
	for _, rc := range cfg.Routes {
		out = append(out, admin.Route{Path: rc.Path, Script: rc.Script, Version: handlers[rc.Path].Version(), Connections: conns[rc.Path]})
	}
	return out
}

// Start binds server.listen (Options.Listen, when set) and serves in the
// background, and the admin listener when admin.listen (or
// Options.AdminListen) is set. Done reports when serving stops.
func (s *Server) Start() error {
	cfg := s.Config()
	addr := cmp.Or(s.opts.Listen, cfg.Server.Listen)
	if aaddr := cmp.Or(s.opts.AdminListen, cfg.Admin.Listen); aaddr != "" {
		aln, err := net.Listen("tcp", aaddr)
		if err != nil {
			return fmt.Errorf("%s: admin.listen: %w", cfg.File, err)
		}
		ctx, stop := context.WithCancel(context.Background())
		h, err := admin.New(adminSource{s}, s.Metrics, admin.Options{
			Pprof:    cfg.Admin.Pprof,
			Token:    cfg.Admin.Token,
			Observer: s.obs,
			// The bound address decides: "localhost:0" is loopback,
			// ":9090" is every interface.
			Public:  !aln.Addr().(*net.TCPAddr).IP.IsLoopback(),
			Context: ctx,
			Logger:  s.log,
		})
		if err != nil {
			stop()
			_ = aln.Close()
			return err
		}
		s.adminLn, s.adminStop = aln, stop
		s.admin = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
		go func() { _ = s.admin.Serve(aln) }()
	}
	if err := s.startAPI(cfg); err != nil {
		s.closeAdmin()
		return err
	}
	ln, err := router.Listen(context.Background(), addr)
	if err != nil {
		s.closeAdmin()
		s.closeAPI()
		return fmt.Errorf("%s: server.listen: %w", cfg.File, err)
	}
	if s.certs != nil {
		ln = tls.NewListener(ln, &tls.Config{
			GetCertificate: s.certs.get,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1"},
		})
	}
	s.serve(ln)
	return nil
}

// Scheme returns "wss" when the node serves TLS, else "ws".
func (s *Server) Scheme() string {
	if s.certs != nil {
		return "wss"
	}
	return "ws"
}

// AdminAddr returns the admin listener's address, or "" when it is off.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// Draining reports whether the node is shutting down; /healthz fails then.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) closeAdmin() {
	if s.admin != nil {
		_ = s.admin.Close()
	}
	if s.adminStop != nil {
		s.adminStop()
	}
	s.closeAPI()
}

// Serve serves on ln (TLS, if the server has a certificate, is the
// caller's to add) until Shutdown or Close, and returns nil then; it
// starts no admin listener (Start does).
func (s *Server) Serve(ln net.Listener) error {
	s.serve(ln)
	return <-s.served
}

// ListenAndServe is Start, then waits for the server to stop.
func (s *Server) ListenAndServe() error {
	if err := s.Start(); err != nil {
		return err
	}
	return <-s.served
}

func (s *Server) serve(ln net.Listener) {
	s.ln = ln
	s.served = make(chan error, 1)
	go func() {
		err := s.Router.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.served <- err
	}()
}

// Addr returns the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URLs returns the ws:// URL of every route, in config order.
func (s *Server) URLs() []string {
	var urls []string
	for _, rc := range s.Config().Routes {
		urls = append(urls, s.Scheme()+"://"+s.Addr()+rc.Path)
	}
	return urls
}

// Done receives the serve loop's error (nil after a shutdown).
func (s *Server) Done() <-chan error { return s.served }

// Shutdown drains the node: /healthz fails first (load balancers stop
// sending), then the router drains (see router.Server.Shutdown); the admin
// listener stays up until the end so the drain can be watched.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.Engine.StopLoading() // a reload in progress fails within a tick
	s.stopReloads()
	err := s.Router.Shutdown(ctx)
	s.closeAdmin()
	s.release()
	return err
}

// Close drops every connection and releases the node.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.Engine.StopLoading()
	s.stopReloads()
	err := s.Router.Close()
	s.closeAdmin()
	s.release()
	return err
}

// stopReloads ends reloading for good: a reload in progress finishes
// first (it holds mu; Engine.StopLoading has cut its script builds short), later ones are refused, and the file watchers are
// stopped and waited for, so none reloads into a node being torn down.
func (s *Server) stopReloads() {
	s.mu.Lock()
	s.closing = true
	unwatch := s.unwatch
	s.unwatch = nil
	s.mu.Unlock()
	for _, stop := range unwatch {
		stop()
	}
	s.watchers.Wait()
}

func (s *Server) release() {
	s.stopBeacon()
	if s.Engine != nil {
		s.Engine.Close()
	}
	s.mods.close(nil)
	s.closeBroker()
}

func (s *Server) closeBroker() {
	if s.broker != nil {
		_ = s.broker.Close()
	}
}

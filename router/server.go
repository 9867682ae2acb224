package router

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/poll"
)

// The Server type, its Config, and New, which builds a server, its routes
// and its background goroutines. Accepting is in accept.go, lingering
// close in linger.go, shutdown in shutdown.go, messages across the
// cluster in cluster.go.

// SlowConsumerPolicy says what happens when a connection's write queue is
// full.
type SlowConsumerPolicy uint8

// Slow-consumer policies.
const (
	// SlowConsumerClose closes the connection with 1008 "slow consumer".
	SlowConsumerClose SlowConsumerPolicy = iota
	// SlowConsumerDrop drops the new message and counts it.
	SlowConsumerDrop
)

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	Routes []RouteSpec

	MaxMessageSize   int64         // 1 MiB
	MaxConnections   int           // 0: no limit; over it the upgrade gets 503
	HandshakeTimeout time.Duration // 5s
	WriteQueue       int           // bytes per connection; 1 MiB
	SlowConsumer     SlowConsumerPolicy
	WriteTimeout     time.Duration // a write making no progress this long drops the connection; 10s
	CloseTimeout     time.Duration // how long to wait for the peer's close frame; 3s
	Heartbeat        Heartbeat     // 10s / 30s
	// AllowedOrigins, when not empty, refuses (403) upgrades whose Origin
	// header matches none of these: "https://app.example.com",
	// "https://*.example.com", or "*". Requests without Origin (non-browser
	// clients) are allowed.
	AllowedOrigins []string
	// HTTP serves requests that are not WebSocket upgrades to a route
	// (static pages); nil answers 404.
	HTTP http.Handler
	// MaxRequestBody bounds the body of a plain-HTTP request, which is read
	// whole before HTTP sees it (413 past it); 64 KiB.
	MaxRequestBody int64
	// Compression negotiates permessage-deflate (RFC 7692) with clients
	// that offer it. Fixed at New.
	Compression bool

	// History says which rooms keep a history, and how much: the last
	// size broadcasts, for ttl after the latest. size 0 (or a nil
	// History): none. It needs a broker that implements broker.History.
	History func(room string) (size int, ttl time.Duration)
	// OffsetWait bounds how long a broadcast to a room with history
	// waits for its offset (then it is queued): DefaultOffsetWait.
	// BrokerWait bounds a script's read from the broker (recovery,
	// history, presence): DefaultBrokerWait. Both stay under the
	// handler timeout, so that a slow broker does not cost connections.
	OffsetWait, BrokerWait time.Duration

	Broker broker.Broker // nil: a private in-memory broker
	NodeID string        // "": random
	Logger *slog.Logger  // nil: slog.Default()
	// Workers is the size of the pool that reads ready connections;
	// 0: GOMAXPROCS. The flush workers are half as many, at least one
	// (see flushWorkers).
	Workers int
	// NoPoller reads every connection with its own goroutine even where
	// epoll is available (the portable path; tests use it).
	NoPoller bool
	// NoRing makes the flush workers write each connection with a system
	// call of its own even where io_uring is available, instead of all
	// that are ready at once with one (tests of that path use it).
	NoRing bool
	// Clock, when set, is the time heartbeats run on, instead of the wall
	// clock: a test's virtual clock (`moonwire test`), which Advance moves.
	// Fixed at New.
	Clock *VirtualClock
}

func (c *Config) setDefaults() {
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.WriteQueue <= 0 {
		c.WriteQueue = 1 << 20
	}
	if c.MaxRequestBody <= 0 {
		c.MaxRequestBody = maxRequestBody
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.OffsetWait <= 0 {
		c.OffsetWait = DefaultOffsetWait
	}
	if c.BrokerWait <= 0 {
		c.BrokerWait = DefaultBrokerWait
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 3 * time.Second
	}
	if c.Heartbeat.Interval <= 0 {
		c.Heartbeat.Interval = 10 * time.Second
	}
	if c.Heartbeat.Timeout <= 0 {
		c.Heartbeat.Timeout = 30 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server accepts WebSocket connections and routes their events to handlers.
type Server struct {
	static  Config // as given to New: the settings that cannot change live
	live    atomic.Pointer[liveConfig]
	log     *slog.Logger
	nodeID  string
	started time.Time

	routes atomic.Pointer[routeTable]
	table  connTable
	rooms  roomSet
	poller *poll.Poller
	ready  chan *Conn // connections whose read turn a report took, for the workers
	flushq chan *Conn // queues to write, for the flush workers
	http   *httpHandoff

	clock *VirtualClock // Config.Clock; nil: the wall clock

	broker       broker.Broker
	history      broker.History  // the broker, when it keeps history
	presence     broker.Presence // the broker, when it knows the cluster's members
	ownBroker    bool
	unsubscribe  func()
	brokerAlone  func() bool
	active       atomic.Int64 // connections whose Close event has not run
	httpConns    atomic.Int64 // plain-HTTP connections (see httpHandoff)
	activeChange chan struct{}

	// reMu serialises Reconfigure, and makes it exclusive with the start
	// of a shutdown: a reconfiguration either completes before closing
	// begins or sees closing and does nothing, so the shutdown's stop of
	// the routes meets every route. Lock order: reMu, then mu.
	reMu    sync.Mutex
	retired []*Route // removed routes still draining; guarded by mu

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	handshakes map[net.Conn]struct{} // sockets in their handshake
	closing    bool
	stopped    chan struct{}
	sweepStop  chan struct{}

	// lingering are sockets of failed connections whose input is being
	// drained before they close (see linger).
	lingering map[net.Conn]struct{}

	// idleShakers hands an accepted socket to a goroutine that finished
	// a handshake and waits for another (see handshaker).
	idleShakers chan net.Conn

	hooks *testHooks // nil outside tests

	wg      sync.WaitGroup // flushers, reader goroutines, handshakes
	bg      sync.WaitGroup // poller, workers, lanes, sweeper
	stats   serverStats
	stopAll sync.Once
	// ringOnce logs, once, that the flush workers have no io_uring.
	ringOnce sync.Once
	bgDone   chan struct{} // closed when stopBackground's work is done
}

// testHooks hold a server still where races live, so that tests can make
// them happen every time (export_test.go sets them, before Serve).
type testHooks struct {
	httpAdmitted func()        // a plain-HTTP connection has its place
	lingering    func()        // a socket was registered as lingering
	lingerFor    time.Duration // replaces lingerTimeout when not zero
}

// liveConfig is the part of Config a reconfiguration replaces, with what is
// derived from it.
type liveConfig struct {
	Config
	origins []originPattern
}

// c returns the current configuration.
func (s *Server) c() *liveConfig { return s.live.Load() }

func newLiveConfig(cfg Config) (*liveConfig, error) {
	lc := &liveConfig{Config: cfg}
	for _, o := range cfg.AllowedOrigins {
		p, err := parseOrigin(o)
		if err != nil {
			return nil, err
		}
		lc.origins = append(lc.origins, p)
	}
	return lc, nil
}

// New builds a server from cfg and starts its routes' lanes and handlers.
// It does not listen: call Serve.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		static:       cfg,
		log:          cfg.Logger,
		nodeID:       cfg.NodeID,
		started:      time.Now(),
		listeners:    make(map[net.Listener]struct{}),
		handshakes:   make(map[net.Conn]struct{}),
		lingering:    make(map[net.Conn]struct{}),
		stopped:      make(chan struct{}),
		idleShakers:  make(chan net.Conn),
		sweepStop:    make(chan struct{}),
		clock:        cfg.Clock,
		activeChange: make(chan struct{}, 1),
	}
	s.live.Store(lc)
	if s.nodeID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		s.nodeID = hex.EncodeToString(b[:])
	}

	table := newRouteTable()
	for _, spec := range cfg.Routes {
		rt, err := s.newRoute(spec)
		if err != nil {
			return nil, err
		}
		if err := table.add(rt); err != nil {
			return nil, err
		}
	}
	s.routes.Store(table)
	if s.clock != nil {
		s.clock.onSettle(s.settle)
	}

	if !cfg.NoPoller {
		p, err := poll.New(s.onReady)
		switch {
		case err == nil:
			s.poller = p
		case errors.Is(err, poll.ErrUnsupported):
			s.log.Info("epoll unavailable; reading each connection with a goroutine", "err", err)
		default:
			return nil, fmt.Errorf("poller: %w", err)
		}
	}

	s.broker = cfg.Broker
	if s.broker == nil {
		s.broker, s.ownBroker = broker.NewMemory(), true
	}
	if m, ok := s.broker.(*broker.Memory); ok {
		s.brokerAlone = func() bool { return !m.HasPeers(s.nodeID) }
	}
	if w, ok := s.broker.(broker.RoomWatcher); ok {
		s.rooms.watcher = w
	}
	if h, ok := s.broker.(broker.History); ok {
		s.history = h
	}
	if p, ok := s.broker.(broker.Presence); ok {
		s.rooms.presence = p
		s.presence = p
	}
	unsub, err := s.broker.Subscribe(s.nodeID, s.onBroker)
	if err != nil {
		s.closePoller()
		return nil, fmt.Errorf("broker subscribe: %w", err)
	}
	s.unsubscribe = unsub

	s.http = newHTTPHandoff(s)
	s.startBackground()
	for _, rt := range table.all {
		s.startLanes(rt)
		if err := rt.Handler().Start(rt); err != nil {
			_ = s.stopBackground(time.Now().Add(AbandonGrace))
			return nil, fmt.Errorf("route %s: %w", rt.Pattern(), err)
		}
	}
	return s, nil
}

// normalize validates spec and applies the server's defaults to it.
func (s *Server) normalize(spec RouteSpec, cfg *Config) (RouteSpec, error) {
	if spec.Handler == nil {
		return spec, fmt.Errorf("route %s: no handler", spec.Pattern)
	}
	if l, ok := spec.Handler.(Laner); ok {
		if spec.Lanes > 0 && spec.Lanes != l.Lanes() {
			return spec, fmt.Errorf("route %s: %d lanes for a handler that has %d", spec.Pattern, spec.Lanes, l.Lanes())
		}
		spec.Lanes = l.Lanes()
	}
	if spec.Lanes <= 0 {
		spec.Lanes = 1
	}
	if spec.Heartbeat.Interval <= 0 {
		spec.Heartbeat.Interval = cfg.Heartbeat.Interval
	}
	if spec.Heartbeat.Timeout <= 0 {
		spec.Heartbeat.Timeout = cfg.Heartbeat.Timeout
	}
	if spec.MaxMessageSize <= 0 {
		spec.MaxMessageSize = cfg.MaxMessageSize
	}
	if rl := spec.RateLimit; rl != nil && (rl.Messages <= 0 || rl.Per <= 0) {
		return spec, fmt.Errorf("route %s: rate limit needs messages > 0 and per > 0", spec.Pattern)
	} else if rl != nil && rl.Burst < rl.Messages {
		cp := *rl
		cp.Burst = rl.Messages
		spec.RateLimit = &cp
	}
	return spec, nil
}

// newRoute builds a route and its lanes; startLanes and the handler's
// Start bring it to life.
func (s *Server) newRoute(spec RouteSpec) (*Route, error) {
	pt, err := parsePattern(spec.Pattern)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", spec.Pattern, err)
	}
	spec, err = s.normalize(spec, &s.c().Config)
	if err != nil {
		return nil, err
	}
	rt := &Route{srv: s, pattern: pt}
	rt.spec.Store(&spec)
	rt.handler.Store(&handlerBox{spec.Handler})
	for i := range spec.Lanes {
		rt.lanes = append(rt.lanes, newLane(rt, i, spec.Handler))
	}
	return rt, nil
}

// flushWorkers returns how many flush workers a server with workers
// readers runs: half as many, at least one. A flush worker writes every
// connection that is ready when it looks, so fewer workers find more
// ready at once and more frames queued on each: fewer, fuller writes. On
// a 2-CPU machine one worker instead of two (moonbench ab, 5 pairs, per
// server-CPU-second): closed-loop broadcast 1.29x (1.41x the deliveries
// per write), 2,000 msg/s 1.38x, 500 msg/s 1.23x with p50 and p99 20-27%
// lower, 100 msg/s 1.11x, echo and handshakes unchanged. Only a saturated
// broadcast waits longer for its last deliveries (p99 1.09-1.14x), as one
// worker writes a whole room in turn: it also delivers 1.05x more.
func flushWorkers(workers int) int { return max(1, workers/2) }

// startLanes runs a route's lanes, owned by the server.
func (s *Server) startLanes(rt *Route) {
	for _, l := range rt.lanes {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); l.run() }()
	}
}

func (s *Server) startBackground() {
	// Large enough for a heartbeat round over every connection of a big
	// node: beyond it a flush gets a goroutine of its own.
	s.flushq = make(chan *Conn, 1<<16)
	for range flushWorkers(s.static.Workers) {
		// The ring is made here, not on the worker: a server holds every
		// descriptor it needs once New returns.
		ring := s.flushRing()
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.flushWorker(ring) }()
	}
	if s.poller != nil {
		s.ready = make(chan *Conn, 4096)
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			if err := s.poller.Run(); err != nil {
				s.log.Error("poller stopped", "err", err)
			}
			close(s.ready)
		}()
		for range s.static.Workers {
			s.bg.Add(1)
			go func() {
				defer s.bg.Done()
				r := newSockReader()
				for c := range s.ready {
					c.readTurn(r)
				}
			}()
		}
	}
	if s.clock != nil {
		// Set before New returns, so that no Advance can miss a round.
		s.startVirtualSweep()
		return
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.sweep() }()
}

// onReady is the poller's callback: a report that takes the connection's
// read turn hands it to a worker; one that finds the turn taken is left
// for its holder (see read.go). When every worker is busy the poller
// waits here, which is the backpressure.
func (s *Server) onReady(tok uint64, hangup bool) {
	if c := s.table.get(tok); c != nil && c.report(hangup) {
		s.ready <- c
	}
}

// NodeID returns this node's id, the prefix of its connection ids.
func (s *Server) NodeID() string { return s.nodeID }

// Routes returns the routes in declaration order.
func (s *Server) Routes() []*Route { return s.routes.Load().all }

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EBADF)
}

func itoa(i int) string { return fmt.Sprint(i) }

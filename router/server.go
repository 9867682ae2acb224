package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/internal/bufpool"
	"github.com/moonwire/moonwire/router/poll"
)

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

	Broker broker.Broker // nil: a private in-memory broker
	NodeID string        // "": random
	Logger *slog.Logger  // nil: slog.Default()
	// Workers is the size of the pool that reads ready connections;
	// 0: GOMAXPROCS.
	Workers int
	// NoPoller reads every connection with its own goroutine even where
	// epoll is available (the portable path; tests use it).
	NoPoller bool
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
	ready  chan uint64 // tokens reported by the poller, for the workers
	flushq chan *Conn  // queues to write, for the flush workers
	http   *httpHandoff

	broker       broker.Broker
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
	bgDone  chan struct{} // closed when stopBackground's work is done
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
	for range s.static.Workers {
		s.bg.Add(1)
		go func() { defer s.bg.Done(); s.flushWorker() }()
	}
	if s.poller != nil {
		s.ready = make(chan uint64, 4096)
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
				for tok := range s.ready {
					if c := s.table.get(tok); c != nil {
						c.onReadable(r)
					}
				}
			}()
		}
	}
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.sweep() }()
}

// onReady is the poller's callback: hand the token to a worker. When every
// worker is busy the poller waits here, which is the backpressure.
func (s *Server) onReady(tok uint64) { s.ready <- tok }

// NodeID returns this node's id, the prefix of its connection ids.
func (s *Server) NodeID() string { return s.nodeID }

// Routes returns the routes in declaration order.
func (s *Server) Routes() []*Route { return s.routes.Load().all }

// Serve accepts connections on ln until Shutdown or Close. It returns
// http.ErrServerClosed after a shutdown, like net/http.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors (EMFILE, ENFILE), out of buffers, or a
			// transient failure: back off and retry rather than spin or
			// give up. Connections end on their own deadlines and free
			// descriptors; the listener must still be there when they do.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.stopped:
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close()
			return http.ErrServerClosed
		}
		// Added under mu so that no handshake starts after Shutdown began
		// waiting for them.
		s.wg.Add(1)
		s.handshakes[nc] = struct{}{}
		s.mu.Unlock()
		select {
		case s.idleShakers <- nc:
		default:
			go s.handshaker(nc)
		}
	}
}

// handshakerIdle is how long a handshake goroutine waits for the next
// socket before it exits.
const handshakerIdle = 2 * time.Second

// handshaker serves nc's handshake, then the handshakes of later sockets
// for as long as they keep coming. A handshake runs deep (the upgrader, a
// Lua callback): on a fresh goroutine it pays for growing its stack every
// time, which under connection churn is a cost that shows. Handshakes that
// outnumber the waiting goroutines get new ones, so a slow client never
// holds up another.
func (s *Server) handshaker(nc net.Conn) {
	var idle *time.Timer
	for {
		s.serveConn(nc)
		if idle == nil {
			idle = time.NewTimer(handshakerIdle)
		} else {
			idle.Reset(handshakerIdle)
		}
		select {
		case nc = <-s.idleShakers:
		case <-idle.C:
			return
		case <-s.stopped:
			idle.Stop()
			return
		}
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Lingering close. When the server fails a connection (a protocol or
// policy violation, a rate limit, a message too big, a heartbeat timeout),
// the peer is often still sending. Closing a socket with unread input makes
// the kernel answer with a reset, which discards what is still in the send
// queue (our close frame among it) and, at the peer, what it had not read
// yet: the client then sees 1006 instead of the code we sent, and loses the
// replies that preceded it. So the socket's write side is shut instead
// (the peer reads everything we sent, then end of stream), and its input is
// read and discarded until the peer closes, for at most lingerTimeout or
// lingerBytes, like nginx's lingering_close.
//
// A lingering socket no longer counts against MaxConnections (its Close
// event has run), yet holds a descriptor, a goroutine and a buffer. So
// there are at most lingerCap of them: past it, a failed connection's
// socket is closed at once, and its peer, if still sending, may see a
// reset instead of our close frame. Without the cap, clients that each
// broke the protocol and kept their socket open held one apiece, however
// low MaxConnections was.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
	// lingerMin and lingerNoLimit bound the lingering sockets: as many
	// as MaxConnections but at least lingerMin, or lingerNoLimit without
	// MaxConnections.
	lingerMin     = 64
	lingerNoLimit = 1024
)

// lingerCap is how many sockets may linger at once (see lingerMin).
func (s *Server) lingerCap() int {
	if m := s.c().MaxConnections; m > 0 {
		return max(lingerMin, m)
	}
	return lingerNoLimit
}

// linger drains and then closes nc, a failed connection's socket whose
// close frame is written. It reports false, doing nothing, when nc cannot
// shut its write side alone, lingerCap sockets linger already, or the
// server is closing (everything is closed at once then); the caller
// closes nc.
func (s *Server) linger(nc net.Conn) bool {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		return false
	}
	timeout := lingerTimeout
	if hk := s.hooks; hk != nil && hk.lingerFor > 0 {
		timeout = hk.lingerFor
	}
	s.mu.Lock()
	if s.closing || len(s.lingering) >= s.lingerCap() {
		s.mu.Unlock()
		return false
	}
	// The write side shut and the deadline set before the socket is
	// registered, under mu: beginClosing's deadline (now), set under mu
	// to the registered sockets, then always comes after this one and
	// wins. Set afterwards, by the draining goroutine, it could replace
	// beginClosing's, and Shutdown waited out the linger. Neither call
	// blocks.
	if cw.CloseWrite() != nil || nc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		s.mu.Unlock()
		return false
	}
	s.lingering[nc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if hk := s.hooks; hk != nil && hk.lingering != nil {
		hk.lingering()
	}
	go func() {
		defer s.wg.Done()
		buf := bufpool.Get(readBufferSize)
		for n := 0; n < lingerBytes; {
			m, err := nc.Read(buf)
			if n += m; err != nil {
				break
			}
		}
		bufpool.Put(buf)
		s.mu.Lock()
		delete(s.lingering, nc)
		s.mu.Unlock()
		_ = nc.Close()
	}()
	return true
}

// drainBatch bounds how many connections a drain closes at once: each close
// writes a frame from a goroutine of its own, and a hundred thousand at
// once would be a burst of memory for nothing.
const drainBatch = 1000

// Shutdown drains the server: it stops accepting, closes every connection
// with 1001 "going away" (drainBatch at a time), waits for their Close
// events to run, then stops the routes. When ctx ends first, the remaining
// connections are dropped (their Close events still run) and ctx's error
// is returned.
//
// Shutdown returns within AbandonGrace of ctx's end whatever the handlers
// do: a lane stuck in a callback cannot run the events a drain waits for,
// so past that grace the server gives up on it, logs the route and lane,
// and returns an error wrapping ErrAbandoned. Its goroutines are left
// behind; the process is expected to exit.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClosing()
	s.closeAll(ctx, CloseGoingAway, "going away", nil)
	err := s.waitIdle(ctx)
	if err == nil {
		return s.stopBackground(time.Now().Add(AbandonGrace))
	}
	return errors.Join(err, s.dropAll())
}

// dropAll tears every connection down and stops the server, giving lanes
// AbandonGrace in all to run the Close events and stop.
func (s *Server) dropAll() error {
	abandonAt := time.Now().Add(AbandonGrace)
	s.table.each(func(c *Conn) { c.teardown() })
	grace, cancel := context.WithDeadline(context.Background(), abandonAt)
	_ = s.waitIdle(grace)
	cancel()
	return s.stopBackground(abandonAt)
}

// AbandonGrace is how long Shutdown and Close wait, once their own
// deadline has passed, for lanes to finish before abandoning them.
const AbandonGrace = 2 * time.Second

// ErrAbandoned is wrapped by the error of a Shutdown or Close that left
// lanes stuck in a handler behind.
var ErrAbandoned = errors.New("abandoned lanes stuck in a handler")

// closeAll starts the closing handshake on every connection, a batch at a
// time: the next batch starts once this one's close frames are written (or
// a second has passed, for peers that do not read).
func (s *Server) closeAll(ctx context.Context, code int, reason string, which func(*Conn) bool) {
	var batch []*Conn
	flush := func() {
		for _, c := range batch {
			c.closeWith(code, reason, false, false)
		}
		deadline := time.Now().Add(time.Second)
		for _, c := range batch {
			for !c.closeWritten() && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		batch = batch[:0]
	}
	s.table.each(func(c *Conn) {
		if ctx.Err() != nil || (which != nil && !which(c)) {
			return
		}
		if batch = append(batch, c); len(batch) == drainBatch {
			flush()
		}
	})
	flush()
}

// Close drops every connection at once (their Close events still run) and
// stops the server. Like Shutdown, it gives up on lanes stuck in a handler
// after AbandonGrace.
func (s *Server) Close() error {
	s.beginClosing()
	return s.dropAll()
}

func (s *Server) beginClosing() {
	// Waits for a reconfiguration in progress (see reMu).
	s.reMu.Lock()
	defer s.reMu.Unlock()
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.stopped)
		for ln := range s.listeners {
			_ = ln.Close()
		}
		// Handshakes in progress end now rather than at their deadline,
		// and so do lingering closes: linger sets its own deadline under
		// mu before it registers a socket, so this one comes last.
		for nc := range s.handshakes {
			_ = nc.SetDeadline(time.Now())
		}
		for nc := range s.lingering {
			_ = nc.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	s.http.close()
}

// waitIdle waits until every connection's Close event has run.
func (s *Server) waitIdle(ctx context.Context) error {
	for s.active.Load() > 0 {
		select {
		case <-s.activeChange:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
			// Connections still in their handshake become active without
			// signalling; look again.
		}
	}
	return nil
}

func (s *Server) connGone() {
	select {
	case s.activeChange <- struct{}{}:
	default:
	}
}

// stopBackground stops the routes and every goroutine of the server, once
// the connections are gone. It waits for them until abandonAt, and then
// reports what it abandoned (ErrAbandoned) instead of waiting on a stuck
// handler forever.
func (s *Server) stopBackground(abandonAt time.Time) error {
	s.stopAll.Do(func() {
		s.bgDone = make(chan struct{})
		go func() {
			defer close(s.bgDone)
			s.wg.Wait() // handshakes, flushers and reader goroutines
			// Every connection is gone, so nothing queues a flush any more.
			close(s.flushq)
			s.mu.Lock()
			routes := append(s.routes.Load().all, s.retired...)
			s.retired = nil
			s.mu.Unlock()
			for _, rt := range routes {
				s.stopRoute(rt)
			}
			if s.unsubscribe != nil {
				s.unsubscribe()
			}
			if s.ownBroker {
				_ = s.broker.Close()
			}
			s.closePoller()
			close(s.sweepStop)
			s.bg.Wait()
		}()
	})
	t := time.NewTimer(time.Until(abandonAt))
	defer t.Stop()
	select {
	case <-s.bgDone:
		return nil
	case <-t.C:
	}
	var stuck []string
	for _, rt := range s.allRoutes() {
		for _, l := range rt.lanes {
			if l.busy() {
				stuck = append(stuck, fmt.Sprintf("route %s lane %d", rt.Pattern(), l.index))
				s.log.Error("shutdown: a lane is stuck in a handler; abandoned", "route", rt.Pattern(), "lane", l.index)
			}
		}
	}
	if len(stuck) == 0 {
		stuck = append(stuck, "a handshake or a write that did not end")
		s.log.Error("shutdown: background work did not end; abandoned")
	}
	return fmt.Errorf("%w: %s", ErrAbandoned, strings.Join(stuck, ", "))
}

// allRoutes returns the current routes and the retired ones still
// draining.
func (s *Server) allRoutes() []*Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]*Route(nil), s.routes.Load().all...), s.retired...)
}

func (s *Server) closePoller() {
	if s.poller != nil {
		_ = s.poller.Close()
	}
}

// Conn returns the local connection with the given id, or nil.
func (s *Server) Conn(id string) *Conn {
	node, tok, ok := parseID(id)
	if !ok || node != s.nodeID {
		return nil
	}
	if c := s.table.get(tok); c != nil && c.id == id {
		return c
	}
	return nil
}

// Broadcast queues data on every member of room, on this node and, through
// the broker, on the others, except the connection except (may be nil). It
// returns the number of local recipients. The payload is framed once for
// all of them.
func (s *Server) Broadcast(room string, kind Kind, data []byte, except *Conn) int {
	m := newOutMsg(kind, data, "")
	return s.broadcast(room, kind, &m, except, func() []byte { return clone(data) })
}

// BroadcastString is Broadcast for a string payload.
func (s *Server) BroadcastString(room string, kind Kind, data string, except *Conn) int {
	m := newOutMsg(kind, nil, data)
	return s.broadcast(room, kind, &m, except, func() []byte { return []byte(data) })
}

func (s *Server) broadcast(room string, kind Kind, m *outMsg, except *Conn, payload func() []byte) int {
	n := s.rooms.fanout(room, m, except)
	m.release()
	s.stats.broadcasts.Add(1)
	s.stats.fanout.Add(int64(n))
	if s.brokerAlone == nil || !s.brokerAlone() {
		m := broker.Message{Op: broker.OpBroadcast, Origin: s.nodeID, Room: room, Binary: kind == Binary, Data: payload()}
		if except != nil {
			m.Except = except.id
		}
		s.publish(m)
	}
	return n
}

// SendTo queues data on the connection id, wherever it is in the cluster.
// For a local connection the error is the connection's verdict; for a
// remote one, delivery is best-effort.
func (s *Server) SendTo(id string, kind Kind, data []byte) error {
	if c := s.Conn(id); c != nil {
		return c.Send(kind, data)
	}
	if !s.remote(id) {
		return ErrClosed
	}
	s.publish(broker.Message{Op: broker.OpSend, Origin: s.nodeID, Target: id, Binary: kind == Binary, Data: clone(data)})
	return nil
}

// CloseConn closes the connection id, wherever it is in the cluster.
func (s *Server) CloseConn(id string, code int, reason string) error {
	if !SendableCloseCode(code) {
		return fmt.Errorf("invalid close code %d", code)
	}
	if c := s.Conn(id); c != nil {
		return c.Close(code, reason)
	}
	if !s.remote(id) {
		return ErrClosed
	}
	s.publish(broker.Message{Op: broker.OpClose, Origin: s.nodeID, Target: id, Code: code, Reason: reason})
	return nil
}

// remote reports whether id may live on another node: it names another
// node and there are other nodes to ask.
func (s *Server) remote(id string) bool {
	node, _, ok := parseID(id)
	if !ok || node == s.nodeID {
		return false
	}
	return s.brokerAlone == nil || !s.brokerAlone()
}

// RoomSize returns the number of local members of room.
func (s *Server) RoomSize(room string) int { return s.rooms.size(room) }

// RoomMembers returns the ids of the local members of room, sorted.
func (s *Server) RoomMembers(room string) []string { return s.rooms.memberIDs(room) }

func (s *Server) publish(m broker.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), s.c().WriteTimeout)
	defer cancel()
	if err := s.broker.Publish(ctx, m); err != nil {
		s.stats.brokerErrors.Add(1)
		s.log.Warn("broker publish failed", "op", m.Op, "err", err)
	}
}

// onBroker applies another node's instruction locally.
func (s *Server) onBroker(m broker.Message) {
	kind := Text
	if m.Binary {
		kind = Binary
	}
	switch m.Op {
	case broker.OpBroadcast:
		var except *Conn
		if m.Except != "" {
			except = s.Conn(m.Except)
		}
		out := newOutMsg(kind, m.Data, "")
		n := s.rooms.fanout(m.Room, &out, except)
		out.release()
		s.stats.fanout.Add(int64(n))
	case broker.OpSend:
		if c := s.Conn(m.Target); c != nil {
			_ = c.Send(kind, m.Data)
		}
	case broker.OpClose:
		if c := s.Conn(m.Target); c != nil {
			_ = c.Close(m.Code, m.Reason)
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EBADF)
}

func itoa(i int) string { return fmt.Sprint(i) }

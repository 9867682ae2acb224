// Package nats is the NATS broker: moonwire nodes that share a NATS server
// (or cluster) exchange broadcasts, direct sends and closes over core NATS
// subjects, keep rooms' history in JetStream (see history.go) and their
// members in a JetStream key-value bucket (see presence.go).
//
// A node subscribes to its own subject (PREFIX.node.ID), where sends and
// closes for its connections arrive, and to two subjects per room it
// serves, subscribed when the room's first local member joins and
// unsubscribed when its last leaves: PREFIX.room.NAME for broadcasts
// without history and PREFIX.live.NAME, where the history stream
// republishes what it stores. A node hears only the traffic of its rooms.
// Names are encoded into a single subject token, so no room name can act
// as a wildcard or reach into another subject. Publishing goes through a
// bounded broker.Outbox, so a lane never waits for NATS.
//
// The client is nats.go: it reconnects by itself, subscribes again on the
// new connection and buffers publishes during a short outage, which are
// the properties a broker that must survive server restarts needs.
//
// It knows NATS and the broker package; nothing of sockets, frames, Lua or
// configuration files.
package nats

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	redactpkg "github.com/moonwire/moonwire/internal/redact"
	"github.com/moonwire/moonwire/router/broker"
)

// Tuning that is not worth a configuration key.
const (
	maxBatch = 256 // messages per outbox send
	// receiveBuffer is the channel between nats.go's reader and fn. It is
	// also the pending limit of every subscription: nats.go refuses
	// SetPendingLimits on channel subscriptions and drops (reporting a
	// slow consumer) when the channel is full, so memory stays bounded
	// however far fn falls behind.
	receiveBuffer = 8192
	// reconnectBuf is what nats.go keeps of publishes made while the
	// connection is down; past it a publish fails and is counted. 8 MB
	// covers a server restart of a few seconds at ordinary rates.
	reconnectBuf = 8 << 20
	// The first retry comes soon because a restart is the usual outage;
	// the jitter keeps a whole cluster of nodes from reconnecting in the
	// same instant. TLS handshakes cost the server more, so they spread
	// wider.
	reconnectWait   = 250 * time.Millisecond
	reconnectJitter = 250 * time.Millisecond
	jitterTLS       = time.Second
	// A server that vanishes without closing the TCP connection (a
	// partition, a dead host) is noticed after two unanswered pings, not
	// after nats.go's default of minutes, so that Stats and /healthz tell
	// the truth soon.
	pingInterval = 10 * time.Second
	retryEvery   = time.Second      // a room subscription that failed is tried again after this
	logEvery     = 10 * time.Second // at most one line per period for a repeated problem
	// maxPlainToken bounds the length of a name encoded as is. The server
	// refuses a protocol line longer than max_control_line (4 KB by
	// default) by closing the connection, so a longer name is hashed
	// rather than allowed to cut the node off.
	maxPlainToken = 256
)

// errClosed is returned by calls made after Close.
var errClosed = errors.New("nats: broker closed")

// Broker is a broker.Broker over core NATS. It also implements
// broker.RoomWatcher, broker.Reporter, broker.History and broker.Presence.
type Broker struct {
	opts   broker.Options
	log    *slog.Logger
	url    string // opts.URL without secrets, for errors and logs
	prefix string
	nc     *natsgo.Conn
	out    *broker.Outbox
	want   *broker.Interest
	// msgs is shared by every subscription: one channel read by one
	// goroutine keeps the order in which the server delivered messages,
	// which is each publisher's order per subject.
	msgs chan *natsgo.Msg
	buf  []byte // encoding buffer, used by the outbox goroutine only

	mu         sync.Mutex
	subscribed bool
	nodeSub    *natsgo.Subscription
	recv       atomic.Pointer[target] // nil before Subscribe and after cancel

	// h is the rooms' history (JetStream); ctx ends with Close.
	h      *history
	ctx    context.Context
	cancel context.CancelFunc
	order  reorder // receive goroutine only

	// heldSet is the rooms whose two subscriptions the reconcile goroutine
	// has made; heldCh is closed (and replaced) after each of its passes.
	heldMu  sync.Mutex
	heldSet map[string]struct{}
	heldCh  chan struct{}

	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	closed atomic.Bool

	publishes  atomic.Uint64
	receives   atomic.Uint64
	errs       atomic.Uint64
	reconnects atomic.Uint64
	rooms      atomic.Int64
	lastErr    atomic.Pointer[string]

	// pres is the rooms' presence (JetStream KV).
	pres presence

	dropLog, pubLog, unackLog, decodeLog, slowLog, asyncLog, retryLog, subLog, presLog, presQLog limiter
}

// target is who receives: swapped as a whole so that the receive
// goroutine reads node and fn without a lock.
type target struct {
	node string
	fn   func(broker.Message)
}

var (
	_ broker.Broker      = (*Broker)(nil)
	_ broker.RoomWatcher = (*Broker)(nil)
	_ broker.Reporter    = (*Broker)(nil)
	_ broker.History     = (*Broker)(nil)
	_ broker.Presence    = (*Broker)(nil)
)

// New connects to the NATS server(s) at opts.URL (a comma-separated list
// is allowed). With opts.StartDegraded a server that cannot be reached, or
// that refuses the credentials, is not an error: the broker starts
// disconnected, reports the cause in Stats.LastError and connects when it
// can, since a node that serves its local clients is worth more than one
// that refuses to start.
func New(opts broker.Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	b := &Broker{
		opts:    opts,
		log:     opts.Logger.With("broker", "nats"),
		url:     redact(opts.URL),
		prefix:  opts.Prefix,
		want:    broker.NewInterest(),
		msgs:    make(chan *natsgo.Msg, receiveBuffer),
		stop:    make(chan struct{}),
		heldSet: make(map[string]struct{}),
		heldCh:  make(chan struct{}),
		// Before connecting: the connection callbacks use it.
		h:    newHistory(opts.Prefix, opts.Outbox),
		pres: newPresence(opts.Prefix, opts.Outbox),
	}
	if err := validPrefix(opts.Prefix); err != nil {
		b.pres.cancel()
		return nil, err
	}
	nc, err := natsgo.Connect(opts.URL,
		natsgo.Name("moonwire"),
		natsgo.Timeout(opts.Timeout),
		// A write to a server that stopped reading must fail rather than
		// hold the outbox goroutine for nats.go's default minute.
		natsgo.FlusherTimeout(opts.Timeout),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(reconnectWait),
		natsgo.ReconnectJitter(reconnectJitter, jitterTLS),
		natsgo.ReconnectBufSize(reconnectBuf),
		natsgo.PingInterval(pingInterval),
		natsgo.MaxPingsOutstanding(2),
		// By default nats.go gives up for good after the same auth error
		// twice; credentials fixed on the server must not need a restart
		// of every node.
		natsgo.IgnoreAuthErrorAbort(),
		// One connection is one node, so the server leaving out our own
		// messages is exactly the origin filter, and saves their traffic.
		natsgo.NoEcho(),
		natsgo.RetryOnFailedConnect(opts.StartDegraded),
		natsgo.ConnectHandler(b.onConnect),
		natsgo.DisconnectErrHandler(b.onDisconnect),
		natsgo.ReconnectHandler(b.onReconnect),
		natsgo.ReconnectErrHandler(b.onReconnectErr),
		natsgo.ClosedHandler(b.onClosed),
		natsgo.ErrorHandler(b.onAsyncError),
	)
	if err != nil {
		b.pres.cancel()
		return nil, fmt.Errorf("nats: connect %s: %w", b.url, err)
	}
	b.nc = nc
	if b.h.js, err = jetstream.New(nc); err == nil {
		// Presence writes asynchronously; an ack that never comes must not
		// keep its future forever.
		b.pres.js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(opts.Timeout))
	}
	if err != nil {
		b.pres.cancel()
		nc.Close()
		return nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if !nc.IsConnected() {
		// Only with StartDegraded: the cause follows from the retry loop.
		b.setErr(fmt.Errorf("connect %s: no server reachable yet", b.url))
		b.log.Warn("broker unreachable, starting degraded", "url", b.url)
	}
	b.out = broker.NewOutbox(opts.Outbox, maxBatch, b.send)
	b.wg.Add(5)
	go b.receive()
	go b.reconcile()
	go b.drain()
	go b.checkJetStream()
	go b.presenceLoop()
	return b, nil
}

// Subscribe implements broker.Broker. One Broker serves one node, so a
// second call is an error. cancel stops delivery; a call of fn already
// under way may still finish.
func (b *Broker) Subscribe(node string, fn func(broker.Message)) (func(), error) {
	if fn == nil {
		return nil, errors.New("nats: Subscribe with a nil function")
	}
	subj := b.nodeSubject(node)
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return nil, errClosed
	}
	if b.subscribed {
		b.mu.Unlock()
		return nil, errors.New("nats: broker already serves a node")
	}
	sub, err := b.nc.ChanSubscribe(subj, b.msgs)
	if err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("nats: %s: subscribe %s: %w", b.url, subj, err)
	}
	t := &target{node: node, fn: fn}
	b.subscribed, b.nodeSub = true, sub
	b.recv.Store(t)
	b.mu.Unlock()
	b.pres.setNode(node) // presence keys name the node

	// A round trip makes the subscription known to the server before we
	// return, so that sends to this node from the moment it announces
	// itself are not missed. When disconnected, nats.go sends it on
	// connect instead.
	if b.nc.IsConnected() {
		if err := b.nc.FlushTimeout(b.opts.Timeout); err != nil {
			b.log.Warn("broker subscription not confirmed", "subject", subj, "err", err)
		}
	}
	return func() {
		b.recv.CompareAndSwap(t, nil)
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.nodeSub == sub {
			_ = sub.Unsubscribe()
			b.nodeSub = nil
		}
	}, nil
}

// WatchRoom implements broker.RoomWatcher; the subscription follows on the
// reconcile goroutine.
func (b *Broker) WatchRoom(room string) { b.want.Add(room) }

// UnwatchRoom implements broker.RoomWatcher.
func (b *Broker) UnwatchRoom(room string) { b.want.Remove(room) }

// Publish implements broker.Broker: it queues m and returns at once. A
// full outbox drops m; the drop is counted in Stats.Dropped.
func (b *Broker) Publish(_ context.Context, m broker.Message) error {
	if b.closed.Load() {
		return errClosed
	}
	if !b.out.Push(m) {
		if held, ok := b.dropLog.allow(); ok {
			b.log.Warn("broker outbox full, messages dropped", "dropped", held+1,
				"dropped_total", b.out.Dropped(), "outbox", b.opts.Outbox)
		}
	}
	return nil
}

// send hands one batch to nats.go, which writes it out on its own flusher
// goroutine (or keeps it while reconnecting). Runs on the outbox
// goroutine, so one node's messages reach NATS in the order they were
// published.
func (b *Broker) send(batch []broker.Message) error {
	var first error
	var failed uint64
	for i := range batch {
		m := &batch[i]
		subj := b.nodeSubject(m.To)
		if m.Op == broker.OpBroadcast {
			subj = b.roomSubject(m.Room)
		}
		b.buf = broker.AppendWire(b.buf[:0], m) // nats.go copies it
		if err := b.nc.Publish(subj, b.buf); err != nil {
			failed++
			if first == nil {
				first = fmt.Errorf("publish %s: %w", subj, err)
			}
			continue
		}
		b.publishes.Add(1)
	}
	if cap(b.buf) > 1<<16 {
		b.buf = nil // one large message should not pin its buffer forever
	}
	if failed == 0 {
		return nil
	}
	b.errs.Add(failed)
	b.setErr(first)
	// After Close gave up waiting for the outbox, the rest fails on the
	// closed connection; that loss was already logged by Close.
	if held, ok := b.pubLog.allow(); ok && !b.closed.Load() {
		b.log.Warn("broker publish failed", "messages", failed, "batches_not_logged", held, "err", first)
	}
	return first
}

// receive decodes what the subscriptions deliver and hands it to fn, in
// the order NATS delivered it, except that broadcasts with history are
// put in their rooms' offset order (see reorder).
func (b *Broker) receive() {
	defer b.wg.Done()
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-b.stop:
			return
		case msg := <-b.msgs:
			b.deliver(msg)
		case now := <-tick:
			// Give up only on what has not arrived: a node slower than
			// its traffic has the missing broadcast in its own queue
			// already, maybe since long before the window ended.
			for n := len(b.msgs); n > 0; n-- {
				b.deliver(<-b.msgs)
			}
			b.order.expire(now, b.hand)
		}
		switch holding := b.order.holding(); {
		case holding && ticker == nil:
			ticker = time.NewTicker(reorderWindow / 4)
			tick = ticker.C
		case !holding && ticker != nil:
			ticker.Stop()
			ticker, tick = nil, nil
		}
	}
}

func (b *Broker) deliver(msg *natsgo.Msg) {
	if c := msg.Header.Get(hdrCount); c != "" {
		// A unit of several broadcasts with history (batch.go), from the
		// stream's republish.
		n, err := strconv.ParseUint(c, 10, 64)
		var wires [][]byte
		if err == nil {
			wires, err = decodeUnit(msg.Data, n)
		}
		if err != nil {
			b.undecodable(msg, err)
			return
		}
		for _, w := range wires {
			b.deliverOne(msg, w)
		}
		return
	}
	b.deliverOne(msg, msg.Data)
}

func (b *Broker) undecodable(msg *natsgo.Msg, err error) {
	b.errs.Add(1)
	if held, ok := b.decodeLog.allow(); ok {
		b.log.Warn("broker message undecodable, dropped", "subject", msg.Subject,
			"not_logged", held, "err", err)
	}
}

// deliverOne hands on one broadcast (data, in wire form) of msg.
func (b *Broker) deliverOne(msg *natsgo.Msg, data []byte) {
	m, err := broker.DecodeWire(data)
	if err != nil {
		b.undecodable(msg, err)
		return
	}
	t := b.recv.Load()
	// A broadcast with an offset comes from the history stream, to every
	// watcher, its origin too (see broker.History).
	if t == nil || m.Origin == t.node && m.Offset == 0 {
		return
	}
	if m.Offset != 0 {
		// m.Data is msg's own copy, so it may be held.
		b.order.add(m, time.Now(), b.hand, b.want)
		return
	}
	b.receives.Add(1)
	t.fn(m)
}

// hand gives fn a broadcast with history, in its room's order.
func (b *Broker) hand(m broker.Message) {
	if t := b.recv.Load(); t != nil {
		b.receives.Add(1)
		t.fn(m)
	}
}

// reconcile subscribes and unsubscribes room subjects (each room's and
// its live subject, both on the one receive channel) as the wanted set
// changes. nats.go records a subscription before it tells the server and
// sends all of them again on every new connection, so what is held here
// stays what the server knows across reconnects.
func (b *Broker) reconcile() {
	defer b.wg.Done()
	subs := map[string][2]*natsgo.Subscription{}
	held := map[string]struct{}{}
	var retry <-chan time.Time
	for {
		select {
		case <-b.stop:
			for _, s := range subs {
				_ = s[0].Unsubscribe()
				_ = s[1].Unsubscribe()
			}
			b.rooms.Store(0)
			b.heldMu.Lock()
			clear(b.heldSet)
			b.heldMu.Unlock()
			return
		case <-b.want.Changed():
		case <-retry:
		}
		retry = nil
		add, remove := b.want.Diff(held)
		for _, r := range add {
			s, err := b.subscribeRoom(r)
			if err != nil {
				// Not held, so the next Diff offers it again.
				b.errs.Add(1)
				b.setErr(err)
				if n, ok := b.subLog.allow(); ok {
					b.log.Warn("broker subscribe failed", "room", r, "not_logged", n, "err", err)
				}
				retry = time.After(retryEvery)
				continue
			}
			subs[r], held[r] = s, struct{}{}
		}
		for _, r := range remove {
			// A failed UNSUB means the connection is gone, and with it the
			// subscription: nothing is left to retry.
			for _, s := range subs[r] {
				if err := s.Unsubscribe(); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
					b.errs.Add(1)
					b.log.Warn("broker unsubscribe failed", "room", r, "subject", s.Subject, "err", err)
				}
			}
			delete(subs, r)
			delete(held, r)
		}
		b.rooms.Store(int64(len(held)))
		b.heldMu.Lock()
		for _, r := range add {
			if _, ok := held[r]; ok {
				b.heldSet[r] = struct{}{}
			}
		}
		for _, r := range remove {
			delete(b.heldSet, r)
		}
		close(b.heldCh) // WaitWatched looks again
		b.heldCh = make(chan struct{})
		b.heldMu.Unlock()
	}
}

// subscribeRoom subscribes both subjects of room, or neither.
func (b *Broker) subscribeRoom(r string) ([2]*natsgo.Subscription, error) {
	var s [2]*natsgo.Subscription
	for i, subj := range [2]string{b.roomSubject(r), b.liveSubject(r)} {
		sub, err := b.nc.ChanSubscribe(subj, b.msgs)
		if err != nil {
			if i == 1 {
				_ = s[0].Unsubscribe()
			}
			return s, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		s[i] = sub
	}
	return s, nil
}

// Stats implements broker.Reporter.
func (b *Broker) Stats() broker.Stats {
	s := broker.Stats{
		// Asked of the connection rather than tracked from callbacks, which
		// arrive later and would race with New's first look.
		Connected:  b.nc.IsConnected(),
		Publishes:  b.publishes.Load(),
		Receives:   b.receives.Load(),
		Errors:     b.errs.Load(),
		Reconnects: b.reconnects.Load(),
		Dropped:    b.out.Dropped() + b.h.qdropped.Load(),
		Queued:     b.out.Len() + b.h.queueLen(),
		Rooms:      int(b.rooms.Load()),
	}
	if e := b.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// Close sends what the outbox holds and waits for the server to have it
// (together up to opts.Timeout), meanwhile removes the node's presence,
// then unsubscribes, closes the connection and stops the goroutines. It is
// safe to call more than once.
func (b *Broker) Close() error {
	b.once.Do(func() {
		deadline := time.Now().Add(b.opts.Timeout)
		b.mu.Lock()
		b.closed.Store(true) // under mu: no Subscribe slips in after this
		b.mu.Unlock()
		b.pres.deadline = deadline // read by the writer once cancel is seen
		b.pres.cancel()
		b.out.Close(b.opts.Timeout)
		if b.out.Len() > 0 {
			b.log.Warn("broker outbox not drained at close, messages lost", "messages", b.out.Len())
		}
		// Broadcasts with history queued during an outage get the rest of
		// the time, if the server is back.
		for b.h.queueLen()+b.h.inflightLen() > 0 && b.nc.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := b.h.queueLen() + b.h.inflightLen(); n > 0 {
			b.log.Warn("broker history queue not drained at close, broadcasts lost", "messages", n)
		}
		if left := time.Until(deadline); left > 0 && b.nc.IsConnected() {
			if err := b.nc.FlushTimeout(left); err != nil {
				b.log.Warn("broker flush at close failed, messages may be lost", "err", err)
			}
		}
		b.cancel()
		close(b.stop)
		b.wg.Wait()
		// The rooms' goroutines end with b.ctx; none starts after this.
		b.h.bmu.Lock()
		b.h.bclosed = true
		b.h.bmu.Unlock()
		b.h.bwg.Wait()
		b.mu.Lock()
		if b.nodeSub != nil {
			_ = b.nodeSub.Unsubscribe()
			b.nodeSub = nil
		}
		b.mu.Unlock()
		b.recv.Store(nil)
		b.nc.Close()
	})
	return nil
}

// --- connection events, called in order on nats.go's callback goroutine ---

func (b *Broker) onConnect(*natsgo.Conn) {
	b.lastErr.Store(nil)
	b.h.poke()
	b.pres.poke()
	b.log.Info("broker connected", "url", b.url, "rooms", b.rooms.Load())
}

func (b *Broker) onDisconnect(_ *natsgo.Conn, err error) {
	if b.closed.Load() {
		return
	}
	if err == nil {
		err = errors.New("closed by the server")
	}
	b.h.gen.Add(1)
	b.setErr(fmt.Errorf("connection lost: %w", err))
	b.log.Warn("broker connection lost, reconnecting", "url", b.url, "err", err)
}

func (b *Broker) onReconnect(nc *natsgo.Conn) {
	// Cleared first: whoever sees the count go up sees the error gone.
	b.lastErr.Store(nil)
	b.h.gen.Add(1) // the server may have lost its store: read again
	b.reconnects.Add(1)
	b.h.poke()
	b.pres.poke()
	b.log.Info("broker reconnected", "server", redact(nc.ConnectedUrl()), "rooms", b.rooms.Load())
}

// onReconnectErr fires on every failed attempt, four times a second while
// a server is away: the cause goes to LastError each time, to the log
// once per period.
func (b *Broker) onReconnectErr(_ *natsgo.Conn, err error) {
	if b.closed.Load() || err == nil {
		return
	}
	b.setErr(fmt.Errorf("connect %s: %w", b.url, err))
	if n, ok := b.retryLog.allow(); ok {
		b.log.Warn("broker still unreachable", "url", b.url, "failed_attempts", n+1, "err", err)
	}
}

// onClosed only matters when nats.go gives up by itself, which the options
// above should prevent; a closed connection never comes back.
func (b *Broker) onClosed(nc *natsgo.Conn) {
	if b.closed.Load() {
		return
	}
	err := nc.LastError()
	if err == nil {
		err = natsgo.ErrConnectionClosed
	}
	b.setErr(fmt.Errorf("connection closed for good: %w", err))
	b.log.Error("broker connection closed, this node no longer hears the cluster", "url", b.url, "err", err)
}

// onAsyncError receives what the server reports out of band: slow consumer
// drops (our receive channel was full; nats.go reports each run of drops
// once, so Errors counts runs, not messages) and permission violations.
func (b *Broker) onAsyncError(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
	if b.closed.Load() {
		return
	}
	b.errs.Add(1)
	subj := ""
	if sub != nil {
		subj = sub.Subject
	}
	if errors.Is(err, natsgo.ErrSlowConsumer) {
		if n, ok := b.slowLog.allow(); ok {
			b.log.Warn("broker messages dropped, this node does not keep up", "subject", subj,
				"buffer", receiveBuffer, "not_logged", n)
		}
		return
	}
	// A permission violation comes back for every publish on the subject,
	// so this too is limited.
	b.setErr(fmt.Errorf("subject %q: %w", subj, err))
	if n, ok := b.asyncLog.allow(); ok {
		b.log.Warn("broker error reported by the server", "subject", subj, "not_logged", n, "err", err)
	}
}

// --- subjects ---

func (b *Broker) nodeSubject(node string) string { return b.prefix + ".node." + token(node) }
func (b *Broker) roomSubject(room string) string { return b.prefix + ".room." + token(room) }

// token turns any name into one subject token: base64 leaves no dot,
// space or wildcard, and the leading letter keeps "" from becoming an
// empty token. Names too long for a protocol line are hashed ("h"); a
// collision would only cost traffic, since the receiver reads the room
// from the message, not from the subject.
func token(name string) string {
	if base64.RawURLEncoding.EncodedLen(len(name)) <= maxPlainToken {
		return "r" + base64.RawURLEncoding.EncodeToString([]byte(name))
	}
	sum := sha256.Sum256([]byte(name))
	return "h" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// validPrefix refuses a prefix that would make subjects malformed or let
// them match other applications' subjects by wildcard.
func validPrefix(p string) error {
	for _, tok := range strings.Split(p, ".") {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n*>") {
			return fmt.Errorf("nats: prefix %q: want dot-separated tokens without spaces or wildcards", p)
		}
	}
	return nil
}

func (b *Broker) setErr(err error) {
	s := err.Error()
	b.lastErr.Store(&s)
}

// limiter lets one log line through per logEvery and counts the events it
// held back, so that a flood costs one line per period with a count, yet
// the first occurrence is seen at once.
type limiter struct {
	last atomic.Int64 // unix nanos of the last line let through
	held atomic.Uint64
}

func (l *limiter) allow() (held uint64, ok bool) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(logEvery) || !l.last.CompareAndSwap(last, now) {
		l.held.Add(1)
		return 0, false
	}
	return l.held.Swap(0), true
}

// redact hides the credentials of a server URL for messages and logs.
func redact(raw string) string { return redactpkg.URLs(raw, "nats", true) }

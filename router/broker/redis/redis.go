// Package redis is the Redis broker: moonwire nodes that share one Redis
// exchange broadcasts, direct sends and closes over Redis pub/sub.
//
// A node subscribes to its own channel (PREFIX:node:ID), where sends and
// closes for its connections arrive, and to one channel per room it
// serves (PREFIX:room:NAME), subscribed when the room's first local member
// joins and unsubscribed when its last leaves; a node hears only the
// traffic of its rooms. Publishing goes through a bounded broker.Outbox and
// a pipeline, so a lane never waits for Redis.
//
// The client is go-redis: its PubSub keeps the set of channels and
// subscribes it again on every new connection, which is the property a
// broker that must survive Redis restarts needs most (see the README for
// the measurement against rueidis).
//
// It knows Redis and the broker package; nothing of sockets, frames, Lua
// or configuration files.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	redactpkg "github.com/moonwire/moonwire/internal/redact"
	"github.com/moonwire/moonwire/router/broker"
)

// Tuning that is not worth a configuration key.
const (
	maxBatch      = 256              // messages per pipeline
	receiveBuffer = 8192             // messages between the pub/sub reader and fn
	healthEvery   = time.Second      // how often the connection is probed
	dropLogEvery  = 10 * time.Second // at most one outbox-overflow line per period
)

// Broker is a broker.Broker over Redis pub/sub. It also implements
// broker.RoomWatcher and broker.Reporter.
type Broker struct {
	opts   broker.Options
	log    *slog.Logger
	client *goredis.Client
	out    *broker.Outbox
	want   *broker.Interest

	mu        sync.Mutex
	ps        *goredis.PubSub          // nil until Subscribe
	confirmed map[string]chan struct{} // channel -> closed once Redis confirmed the subscription
	node      string
	fn        func(broker.Message)
	cancelled bool

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	connected  atomic.Bool
	publishes  atomic.Uint64
	receives   atomic.Uint64
	errs       atomic.Uint64
	reconnects atomic.Uint64
	rooms      atomic.Int64
	lastErr    atomic.Pointer[string]
	lastDrop   atomic.Int64 // unix nanos of the last overflow log line
	dropLogged atomic.Uint64

	pres presence

	histQ       chan *histReq // PublishHistory's queue, in order
	histID      uint64        // this node's last publish id; publishHistory's own
	histDropped atomic.Uint64
}

var (
	_ broker.Broker      = (*Broker)(nil)
	_ broker.RoomWatcher = (*Broker)(nil)
	_ broker.Reporter    = (*Broker)(nil)
)

// New connects to the Redis at opts.URL and checks that it answers and
// lets this client publish. With opts.StartDegraded an unreachable Redis
// is not an error: the broker starts disconnected and connects when Redis
// appears.
func New(opts broker.Options) (*Broker, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	ro, err := goredis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: url %s: %w", redact(opts.URL), err)
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = opts.Timeout, opts.Timeout, opts.Timeout
	ro.ClientName = "moonwire"
	// One attempt per command: the outbox already bounds what waits, and a
	// retry loop during an outage only delays the drops it must make.
	ro.MaxRetries = -1
	b := &Broker{
		opts:   opts,
		log:    opts.Logger,
		client: goredis.NewClient(ro),
		want:   broker.NewInterest(),
		stop:   make(chan struct{}),
		histQ:  make(chan *histReq, max(opts.Outbox, 1)),
		pres:   presence{q: make(chan presOp, max(opts.Outbox, 1))},
	}
	if err := b.probe(); err != nil {
		if !opts.StartDegraded {
			_ = b.client.Close()
			return nil, err
		}
		b.setErr(err)
		b.log.Warn("broker unreachable, starting degraded", "broker", "redis", "url", redact(opts.URL), "err", err)
	} else {
		b.connected.Store(true)
	}
	logOnce.Do(func() { goredis.SetLogger(slogPrintf{}) })
	b.out = broker.NewOutbox(opts.Outbox, maxBatch, b.send)
	b.wg.Add(3)
	go b.health()
	go b.publishHistory()
	go b.presenceLoop()
	return b, nil
}

// probe checks that Redis answers and that this client may publish, so
// that a wrong password or an ACL without PUBLISH is an error at start
// that names the cause rather than silent loss later.
func (b *Broker) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: connect %s: %w", redact(b.opts.URL), err)
	}
	ch := b.opts.Prefix + ":probe"
	if err := b.client.Publish(ctx, ch, "").Err(); err != nil {
		return fmt.Errorf("redis: %s: PUBLISH %s: %w", redact(b.opts.URL), ch, err)
	}
	return nil
}

// Subscribe implements broker.Broker. One Broker serves one node.
func (b *Broker) Subscribe(node string, fn func(broker.Message)) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ps != nil {
		return nil, errors.New("redis: broker already serves a node")
	}
	b.node, b.fn = node, fn
	ch := b.nodeChannel(node)
	b.ps = b.client.Subscribe(context.Background())
	// Confirm the first subscription while we can still fail the start:
	// an ACL that forbids SUBSCRIBE shows here, naming the channel.
	if b.connected.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
		err := b.ps.Subscribe(ctx, ch)
		if err == nil {
			_, err = b.ps.Receive(ctx)
		}
		cancel()
		if err != nil && !b.opts.StartDegraded {
			_ = b.ps.Close()
			b.ps = nil
			return nil, fmt.Errorf("redis: %s: SUBSCRIBE %s: %w", redact(b.opts.URL), ch, err)
		}
	} else {
		// Degraded: recorded in the PubSub's channel set, sent on connect.
		_ = b.ps.Subscribe(context.Background(), ch)
	}
	msgs := b.ps.ChannelWithSubscriptions(goredis.WithChannelSize(receiveBuffer),
		goredis.WithChannelHealthCheckInterval(3*time.Second),
		goredis.WithChannelPingTimeout(b.opts.Timeout),
		goredis.WithChannelReconnectTimeout(b.opts.Timeout))
	b.wg.Add(2)
	go b.receive(msgs)
	go b.reconcile()
	return func() {
		b.mu.Lock()
		b.cancelled = true
		b.mu.Unlock()
	}, nil
}

// WatchRoom implements broker.RoomWatcher; the subscription follows on the
// reconcile goroutine.
func (b *Broker) WatchRoom(room string) { b.want.Add(room) }

// UnwatchRoom implements broker.RoomWatcher.
func (b *Broker) UnwatchRoom(room string) { b.want.Remove(room) }

// Publish implements broker.Broker: it queues m and returns at once.
func (b *Broker) Publish(_ context.Context, m broker.Message) error {
	if !b.out.Push(m) {
		b.logDrop()
	}
	return nil
}

// send publishes one batch in one pipeline. Runs on the outbox goroutine,
// so one node's messages reach Redis in the order they were published.
func (b *Broker) send(batch []broker.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	pipe := b.client.Pipeline()
	var buf []byte
	for i := range batch {
		m := &batch[i]
		ch := b.nodeChannel(m.To)
		if m.Op == broker.OpBroadcast {
			ch = b.roomChannel(m.Room)
		}
		buf = broker.AppendWire(buf[:0], m)
		pipe.Publish(ctx, ch, string(buf))
	}
	cmds, err := pipe.Exec(ctx)
	var ok uint64
	for _, c := range cmds {
		if c.Err() == nil {
			ok++
		}
	}
	b.publishes.Add(ok)
	if failed := uint64(len(batch)) - ok; failed > 0 {
		b.errs.Add(failed)
		b.setErr(fmt.Errorf("publish: %w", err))
		b.log.Warn("broker publish failed", "broker", "redis", "messages", failed, "err", err)
		return err
	}
	return nil
}

// receive decodes what the subscriptions deliver and hands it to fn, in
// the order Redis delivered it.
func (b *Broker) receive(all <-chan any) {
	defer b.wg.Done()
	for x := range all {
		var msg *goredis.Message
		switch x := x.(type) {
		case *goredis.Subscription:
			b.confirm(x)
			continue
		case *goredis.Message:
			msg = x
		default:
			continue
		}
		m, err := broker.DecodeWire([]byte(msg.Payload))
		if err != nil {
			b.errs.Add(1)
			b.setErr(fmt.Errorf("channel %s: %w", msg.Channel, err))
			continue
		}
		b.mu.Lock()
		// Our own broadcasts come back only when they carry an offset:
		// those are delivered here, on the origin too, in offset order.
		fn, skip := b.fn, b.cancelled || (m.Origin == b.node && m.Offset == 0)
		b.mu.Unlock()
		if skip {
			continue
		}
		b.receives.Add(1)
		fn(m)
	}
}

// reconcile subscribes and unsubscribes room channels as the wanted set
// changes. go-redis records a channel in the PubSub before it sends the
// command, so a subscription made while Redis is away is sent when the
// connection returns: what is recorded is what is wanted.
func (b *Broker) reconcile() {
	defer b.wg.Done()
	have := map[string]struct{}{}
	for {
		select {
		case <-b.stop:
			return
		case <-b.want.Changed():
		}
		add, remove := b.want.Diff(have)
		if len(add) == 0 && len(remove) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
		if len(add) > 0 {
			chs := make([]string, len(add))
			for i, r := range add {
				chs[i] = b.roomChannel(r)
				have[r] = struct{}{}
			}
			b.unconfirm(chs)
			if err := b.ps.Subscribe(ctx, chs...); err != nil {
				b.errs.Add(1)
				b.setErr(fmt.Errorf("subscribe: %w", err))
			}
		}
		if len(remove) > 0 {
			chs := make([]string, len(remove))
			for i, r := range remove {
				chs[i] = b.roomChannel(r)
				delete(have, r)
			}
			b.unconfirm(chs)
			if err := b.ps.Unsubscribe(ctx, chs...); err != nil {
				b.errs.Add(1)
				b.setErr(fmt.Errorf("unsubscribe: %w", err))
			}
		}
		cancel()
		b.rooms.Store(int64(len(have)))
	}
}

// health probes Redis every second, so that Stats and /healthz say when
// the broker is lost and when it is back, and logs both transitions once.
func (b *Broker) health() {
	defer b.wg.Done()
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
		err := b.client.Ping(ctx).Err()
		cancel()
		was := b.connected.Load()
		switch {
		case err != nil && was:
			b.connected.Store(false)
			b.setErr(fmt.Errorf("connection lost: %w", err))
			b.log.Warn("broker connection lost", "broker", "redis", "err", err)
		case err == nil && !was:
			b.connected.Store(true)
			b.reconnects.Add(1)
			b.lastErr.Store(nil)
			b.log.Info("broker connected", "broker", "redis", "rooms", b.rooms.Load())
		}
	}
}

// Stats implements broker.Reporter.
func (b *Broker) Stats() broker.Stats {
	s := broker.Stats{
		Connected:  b.connected.Load(),
		Publishes:  b.publishes.Load(),
		Receives:   b.receives.Load(),
		Errors:     b.errs.Load(),
		Reconnects: b.reconnects.Load(),
		Dropped:    b.out.Dropped() + b.histDropped.Load(),
		Queued:     b.out.Len() + len(b.histQ),
		Rooms:      int(b.rooms.Load()),
	}
	if e := b.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// Close drains the outbox (up to the timeout), then closes the
// subscriptions and the connections.
func (b *Broker) Close() error {
	b.once.Do(func() {
		b.out.Close(b.opts.Timeout)
		close(b.stop)
		b.mu.Lock()
		ps := b.ps
		b.mu.Unlock()
		if ps != nil {
			_ = ps.Close() // ends the receive goroutine
		}
		b.wg.Wait()
		_ = b.client.Close()
	})
	return nil
}

func (b *Broker) nodeChannel(node string) string { return b.opts.Prefix + ":node:" + node }
func (b *Broker) roomChannel(room string) string { return b.opts.Prefix + ":room:" + room }

func (b *Broker) setErr(err error) {
	s := err.Error()
	b.lastErr.Store(&s)
}

// logDrop reports outbox overflow: the first drop at once, then one line
// per period with how many were dropped since.
func (b *Broker) logDrop() {
	now := time.Now().UnixNano()
	last := b.lastDrop.Load()
	if now-last < int64(dropLogEvery) || !b.lastDrop.CompareAndSwap(last, now) {
		return
	}
	total := b.out.Dropped() + b.histDropped.Load()
	since := total - b.dropLogged.Swap(total)
	b.log.Warn("broker outbox full, messages dropped", "broker", "redis",
		"dropped", since, "dropped_total", total, "outbox", b.opts.Outbox)
}

// logOnce routes go-redis's own log lines (dial retries and the like,
// which the broker also reports as a state change) to slog at debug
// level. go-redis has one logger per process.
var logOnce sync.Once

type slogPrintf struct{}

func (slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, fmt.Sprintf(format, v...), "library", "go-redis")
}

// redact hides the credentials of a server URL for messages and logs.
func redact(raw string) string { return redactpkg.URLs(raw, "", false) }

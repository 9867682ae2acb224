// Package broker carries broadcasts, direct sends and closes between
// moonwire nodes. The router talks to the Broker interface only, so a
// cluster transport (Redis, NATS) is an adapter in its own subpackage and
// callers never change.
//
// It knows node ids, room names and connection ids as strings; it knows
// nothing of sockets, frames or scripts.
package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Op is what a Message asks the receiving node to do.
type Op uint8

// Message operations.
const (
	// OpBroadcast: queue Data on every local member of Room except Except.
	OpBroadcast Op = iota + 1
	// OpSend: queue Data on the local connection Target.
	OpSend
	// OpClose: close the local connection Target with Code and Reason.
	OpClose
)

// Message is one instruction from a node to the others.
type Message struct {
	Op     Op
	Origin string // id of the publishing node
	Room   string
	Target string // connection id, for OpSend and OpClose
	Except string // connection id left out of a broadcast
	To     string // node id of Target, for OpSend and OpClose
	Binary bool
	Data   []byte
	Code   int
	Reason string
}

// Broker delivers each published Message to the nodes it concerns except
// its origin: a broadcast to every node (or, for a RoomWatcher, every node
// that watches the room), a send or close to the node To.
type Broker interface {
	// Publish hands m to the other nodes. m.Data must not be modified by
	// the caller afterwards. A network broker queues m and returns (see
	// Outbox): it must not make a lane wait for the network.
	Publish(ctx context.Context, m Message) error
	// Subscribe registers a node. fn runs on a broker goroutine and must
	// not keep m.Data after it returns. cancel unsubscribes.
	Subscribe(node string, fn func(m Message)) (cancel func(), err error)
	// Close releases the broker's resources.
	Close() error
}

// RoomWatcher is a Broker that delivers a room's broadcasts only to the
// nodes that serve the room. The router calls WatchRoom when a room gets
// its first local member and UnwatchRoom when it loses its last, in that
// order for any one room. Neither may block on the network: the broker
// records the change and applies it on its own goroutine. Broadcasts that
// arrive before a subscription is in place are missed, which is live
// delivery's at-most-once; history is what recovers them.
type RoomWatcher interface {
	WatchRoom(room string)
	UnwatchRoom(room string)
}

// Stats is what a network broker reports for /metrics and /healthz.
type Stats struct {
	Connected  bool   // the broker connection is up
	LastError  string // the last connection or publish error, "" once healthy again
	Publishes  uint64 // messages handed to the broker
	Receives   uint64 // messages received from other nodes
	Errors     uint64 // failed publishes, subscribes and decodes
	Reconnects uint64 // connections re-established after a loss
	Dropped    uint64 // messages dropped because the outbox was full
	Queued     int    // messages waiting in the outbox (the publish lag)
	Rooms      int    // rooms this node is subscribed for
}

// Reporter is a Broker that reports Stats.
type Reporter interface {
	Stats() Stats
}

// Memory is the in-process broker: nodes that share it form a cluster
// inside one process (a single server, or several in a test). Delivery is
// synchronous and in publish order.
//
// Subscribers are called with the broker's read lock held: they must not
// subscribe or cancel from inside the callback.
type Memory struct {
	mu   sync.RWMutex
	subs map[string]*subscription
}

// subscription is a pointer so that a stale cancel can tell it apart from
// a newer subscription under the same node id.
type subscription struct{ fn func(Message) }

// NewMemory returns an empty in-process broker.
func NewMemory() *Memory { return &Memory{subs: make(map[string]*subscription)} }

// Publish implements Broker.
func (b *Memory) Publish(_ context.Context, m Message) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for node, s := range b.subs {
		if node != m.Origin {
			s.fn(m)
		}
	}
	return nil
}

// Subscribe implements Broker.
func (b *Memory) Subscribe(node string, fn func(Message)) (func(), error) {
	s := &subscription{fn: fn}
	b.mu.Lock()
	b.subs[node] = s
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		if b.subs[node] == s {
			delete(b.subs, node)
		}
		b.mu.Unlock()
	}, nil
}

// HasPeers reports whether any node other than self is subscribed, which
// lets a lone node skip publishing.
func (b *Memory) HasPeers(self string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for node := range b.subs {
		if node != self {
			return true
		}
	}
	return false
}

// Close implements Broker.
func (b *Memory) Close() error { return nil }

var _ Broker = (*Memory)(nil)

// Options configure a network broker adapter (see the redis and nats
// subpackages); the [broker] table translates into them.
type Options struct {
	// URL locates the server; credentials and TLS are in it, as the
	// client library accepts them.
	URL string
	// Prefix starts every key, channel or subject the adapter uses.
	Prefix string
	// Timeout bounds connecting and each command.
	Timeout time.Duration
	// Outbox is the Outbox's size.
	Outbox int
	// StartDegraded makes New return a broker that keeps trying in the
	// background when the server cannot be reached, instead of an error.
	StartDegraded bool
	// Logger receives connection losses, reconnects and drops.
	Logger *slog.Logger
}

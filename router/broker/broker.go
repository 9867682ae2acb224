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
	"sync"
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
	Binary bool
	Data   []byte
	Code   int
	Reason string
}

// Broker delivers each published Message to every subscribed node except
// its origin.
type Broker interface {
	// Publish hands m to the other nodes. m.Data must not be modified by
	// the caller afterwards.
	Publish(ctx context.Context, m Message) error
	// Subscribe registers a node. fn runs on a broker goroutine and must
	// not keep m.Data after it returns. cancel unsubscribes.
	Subscribe(node string, fn func(m Message)) (cancel func(), err error)
	// Close releases the broker's resources.
	Close() error
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

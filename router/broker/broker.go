// Package broker carries broadcasts, direct sends and closes between
// moonwire nodes. The router talks to the Broker interface only, so a
// cluster transport (Redis, NATS) is an adapter in its own subpackage and
// callers never change.
//
// It knows node ids, room names and connection ids as strings; it knows
// nothing of sockets, frames or scripts.
package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
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
	// Offset and Epoch place a broadcast in its room's history (see
	// History); zero and "" for a room without one.
	Offset uint64
	Epoch  string
	// Stamp asks PublishHistory to write the offset and epoch it assigns
	// into Data, a JSON object (see the Stamp function), so that clients
	// learn them from the message itself. It is not carried on the wire.
	Stamp bool
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

// History is a Broker that keeps, per room, the latest broadcasts with
// consecutive offsets, so that a client that was away can be given what
// it missed. A room's history lives as long as it is used (ttl after the
// last append) and has an epoch: a new epoch means the offsets before it
// are gone (the history expired, or the broker lost it), and a client must
// reload its state instead of recovering.
type History interface {
	// PublishHistory gives m the room's next offset, appends it to the
	// room's history (keeping the last size entries, for ttl after this
	// append) and delivers it to every node that watches the room,
	// including m.Origin: the origin fans out what the broker hands back,
	// so that every node delivers a room's messages in offset order.
	//
	// It waits for the offset only while the broker is reachable: when it
	// is not, m is queued in order and published on reconnect, and
	// PublishHistory returns ErrQueued. A full queue returns ErrDropped.
	PublishHistory(ctx context.Context, m Message, size int, ttl time.Duration) (Position, error)
	// ReadHistory returns up to limit entries of room with offsets after
	// since, oldest first, and the room's current position (its last
	// offset and epoch; a room never written, or expired, has a zero
	// Position) and the oldest offset still kept (0: none).
	ReadHistory(ctx context.Context, room string, since uint64, limit int) (entries []Entry, top Position, oldest uint64, err error)
	// WaitWatched returns once this node's subscription for room (see
	// RoomWatcher) is in place at the broker, so that every message
	// published afterwards will arrive. Recovery reads history only then.
	WaitWatched(ctx context.Context, room string) error
}

// HistoryChecker is a History that can check at start that its server
// lets it keep histories (the commands it needs exist and its user may
// run them), so that a missing permission is a configuration error
// naming the cause, not every broadcast with history failing later. A
// broker that is not connected yet (a degraded start) answers nil: use
// will tell.
type HistoryChecker interface {
	CheckHistory(ctx context.Context) error
}

// Presence is a Broker that knows the members of every room across the
// cluster. The router tells it of each local join and leave (and of a
// member's new info); the broker keeps its node's members published with
// a TTL that the live node refreshes, so that the members of a node that
// died vanish within the TTL.
type Presence interface {
	// PresenceJoin records conn (this node's) as a member of room with
	// info (JSON, or nil); joining again replaces the info. Like
	// WatchRoom it must not block: the broker applies it on its own
	// goroutine.
	PresenceJoin(room, conn string, info []byte)
	// PresenceLeave removes conn from room. It must not block.
	PresenceLeave(room, conn string)
	// Members returns the live members of room on every node: conn id ->
	// info.
	Members(ctx context.Context, room string) (map[string][]byte, error)
	// Count returns the number of live members of room on every node.
	Count(ctx context.Context, room string) (int, error)
}

// Position is a point in a room's history.
type Position struct {
	Offset uint64
	Epoch  string
}

// Entry is one message of a room's history.
type Entry struct {
	Offset uint64
	Binary bool
	Data   []byte
}

// Errors of PublishHistory.
var (
	ErrQueued  = errors.New("broker unreachable: queued, to be published on reconnect")
	ErrDropped = errors.New("broker unreachable and its queue is full: dropped")
)

// Stamp writes p into data, a JSON object: "offset" and "epoch" become
// its first members. Positional rather than a placeholder, so that text a
// client wrote inside the object can never be taken for one. data that is
// not an object ("{" ... "}") is returned as it is.
func Stamp(data []byte, p Position) []byte {
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return data
	}
	out := make([]byte, 0, len(data)+len(p.Epoch)+32)
	out = append(out, `{"offset":`...)
	out = strconv.AppendUint(out, p.Offset, 10)
	out = append(out, `,"epoch":"`...)
	out = append(out, p.Epoch...)
	out = append(out, '"')
	if len(bytes.TrimSpace(data[1:len(data)-1])) > 0 {
		out = append(out, ',')
		out = append(out, data[1:]...)
	} else {
		out = append(out, '}')
	}
	return out
}

// NewEpoch returns a fresh random epoch.
func NewEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
	hist memHistories
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
	// PresenceTTL is how long a node's members stay in presence after
	// its last refresh (it refreshes every third of it): the bound on how
	// long a dead node's members are still listed.
	PresenceTTL time.Duration
	// StartDegraded makes New return a broker that keeps trying in the
	// background when the server cannot be reached, instead of an error.
	StartDegraded bool
	// Logger receives connection losses, reconnects and drops.
	Logger *slog.Logger
}

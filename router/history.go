package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moonwire/moonwire/router/broker"
)

// Rooms with history: broadcasts that get an offset and an epoch from the
// broker, delivered on every node (this one included) in offset order as
// the broker hands them back, and recovery, which replays what a client
// missed and then switches it to live delivery with no gap and no
// duplicate.

// ErrNoHistory is returned for a room that keeps no history.
var ErrNoHistory = errors.New("room keeps no history (see [[history]] in the config)")

// How long a script's call may wait for the broker. They are well under
// the default handler_timeout (1s), so that a broker that is slow, or gone
// without the connection noticing yet, costs a callback a bounded pause
// rather than its connection (a handler timeout closes it 1011).
// Config.OffsetWait and Config.BrokerWait change them.
const (
	// DefaultOffsetWait bounds waiting for a broadcast's offset; past it
	// the broadcast is queued in order and published when the broker
	// answers.
	DefaultOffsetWait = 250 * time.Millisecond
	// DefaultBrokerWait bounds a read from the broker: a recovery, a
	// history or presence read.
	DefaultBrokerWait = 500 * time.Millisecond
)

// maxPending bounds the live messages held for one recovering connection
// while its replay is read (and Config.WriteQueue their bytes); past
// either the recovery reports that it could not recover (the client
// reloads its state) rather than hold more.
const maxPending = 10_000

// BroadcastOptions are the optional parts of a broadcast.
type BroadcastOptions struct {
	Except *Conn // left out; nil: none
	// Stamp replaces "{offset}" and "{epoch}" in the payload with the
	// values the message gets, in a room with history.
	Stamp bool
}

// BroadcastResult is what a broadcast did.
type BroadcastResult struct {
	// N is the number of local recipients: those queued, or in a room
	// with history those the message is delivered to as it comes back
	// from the broker (the local members at the time, except Except).
	N int
	// Offset and Epoch place the message in the room's history; zero
	// without history, or when Err is set.
	Offset uint64
	Epoch  string
	// Err is set when a room with history could not get its offset now:
	// broker.ErrQueued (published on reconnect) or another error (lost).
	Err error
}

// historyOf returns the size and ttl of room's history; size 0: none.
func (s *Server) historyOf(room string) (int, time.Duration) {
	h := s.c().History
	if h == nil || s.history == nil {
		return 0, 0
	}
	return h(room)
}

// KeepsHistory reports whether room keeps a history: a broadcast to it
// waits for its offset (BroadcastWith), and Recover and History apply.
func (s *Server) KeepsHistory(room string) bool {
	size, _ := s.historyOf(room)
	return size > 0
}

// BrokerWaits reports whether the calls that wait for the broker (a
// broadcast to a room with history, Recover, History, Presence,
// ClusterRoomSize, and Join or Leave announcing in a room with history)
// wait for the network: the broker is not the in-process one and keeps
// history or presence. A script engine runs such calls off its lane only
// then; with the in-process broker they answer at once. Fixed at New.
func (s *Server) BrokerWaits() bool {
	if _, inProcess := s.broker.(*broker.Memory); inProcess {
		return false
	}
	return s.history != nil || s.presence != nil
}

// BroadcastWith is Broadcast with options, for a string payload. In a room
// with history it waits for the broker to assign the offset (one round
// trip, only while the broker is reachable, at most Config.OffsetWait).
func (s *Server) BroadcastWith(room string, kind Kind, data string, o BroadcastOptions) BroadcastResult {
	size, ttl := s.historyOf(room)
	if size == 0 {
		return BroadcastResult{N: s.BroadcastString(room, kind, data, o.Except)}
	}
	m := broker.Message{Op: broker.OpBroadcast, Origin: s.nodeID, Room: room, Binary: kind == Binary,
		Data: []byte(data), Stamp: o.Stamp}
	n := s.rooms.size(room)
	if o.Except != nil {
		m.Except = o.Except.ID()
		if s.rooms.has(room, o.Except) {
			n--
		}
	}
	return s.publishHistory(m, n, size, ttl)
}

// publishHistory hands a broadcast to a room with history to the broker,
// which assigns its offset and delivers it on every node, this one
// included; n is the number of local recipients.
func (s *Server) publishHistory(m broker.Message, n, size int, ttl time.Duration) BroadcastResult {
	s.stats.broadcasts.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), s.c().OffsetWait)
	defer cancel()
	pos, err := s.history.PublishHistory(ctx, m, size, ttl)
	if err != nil {
		if !errors.Is(err, broker.ErrQueued) {
			s.stats.brokerErrors.Add(1)
			s.log.Warn("broadcast with history failed", "room", m.Room, "err", err)
		}
		return BroadcastResult{N: n, Err: err}
	}
	return BroadcastResult{N: n, Offset: pos.Offset, Epoch: pos.Epoch}
}

// HistoryEntry is one message of a room's history.
type HistoryEntry struct {
	Offset uint64
	Kind   Kind
	Data   []byte
}

// History returns up to limit messages of room after since, oldest
// first, with the room's current offset and epoch.
func (s *Server) History(room string, since uint64, limit int) ([]HistoryEntry, uint64, string, error) {
	size, _ := s.historyOf(room)
	if size == 0 {
		return nil, 0, "", ErrNoHistory
	}
	if limit <= 0 || limit > size {
		limit = size
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.c().BrokerWait)
	defer cancel()
	es, top, _, err := s.history.ReadHistory(ctx, room, since, limit)
	if err != nil {
		return nil, 0, "", fmt.Errorf("history of %q: %w", room, err)
	}
	out := make([]HistoryEntry, len(es))
	for i, e := range es {
		out[i] = HistoryEntry{Offset: e.Offset, Kind: kindOf(e.Binary), Data: e.Data}
	}
	return out, top.Offset, top.Epoch, nil
}

func kindOf(binary bool) Kind {
	if binary {
		return Binary
	}
	return Text
}

// Recovery is the outcome of Conn.Recover.
type Recovery struct {
	// Recovered: every message after the client's offset was replayed,
	// and live ones follow. When false the client must reload its state:
	// Reason says why ("epoch": the history was lost or expired;
	// "trimmed": the client is further behind than the history keeps;
	// "ahead": the client names an offset the room never reached;
	// "overflow": too many live messages arrived during the replay).
	Recovered bool
	Reason    string
	Replayed  int
	// Offset and Epoch are the room's position once the replay ended: a
	// client that reloads its state resumes from there.
	Offset uint64
	Epoch  string
}

// Recover joins the connection to room and replays the messages after
// offset (of epoch; "" accepts any) from the room's history, then live
// messages, with none missed and none twice across the boundary. It
// waits for the broker (the room's subscription, one history read) up to
// Config.BrokerWait. A connection already in the room gets an error.
func (c *Conn) Recover(room string, offset uint64, epoch string) (Recovery, error) {
	return c.RecoverWith(room, offset, epoch, JoinOptions{})
}

// RecoverWith is Recover with announcements (see JoinWith); Joined is
// broadcast once the replay is queued.
func (c *Conn) RecoverWith(room string, offset uint64, epoch string, o JoinOptions) (Recovery, error) {
	if err := o.check(); err != nil {
		return Recovery{}, err
	}
	s := c.srv
	size, _ := s.historyOf(room)
	if size == 0 {
		return Recovery{}, ErrNoHistory
	}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return Recovery{}, ErrClosed
	}
	if c.inRoom(room) {
		c.mu.Unlock()
		return Recovery{}, fmt.Errorf("already in room %q: recover before joining", room)
	}
	rc := &recovery{}
	s.rooms.addWith(room, c, rc)
	c.addRoom(room)
	c.setLeft(room, o.Left)
	c.mu.Unlock()
	if o.Joined != "" {
		defer s.announce(room, o.Joined, c)
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.c().BrokerWait)
	defer cancel()
	var (
		res     Recovery
		entries []broker.Entry
		top     broker.Position
		oldest  uint64
		err     error
	)
	if err = s.history.WaitWatched(ctx, room); err == nil {
		entries, top, oldest, err = s.history.ReadHistory(ctx, room, offset, size)
	}
	res.Offset, res.Epoch = top.Offset, top.Epoch
	switch {
	case err != nil:
		// Live from now on; the caller hears why it cannot replay.
	case top.Offset == 0 && offset == 0:
		res.Recovered = true // an empty room: nothing was missed
	case epoch != "" && epoch != top.Epoch:
		res.Reason = "epoch"
	case offset > top.Offset:
		res.Reason = "ahead"
	case offset < top.Offset && (oldest == 0 || oldest > offset+1):
		res.Reason = "trimmed"
	default:
		res.Recovered = true
	}
	if !res.Recovered {
		entries = nil
	}
	slow := rc.finish(c, entries, top.Offset, &res)
	if slow {
		c.slowConsumer()
	}
	if err != nil {
		return res, fmt.Errorf("recover %q: %w", room, err)
	}
	return res, nil
}

// recovery is a connection joining a room with history: live messages are
// held until the replay is queued, then delivered if newer than the
// replay's last offset.
type recovery struct {
	mu        sync.Mutex
	replayed  bool
	floor     uint64 // after the replay: the last offset the client has
	held      []heldMsg
	heldBytes int
	overflow  bool
}

type heldMsg struct {
	offset uint64
	kind   Kind
	data   []byte // a copy: the broker reuses its buffer
}

// finish queues the replay and the held messages newer than it, in
// order, and switches to live delivery. It reports whether the
// connection's queue overflowed (the caller handles the slow consumer
// outside every lock).
func (rc *recovery) finish(c *Conn, entries []broker.Entry, top uint64, res *Recovery) (slow bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	floor := top
	if rc.overflow && res.Recovered {
		res.Recovered, res.Reason, entries = false, "overflow", nil
	}
	for _, e := range entries {
		m := newOutMsg(kindOf(e.Binary), e.Data, "")
		ok, full := c.push(m.frameFor(c))
		m.release()
		if full {
			slow = true
		}
		if ok {
			res.Replayed++
		}
		floor = max(floor, e.Offset)
	}
	for _, h := range rc.held {
		if h.offset > floor {
			m := newOutMsg(h.kind, h.data, "")
			if _, full := c.push(m.frameFor(c)); full {
				slow = true
			}
			m.release()
			floor = h.offset
		}
	}
	rc.held, rc.replayed, rc.floor = nil, true, floor
	res.Offset = floor
	return slow
}

// take handles a live message for a recovering connection: held before
// the replay ends, dropped if the replay had it, queued otherwise. It
// reports whether the recovery is over (a message newer than the replay
// went through: from now on the connection is an ordinary member) and
// whether the queue overflowed.
func (rc *recovery) take(c *Conn, offset uint64, kind Kind, data []byte, m *outMsg) (done, full bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case !rc.replayed:
		// Held messages are bounded like the write queue they are bound
		// for, in count and in bytes: past either, the client reloads.
		if rc.overflow || len(rc.held) >= maxPending || rc.heldBytes+len(data) > c.srv.c().WriteQueue {
			rc.overflow = true
			rc.held, rc.heldBytes = nil, 0
			return false, false
		}
		rc.held = append(rc.held, heldMsg{offset, kind, append([]byte(nil), data...)})
		rc.heldBytes += len(data)
		return false, false
	case offset <= rc.floor:
		return false, false
	}
	_, full = c.push(m.frameFor(c))
	rc.floor = offset
	return true, full
}

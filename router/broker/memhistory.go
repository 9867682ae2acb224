package broker

import (
	"context"
	"sync"
	"time"
)

// The in-process broker's history: rooms' recent broadcasts in memory,
// shared by the nodes of one process. Appending and delivering happen
// under the room's lock, so every node sees a room's messages in offset
// order.

// memRoom is one room's history.
type memRoom struct {
	mu      sync.Mutex
	epoch   string
	top     uint64
	entries []Entry // oldest first, at most the size given at the last append
	expires time.Time
}

// memHistories holds the rooms of a Memory broker's history.
type memHistories struct {
	mu      sync.Mutex
	rooms   map[string]*memRoom
	appends int
	now     func() time.Time
}

// sweepEvery is how many appends pass between sweeps of expired rooms, so
// that rooms written once are not kept forever.
const sweepEvery = 1024

// find returns the room's history, or nil when it was never written:
// reading does not create one.
func (h *memHistories) find(name string) *memRoom {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rooms[name]
}

func (h *memHistories) room(name string) *memRoom {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms == nil {
		h.rooms = make(map[string]*memRoom)
	}
	r := h.rooms[name]
	if r == nil {
		r = &memRoom{epoch: NewEpoch()}
		h.rooms[name] = r
	}
	h.appends++
	if h.appends%sweepEvery == 0 {
		now := h.clock()
		for n, x := range h.rooms {
			if x != r && x.mu.TryLock() {
				if x.top == 0 || !x.expires.IsZero() && now.After(x.expires) {
					delete(h.rooms, n)
				}
				x.mu.Unlock()
			}
		}
	}
	return r
}

func (h *memHistories) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// live resets r if it expired: its offsets are gone, so it takes a new
// epoch. r.mu is held.
func (r *memRoom) live(now time.Time) {
	if !r.expires.IsZero() && now.After(r.expires) {
		*r = memRoom{epoch: NewEpoch()}
	}
}

// PublishHistory implements History.
func (b *Memory) PublishHistory(_ context.Context, m Message, size int, ttl time.Duration) (Position, error) {
	r := b.hist.room(m.Room)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := b.hist.clock()
	r.live(now)
	r.top++
	pos := Position{Offset: r.top, Epoch: r.epoch}
	if m.Stamp {
		m.Data = Stamp(m.Data, pos)
	}
	m.Offset, m.Epoch = pos.Offset, pos.Epoch
	data := append([]byte(nil), m.Data...)
	r.entries = append(r.entries, Entry{Offset: r.top, Binary: m.Binary, Data: data})
	if over := len(r.entries) - size; over > 0 {
		clear(r.entries[:over])
		r.entries = r.entries[over:]
	}
	r.expires = now.Add(ttl)
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, s := range b.subs {
		s.fn(m) // the origin too: it delivers in offset order like the rest
	}
	return pos, nil
}

// ReadHistory implements History.
func (b *Memory) ReadHistory(_ context.Context, room string, since uint64, limit int) ([]Entry, Position, uint64, error) {
	r := b.hist.find(room)
	if r == nil {
		return nil, Position{}, 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live(b.hist.clock())
	var out []Entry
	for _, e := range r.entries {
		if e.Offset > since && len(out) < limit {
			out = append(out, e)
		}
	}
	var oldest uint64
	if len(r.entries) > 0 {
		oldest = r.entries[0].Offset
	}
	return out, Position{Offset: r.top, Epoch: r.epoch}, oldest, nil
}

// WaitWatched implements History: every node of a Memory broker hears
// every message from the moment it subscribes.
func (b *Memory) WaitWatched(context.Context, string) error { return nil }

var _ History = (*Memory)(nil)

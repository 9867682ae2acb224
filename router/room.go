package router

import (
	"sort"
	"strings"
	"sync"

	"github.com/moonwire/moonwire/router/broker"
	"github.com/moonwire/moonwire/router/wsconn"
)

// roomSet holds the rooms of one node. Rooms exist while they have members.
//
// Lock order: roomSet.mu, then room.mu. Conn.mu may be held when calling in
// (Join, teardown); room.mu is never held while taking Conn.mu.
type roomSet struct {
	mu    sync.RWMutex
	rooms map[string]*room
	// watcher, when set, hears a room's first member arrive and its last
	// leave (with mu held, so that the two arrive in order); it must not
	// block. A RoomWatcher broker subscribes the node to the room then.
	watcher broker.RoomWatcher
	// presence, when set, hears every local join and leave (it must not
	// block either): a Presence broker publishes the members.
	presence broker.Presence
}

// room keeps its members in a slice for fast fan-out and an index for O(1)
// removal.
type room struct {
	mu      sync.RWMutex
	members []*Conn
	index   map[*Conn]int
	// recovering are members still being replayed to (Conn.Recover), or
	// just replayed and waiting for the first live message newer than
	// the replay; fan-out hands them their messages through the recovery.
	recovering map[*Conn]*recovery
}

func (s *roomSet) add(name string, c *Conn) { s.addWith(name, c, nil) }

// addWith adds c to the room; with rc, as a member whose messages go
// through rc until its replay is done. Both happen under one hold of the
// room's lock: a fan-out in between would hand c a live message ahead of
// its replay.
func (s *roomSet) addWith(name string, c *Conn, rc *recovery) {
	s.mu.Lock()
	if s.rooms == nil {
		s.rooms = make(map[string]*room)
	}
	r := s.rooms[name]
	if r == nil {
		r = &room{index: make(map[*Conn]int)}
		s.rooms[name] = r
		if s.watcher != nil {
			s.watcher.WatchRoom(name)
		}
	}
	r.mu.Lock()
	s.mu.Unlock()
	if _, ok := r.index[c]; !ok {
		r.index[c] = len(r.members)
		r.members = append(r.members, c)
		if s.presence != nil {
			s.presence.PresenceJoin(name, c.ID(), c.presenceInfo())
		}
		if rc != nil {
			if r.recovering == nil {
				r.recovering = make(map[*Conn]*recovery)
			}
			r.recovering[c] = rc
		}
	}
	r.mu.Unlock()
}

// has reports whether c is a local member of room.
func (s *roomSet) has(name string, c *Conn) bool {
	r := s.get(name)
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.index[c]
	return ok
}

func (s *roomSet) remove(name string, c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[name]
	if r == nil {
		return
	}
	r.mu.Lock()
	if i, ok := r.index[c]; ok {
		last := len(r.members) - 1
		moved := r.members[last]
		r.members[i] = moved
		r.index[moved] = i
		r.members[last] = nil
		r.members = r.members[:last]
		delete(r.index, c)
		delete(r.recovering, c)
		if s.presence != nil {
			s.presence.PresenceLeave(name, c.ID())
		}
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if empty {
		delete(s.rooms, name)
		if s.watcher != nil {
			s.watcher.UnwatchRoom(name)
		}
	}
}

func (s *roomSet) get(name string) *room {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rooms[name]
}

// size returns the number of local members of a room.
func (s *roomSet) size(name string) int {
	r := s.get(name)
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members)
}

// memberIDs returns the ids of a room's local members, sorted.
func (s *roomSet) memberIDs(name string) []string {
	r := s.get(name)
	if r == nil {
		return nil
	}
	r.mu.RLock()
	ids := make([]string, len(r.members))
	for i, c := range r.members {
		ids[i] = strings.Clone(c.ID()) // the caller may keep it (see Conn.ID)
	}
	r.mu.RUnlock()
	sort.Strings(ids)
	return ids
}

// fanout queues m on every local member except one, returning how many
// accepted it. Slow consumers are dealt with after the room lock is
// released, since closing takes Conn.mu.
func (s *roomSet) fanout(name string, m *outMsg, except *Conn) int {
	return s.fanoutAt(name, m, except, 0, Text, nil)
}

// fanoutAt is fanout for a message at offset in the room's history
// (kind and data are the payload again, for recovering members, who may
// have to hold it); offset 0: a room without history.
func (s *roomSet) fanoutAt(name string, m *outMsg, except *Conn, offset uint64, kind Kind, data []byte) int {
	r := s.get(name)
	if r == nil {
		return 0
	}
	var slow, done []*Conn
	n := 0
	// The routes' messages_sent counts, added once per route rather than
	// once per recipient: members of one route share that counter's cache
	// line with every other goroutine counting on the route.
	var rt *Route
	var rtN int64
	r.mu.RLock()
	for _, c := range r.members {
		if c == except {
			continue
		}
		if r.recovering != nil && offset != 0 {
			if rc := r.recovering[c]; rc != nil {
				over, full := rc.take(c, offset, kind, data, m)
				if over {
					n++
					done = append(done, c)
				}
				if full {
					slow = append(slow, c)
				}
				continue
			}
		}
		start, err := c.queue.Push(m.frameFor(c))
		switch err {
		case nil:
			n++
			if c.route != rt {
				if rt != nil {
					rt.msgsOut.Add(rtN)
				}
				rt, rtN = c.route, 0
			}
			rtN++
			if start {
				c.startFlush()
			}
		case wsconn.ErrFull:
			slow = append(slow, c)
		}
	}
	r.mu.RUnlock()
	if rt != nil {
		rt.msgsOut.Add(rtN)
	}
	if len(done) > 0 {
		r.mu.Lock()
		for _, c := range done {
			delete(r.recovering, c)
		}
		if len(r.recovering) == 0 {
			r.recovering = nil
		}
		r.mu.Unlock()
	}
	for _, c := range slow {
		c.slowConsumer()
	}
	return n
}

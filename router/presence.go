package router

import (
	"context"
	"errors"
	"sort"
	"strings"
)

// Presence: who is in a room, on every node. With a broker that
// implements broker.Presence the answers are the cluster's; otherwise
// (one node, or the in-process broker) they are this node's.

// MaxPresenceInfo bounds the info one connection shows in presence.
const MaxPresenceInfo = 1024

// ErrPresenceInfo is returned for info over MaxPresenceInfo.
var ErrPresenceInfo = errors.New("presence info longer than 1024 bytes")

// presenceInfo returns what c shows in presence; nil: nothing. c.mu is
// held (Join, Recover and SetPresence call in with it).
func (c *Conn) presenceInfo() []byte {
	if c.ext == nil {
		return nil
	}
	return c.ext.presence
}

// SetPresence sets what the connection shows in the presence of every
// room it is in, or joins later: JSON (the caller encodes it), at most
// MaxPresenceInfo bytes; nil shows nothing.
func (c *Conn) SetPresence(info []byte) error {
	if len(info) > MaxPresenceInfo {
		return ErrPresenceInfo
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return ErrClosed
	}
	c.extras().presence = info
	if p := c.srv.presence; p != nil {
		for _, r := range c.roomList() {
			p.PresenceJoin(r, c.ID(), info)
		}
	}
	return nil
}

// Presence returns the members of room, on every node when the broker
// knows them: connection id -> the info it set (nil: none).
func (s *Server) Presence(room string) (map[string][]byte, error) {
	if s.presence != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.c().BrokerWait)
		defer cancel()
		return s.presence.Members(ctx, room)
	}
	r := s.rooms.get(room)
	out := map[string][]byte{}
	if r == nil {
		return out, nil
	}
	r.mu.RLock()
	members := append([]*Conn(nil), r.members...)
	r.mu.RUnlock()
	for _, c := range members {
		c.mu.Lock()
		out[strings.Clone(c.ID())] = c.presenceInfo() // the caller may keep it (see Conn.ID)
		c.mu.Unlock()
	}
	return out, nil
}

// ClusterRoomSize returns the number of members of room on every node
// when the broker knows them, else on this node.
func (s *Server) ClusterRoomSize(room string) (int, error) {
	if s.presence != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.c().BrokerWait)
		defer cancel()
		return s.presence.Count(ctx, room)
	}
	return s.rooms.size(room), nil
}

// ClusterRoomMembers returns the ids of the members of room, sorted, on
// every node when the broker knows them, else on this node.
func (s *Server) ClusterRoomMembers(room string) ([]string, error) {
	if s.presence == nil {
		return s.rooms.memberIDs(room), nil
	}
	m, err := s.Presence(room)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

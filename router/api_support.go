package router

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/moonwire/moonwire/router/broker"
)

// What the server HTTP API (internal/api) needs of the router beyond
// what scripts use: a room list, a snapshot of a connection, the node
// that owns an id, and a broadcast that leaves out a connection of
// another node.

// NodeOf returns the node id a connection id names ("1dbde069" for
// "1dbde069-5"); ok is false when id is not a connection id.
func NodeOf(id string) (node string, ok bool) {
	node, _, ok = parseID(id)
	return node, ok && node != ""
}

// RoomInfo is one of this node's rooms.
type RoomInfo struct {
	Name    string
	Members int // local members
}

// LocalRooms returns the rooms with a member on this node, sorted by
// name. Other nodes' rooms are not known here: a node subscribes only to
// the rooms it serves.
func (s *Server) LocalRooms() []RoomInfo {
	s.rooms.mu.RLock()
	rooms := make(map[string]*room, len(s.rooms.rooms))
	maps.Copy(rooms, s.rooms.rooms)
	s.rooms.mu.RUnlock()
	out := make([]RoomInfo, 0, len(rooms))
	for name, r := range rooms {
		r.mu.RLock()
		n := len(r.members)
		r.mu.RUnlock()
		if n > 0 {
			out = append(out, RoomInfo{Name: name, Members: n})
		}
	}
	slices.SortFunc(out, func(a, b RoomInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ConnInfo is a snapshot of a connection.
type ConnInfo struct {
	ID          string
	Route       string // the route's pattern
	Path        string // the request path
	Params      map[string]string
	RemoteAddr  string
	Subprotocol string
	Rooms       []string
	// Attributes are the connection's attributes (conn:set): strings,
	// numbers or booleans. A copy.
	Attributes map[string]any
	// Presence is the JSON the connection shows in presence; nil: none.
	Presence []byte
	Created  time.Time
	Closed   bool // closing or closed
}

// Info returns a snapshot of the connection, taken under its lock.
func (c *Conn) Info() ConnInfo {
	ci := ConnInfo{
		ID:         c.ID(),
		Route:      c.route.Pattern(),
		Path:       c.Path(),
		Params:     maps.Clone(c.params),
		RemoteAddr: c.RemoteAddr(),
		Created:    time.Unix(0, c.created),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ci.Closed = c.state != stateOpen
	ci.Rooms = c.roomList()
	if x := c.ext; x != nil {
		ci.Subprotocol = x.subprotocol
		ci.Attributes = maps.Clone(x.attrs)
		ci.Presence = slices.Clone(x.presence)
	}
	return ci
}

// BroadcastExcept is BroadcastWith leaving out the connection exceptID
// wherever it is in the cluster ("": none), where BroadcastOptions.Except
// can only name a connection of this node.
func (s *Server) BroadcastExcept(room string, kind Kind, data string, exceptID string, stamp bool) BroadcastResult {
	local := s.Conn(exceptID)
	if exceptID == "" || local != nil || !s.remote(exceptID) {
		return s.BroadcastWith(room, kind, data, BroadcastOptions{Except: local, Stamp: stamp})
	}
	// The connection to leave out lives on another node: every local
	// member gets the message, and the node that has it leaves it out
	// (onBroker resolves Except there).
	m := broker.Message{Op: broker.OpBroadcast, Origin: s.nodeID, Room: room, Binary: kind == Binary,
		Data: []byte(data), Except: exceptID}
	size, ttl := s.historyOf(room)
	if size == 0 {
		out := newOutMsg(kind, nil, data)
		n := s.rooms.fanout(room, &out, nil)
		out.release()
		s.stats.broadcasts.Add(1)
		s.stats.fanout.Add(int64(n))
		s.publish(m)
		return BroadcastResult{N: n}
	}
	m.Stamp = stamp
	return s.publishHistory(m, s.rooms.size(room), size, ttl)
}

// HistoryKept reports whether room keeps a history ([history] names it).
func (s *Server) HistoryKept(room string) bool {
	size, _ := s.historyOf(room)
	return size > 0
}

package router

import (
	"context"
	"fmt"

	"github.com/moonwire/moonwire/router/broker"
)

// Reaching connections and rooms by id, here and through the broker on
// other nodes, and applying other nodes' instructions.

// Conn returns the local connection with the given id, or nil.
func (s *Server) Conn(id string) *Conn {
	node, tok, ok := parseID(id)
	if !ok || node != s.nodeID {
		return nil
	}
	if c := s.table.get(tok); c != nil && c.ID() == id {
		return c
	}
	return nil
}

// Broadcast queues data on every member of room, on this node and, through
// the broker, on the others, except the connection except (may be nil). It
// returns the number of local recipients. The payload is framed once for
// all of them.
func (s *Server) Broadcast(room string, kind Kind, data []byte, except *Conn) int {
	m := newOutMsg(kind, data, "")
	return s.broadcast(room, kind, &m, except, func() []byte { return clone(data) })
}

// BroadcastString is Broadcast for a string payload.
func (s *Server) BroadcastString(room string, kind Kind, data string, except *Conn) int {
	m := newOutMsg(kind, nil, data)
	return s.broadcast(room, kind, &m, except, func() []byte { return []byte(data) })
}

func (s *Server) broadcast(room string, kind Kind, m *outMsg, except *Conn, payload func() []byte) int {
	n := s.rooms.fanout(room, m, except)
	m.release()
	s.stats.broadcasts.Add(1)
	s.stats.fanout.Add(int64(n))
	if s.brokerAlone == nil || !s.brokerAlone() {
		m := broker.Message{Op: broker.OpBroadcast, Origin: s.nodeID, Room: room, Binary: kind == Binary, Data: payload()}
		if except != nil {
			m.Except = except.ID()
		}
		s.publish(m)
	}
	return n
}

// SendTo queues data on the connection id, wherever it is in the cluster.
// For a local connection the error is the connection's verdict; for a
// remote one, delivery is best-effort.
func (s *Server) SendTo(id string, kind Kind, data []byte) error {
	if c := s.Conn(id); c != nil {
		return c.Send(kind, data)
	}
	if !s.remote(id) {
		return ErrClosed
	}
	node, _, _ := parseID(id)
	s.publish(broker.Message{Op: broker.OpSend, Origin: s.nodeID, Target: id, To: node, Binary: kind == Binary, Data: clone(data)})
	return nil
}

// CloseConn closes the connection id, wherever it is in the cluster.
func (s *Server) CloseConn(id string, code int, reason string) error {
	if !SendableCloseCode(code) {
		return fmt.Errorf("invalid close code %d", code)
	}
	if c := s.Conn(id); c != nil {
		return c.Close(code, reason)
	}
	if !s.remote(id) {
		return ErrClosed
	}
	node, _, _ := parseID(id)
	s.publish(broker.Message{Op: broker.OpClose, Origin: s.nodeID, Target: id, To: node, Code: code, Reason: reason})
	return nil
}

// remote reports whether id may live on another node: it names another
// node and there are other nodes to ask.
func (s *Server) remote(id string) bool {
	node, _, ok := parseID(id)
	if !ok || node == s.nodeID {
		return false
	}
	return s.brokerAlone == nil || !s.brokerAlone()
}

// RoomSize returns the number of local members of room.
func (s *Server) RoomSize(room string) int { return s.rooms.size(room) }

// RoomMembers returns the ids of the local members of room, sorted.
func (s *Server) RoomMembers(room string) []string { return s.rooms.memberIDs(room) }

func (s *Server) publish(m broker.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), s.c().WriteTimeout)
	defer cancel()
	if err := s.broker.Publish(ctx, m); err != nil {
		s.stats.brokerErrors.Add(1)
		s.log.Warn("broker publish failed", "op", m.Op, "err", err)
	}
}

// onBroker applies another node's instruction locally.
func (s *Server) onBroker(m broker.Message) {
	if m.Origin == s.nodeID && m.Offset == 0 {
		// A broker that echoes our own broadcast: served locally already.
		// A message with an offset is delivered here on every node, its
		// origin too, so that all deliver in offset order.
		return
	}
	kind := Text
	if m.Binary {
		kind = Binary
	}
	switch m.Op {
	case broker.OpBroadcast:
		var except *Conn
		if m.Except != "" {
			except = s.Conn(m.Except)
		}
		out := newOutMsg(kind, m.Data, "")
		n := s.rooms.fanoutAt(m.Room, &out, except, m.Offset, kind, m.Data)
		out.release()
		s.stats.fanout.Add(int64(n))
	case broker.OpSend:
		if c := s.Conn(m.Target); c != nil {
			_ = c.Send(kind, m.Data)
		}
	case broker.OpClose:
		if c := s.Conn(m.Target); c != nil {
			_ = c.Close(m.Code, m.Reason)
		}
	}
}

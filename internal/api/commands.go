package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/moonwire/moonwire/router"
)

// The commands. Each decodes its params strictly, checks them, and
// calls the router as the matching Lua function does.

// message returns the kind and bytes of a message given as data (text)
// or binary (base64). (The two are fields of each command's params rather
// than an embedded struct, whose name decoding errors would show.)
func message(data, binary *string) (router.Kind, string, *apiError) {
	switch {
	case data != nil && binary != nil:
		return 0, "", fieldError("data", "give data (text) or binary (base64), not both")
	case binary != nil:
		b, err := base64.StdEncoding.DecodeString(*binary)
		if err != nil {
			return 0, "", fieldError("binary", "must be standard base64 (RFC 4648, with padding): %v", err)
		}
		return router.Binary, string(b), nil
	case data != nil:
		// encoding/json replaces invalid UTF-8 with U+FFFD, so text that
		// reached here is valid; the check guards against that changing.
		if !utf8.ValidString(*data) {
			return 0, "", fieldError("data", "must be valid UTF-8 (send it as binary)")
		}
		return router.Text, *data, nil
	}
	return 0, "", fieldError("data", "required (or binary, base64)")
}

func requireRoom(room string) *apiError {
	if room == "" {
		return fieldError("room", "required")
	}
	return nil
}

// requireConn checks a connection id's shape.
func requireConn(field, id string) *apiError {
	if id == "" {
		return fieldError(field, "required")
	}
	if _, ok := router.NodeOf(id); !ok {
		return fieldError(field, "%q is not a connection id (NODE-N, as conn.id)", clip(id))
	}
	return nil
}

// publishResult: delivered is the local recipients (as ws.broadcast's
// count); offset and epoch are set in a room with history, offset_error
// when its offset is not known (queued while the broker is away).
type publishResult struct {
	Delivered   int    `json:"delivered"`
	Offset      uint64 `json:"offset,omitempty"`
	Epoch       string `json:"epoch,omitempty"`
	OffsetError string `json:"offset_error,omitempty"`
}

// publish: {room, data | binary, except?, stamp?} -> publishResult.
func (h *Handler) publish(c *call, params []byte) (any, *apiError) {
	var p struct {
		Room   string  `json:"room"`
		Data   *string `json:"data"`
		Binary *string `json:"binary"`
		Except string  `json:"except"`
		Stamp  bool    `json:"stamp"`
	}
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.room = p.Room
	if e := requireRoom(p.Room); e != nil {
		return nil, e
	}
	kind, data, e := message(p.Data, p.Binary)
	if e != nil {
		return nil, e
	}
	if p.Except != "" {
		if e := requireConn("except", p.Except); e != nil {
			return nil, e
		}
	}
	if p.Stamp && (len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}') {
		return nil, fieldError("stamp", "needs a JSON object as data (its offset and epoch are added to it)")
	}
	res := h.rt.BroadcastExcept(p.Room, kind, data, p.Except, p.Stamp)
	out := publishResult{Delivered: res.N, Offset: res.Offset, Epoch: res.Epoch}
	if res.Err != nil {
		out.OffsetError = res.Err.Error()
	}
	return out, nil
}

// send: {conn, data | binary} -> {"sent": true}. For a connection of this
// node the answer is its verdict; for another node's, delivery is
// best-effort (as ws.send).
func (h *Handler) send(c *call, params []byte) (any, *apiError) {
	var p struct {
		Conn   string  `json:"conn"`
		Data   *string `json:"data"`
		Binary *string `json:"binary"`
	}
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.conn = p.Conn
	if e := requireConn("conn", p.Conn); e != nil {
		return nil, e
	}
	kind, data, e := message(p.Data, p.Binary)
	if e != nil {
		return nil, e
	}
	var err error
	if conn := h.rt.Conn(p.Conn); conn != nil {
		err = conn.SendString(kind, data)
	} else {
		err = h.rt.SendTo(p.Conn, kind, []byte(data))
	}
	if e := connVerdict(err); e != nil {
		return nil, e
	}
	return map[string]bool{"sent": true}, nil
}

// connVerdict maps a connection's refusal to a status: 404 for one that
// is gone, 409 for one that cannot take more (slow consumer).
func connVerdict(err error) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, router.ErrClosed):
		return errorf(http.StatusNotFound, "closed: no such connection, or it has closed")
	default:
		return errorf(http.StatusConflict, "%v", err)
	}
}

// maxReason is what a close frame has room for after its code.
const maxReason = 123

// close: {conn, code? (1000), reason?} -> {"closed": true}.
func (h *Handler) close(c *call, params []byte) (any, *apiError) {
	var p struct {
		Conn   string `json:"conn"`
		Code   *int   `json:"code"`
		Reason string `json:"reason"`
	}
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.conn = p.Conn
	if e := requireConn("conn", p.Conn); e != nil {
		return nil, e
	}
	code := router.CloseNormal
	if p.Code != nil {
		code = *p.Code
	}
	if !router.SendableCloseCode(code) {
		return nil, fieldError("code", "%d is not a code a server may send: 1000-1003, 1007-1014, 3000-4999", code)
	}
	if len(p.Reason) > maxReason {
		return nil, fieldError("reason", "at most %d bytes (a close frame's room), got %d", maxReason, len(p.Reason))
	}
	if e := connVerdict(h.rt.CloseConn(p.Conn, code, p.Reason)); e != nil {
		return nil, e
	}
	return map[string]bool{"closed": true}, nil
}

type roomParams struct {
	Room string `json:"room"`
}

// roomSize: {room} -> {"size": n}: on every node when the broker knows
// the members, else (or when it cannot answer now) this node's, as
// ws.room_size.
func (h *Handler) roomSize(c *call, params []byte) (any, *apiError) {
	var p roomParams
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.room = p.Room
	if e := requireRoom(p.Room); e != nil {
		return nil, e
	}
	n, err := h.rt.ClusterRoomSize(p.Room)
	if err != nil {
		n = h.rt.RoomSize(p.Room)
	}
	return map[string]int{"size": n}, nil
}

// presence: {room} -> {"presence": {conn id: info | null}}.
func (h *Handler) presence(c *call, params []byte) (any, *apiError) {
	var p roomParams
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.room = p.Room
	if e := requireRoom(p.Room); e != nil {
		return nil, e
	}
	m, err := h.rt.Presence(p.Room)
	if err != nil {
		return nil, errorf(http.StatusServiceUnavailable, "presence of %q: %v", clip(p.Room), err)
	}
	out := make(map[string]json.RawMessage, len(m))
	for id, info := range m {
		if len(info) > 0 && json.Valid(info) {
			out[id] = info
		} else {
			out[id] = json.RawMessage("null")
		}
	}
	return map[string]any{"presence": out}, nil
}

// historyEntry is one message of a history: data for text, binary
// (base64) for binary.
type historyEntry struct {
	Offset uint64  `json:"offset"`
	Data   *string `json:"data,omitempty"`
	Binary []byte  `json:"binary,omitempty"`
}

// history: {room, since? (0), limit? (the room's size)} -> {"entries":
// [...], "offset": n, "epoch": s}. A room that keeps no history answers
// as one with none yet: no entries, offset 0, epoch "".
func (h *Handler) history(c *call, params []byte) (any, *apiError) {
	var p struct {
		Room  string `json:"room"`
		Since uint64 `json:"since"`
		Limit *int   `json:"limit"`
	}
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.room = p.Room
	if e := requireRoom(p.Room); e != nil {
		return nil, e
	}
	limit := 0
	if p.Limit != nil {
		if *p.Limit < 1 {
			return nil, fieldError("limit", "must be at least 1, got %d", *p.Limit)
		}
		limit = *p.Limit
	}
	entries := []historyEntry{}
	if !h.rt.HistoryKept(p.Room) {
		return map[string]any{"entries": entries, "offset": 0, "epoch": ""}, nil
	}
	es, top, epoch, err := h.rt.History(p.Room, p.Since, limit)
	if err != nil {
		return nil, errorf(http.StatusServiceUnavailable, "%v", err)
	}
	for _, e := range es {
		he := historyEntry{Offset: e.Offset}
		if e.Kind == router.Binary {
			he.Binary = e.Data
			if he.Binary == nil {
				he.Binary = []byte{}
			}
		} else {
			s := string(e.Data)
			he.Data = &s
		}
		entries = append(entries, he)
	}
	return map[string]any{"entries": entries, "offset": top, "epoch": epoch}, nil
}

type roomEntry struct {
	Room    string `json:"room"`
	Members int    `json:"members"`
}

// rooms: {} -> {"node": id, "rooms": [{"room", "members"}]}: this node's
// rooms and their local members (a node knows only the rooms it serves;
// ask every node's API for the whole cluster).
func (h *Handler) rooms(_ *call, params []byte) (any, *apiError) {
	var p struct{}
	if e := decode(params, &p, true); e != nil {
		return nil, e
	}
	rs := h.rt.LocalRooms()
	out := make([]roomEntry, len(rs))
	for i, r := range rs {
		out[i] = roomEntry{Room: r.Name, Members: r.Members}
	}
	return map[string]any{"node": h.rt.NodeID(), "rooms": out}, nil
}

// connJSON is a connection as conn shows it.
type connJSON struct {
	ID          string            `json:"id"`
	Route       string            `json:"route"`
	Path        string            `json:"path"`
	Params      map[string]string `json:"params"`
	RemoteAddr  string            `json:"remote_addr"`
	Subprotocol string            `json:"subprotocol"`
	Rooms       []string          `json:"rooms"`
	Attributes  map[string]any    `json:"attributes"`
	Presence    json.RawMessage   `json:"presence"`
	Created     time.Time         `json:"created"`
	Closed      bool              `json:"closed"`
}

// connInfo: {conn} -> {"node": owner, "local": bool, "conn": {...} |
// null}. A connection of another node is not an error: the answer names
// the node that owns it (ask that node's API for the details).
func (h *Handler) connInfo(c *call, params []byte) (any, *apiError) {
	var p struct {
		Conn string `json:"conn"`
	}
	if e := decode(params, &p, false); e != nil {
		return nil, e
	}
	c.conn = p.Conn
	if e := requireConn("conn", p.Conn); e != nil {
		return nil, e
	}
	node, _ := router.NodeOf(p.Conn)
	out := map[string]any{"node": node, "local": node == h.rt.NodeID(), "conn": nil}
	if conn := h.rt.Conn(p.Conn); conn != nil {
		ci := conn.Info()
		cj := connJSON{
			ID: ci.ID, Route: ci.Route, Path: ci.Path, Params: ci.Params, RemoteAddr: ci.RemoteAddr,
			Subprotocol: ci.Subprotocol, Rooms: ci.Rooms, Attributes: ci.Attributes,
			Presence: json.RawMessage("null"), Created: ci.Created.UTC(), Closed: ci.Closed,
		}
		if cj.Params == nil {
			cj.Params = map[string]string{}
		}
		if cj.Rooms == nil {
			cj.Rooms = []string{}
		}
		if cj.Attributes == nil {
			cj.Attributes = map[string]any{}
		}
		if len(ci.Presence) > 0 && json.Valid(ci.Presence) {
			cj.Presence = ci.Presence
		}
		out["conn"] = cj
	}
	return out, nil
}

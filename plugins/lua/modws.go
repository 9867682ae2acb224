package lua

import (
	"encoding/json"
	"strconv"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
	"github.com/moonwire/moonwire/plugins/internal/suspend"
	"github.com/moonwire/moonwire/router"
)

// openWS builds the ws module for this VM: the router's cluster-wide
// operations (broadcast, send and close by id, rooms, stats) plus the
// route's identity and settings.
func (v *vm) openWS(L *glua.LState) int {
	mod := L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"broadcast":    v.wsBroadcast,
		"send":         v.wsSend,
		"close":        v.wsClose,
		"room_size":    v.wsRoomSize,
		"room_members": v.wsRoomMembers,
		"history":      v.wsHistory,
		"presence":     v.wsPresence,
		"stats":        v.wsStats,
		"conn":         v.wsConn,
	})
	mod.RawSetString("route", glua.LString(v.route.cfg.Pattern))
	mod.RawSetString("settings", freeze(L, luavalue.ToLua(L, orEmpty(v.route.cfg.Settings)).(*glua.LTable), "ws.settings"))
	mod.RawSetString("node_id", glua.LString(""))
	v.ws = mod // the copy behind the view: Start sets node_id in it
	L.Push(freeze(L, mod, "ws"))
	return 1
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// server returns the router, raising an error while the script is still
// loading (there is no server yet; on_start is the place for such work).
func (v *vm) server(L *glua.LState, fn string) *router.Server {
	if v.route.srv == nil {
		L.RaiseError("%s is not available while the script loads; call it from a callback (on_start, on_open, ...)", fn)
	}
	return v.route.srv
}

func (v *vm) wsBroadcast(L *glua.LState) int {
	srv := v.server(L, "ws.broadcast")
	room := L.CheckString(1)
	kind := router.Text
	var except *router.Conn
	stamp := false
	if opts, ok := L.Get(3).(*glua.LTable); ok {
		switch st := opts.RawGetString("stamp").(type) {
		case *glua.LNilType:
		case glua.LBool:
			stamp = bool(st)
		default:
			L.ArgError(3, "stamp must be a boolean")
		}
		switch k := opts.RawGetString("kind"); k {
		case glua.LNil, glua.LString("text"):
		case glua.LString("binary"):
			kind = router.Binary
		default:
			L.ArgError(3, `kind must be "text" or "binary"`)
		}
		switch ex := opts.RawGetString("except").(type) {
		case *glua.LNilType:
		case *glua.LUserData:
			lc, ok := ex.Value.(*luaConn)
			if !ok {
				L.ArgError(3, "except must be a conn or a conn id")
			}
			except = lc.c
		case glua.LString:
			except = srv.Conn(string(ex))
		default:
			L.ArgError(3, "except must be a conn or a conn id")
		}
	} else if L.Get(3) != glua.LNil {
		L.ArgError(3, "options table expected")
	}
	data, ok := checkPayload(L, 2, kind)
	if !ok {
		return 2
	}
	if stamp && (len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}') {
		L.ArgError(2, "stamp needs a JSON object as the payload (its offset and epoch are added to it)")
	}
	o := router.BroadcastOptions{Except: except, Stamp: stamp}
	if v.brokerSuspends && srv.KeepsHistory(room) {
		// It waits for its offset: off the lane when it can.
		return v.brokerWait(L, false, func() suspend.Resume {
			res := srv.BroadcastWith(room, kind, data, o)
			return func(L *glua.LState) int { return pushBroadcast(L, res) }
		})
	}
	return pushBroadcast(L, srv.BroadcastWith(room, kind, data, o))
}

// pushBroadcast pushes ws.broadcast's results: the local count, then the
// offset and epoch in a room with history, or nil and why there is none.
func pushBroadcast(L *glua.LState, res router.BroadcastResult) int {
	L.Push(glua.LNumber(res.N))
	switch {
	case res.Err != nil:
		// A room with history whose offset is not known now: queued for
		// the broker's return, or lost; the script can tell the client.
		L.Push(glua.LNil)
		L.Push(glua.LString(res.Err.Error()))
		return 3
	case res.Offset != 0:
		L.Push(glua.LNumber(res.Offset))
		L.Push(glua.LString(res.Epoch))
		return 3
	}
	return 1
}

// ws.history(room [, {since = offset, limit = n}]) -> entries, offset,
// epoch | nil, err. entries: { {offset = n, data = s, kind = k}, ... }.
func (v *vm) wsHistory(L *glua.LState) int {
	srv := v.server(L, "ws.history")
	room := L.CheckString(1)
	var since uint64
	limit := 0
	switch opts := L.Get(2).(type) {
	case *glua.LNilType:
	case *glua.LTable:
		since = checkOffset(L, 2, opts.RawGetString("since"), "since")
		switch l := opts.RawGetString("limit").(type) {
		case *glua.LNilType:
		case glua.LNumber:
			if l < 1 || l != glua.LNumber(int(l)) {
				L.ArgError(2, "limit must be a positive integer")
			}
			limit = int(l)
		default:
			L.ArgError(2, "limit must be a positive integer")
		}
	default:
		L.ArgError(2, "options table expected")
	}
	return v.brokerWait(L, true, func() suspend.Resume {
		entries, top, epoch, err := srv.History(room, since, limit)
		// The tables are made on the lane: the VM is not this goroutine's.
		return func(L *glua.LState) int {
			if err != nil {
				return result(L, err)
			}
			t := L.CreateTable(len(entries), 0)
			for _, e := range entries {
				et := L.CreateTable(0, 3)
				et.RawSetString("offset", glua.LNumber(e.Offset))
				et.RawSetString("data", glua.LString(e.Data))
				et.RawSetString("kind", glua.LString(kindName(e.Kind)))
				t.Append(et)
			}
			L.Push(t)
			L.Push(glua.LNumber(top))
			L.Push(glua.LString(epoch))
			return 3
		}
	})
}

func kindName(k router.Kind) string {
	if k == router.Binary {
		return "binary"
	}
	return "text"
}

// checkOffset reads an offset: nil (0), a non-negative integer, or a
// string holding one (as a query parameter arrives).
func checkOffset(L *glua.LState, arg int, v glua.LValue, name string) uint64 {
	switch x := v.(type) {
	case *glua.LNilType:
		return 0
	case glua.LNumber:
		if x >= 0 && x == glua.LNumber(uint64(x)) && x < 1<<53 {
			return uint64(x)
		}
	case glua.LString:
		if x == "" {
			return 0
		}
		if n, err := strconv.ParseUint(string(x), 10, 53); err == nil {
			return n
		}
	}
	L.ArgError(arg, name+" must be a non-negative integer offset")
	return 0
}

func (v *vm) wsSend(L *glua.LState) int {
	srv := v.server(L, "ws.send")
	id := L.CheckString(1)
	kind := checkKind(L, 3)
	data, ok := checkPayload(L, 2, kind)
	if !ok {
		return 2
	}
	if c := srv.Conn(id); c != nil {
		return result(L, c.SendString(kind, data))
	}
	return result(L, srv.SendTo(id, kind, []byte(data)))
}

func (v *vm) wsClose(L *glua.LState) int {
	srv := v.server(L, "ws.close")
	id := L.CheckString(1)
	code := L.OptInt(2, router.CloseNormal)
	if !router.SendableCloseCode(code) {
		L.ArgError(2, "invalid close code "+itoa(code))
	}
	return result(L, srv.CloseConn(id, code, L.OptString(3, "")))
}

// ws.room_size(room): the members on every node when the broker knows
// them; this node's when it does not, or cannot be asked now.
func (v *vm) wsRoomSize(L *glua.LState) int {
	srv := v.server(L, "ws.room_size")
	room := L.CheckString(1)
	if !v.brokerSuspends {
		L.Push(glua.LNumber(roomSize(srv, room)))
		return 1
	}
	return v.brokerWait(L, true, func() suspend.Resume {
		n := roomSize(srv, room)
		return func(L *glua.LState) int {
			L.Push(glua.LNumber(n))
			return 1
		}
	})
}

// roomSize is ws.room_size's answer: the cluster's count, else this
// node's.
func roomSize(srv *router.Server, room string) int {
	n, err := srv.ClusterRoomSize(room)
	if err != nil {
		n = srv.RoomSize(room)
	}
	return n
}

func (v *vm) wsRoomMembers(L *glua.LState) int {
	srv := v.server(L, "ws.room_members")
	room := L.CheckString(1)
	ids, err := srv.ClusterRoomMembers(room)
	if err != nil {
		ids = srv.RoomMembers(room)
	}
	t := L.CreateTable(len(ids), 0)
	for _, id := range ids {
		t.Append(glua.LString(id))
	}
	L.Push(t)
	return 1
}

// ws.presence(room) -> { [conn_id] = info | false } | nil, err: the
// members of room on every node, with the info each set with
// conn:presence (false: none).
func (v *vm) wsPresence(L *glua.LState) int {
	srv := v.server(L, "ws.presence")
	room := L.CheckString(1)
	return v.brokerWait(L, true, func() suspend.Resume {
		m, err := srv.Presence(room)
		return func(L *glua.LState) int {
			if err != nil {
				return result(L, err)
			}
			t := L.CreateTable(0, len(m))
			for id, info := range m {
				var val glua.LValue = glua.LFalse
				if len(info) > 0 {
					var x any
					if json.Unmarshal(info, &x) == nil {
						val = luavalue.ToLua(L, x)
					}
				}
				t.RawSetString(id, val)
			}
			L.Push(t)
			return 1
		}
	})
}

func (v *vm) wsStats(L *glua.LState) int {
	srv := v.server(L, "ws.stats")
	st := srv.Stats()
	t := L.CreateTable(0, 8)
	t.RawSetString("connections", glua.LNumber(st.Connections))
	t.RawSetString("messages_in", glua.LNumber(st.MessagesIn))
	t.RawSetString("messages_out", glua.LNumber(st.MessagesOut))
	t.RawSetString("bytes_in", glua.LNumber(st.BytesIn))
	t.RawSetString("bytes_out", glua.LNumber(st.BytesOut))
	t.RawSetString("uptime", glua.LNumber(st.Uptime.Seconds()))
	t.RawSetString("route_connections", glua.LNumber(v.route.rt.Connections()))
	L.Push(t)
	return 1
}

// wsConn returns a conn for a connection of this node by id, or nil. The
// value is a new handle: compare connections by conn.id, not by identity.
func (v *vm) wsConn(L *glua.LState) int {
	srv := v.server(L, "ws.conn")
	c := srv.Conn(L.CheckString(1))
	if c == nil {
		L.Push(glua.LNil)
		return 1
	}
	if c.Route() == v.route.rt && c.Lane() == v.lane {
		// One of this VM's own connections: its own handle.
		L.Push(v.connUD(c))
		return 1
	}
	L.Push(v.newConn(c))
	return 1
}

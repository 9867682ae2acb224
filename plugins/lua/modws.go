package lua

import (
	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
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
	if opts, ok := L.Get(3).(*glua.LTable); ok {
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
	L.Push(glua.LNumber(srv.BroadcastString(room, kind, data, except)))
	return 1
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

func (v *vm) wsRoomSize(L *glua.LState) int {
	srv := v.server(L, "ws.room_size")
	L.Push(glua.LNumber(srv.RoomSize(L.CheckString(1))))
	return 1
}

func (v *vm) wsRoomMembers(L *glua.LState) int {
	srv := v.server(L, "ws.room_members")
	ids := srv.RoomMembers(L.CheckString(1))
	t := L.CreateTable(len(ids), 0)
	for _, id := range ids {
		t.Append(glua.LString(id))
	}
	L.Push(t)
	return 1
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

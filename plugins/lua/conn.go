package lua

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
	"github.com/moonwire/moonwire/plugins/internal/suspend"
	"github.com/moonwire/moonwire/router"
)

// luaConn is the Go side of a conn userdata, and holds the userdata
// itself: one allocation per connection and VM, which an idle connection
// keeps for its life. Values scripts read often are boxed on first read
// and kept, so that reading conn.id again allocates nothing.
type luaConn struct {
	ud     glua.LUserData // what scripts hold; its Value is the luaConn
	c      *router.Conn
	vm     *vm         // the VM this handle belongs to
	id     glua.LValue // nil until conn.id is first read
	params *glua.LTable
}

const connType = "moonwire.conn"

// newConn wraps c for this VM. (The userdata is made as NewUserData
// makes it, inside the luaConn.)
func (v *vm) newConn(c *router.Conn) *glua.LUserData {
	lc := &luaConn{c: c, vm: v}
	lc.ud = glua.LUserData{Value: lc, Env: v.L.Env, Metatable: v.connMeta()}
	return &lc.ud
}

// connUD returns c's handle in this VM. A connection opened under an
// earlier version of the script (before a reload) carries the old VM's
// handle; it gets one from this VM on first use.
func (v *vm) connUD(c *router.Conn) *glua.LUserData {
	if ud, ok := c.HandlerData().(*glua.LUserData); ok {
		if lc, ok := ud.Value.(*luaConn); ok && lc.vm == v {
			return ud
		}
	}
	ud := v.newConn(c)
	c.SetHandlerData(ud)
	return ud
}

// connMeta returns the VM's conn metatable, creating it once.
func (v *vm) connMeta() *glua.LTable {
	L := v.L
	if mt, ok := L.GetTypeMetatable(connType).(*glua.LTable); ok {
		return mt
	}
	mt := L.NewTypeMetatable(connType)
	methods := L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{
		"send":      connSend,
		"close":     connClose,
		"ping":      connPing,
		"get":       connGet,
		"set":       connSet,
		"header":    connHeader,
		"query":     connQuery,
		"join":      connJoin,
		"recover":   connRecover,
		"presence":  connPresence,
		"leave":     connLeave,
		"rooms":     connRooms,
		"last_seen": connLastSeen,
	})
	// conn:send is most of what scripts index a conn for: its own case
	// spares it the methods table's map lookup.
	send := methods.RawGetString("send")
	mt.RawSetString("__index", L.NewFunction(func(L *glua.LState) int {
		lc := checkConn(L, 1)
		key := L.CheckString(2)
		switch key {
		case "send":
			L.Push(send)
		case "id":
			if lc.id == nil {
				// A copy: scripts keep ids (see router.Conn.ID).
				lc.id = glua.LString(strings.Clone(lc.c.ID()))
			}
			L.Push(lc.id)
		case "path":
			L.Push(glua.LString(strings.Clone(lc.c.Path()))) // copies, as conn.id
		case "remote_addr":
			L.Push(glua.LString(strings.Clone(lc.c.RemoteAddr())))
		case "closed":
			L.Push(glua.LBool(lc.c.Closed()))
		case "subprotocol":
			L.Push(glua.LString(lc.c.Subprotocol()))
		case "params":
			if lc.params == nil {
				lc.params = L.CreateTable(0, len(lc.c.Params()))
				for k, val := range lc.c.Params() {
					lc.params.RawSetString(k, glua.LString(val))
				}
			}
			L.Push(lc.params)
		default:
			L.Push(methods.RawGetString(key))
		}
		return 1
	}))
	mt.RawSetString("__newindex", L.NewFunction(func(L *glua.LState) int {
		L.RaiseError("conn fields are read-only; use conn:set(key, value) for attributes")
		return 0
	}))
	mt.RawSetString("__tostring", L.NewFunction(func(L *glua.LState) int {
		L.Push(glua.LString("conn " + checkConn(L, 1).c.ID()))
		return 1
	}))
	mt.RawSetString("__metatable", glua.LString("conn"))
	return mt
}

// checkConn returns argument n as a conn, raising an argument error
// otherwise.
func checkConn(L *glua.LState, n int) *luaConn {
	if ud, ok := L.Get(n).(*glua.LUserData); ok {
		if lc, ok := ud.Value.(*luaConn); ok {
			return lc
		}
	}
	L.ArgError(n, "conn expected, got "+L.Get(n).Type().String())
	return nil
}

// checkKind reads an optional "text"/"binary" argument.
func checkKind(L *glua.LState, n int) router.Kind {
	switch L.OptString(n, "text") {
	case "text":
		return router.Text
	case "binary":
		return router.Binary
	}
	L.ArgError(n, `kind must be "text" or "binary"`)
	return router.Text
}

// checkPayload reads a message argument; text must be valid UTF-8, or the
// client would fail the connection (RFC 6455 §8.1).
func checkPayload(L *glua.LState, n int, kind router.Kind) (string, bool) {
	data := L.CheckString(n)
	if kind == router.Text && !utf8.ValidString(data) {
		L.Push(glua.LNil)
		L.Push(glua.LString("text must be valid UTF-8 (send it as binary)"))
		return "", false
	}
	return data, true
}

// result pushes true, or nil and the error's text.
func result(L *glua.LState, err error) int {
	if err != nil {
		L.Push(glua.LNil)
		L.Push(glua.LString(err.Error()))
		return 2
	}
	L.Push(glua.LTrue)
	return 1
}

func connSend(L *glua.LState) int {
	lc := checkConn(L, 1)
	kind := checkKind(L, 3)
	data, ok := checkPayload(L, 2, kind)
	if !ok {
		return 2
	}
	return result(L, lc.c.SendString(kind, data))
}

func connClose(L *glua.LState) int {
	lc := checkConn(L, 1)
	code := L.OptInt(2, router.CloseNormal)
	reason := L.OptString(3, "")
	if err := lc.c.Close(code, reason); err != nil {
		L.ArgError(2, err.Error())
	}
	return 0
}

func connPing(L *glua.LState) int {
	lc := checkConn(L, 1)
	payload := L.OptString(2, "")
	if len(payload) > 125 {
		L.ArgError(2, "ping payload longer than 125 bytes")
	}
	return result(L, lc.c.Ping([]byte(payload)))
}

func connGet(L *glua.LState) int {
	lc := checkConn(L, 1)
	val, ok := lc.c.Get(L.CheckString(2))
	if !ok {
		L.Push(glua.LNil)
		return 1
	}
	L.Push(attrToLua(val))
	return 1
}

func connSet(L *glua.LState) int {
	lc := checkConn(L, 1)
	key := L.CheckString(2)
	val := L.Get(3)
	if val == glua.LNil {
		lc.c.Set(key, nil)
		return 0
	}
	a, ok := attrValue(val)
	if !ok {
		L.ArgError(3, "attributes are strings, numbers or booleans")
	}
	lc.c.Set(key, a)
	return 0
}

func connHeader(L *glua.LState) int {
	lc := checkConn(L, 1)
	pushOptString(L, strings.Clone(lc.c.Header(L.CheckString(2)))) // scripts may keep it (see router.Conn.ID)
	return 1
}

func connQuery(L *glua.LState) int {
	lc := checkConn(L, 1)
	pushOptString(L, lc.c.Query(L.CheckString(2)))
	return 1
}

// conn:join(room [, { joined = msg, left = msg }]) -> true | nil, err
func connJoin(L *glua.LState) int {
	lc := checkConn(L, 1)
	room := L.CheckString(2)
	o := checkJoinOptions(L, 3)
	if o.Joined != "" && lc.vm.brokerSuspends && lc.vm.route.srv.KeepsHistory(room) {
		// The announcement waits for its offset: off the lane when it can.
		return lc.vm.brokerWait(L, false, func() suspend.Resume {
			err := lc.c.JoinWith(room, o)
			return func(L *glua.LState) int { return result(L, err) }
		})
	}
	return result(L, lc.c.JoinWith(room, o))
}

// checkJoinOptions reads the optional { joined = msg, left = msg } table
// of conn:join and conn:recover.
func checkJoinOptions(L *glua.LState, n int) router.JoinOptions {
	var o router.JoinOptions
	switch t := L.Get(n).(type) {
	case *glua.LNilType:
	case *glua.LTable:
		get := func(key string) string {
			switch v := t.RawGetString(key).(type) {
			case *glua.LNilType:
				return ""
			case glua.LString:
				return string(v)
			default:
				L.ArgError(n, key+" must be a string")
				return ""
			}
		}
		o.Joined, o.Left = get("joined"), get("left")
		t.ForEach(func(k, _ glua.LValue) {
			if ks, ok := k.(glua.LString); !ok || (ks != "joined" && ks != "left") {
				L.ArgError(n, fmt.Sprintf("unknown option %v (joined, left)", k))
			}
		})
	default:
		L.ArgError(n, "options must be a table")
	}
	return o
}

// conn:recover(room, offset, epoch) -> recovered, offset, epoch [, reason]
// | nil, err. It joins the room; when recovered, what the client missed
// since offset has been queued and live messages follow; when not, the
// client must reload its state from offset, epoch (reason says why).
func connRecover(L *glua.LState) int {
	lc := checkConn(L, 1)
	room := L.CheckString(2)
	offset := checkOffset(L, 3, L.Get(3), "offset")
	epoch := ""
	switch e := L.Get(4).(type) {
	case *glua.LNilType:
	case glua.LString:
		epoch = string(e)
	default:
		L.ArgError(4, "epoch must be a string")
	}
	o := checkJoinOptions(L, 5)
	return lc.vm.brokerWait(L, true, func() suspend.Resume {
		res, err := lc.c.RecoverWith(room, offset, epoch, o)
		return func(L *glua.LState) int { return pushRecovery(L, res, err) }
	})
}

// pushRecovery pushes conn:recover's results.
func pushRecovery(L *glua.LState, res router.Recovery, err error) int {
	if err != nil && res.Epoch == "" && !res.Recovered {
		return result(L, err)
	}
	L.Push(glua.LBool(res.Recovered))
	L.Push(glua.LNumber(res.Offset))
	L.Push(glua.LString(res.Epoch))
	if !res.Recovered {
		reason := res.Reason
		if err != nil {
			reason = err.Error()
		}
		L.Push(glua.LString(reason))
		return 4
	}
	return 3
}

// conn:presence(info) -> true | nil, err: what the connection shows in
// ws.presence of its rooms (a table, encoded as JSON, at most 1 KiB), or
// nil for nothing.
func connPresence(L *glua.LState) int {
	lc := checkConn(L, 1)
	var info []byte
	if v := L.Get(2); v != glua.LNil {
		t, ok := v.(*glua.LTable)
		if !ok {
			L.ArgError(2, "a table or nil expected")
		}
		x, err := luavalue.FromLua(t)
		if err != nil {
			return result(L, err)
		}
		if info, err = json.Marshal(x); err != nil {
			return result(L, err)
		}
	}
	return result(L, lc.c.SetPresence(info))
}

func connLeave(L *glua.LState) int {
	lc := checkConn(L, 1)
	lc.c.Leave(L.CheckString(2))
	return 0
}

func connRooms(L *glua.LState) int {
	lc := checkConn(L, 1)
	rooms := lc.c.Rooms()
	t := L.CreateTable(len(rooms), 0)
	for _, r := range rooms {
		t.Append(glua.LString(r))
	}
	L.Push(t)
	return 1
}

func connLastSeen(L *glua.LState) int {
	lc := checkConn(L, 1)
	L.Push(glua.LNumber(float64(lc.c.LastSeen().UnixNano()) / 1e9))
	return 1
}

func pushOptString(L *glua.LState, s string) {
	if s == "" {
		L.Push(glua.LNil)
		return
	}
	L.Push(glua.LString(s))
}

// attrValue converts a Lua attribute value to the Go value the router
// stores; attributes are shared across VMs, so only plain values qualify.
func attrValue(v glua.LValue) (any, bool) {
	switch v := v.(type) {
	case glua.LString:
		return string(v), true
	case glua.LNumber:
		return float64(v), true
	case glua.LBool:
		return bool(v), true
	}
	return nil, false
}

func attrToLua(a any) glua.LValue {
	switch a := a.(type) {
	case string:
		return glua.LString(a)
	case float64:
		return glua.LNumber(a)
	case int:
		return glua.LNumber(a)
	case int64:
		return glua.LNumber(a)
	case bool:
		return glua.LBool(a)
	}
	return glua.LNil
}

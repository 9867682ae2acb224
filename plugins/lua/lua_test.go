package lua_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// route starts a node with one route at /t running script, plus extra
// config (server settings, route keys) and files.
func route(t *testing.T, script, routeKeys string, files ...string) *moontest.Server {
	t.Helper()
	cfg := "[[routes]]\npath = \"/t\"\nscript = \"t.lua\"\n" + routeKeys
	if i := strings.Index(routeKeys, "[[routes]]"); i == 0 {
		cfg = routeKeys + "\n[[routes]]\npath = \"/t\"\nscript = \"t.lua\"\n"
	}
	return moontest.Start(t, moontest.Files(cfg, append([]string{"scripts/t.lua", script}, files...)...))
}

func TestCallbacksRunInOrderWithCloseCodes(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local seen = {}
function M.on_open(conn) seen[conn.id] = {"open"} end
function M.on_message(conn, data, kind)
  table.insert(seen[conn.id], kind .. ":" .. data)
  if data == "report" then conn:send(table.concat(seen[conn.id], ",")) end
end
function M.on_close(conn, code, reason)
  log.info("closed", { code = code, reason = reason, events = table.concat(seen[conn.id], ",") })
end
return M
`, "vms = 1\n")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("a")
	c.SendBinary([]byte("b"))
	c.Send("report")
	c.Expect("open,text:a,binary:b,text:report")
	c.Close(4001)
	s.WaitLog(t, "closed", "code=4001", `events=open,text:a,binary:b,text:report`)

	// A vanished client is a close with 1006.
	d := moontest.Dial(t, s.URL("/t"))
	d.Send("x")
	d.Conn.Close()
	s.WaitLog(t, "closed", "code=1006", "events=open,text:x")
}

// TestConnRoomsInJoinOrder: conn:rooms() lists the rooms in the order
// joined through joins and leaves in any order (the first room is kept
// apart from the others), an empty name is a room like any other, and a
// closed connection leaves every room it was in.
func TestConnRoomsInJoinOrder(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local function list(conn)
  local out = {}
  for _, r in ipairs(conn:rooms()) do out[#out + 1] = "[" .. r .. "]" end
  return table.concat(out, ",")
end
function M.on_message(conn, data)
  if data == "sizes" then
    conn:send(ws.room_size("a") .. ws.room_size("b") .. ws.room_size("c") .. ws.room_size(""))
    return
  end
  local steps = {}
  conn:join("a"); conn:join("b"); conn:join("c"); conn:join(""); conn:join("a")
  steps[#steps + 1] = list(conn)
  conn:leave("a"); steps[#steps + 1] = list(conn)
  conn:leave("c"); steps[#steps + 1] = list(conn)
  conn:leave("nowhere"); conn:leave("b"); steps[#steps + 1] = list(conn)
  conn:leave(""); steps[#steps + 1] = list(conn)
  conn:join("c"); conn:join("a"); conn:leave("c"); steps[#steps + 1] = list(conn)
  conn:join(""); conn:join("b"); conn:leave("")
  steps[#steps + 1] = list(conn)
  conn:send(table.concat(steps, " | "))
end
return M
`, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("rooms")
	c.Expect("[a],[b],[c],[] | [b],[c],[] | [b],[] | [] |  | [a] | [a],[b]")
	c.Send("sizes")
	c.Expect("1100")
	c.Close(1000)
	o := moontest.Dial(t, s.URL("/t"))
	moontest.WaitFor(t, "the closed connection to leave its rooms", func() bool {
		o.Send("sizes")
		return o.Next().Text() == "0000"
	})
}

func TestConnFieldsAndMethods(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
function M.on_message(conn, data)
  local out = {}
  if data == "fields" then
    out = { conn.id, conn.path, conn.params.room or "nil", conn.remote_addr, tostring(conn.closed),
            conn:header("X-Test") or "-", conn:query("q") or "-", conn:header("missing") or "-" }
  elseif data == "attrs" then
    conn:set("n", 42); conn:set("s", "str"); conn:set("b", true)
    conn:set("gone", "x"); conn:set("gone", nil)
    out = { tostring(conn:get("n")), conn:get("s"), tostring(conn:get("b")), tostring(conn:get("gone")) }
  elseif data == "bad attr" then
    conn:set("t", {})
  elseif data == "rooms" then
    conn:join("a"); conn:join("b"); conn:join("a"); conn:leave("b")
    out = conn:rooms()
  elseif data == "seen" then
    out = { tostring(math.abs(conn:last_seen() - time.now()) < 5) }
  elseif data == "ping" then
    conn:ping("hello")
    return
  elseif data == "readonly" then
    conn.id = "x"
  elseif data == "binary" then
    assert(conn:send("\0\1\2", "binary"))
    return
  elseif data == "badutf8" then
    local ok, err = conn:send("\255", "text")
    out = { tostring(ok), err }
  elseif data == "close" then
    conn:close(4321, "bye")
    out = { tostring(conn.closed), tostring(conn:send("after")) }
    log.info("after close", { closed = conn.closed })
    return
  end
  conn:send(table.concat(out, "|"))
end
return M
`, "", "scripts/unused.lua", "return {}")
	// The route is /t; a second route with a parameter exercises params.
	c := moontest.Dial(t, s.URL("/t?q=v%20w"), moontest.DialOptions{Header: http.Header{"X-Test": {"yes"}}})
	c.Send("fields")
	f := c.Next()
	parts := strings.Split(f.Text(), "|")
	if len(parts) != 8 || !strings.Contains(parts[0], "-") || parts[1] != "/t" || parts[2] != "nil" ||
		!strings.HasPrefix(parts[3], "127.0.0.1:") || parts[4] != "false" || parts[5] != "yes" || parts[6] != "v w" || parts[7] != "-" {
		t.Fatalf("fields: %q", f.Text())
	}
	c.Send("attrs")
	c.Expect("42|str|true|nil")
	c.Send("rooms")
	c.Expect("a")
	c.Send("seen")
	c.Expect("true")
	c.Send("binary")
	c.ExpectBinary([]byte{0, 1, 2})
	c.Send("badutf8")
	c.Expect("nil|text must be valid UTF-8 (send it as binary)")
	c.Send("ping")
	p, err := c.ReadFrame(0)
	if err != nil || p.Op != ws.OpPing || p.Text() != "hello" {
		t.Fatalf("ping: %v %v %q", err, p.Op, p.Payload)
	}
	c.Send("close")
	c.ExpectClose(4321, "bye")
	s.WaitLog(t, "after close", "closed=true")

	// Script errors from misuse close with 1011 and are logged.
	d := moontest.Dial(t, s.URL("/t"))
	d.Send("readonly")
	d.ExpectClose(1011)
	s.WaitLog(t, "script error", "read-only")
	e := moontest.Dial(t, s.URL("/t"))
	e.Send("bad attr")
	e.ExpectClose(1011)
	s.WaitLog(t, "script error", "attributes are strings, numbers or booleans")
}

func TestParams(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/rooms/{room}/users/{user}"
script = "p.lua"
`, "scripts/p.lua", `
return { on_open = function(conn) conn:send(conn.params.room .. "/" .. conn.params.user .. " " .. ws.route) end }
`))
	c := moontest.Dial(t, s.URL("/rooms/lobby/users/ann%20b"))
	c.Expect("lobby/ann b /rooms/{room}/users/{user}")
	_, err := moontest.TryDial(t, s.URL("/rooms/lobby"))
	if r, ok := err.(*moontest.Refusal); !ok || r.Status != 404 {
		t.Fatalf("partial path: %v", err)
	}
}

func TestHandshake(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
function M.on_handshake(req)
  local mode = req.query.mode
  if mode == "refuse" then return false, 401, "no entry: " .. (req.headers["x-who"] or "?") end
  if mode == "refuse-default" then return false end
  if mode == "error" then error("boom in handshake") end
  if mode == "bad" then return 42 end
  if mode == "attrs" then
    return { user = "ann", level = 3, admin = true, subprotocol = req.subprotocols[2] }
  end
  if mode == "badproto" then return { subprotocol = "nope" } end
  assert(req.path == "/t" and req.remote_addr:match("^127%.0%.0%.1:%d+$") and type(req.params) == "table")
  return true
end
function M.on_open(conn)
  conn:send(tostring(conn:get("user")) .. " " .. tostring(conn:get("level")) .. " " .. tostring(conn:get("admin")) .. " " .. conn.subprotocol)
end
return M
`, "")
	cases := []struct {
		query  string
		status int
		body   string
	}{
		{"refuse", 401, "no entry: bob"},
		{"refuse-default", 403, "Forbidden"},
		{"error", 500, "internal error"},
		{"bad", 500, "internal error"},
		{"badproto", 500, "internal error"},
	}
	for _, tc := range cases {
		_, err := moontest.TryDial(t, s.URL("/t?mode="+tc.query), moontest.DialOptions{Header: http.Header{"X-Who": {"bob"}}})
		r, ok := err.(*moontest.Refusal)
		if !ok || r.Status != tc.status || r.Body != tc.body {
			t.Errorf("mode %s: got %v, want %d %q", tc.query, err, tc.status, tc.body)
		}
	}
	s.WaitLog(t, "script error", "callback=on_handshake", "t.lua:7", "boom in handshake")

	c := moontest.Dial(t, s.URL("/t?mode=attrs"), moontest.DialOptions{Protocols: []string{"chat.v1", "chat.v2"}})
	if c.Subprotocol != "chat.v2" {
		t.Fatalf("subprotocol %q, want chat.v2", c.Subprotocol)
	}
	c.Expect("ann 3 true chat.v2")
	d := moontest.Dial(t, s.URL("/t"))
	d.Expect("nil nil nil ")
}

func TestScriptErrorClosesOnlyItsConnection(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local function explode() error("kaboom") end
function M.on_message(conn, data)
  if data == "boom" then explode() end
  conn:send(data)
end
return M
`, "")
	other := moontest.Dial(t, s.URL("/t"))
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("boom")
	c.ExpectClose(1011)
	line := s.WaitLog(t, "script error", "callback=on_message", "t.lua:3", "kaboom")
	if !strings.Contains(line, "traceback=") || !strings.Contains(line, "conn=") || !strings.Contains(line, "route=/t") {
		t.Fatalf("log line lacks traceback, conn or route: %s", line)
	}
	// The callback's frame is named as the callback, not as the chunk.
	if !strings.Contains(line, `t.lua:5: in function 'on_message'`) || strings.Contains(line, "main chunk") {
		t.Fatalf("traceback does not name on_message: %s", line)
	}
	other.Send("fine")
	other.Expect("fine")
}

func TestHandlerTimeoutStopsRunawayScripts(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "200ms"
vms = 1

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", `
local M = {}
function M.on_message(conn, data)
  if data == "loop" then while true do end end
  if data == "pcall loop" then
    while true do pcall(function() while true do end end) end
  end
  if data == "coroutine loop" then
    local co = coroutine.wrap(function() while true do end end)
    co()
  end
  conn:send(data)
end
return M
`))
	other := moontest.Dial(t, s.URL("/t"))
	for _, msg := range []string{"loop", "pcall loop", "coroutine loop"} {
		c := moontest.Dial(t, s.URL("/t"))
		c.Send(msg)
		c.ExpectClose(1011)
		s.WaitLog(t, "script error", "handler timeout (200ms) exceeded")
		// The VM (there is one) serves the next callback normally.
		other.Send("after " + msg)
		other.Expect("after " + msg)
	}
}

func TestSandbox(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local probes = {
  io = function() return io end,
  os = function() return os end,
  debug = function() return debug end,
  dofile = function() return dofile end,
  loadfile = function() return loadfile end,
  module = function() return module end,
  package = function() return package end,
  os_execute = function() return os.execute("true") end,
  require_parent = function() return require("..x") end,
  require_path = function() return require("../x") end,
  require_abs = function() return require("/etc/passwd") end,
  require_missing = function() return require("nope") end,
  rep = function() return #string.rep("x", 1e10) end,
  rep_method = function() return #(("x"):rep(1e9, ",")) end,
  format = function() return string.format("%999999999d", 1) end,
  dump = function() return string.dump(print) end,
  gc = function() return collectgarbage("collect") end,
  string_meta = function() local s = getmetatable("").__index; s.upper = nil; return ("a"):upper() end,
  load_env = function() return loadstring("return io")() end,
  setfenv = function() setfenv(1, {}); return 1 end,
  recursion = function() local function f(n) return f(n + 1) + 1 end return f(1) end,
  huge = function() return math.huge == 1/0 and -math.huge < -1e308 end,
}
function M.on_message(conn, name)
  local ok, res = pcall(probes[name])
  conn:send(name .. " " .. tostring(ok) .. " " .. tostring(res))
end
return M
`, "")
	c := moontest.Dial(t, s.URL("/t"))
	want := map[string]string{
		"io":              "io true nil",
		"huge":            "huge true true",
		"os":              "os true nil",
		"debug":           "debug true nil",
		"dofile":          "dofile true nil",
		"loadfile":        "loadfile true nil",
		"module":          "module true nil",
		"package":         "package true nil",
		"os_execute":      "os_execute false",
		"require_parent":  "require_parent false",
		"require_path":    "require_path false",
		"require_abs":     "require_abs false",
		"require_missing": "require_missing false",
		"rep":             "rep false",
		"rep_method":      "rep_method false",
		"format":          "format false",
		"dump":            "dump false",
		"gc":              "gc true 0",
		"load_env":        "load_env true nil",
		"recursion":       "recursion false",
	}
	for name, prefix := range want {
		c.Send(name)
		f := c.Next()
		if !strings.HasPrefix(f.Text(), prefix) {
			t.Errorf("%s: got %q, want prefix %q", name, f.Text(), prefix)
		}
	}
	// Changing the string table touches only this VM's copy; the process and
	// other routes are unaffected, which is all the sandbox promises.
	c.Send("string_meta")
	c.Next()
	c.Send("io")
	c.Expect("io true nil")
}

func TestRequireInsideScriptsDir(t *testing.T) {
	t.Parallel()
	s := route(t, `
local util = require "lib.util"
local again = require("lib.util")
local pkg = require "pkg"
assert(util == again)
return { on_open = function(conn) conn:send(util.greet("moon") .. " " .. pkg.name .. " " .. json.encode({1})) end }
`, "", "scripts/lib/util.lua", `return { greet = function(n) return "hello " .. n end }`,
		"scripts/pkg/init.lua", `return { name = "pkg" }`,
		"secret.lua", `return { leaked = true }`)
	c := moontest.Dial(t, s.URL("/t"))
	c.Expect("hello moon pkg [1]")
}

func TestModules(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
function M.on_open(conn)
  conn:join("room")
end
function M.on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "broadcast" then
    local n = ws.broadcast("room", "all: " .. arg)
    conn:send("sent to " .. n)
  elseif cmd == "others" then
    local n = ws.broadcast("room", "others: " .. arg, { except = conn })
    conn:send("sent to " .. n)
  elseif cmd == "binary" then
    ws.broadcast("room", arg, { kind = "binary", except = conn.id })
  elseif cmd == "members" then
    local ids = ws.room_members("room")
    conn:send(#ids .. " " .. ws.room_size("room") .. " " .. ws.room_size("none"))
  elseif cmd == "sendto" then
    local ok, err = ws.send(arg, "direct from " .. conn.id)
    conn:send(tostring(ok) .. " " .. tostring(err))
  elseif cmd == "closeid" then
    ws.close(arg, 4002, "closed by id")
  elseif cmd == "stats" then
    local st = ws.stats()
    conn:send(st.connections .. " " .. tostring(st.messages_in > 0) .. " " .. tostring(st.uptime >= 0))
  elseif cmd == "settings" then
    local parts = { ws.settings.name, tostring(#ws.settings.list) }
    for _, v in ipairs(ws.settings.list) do parts[#parts + 1] = v end
    for k in pairs(ws.settings.nested) do parts[#parts + 1] = k end
    parts[#parts + 1] = tostring(pcall(function() ws.settings.name = "x" end))
    parts[#parts + 1] = ws.settings.name
    conn:send(table.concat(parts, ","))
  elseif cmd == "ids" then
    conn:send(tostring(ws.node_id ~= "" and conn.id:sub(1, #ws.node_id) == ws.node_id))
  elseif cmd == "whoami" then
    conn:send(conn.id)
  elseif cmd == "byid" then
    local c = ws.conn(arg)
    conn:send(c and c.id or "none")
  elseif cmd == "store" then
    store.set("k", { a = 1 })
    store.incr("n", 5)
    conn:send(json.encode({ store.get("k"), store.get("n"), store.keys() }))
  elseif cmd == "crypto" then
    local tok = crypto.jwt_sign({ sub = "ann" }, "s3")
    local claims = crypto.jwt_verify(tok, "s3")
    conn:send(claims.sub .. " " .. crypto.sha256("abc"):sub(1, 8) .. " " .. #crypto.random(4))
  elseif cmd == "time" then
    conn:send(tostring(time.now() > 1e9) .. " " .. tostring(time.monotonic() >= 0))
  elseif cmd == "log" then
    log.warn("from script", { n = 1, t = { x = "y" } })
  end
end
return M
`, "settings = { name = \"demo\", list = [\"a\", \"b\"], nested = { k = 1 } }\n")
	// A connection that comes and goes first leaves a its slot, under a
	// new generation, so that a's id sorts after b's in the room's member
	// list: the order in which picking the last member found picked a.
	z := moontest.Dial(t, s.URL("/t"))
	moontest.WaitFor(t, "z to join", func() bool { return s.Router.RoomSize("room") == 1 })
	z.Close(1000)
	moontest.WaitFor(t, "z to go", func() bool { return s.Router.Stats().Connections == 0 })
	a := moontest.Dial(t, s.URL("/t"))
	b := moontest.Dial(t, s.URL("/t"))
	// on_open (which joins) runs on the lane after the handshake returns.
	moontest.WaitFor(t, "both to join", func() bool { return s.Router.RoomSize("room") == 2 })
	a.Send("broadcast hi")
	a.Expect("all: hi")
	a.Expect("sent to 2")
	b.Expect("all: hi")
	a.Send("others yo")
	a.Expect("sent to 1")
	b.Expect("others: yo")
	a.Send("binary \x01")
	b.ExpectBinary([]byte{1})
	a.Send("members")
	a.Expect("2 2 0")
	a.Send("settings")
	a.Expect("demo,2,a,b,k,false,demo")
	a.Send("ids")
	a.Expect("true")
	a.Send("stats")
	f := a.Next()
	if !strings.HasPrefix(f.Text(), "2 true true") {
		t.Fatalf("stats: %q", f.Text())
	}
	a.Send("store")
	a.Expect(`[{"a":1},5,["k","n"]]`)
	a.Send("crypto")
	a.Expect("ann ba7816bf 8")
	a.Send("time")
	a.Expect("true true")
	a.Send("log")
	s.WaitLog(t, "level=WARN", "from script", "route=/t", "conn=", "n=1")

	// Find b's id through the room, then address it directly.
	b.Send("byid nope")
	b.Expect("none")
	b.Send("stats")
	b.Next()
	a.Send("members")
	a.Expect("2 2 0")
	ids := roomIDs(t, s)
	for _, id := range ids {
		b.Send("byid " + id)
		if got := b.Next().Text(); got != id {
			t.Fatalf("ws.conn(%q) found %q", id, got)
		}
	}
	// b's own id, asked of b: ws.conn finds both members, and the room's
	// order says nothing about which is which (closing a's would leave b
	// waiting for a close that never comes).
	b.Send("whoami")
	bid := b.Next().Text()
	if !slices.Contains(ids, bid) {
		t.Fatalf("b's id %q is not among the room's %v", bid, ids)
	}
	a.Send("sendto nope-1")
	a.Expect("nil closed")
	for _, id := range ids {
		a.Send("sendto " + id)
	}
	// Both get one direct message (a's own included); a also gets two acks.
	got := map[string]int{}
	for range 3 {
		got[strings.SplitN(a.Next().Text(), " ", 2)[0]]++
	}
	if got["true"] != 2 || got["direct"] != 1 {
		t.Fatalf("a got %v", got)
	}
	if txt := b.Next().Text(); !strings.HasPrefix(txt, "direct from ") {
		t.Fatalf("b got %q", txt)
	}
	a.Send("closeid " + bid)
	b.ExpectClose(4002, "closed by id")
}

func roomIDs(t *testing.T, s *moontest.Server) []string {
	t.Helper()
	return s.Router.RoomMembers("room")
}

func TestTimers(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local ticks = 0
function M.on_start()
  timer.every(0.02, function()
    ticks = ticks + 1
    ws.broadcast("t", "tick " .. ticks)
    if ticks == 3 then error("timer error is logged, timer goes on") end
  end)
end
function M.on_open(conn)
  conn:join("t")
  local once = timer.after(0.01, function() conn:send("after") end)
  local never = timer.after(0.01, function() conn:send("never") end)
  assert(never:cancel() == true)
  assert(never:cancel() == false)
end
return M
`, "vms = 1\n")
	c := moontest.Dial(t, s.URL("/t"))
	seen := map[string]bool{}
	for len(seen) < 5 {
		txt := c.Next().Text()
		if txt == "never" {
			t.Fatal("a cancelled timer fired")
		}
		if txt == "after" || strings.HasPrefix(txt, "tick ") {
			seen[txt] = true
		}
	}
	if !seen["after"] {
		t.Fatal("timer.after did not fire")
	}
	s.WaitLog(t, "script error", "callback=timer", "timer error is logged")
	// Timers keep going after the error.
	for {
		if txt := c.Next().Text(); strings.HasPrefix(txt, "tick ") {
			var n int
			fmt.Sscanf(txt, "tick %d", &n)
			if n > 3 {
				break
			}
		}
	}
}

func TestTimersCannotStartWhileLoading(t *testing.T) {
	t.Parallel()
	_, err := startErr(t, `timer.after(1, function() end) return {}`)
	if err == nil || !strings.Contains(err.Error(), "t.lua:1: timers cannot start while the script loads") {
		t.Fatalf("got %v", err)
	}
}

func TestOnStartRunsOncePerRoute(t *testing.T) {
	t.Parallel()
	s := route(t, `
return {
  on_start = function() store.incr("starts") end,
  on_open = function(conn) conn:send(tostring(store.get("starts"))) end,
}
`, "vms = 4\n")
	moontest.WaitFor(t, "on_start", func() bool { v, _ := s.Store.Get("starts"); return v != nil })
	c := moontest.Dial(t, s.URL("/t"))
	c.Expect("1")
}

func TestPerConnectionStateOnPinnedVM(t *testing.T) {
	t.Parallel()
	// With many VMs, a connection always meets the same one, so a per-VM
	// table keyed by conn.id works.
	s := route(t, `
local count = {}
return {
  on_open = function(conn) count[conn.id] = 0 end,
  on_message = function(conn)
    count[conn.id] = count[conn.id] + 1
    conn:send(tostring(count[conn.id]))
  end,
  on_close = function(conn) count[conn.id] = nil end,
}
`, "vms = 4\n")
	var clients []*moontest.Client
	for range 8 {
		clients = append(clients, moontest.Dial(t, s.URL("/t")))
	}
	for i := 1; i <= 20; i++ {
		for _, c := range clients {
			c.Send("x")
		}
		for _, c := range clients {
			c.Expect(fmt.Sprint(i))
		}
	}
}

func TestTraceLoadErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ script, want string }{
		{"local x = = 1", "t.lua:1: "},
		{"\n\nlocal function f()\n", "t.lua:4: "},
		{"error('top level failure')", "t.lua:1: top level failure"},
		{"return 42", "t.lua: the script must return a table of callbacks (got number)"},
		{"return { on_message = 'nope' }", "t.lua: on_message must be a function (got string)"},
		{"while true do end", "handler timeout"},
		{"local x = require 'missing.mod'", "t.lua:1: require \"missing.mod\": not found in the scripts folder"},
	}
	for _, tc := range cases {
		_, err := startErr(t, tc.script)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("script %q: got %v, want %q", tc.script, err, tc.want)
		}
	}
}

func TestSlowHandlerDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	// Two VMs: a busy one does not stall connections on the other.
	s := route(t, `
return { on_message = function(conn, data)
  if data == "busy" then local t = time.monotonic() while time.monotonic() - t < 0.3 do end end
  conn:send(data)
end }
`, "vms = 2\n")
	a := moontest.Dial(t, s.URL("/t"))
	b := moontest.Dial(t, s.URL("/t")) // round-robin: the other VM
	a.Send("busy")
	start := time.Now()
	b.Send("quick")
	b.Expect("quick")
	if time.Since(start) > 5*time.Second {
		t.Fatal("a busy VM blocked the other")
	}
	a.Expect("busy")
}

func TestTimersRunInDeadlineOrder(t *testing.T) {
	t.Parallel()
	s := route(t, `
return { on_message = function(conn)
  for _, tm in ipairs({ { 0.03, "c" }, { 0.01, "a" }, { 0.02, "b" }, { 0.01, "a2" }, { 0, "z" } }) do
    timer.after(tm[1], function() conn:send(tm[2]) end)
  end
end }
`, "vms = 1\n")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("go")
	for _, want := range []string{"z", "a", "a2", "b", "c"} {
		c.Expect(want)
	}
}

func TestTimerLimitAndFloor(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local held = {}
local function nop() end
local function try(f, secs)
  local ok, err = pcall(f, secs, nop)
  if ok then err:cancel() return "ok" end
  return err
end
function M.on_message(conn, data)
  if data == "floor" then
    conn:send(table.concat({ try(timer.every, 0.009), try(timer.every, 0.01), try(timer.after, 0), try(timer.after, -1) }, "|"))
  elseif data == "fill" then
    for i = 1, 1000 do held[i] = timer.after(3600, nop) end
    local over = try(timer.every, 1)
    held[1]:cancel()
    conn:send(over .. "|" .. try(timer.every, 1))
  end
end
return M
`, "vms = 1\n")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("floor")
	parts := strings.Split(c.Next().Text(), "|")
	if len(parts) != 4 || !strings.Contains(parts[0], "timer.every needs at least 0.01 seconds") ||
		parts[1] != "ok" || parts[2] != "ok" || !strings.Contains(parts[3], "seconds must be between 0 and one year") {
		t.Fatalf("floor: %q", parts)
	}
	// A VM holds 1,000 live timers; a cancelled one frees its place.
	c.Send("fill")
	parts = strings.Split(c.Next().Text(), "|")
	if len(parts) != 2 || !strings.HasSuffix(parts[0], "too many timers (limit 1000 live timers per VM): cancel the ones no longer needed") || parts[1] != "ok" {
		t.Fatalf("fill: %q", parts)
	}
}

func TestAfterZeroChainDoesNotStarveConnections(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local steps, spinning = 0, false
local function spin()
  steps = steps + 1
  if spinning then timer.after(0, spin) end
end
function M.on_message(conn, data)
  if data == "spin" then
    spinning = true
    timer.after(0, spin)
  elseif data == "stop" then
    spinning = false
  end
  conn:send(data .. " " .. steps)
end
return M
`, "vms = 1\n")
	// One VM: the chain and both clients share its lane.
	a := moontest.Dial(t, s.URL("/t"))
	b := moontest.Dial(t, s.URL("/t"))
	a.Send("spin")
	if !strings.HasPrefix(a.Next().Text(), "spin ") {
		t.Fatal("no spin reply")
	}
	// Every round trip completes (each read has moontest's deadline) while
	// the chain goes on.
	var first, last int
	for i := range 100 {
		msg := fmt.Sprint("echo", i)
		b.Send(msg)
		got := b.Next().Text()
		var n int
		if _, err := fmt.Sscanf(got, msg+" %d", &n); err != nil {
			t.Fatalf("round trip %d: %q", i, got)
		}
		if i == 0 {
			first = n
		}
		last = n
	}
	if last <= first {
		t.Fatalf("the chain did not run between round trips (%d, then %d)", first, last)
	}
	a.Send("stop")
	if !strings.HasPrefix(a.Next().Text(), "stop ") {
		t.Fatal("no stop reply")
	}
}

func TestTimerErrorsAndTimeoutsDoNotStopTheBatch(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "200ms"
vms = 1

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", `
return { on_message = function(conn)
  -- Due together, so one batch runs all three, in order.
  timer.after(0, function() error("first fails") end)
  timer.after(0, function() while true do end end)
  timer.after(0, function() conn:send("third ran") end)
end }
`))
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("go")
	c.Expect("third ran")
	s.WaitLog(t, "script error", "callback=timer", "first fails")
	s.WaitLog(t, "script error", "callback=timer", "handler timeout (200ms) exceeded")
	// Timer errors cost no connection.
	c.Send("go")
	c.Expect("third ran")
}

// TestJoinLeaveAnnouncements: conn:join's joined message reaches the
// room's other members, its left message reaches those who stay whether
// the member leaves or closes, and the options are checked.
func TestJoinLeaveAnnouncements(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
function M.on_open(conn)
  local name = conn:query("name")
  if name then
    assert(conn:join("lobby", { joined = "hi " .. name, left = "bye " .. name }))
  else
    assert(conn:join("lobby"))
  end
  conn:send("in")
end
function M.on_message(conn, data)
  if data == "leave" then conn:leave("lobby"); conn:send("out")
  elseif data == "quiet" then conn:join("lobby", {}); conn:send("quiet")
  elseif data == "bad" then
    local errs = {}
    for _, o in ipairs({ { joined = 1 }, { lef = "x" }, "x" }) do
      local ok, err = pcall(conn.join, conn, "x", o)
      errs[#errs + 1] = tostring(ok) .. ":" .. tostring(err):match("%(anonymous%) %((.*)%)$")
    end
    local ok, err = conn:join("y", { left = string.rep("x", 5000) })
    errs[#errs + 1] = tostring(ok) .. ":" .. tostring(err)
    conn:send(table.concat(errs, "|"))
  end
end
return M
`, "")
	watcher := moontest.Dial(t, s.URL("/t"))
	watcher.Expect("in")
	ann := moontest.Dial(t, s.URL("/t?name=ann"))
	ann.Expect("in") // ann does not hear her own hello
	watcher.Expect("hi ann")
	ann.Send("leave")
	ann.Expect("out")
	watcher.Expect("bye ann")

	bob := moontest.Dial(t, s.URL("/t?name=bob"))
	bob.Expect("in")
	watcher.Expect("hi bob")
	bob.Close(1000)
	watcher.Expect("bye bob")

	// Joining again without options withdraws the left message.
	cy := moontest.Dial(t, s.URL("/t?name=cy"))
	cy.Expect("in")
	watcher.Expect("hi cy")
	cy.Send("quiet")
	cy.Expect("quiet")
	cy.Close(1000)
	watcher.Send("bad")
	watcher.Expect("false:joined must be a string|false:unknown option lef (joined, left)|false:options must be a table|nil:join/leave announcement longer than 4096 bytes")
}

package lua_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/lua"
)

// TestRequireStaysInTheScriptsFolder: require does not follow a symlink
// out of the scripts folder (a link inside it is fine).
func TestRequireStaysInTheScriptsFolder(t *testing.T) {
	t.Parallel()
	outside := filepath.Join(t.TempDir(), "secret.lua")
	if err := os.WriteFile(outside, []byte(`return "the secret"`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := route(t, `
local M = {}
function M.on_message(conn, name)
  local ok, v = pcall(require, name)
  conn:send(name .. " " .. tostring(ok) .. " " .. tostring(v))
end
return M
`, "", "scripts/inner.lua", `return "inner"`)
	for link, target := range map[string]string{"leak.lua": outside, "alias.lua": "inner.lua"} {
		if err := os.Symlink(target, filepath.Join(s.Dir, "scripts", link)); err != nil {
			t.Fatal(err)
		}
	}
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("alias")
	c.Expect("alias true inner")
	c.Send("leak")
	if got := c.Next().Text(); got == "leak true the secret" {
		t.Fatalf("require followed a symlink out of the scripts folder: %q", got)
	}
}

// TestSharedValuesAreReadOnly: what one connection's callback does to
// ws, ws.settings or the string metatable must not change what the next
// connection's callback sees on the same VM; reading and iterating work
// as on plain tables.
func TestSharedValuesAreReadOnly(t *testing.T) {
	t.Parallel()
	s := route(t, `
local M = {}
local attempts = {
  set = function() ws.settings.secret = "x" end,
  nested = function() ws.settings.tokens[1] = "x" end,
  rawset = function() rawset(ws.settings, "secret", "x") end,
  insert = function() table.insert(ws.settings.tokens, "x") end,
  remove = function() table.remove(ws.settings.tokens) end,
  sort = function() table.sort(ws.settings.tokens) end,
  setmt = function() setmetatable(ws.settings, nil) end,
  getmt = function() getmetatable(ws.settings).__index.secret = "x" end,
  ws = function() ws.broadcast = function() end end,
  strmt = function() getmetatable("").__index = { upper = function() return "pwned" end } end,
  strmt2 = function() setmetatable("", {}) end,
  pairs = function() local _, inner = pairs(ws.settings) inner.secret = "x" end,
  pairsnext = function()
    -- Called by hand; the keys come in no fixed order.
    local it, st = pairs(ws.settings)
    local k, v = it(st, nil)
    while k ~= "tokens" do k, v = it(st, k) end
    v[1] = "x"
  end,
  pairsws = function() local _, inner = pairs(ws) inner.broadcast = nil end,
  pairsnested = function() for k, v in pairs(ws) do if k == "settings" then v.secret = "x" end end end,
  strlib = function() string.upper = function() return "pwned" end end,
  strlocal = function() local s = string s.upper = function() return "pwned" end end,
  strrawset = function() rawset(string, "upper", function() return "pwned" end) end,
  strindex = function() string.__index.upper = function() return "pwned" end end,
}
function M.on_message(conn, name)
  if name == "read" then
    local keys = {}
    for k in pairs(ws.settings) do keys[#keys + 1] = k end
    table.sort(keys)
    local toks = {}
    for _, v in ipairs(ws.settings.tokens) do toks[#toks + 1] = v end
    local wskeys = {}
    for k in pairs(ws) do wskeys[#wskeys + 1] = k end
    table.sort(wskeys)
    local nested = {}
    for k, v in pairs(ws.settings) do
      if k == "tokens" then nested[#nested + 1] = tostring(getmetatable(v)) end
    end
    conn:send(table.concat(keys, ",") .. " " .. table.concat(toks, ",") .. " " .. #ws.settings.tokens ..
      " " .. tostring(ws.settings.secret) .. " " .. ("abc"):upper() .. " " .. type(ws.broadcast) ..
      " " .. string.upper("x") .. ("%s"):format("y") .. ("aXb"):gsub("X", "-") .. " " .. table.concat(wskeys, ",") ..
      " " .. table.concat(nested, ","))
    return
  end
  local ok, err = pcall(attempts[name])
  conn:send(name .. " " .. tostring(ok) .. " " .. tostring(err):gsub("^.-:%d+: ", ""))
end
return M
`, `vms = 1
settings = { secret = "s", tokens = ["b", "a"] }
`)
	c := moontest.Dial(t, s.URL("/t"))
	for name, want := range map[string]string{
		"set":    "set false ws.settings is read-only",
		"nested": "nested false ws.settings is read-only",
		"rawset": "rawset false rawset: ws.settings is read-only",
		"insert": "insert false table.insert: ws.settings is read-only",
		"remove": "remove false table.remove: ws.settings is read-only",
		"sort":   "sort false table.sort: ws.settings is read-only",
		"setmt":  "setmt false cannot change a protected metatable",
		"getmt":  "", // getmetatable gives a message string: nothing to reach
		"ws":     "ws false ws is read-only",
		"strmt":  "",
		"strmt2": "strmt2 false cannot change a protected metatable",
		// pairs hands out an iterator, not the private copy, and nested
		// tables as their read-only views.
		"pairs":       "pairs false ws.settings is read-only",
		"pairsnext":   "pairsnext false ws.settings is read-only",
		"pairsws":     "pairsws false ws is read-only",
		"pairsnested": "pairsnested false ws.settings is read-only",
		// The string library, where strings look up their methods.
		"strlib":    "strlib false string is read-only",
		"strlocal":  "strlocal false string is read-only",
		"strrawset": "strrawset false rawset: string is read-only",
		"strindex":  "", // gopher-lua's string library was its own __index
	} {
		c.Send(name)
		if got := c.Next().Text(); want != "" && got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
		// The next connection sees the values unchanged.
		d := moontest.Dial(t, s.URL("/t"))
		d.Send("read")
		d.Expect("secret,tokens b,a 2 s ABC function Xya-b broadcast,close,conn,history,node_id,presence,room_members,room_size,route,send,settings,stats ws.settings is read-only")
	}
}

// TestVersionIsSalted: a route's version (public on /routes) covers its
// settings, which may hold secrets; it must not be a plain hash that a
// dictionary guess of the settings could reproduce. Within one engine it
// is stable, so an unchanged route still keeps running across reloads.
func TestVersionIsSalted(t *testing.T) {
	t.Parallel()
	version := func(eng *lua.Engine, secret string) string {
		r, err := eng.NewRoute(lua.RouteConfig{
			Pattern:  "/t",
			FS:       fstest.MapFS{"t.lua": {Data: []byte("return {}")}},
			Script:   "t.lua",
			Settings: map[string]any{"jwt_secret": secret},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Release()
		return r.Version()
	}
	a := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler)})
	defer a.Close()
	b := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler)})
	defer b.Close()
	first, again := version(a, "dev-secret"), version(a, "dev-secret")
	if first != again {
		t.Fatal("the version of an unchanged route changed")
	}
	if version(a, "dev-secret") == version(a, "other") {
		t.Fatal("the version does not change with the settings")
	}
	if version(a, "dev-secret") == version(b, "dev-secret") {
		t.Fatal("two engines give the same version: it is not salted")
	}
}

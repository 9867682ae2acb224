package lua_test

import (
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/scripts"
)

// lint builds the route t.lua of files (with settings) as moonwire check
// does and returns its diagnostics, one "file:line: warning: msg" string
// each (Setting ones as "settings.KEY").
func lint(t *testing.T, files map[string]string, settings map[string]any) []string {
	t.Helper()
	mfs := fstest.MapFS{}
	for name, src := range files {
		mfs[name] = &fstest.MapFile{Data: []byte(src)}
	}
	return lintFS(t, mfs, "t.lua", settings)
}

func lintFS(t *testing.T, fsys fs.FS, script string, settings map[string]any) []string {
	t.Helper()
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler), Modules: []lua.Module{json.New(json.Limits{})}})
	t.Cleanup(eng.Close)
	r, err := eng.NewRoute(lua.RouteConfig{Pattern: "/t", FS: fsys, Script: script, Settings: settings})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	defer r.Release()
	var out []string
	for _, d := range r.Lint() {
		if d.Setting != "" {
			out = append(out, "settings."+d.Setting)
			continue
		}
		out = append(out, d.String())
	}
	return out
}

// wantDiags fails unless got has exactly one entry per want, each
// containing its want (in order).
func wantDiags(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("diagnostic %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func TestLintUnknownCallbacks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		want         []string
	}{
		{"typo", "local M = {}\n\nfunction M.on_mesage(conn, data)\nend\nreturn M\n",
			[]string{"t.lua:3: warning: on_mesage is not a callback moonwire calls; did you mean on_message?"}},
		{"camel case", "return {\n  onMessage = function() end,\n}\n",
			[]string{"t.lua:2: warning: onMessage is not a callback moonwire calls; did you mean on_message?"}},
		{"near miss without prefix", "local M = {}\nM.open = function() end\nreturn M\n",
			[]string{"t.lua:2: warning: open is not a callback moonwire calls; did you mean on_open?"}},
		{"far from any", "local M = {}\nfunction M.on_connection_established() end\nreturn M\n",
			[]string{"t.lua:2: warning: on_connection_established is not a callback moonwire calls (they are on_handshake,"}},
		{"not a function", "local M = {}\n\nM.on_closed = true\nreturn M\n",
			[]string{"t.lua:3: warning: on_closed is not a callback moonwire calls; did you mean on_close?"}},
		{"defined in a module", "local lib = require('lib')\nreturn { on_open = lib.open, on_mesage = lib.msg }\n",
			[]string{"lib.lua:3: warning: on_mesage"}},
		{"known ones and helpers", "local M = {}\nfunction M.on_open() end\nfunction M.on_message() end\nfunction M.on_close() end\n" +
			"function M.on_handshake() end\nfunction M.on_start() end\nfunction M.on_reload() end\nfunction M.on_http() end\n" +
			"function M.format() end\nM.once = 1\nM.version = 2\nreturn M\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := lint(t, map[string]string{"t.lua": tc.script, "lib.lua": "local L = {}\nfunction L.open() end\nfunction L.msg() end\nreturn L\n"}, nil)
			wantDiags(t, got, tc.want...)
		})
	}
}

func TestLintUnreadSettings(t *testing.T) {
	t.Parallel()
	settings := map[string]any{"tokens": []any{"a"}, "interval": int64(5), "unused": true}
	for _, tc := range []struct {
		name   string
		files  map[string]string
		unread []string // nil: no warning (all read, or the reads cannot be followed)
	}{
		{"dotted", map[string]string{"t.lua": "local M = {}\nfunction M.on_open() local x = ws.settings.tokens end\nreturn M\n"},
			[]string{"settings.interval", "settings.unused"}},
		{"bracket and alias", map[string]string{"t.lua": `local s = ws.settings or {}
local t = s
local M = {}
function M.on_open(conn) conn:send(tostring(ws.settings["interval"]) .. tostring(t.tokens)) end
return M
`}, []string{"settings.unused"}},
		{"read in a required module", map[string]string{
			"t.lua":          "local cfg = require('lib.cfg')\nreturn {}\n",
			"lib/cfg.lua":    "local other = require('lib.other')\nreturn { t = ws.settings.tokens[1] }\n",
			"lib/other.lua":  "return { i = ws.settings.interval, u = ws.settings.unused }\n",
			"lib/unused.lua": "return ws.settings.never\n",
		}, nil},
		{"module required in a callback", map[string]string{
			"t.lua":   "return { on_open = function() local l = require('lib') end }\n",
			"lib.lua": "return { ws.settings.tokens, ws.settings.interval, ws.settings.unused }\n",
		}, nil},
		{"all read", map[string]string{"t.lua": "local a, b, c = ws.settings.tokens, ws.settings.interval, ws.settings.unused\nreturn {}\n"}, nil},
		// Reads the analysis cannot follow: any key may be read, so none is
		// reported.
		{"getter", map[string]string{"t.lua": `local function setting(name, default)
  return tonumber(ws.settings[name]) or default
end
function get(k) return ws.settings[k] end
return { on_open = function() local a, b = setting("interval", 5), get("tokens") end }
`}, []string{"settings.unused"}},
		{"getter never called", map[string]string{"t.lua": "local function get(k) return ws.settings[k] end\nreturn {}\n"},
			[]string{"settings.interval", "settings.tokens", "settings.unused"}},
		{"computed key", map[string]string{"t.lua": "local function get(t) return ws.settings[t.k] end\nreturn {}\n"}, nil},
		{"getter called with a variable", map[string]string{"t.lua": "local function get(k) return ws.settings[k] end\nlocal n = 'tokens'\nget('interval')\nget(n)\nreturn {}\n"}, nil},
		{"getter passed on", map[string]string{"t.lua": "local function get(k) return ws.settings[k] end\nlocal ok = pcall(get, 'interval')\nreturn {}\n"}, nil},
		{"getter changes its key", map[string]string{"t.lua": "local function get(k) k = k .. 's' return ws.settings[k] end\nget('token')\nreturn {}\n"}, nil},
		{"getter shadows its key", map[string]string{"t.lua": "local function get(k) local k = k .. 's' return ws.settings[k] end\nget('token')\nreturn {}\n"}, nil},
		{"getter loops over keys", map[string]string{"t.lua": "local function get(k) for _, k in ipairs({'interval', 'unused'}) do local v = ws.settings[k] end end\nget('tokens')\nreturn {}\n"}, nil},
		{"getter's key read in a closure", map[string]string{"t.lua": "local function get(k) return (function() return ws.settings[k] end)() end\nget('tokens')\nreturn {}\n"}, nil},
		{"method getter", map[string]string{"t.lua": "local M = {}\nfunction M.get(k) return ws.settings[k] end\nM.get('tokens')\nreturn M\n"}, nil},
		{"pairs", map[string]string{"t.lua": "for k, v in pairs(ws.settings) do end\nreturn {}\n"}, nil},
		{"alias iterated", map[string]string{"t.lua": "local s = ws.settings\nfor k in pairs(s) do end\nreturn {}\n"}, nil},
		{"passed on", map[string]string{"t.lua": "local json = require('json')\nlocal x = json.encode(ws.settings or {})\nreturn {}\n"}, nil},
		{"stored in a table", map[string]string{"t.lua": "local M = {}\nM.cfg = ws.settings\nreturn M\n"}, nil},
		{"method call", map[string]string{"t.lua": "local ok = pcall(function() return ws.settings:get('x') end)\nreturn {}\n"}, nil},
		{"ws aliased", map[string]string{"t.lua": "local w = ws\nreturn {}\n"}, nil},
		{"ws indexed", map[string]string{"t.lua": "local k = 'settings'\nlocal s = ws[k]\nreturn {}\n"}, nil},
		{"global table", map[string]string{"t.lua": "local s = _G['ws'].settings\nreturn {}\n"}, nil},
		{"computed require", map[string]string{"t.lua": "local name = 'lib'\nlocal ok = pcall(require, name)\nreturn {}\n", "lib.lua": "return {}\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantDiags(t, lint(t, tc.files, settings), tc.unread...)
		})
	}
}

func TestLintGlobalsInFunctions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		want         []string
	}{
		{"assigned in a callback", `count = 0
local M = {}
function M.on_open(conn)
  count = count + 1
  last_user = conn.id
end
return M
`, []string{
			"t.lua:4: warning: global count assigned in a function",
			"t.lua:5: warning: global last_user assigned in a function",
		}},
		{"function defined in a function", "local M = {}\nfunction M.on_start()\n  function helper() end\nend\nreturn M\n",
			[]string{"t.lua:3: warning: global helper"}},
		{"in a nested closure and a loop", "local M = {}\nfunction M.on_start()\n  for i = 1, 2 do\n    timer.after(1, function()\n      if i then\n        seen = i\n      end\n    end)\n  end\nend\nreturn M\n",
			[]string{"t.lua:6: warning: global seen"}},
		{"multiple assignment", "return { on_open = function(conn)\n  local a\n  a, b = 1, 2\nend }\n",
			[]string{"t.lua:3: warning: global b"}},
		{"local of an inner block is gone after it", "return { on_open = function()\n  do local x = 1 end\n  x = 2\nend }\n",
			[]string{"t.lua:3: warning: global x"}},
		{"fine", `VERSION = 1
function helper() end
if VERSION then TOP = true end
local state, M = {}, {}
local function rec(n) if n > 0 then return rec(n - 1) end end
local f = function(n) return f end
function M.on_open(conn, data)
  local n = 1
  n = n + 1
  state[conn.id] = data
  conn = nil
  data = nil
  M.x = 1
  state = {}
  for k, v in pairs(state) do k, v = v, k end
  for i = 1, 2 do i = i + 1 end
  repeat local done = true until done
  local g = function(a, ...) a = ... end
end
function M:method() self = nil end
return M
`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantDiags(t, lint(t, map[string]string{"t.lua": tc.script}, nil), tc.want...)
		})
	}
}

// TestLintRequiredModuleGlobals: modules are linted too, under their own
// file name.
func TestLintRequiredModuleGlobals(t *testing.T) {
	t.Parallel()
	got := lint(t, map[string]string{
		"t.lua":          "local util = require('lib.util')\nreturn {}\n",
		"lib/util.lua":   "local U = {}\nfunction U.bump()\n  hits = (hits or 0) + 1\nend\nreturn U\n",
		"lib/unused.lua": "return function() leak = 1 end\n",
	}, nil)
	wantDiags(t, got, "lib/util.lua:3: warning: global hits")
}

// TestLintBuiltinScripts: the shipped scripts lint clean with the settings
// the default config gives them.
func TestLintBuiltinScripts(t *testing.T) {
	t.Parallel()
	settings := map[string]map[string]any{
		"auth.lua":    {"tokens": []any{"dev-token"}, "jwt_secret": "dev-secret"},
		"chat.lua":    {"history": int64(20)},
		"monitor.lua": {"tokens": []any{"monitor-token"}, "interval": int64(5)},
	}
	names, err := fs.Glob(scripts.FS, "*.lua")
	if err != nil || len(names) == 0 {
		t.Fatalf("no built-in scripts: %v", err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.lua") {
			continue
		}
		t.Run(path.Base(name), func(t *testing.T) {
			t.Parallel()
			wantDiags(t, lintFS(t, scripts.FS, name, settings[name]))
		})
	}
}

// TestLintPluginExampleScripts: the custom build's example scripts (which
// moonwire check cannot load without that build) lint clean too.
func TestLintPluginExampleScripts(t *testing.T) {
	t.Parallel()
	fsys := os.DirFS("../../examples/plugin/scripts")
	names, err := fs.Glob(fsys, "*.lua")
	if err != nil || len(names) == 0 {
		t.Fatalf("no example scripts: %v", err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wantDiags(t, lintFS(t, fsys, name, nil))
		})
	}
}

// TestLintUnreadSettingSuggestsTheReadOne: a misspelt key in the config
// names the key the script reads.
func TestLintUnreadSettingSuggestsTheReadOne(t *testing.T) {
	t.Parallel()
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(eng.Close)
	r, err := eng.NewRoute(lua.RouteConfig{
		Pattern:  "/t",
		FS:       fstest.MapFS{"t.lua": {Data: []byte("local every = ws.settings.interval or 5\nreturn {}\n")}},
		Script:   "t.lua",
		Settings: map[string]any{"intervall": int64(10)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	ds := r.Lint()
	if len(ds) != 1 || ds[0].Setting != "intervall" ||
		ds[0].Msg != "route /t: settings.intervall is never read by t.lua or the modules it requires; did you mean interval? (the script reads it, the config does not set it)" {
		t.Fatalf("got %+v", ds)
	}
}

// TestLintFollowsChatsGetter: chat.lua reads its settings through a
// getter (setting("history", 0)); its keys are followed, so a misspelt one
// in the config is caught.
func TestLintFollowsChatsGetter(t *testing.T) {
	t.Parallel()
	got := lintFS(t, scripts.FS, "chat.lua", map[string]any{"history": int64(20), "history_ttl": int64(60), "histroy_rooms": int64(5)})
	wantDiags(t, got, "settings.histroy_rooms")
}

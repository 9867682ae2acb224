package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// lintFiles is a project whose scripts load and run but hold each mistake
// check warns about.
var lintFiles = map[string]string{
	"moonwire.toml": `[[routes]]
path = "/a"
script = "typo.lua"
settings = { greeting = "hi", greting = "oops" }

[[routes]]
path = "/b"
script = "typo.lua"

[[routes]]
path = "/c"
script = "dynamic.lua"

[routes.settings]
anything = 1
`,
	"scripts/typo.lua": `local M = {}
function M.on_open(conn)
  conn:send(ws.settings.greeting or "hello")
  last = conn.id
end

function M.on_mesage(conn, data)
  conn:send(data)
end
return M
`,
	// Reads its settings by a computed key: none can be called unread.
	"scripts/dynamic.lua": `local function setting(k) return ws.settings[k] end
return { on_open = function(conn) conn:send(tostring(setting("anything"))) end }
`,
}

func TestCheckWarnsOfScriptMistakes(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, lintFiles)
	file := filepath.Join(dir, "moonwire.toml")
	typo := filepath.Join(dir, "scripts", "typo.lua")
	want := []string{
		file + ":4: warning: route /a: settings.greting is never read by typo.lua or the modules it requires",
		typo + ":4: warning: global last assigned in a function: ",
		typo + ":7: warning: on_mesage is not a callback moonwire calls; did you mean on_message?",
		file + ": ok (3 routes)",
	}
	code, out, errOut := runCmd(t, "check", "-config", file)
	if code != 0 {
		t.Fatalf("exit %d, want 0 (warnings do not fail without -strict)\n%s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d (routes sharing a script warn once; dynamic.lua not at all):\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %q\nwant %q...", i, lines[i], w)
		}
	}

	code, out, _ = runCmd(t, "check", "-strict", "-config", file)
	if code != 1 || !strings.Contains(out, file+": 3 warning(s), failing (-strict)") || strings.Contains(out, ": ok (") {
		t.Fatalf("-strict: exit %d, want 1 and the count\n%s", code, out)
	}
}

// TestCheckStrictCountsConfigWarnings: -strict fails on the config's own
// warnings too.
func TestCheckStrictCountsConfigWarnings(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": "[admin]\nlisten = \"0.0.0.0:0\"\n\n[[routes]]\npath = \"/e\"\nscript = \"e.lua\"\n",
		"scripts/e.lua": "return { on_message = function(conn, d) conn:send(d) end }\n",
	})
	file := filepath.Join(dir, "moonwire.toml")
	code, out, _ := runCmd(t, "check", "-config", file)
	if code != 0 || !strings.Contains(out, ": warning: ") {
		t.Fatalf("exit %d, want 0 and a warning\n%s", code, out)
	}
	if code, out, _ = runCmd(t, "check", "-strict", "-config", file); code != 1 {
		t.Fatalf("-strict: exit %d, want 1\n%s", code, out)
	}
}

// TestCheckStrictShippedConfigs: the built-in scripts and the examples lint
// clean.
func TestCheckStrictShippedConfigs(t *testing.T) {
	t.Parallel()
	configs := []string{""} // the embedded default
	found, _ := filepath.Glob("../examples/*/*.toml")
	configs = append(configs, found...)
	for _, cfg := range configs {
		if filepath.Base(filepath.Dir(cfg)) == "plugin" {
			continue // needs its custom build; its scripts are linted in plugins/lua
		}
		args := []string{"check", "-strict"}
		if cfg != "" {
			args = append(args, "-config", cfg)
		}
		code, out, errOut := runCmd(t, args...)
		if code != 0 || strings.Contains(out, "warning:") {
			t.Errorf("check -strict %q: exit %d\n%s%s", cfg, code, out, errOut)
		}
	}
}

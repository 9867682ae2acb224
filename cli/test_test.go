package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/scripttest"
	"github.com/moonwire/moonwire/router/config"
)

// TestLuaTestsOfBuiltinScripts runs the built-in scripts' *_test.lua
// files, as `moonwire test -config scripts/default.toml` does, so that go
// test ./... (and CI) covers them.
func TestLuaTestsOfBuiltinScripts(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "test", "-config", "../scripts/default.toml")
	if code != 0 || !strings.Contains(out, " 0 failed") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"echo_test.lua", "chat_test.lua", "auth_test.lua", "monitor_test.lua"} {
		if !strings.Contains(out, f) {
			t.Errorf("%s did not run:\n%s", f, out)
		}
	}
}

// TestLuaTestsOfEmbeddedScripts: without -config the built-in config's
// tests run from the binary's own copy.
func TestLuaTestsOfEmbeddedScripts(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "test", "-run", "echo|binary")
	if code != 0 || !strings.Contains(out, "<embedded>/echo_test.lua") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// TestLuaTestsOfTutorial runs examples/tutorial's Lua tests.
func TestLuaTestsOfTutorial(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "test", "-config", "../examples/tutorial/moonwire.toml")
	if code != 0 || !strings.Contains(out, "tutorial_test.lua") || !strings.Contains(out, " 0 failed") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

const testConfig = `
[scripts]
dir = "."

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/gate"
script = "gate.lua"
settings = { greeting = "hello" }
`

const echoScript = `
local M = {}
function M.on_message(conn, data, kind) conn:send(data, kind) end
return M
`

// gate.lua: refuses without ?key=, greets with settings and the store,
// answers plain HTTP, closes on "bye".
const gateScript = `
local M = {}
function M.on_handshake(req)
  if req.query.key ~= "k" then return false, 403, "no key" end
end
function M.on_open(conn)
  conn:send(ws.settings.greeting .. " " .. tostring(store.get("name")))
end
function M.on_message(conn, data)
  if data == "bye" then conn:close(4001, "asked") end
end
function M.on_http(req)
  return 201, { ["X-Seen"] = req.method }, "got " .. req.body
end
return M
`

// luaTests writes a project with the given test file and runs moonwire
// test on it.
func luaTests(t *testing.T, testFile string, args ...string) (int, string, string) {
	t.Helper()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": testConfig, "echo.lua": echoScript, "gate.lua": gateScript, "x_test.lua": testFile,
	})
	return runCmd(t, append([]string{"test", "-config", filepath.Join(dir, "moonwire.toml")}, args...)...)
}

const mixedTests = `test("passes", function(t)
  local c = t:connect("/echo")
  c:send("a")
  c:expect("a")
end)

test("eq fails", function(t)
  t:eq({ 1, { x = "y" } }, { 1, { x = "z" } }, "tables differ")
end)

test("lua error", function(t)
  local x = nil
  return x.field
end)

test("skipped", function(t)
  t:skip("not today")
end)

test("subtests", function(t)
  t:run("good", function(t) t:ok(true) end)
  t:run("bad", function(t)
    t:log("about to fail")
    t:match("hello", "^bye")
  end)
end)
`

func TestLuaTestsReportFailures(t *testing.T) {
	t.Parallel()
	code, out, _ := luaTests(t, mixedTests)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"--- FAIL: eq fails (",
		"x_test.lua:8)\n    tables differ\n    got:  {1, {x = \"y\"}}\n    want: {1, {x = \"z\"}}\n",
		"--- FAIL: lua error (",
		"x_test.lua:13)\n    attempt to index a non-table object(nil) with key 'field'",
		"--- FAIL: subtests/bad (",
		"x_test.lua:24)\n    ",
		"x_test.lua:23: about to fail\n",
		`"hello" does not match "^bye"`,
		"--- FAIL: subtests (",
		"\nFAIL ",
		"\n1 passed, 3 failed, 1 skipped\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"--- PASS", "=== RUN", "--- SKIP"} {
		if strings.Contains(out, not) {
			t.Errorf("output without -v has %q:\n%s", not, out)
		}
	}
}

func TestLuaTestsVerboseAndRun(t *testing.T) {
	t.Parallel()
	code, out, _ := luaTests(t, mixedTests, "-v", "-run", "^(passes|skipped)$")
	if code != 0 {
		t.Errorf("exit %d, want 0:\n%s", code, out)
	}
	for _, want := range []string{"=== RUN   passes\n", "--- PASS: passes (", "--- SKIP: skipped (", "x_test.lua:17)\n    skipped: not today\n", "\n1 passed, 0 failed, 1 skipped\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "eq fails") {
		t.Errorf("-run ran a test it does not match:\n%s", out)
	}
	if code, _, errOut := luaTests(t, mixedTests, "-run", "("); code != 2 || !strings.Contains(errOut, "-run") {
		t.Errorf("bad -run: exit %d, %q", code, errOut)
	}
}

func TestLuaTestsJSON(t *testing.T) {
	t.Parallel()
	code, out, _ := luaTests(t, mixedTests, "-json")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	var sawFail, sawSummary bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Action, File, Test, Where, Output string
			Passed, Failed, Skipped           *int
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		if ev.Action == "fail" && ev.Test == "eq fails" {
			sawFail = strings.HasSuffix(ev.Where, "x_test.lua:8") && strings.HasSuffix(ev.File, "x_test.lua")
		}
		if ev.Action == "summary" {
			sawSummary = *ev.Passed == 1 && *ev.Failed == 3 && *ev.Skipped == 1
		}
	}
	if !sawFail || !sawSummary {
		t.Errorf("fail event with its line %v, summary %v:\n%s", sawFail, sawSummary, out)
	}
}

// TestLuaTestsClientAPI: refused handshakes, settings and store
// overrides, closes, t:http, timeouts of recv and closed.
func TestLuaTestsClientAPI(t *testing.T) {
	t.Parallel()
	code, out, errOut := luaTests(t, `
test("refused", function(t)
  local c, status, body = t:connect("/gate")
  t:eq({ c, status, body }, { nil, 403, "no key" })
end)

test("config settings, empty store", function(t)
  local c = t:connect("/gate", { query = { key = "k" } })
  c:expect("hello nil")
end)

test("overrides", { settings = { greeting = "hi" }, store = { name = "ada" } }, function(t)
  local c = t:connect("/gate", { query = { key = "k" } })
  c:expect("hi ada")
  t:eq({ c:recv(0.01) }, { nil, "timeout" })
  t:eq({ c:closed("10ms") }, { nil, "timeout" })
  c:send("bye")
  t:eq({ c:closed() }, { 4001, "asked" })
  t:eq({ c:recv() }, { nil, "closed", 4001, "asked" })
  t:ok(not c:send("late"), "send after the close fails")
end)

test("fresh state", function(t)
  local c = t:connect("/gate", { query = { key = "k" } })
  c:expect("hello nil") -- the previous test's store is gone
end)

test("several routes and matchers", function(t)
  local e = t:connect("/echo")
  local g = t:connect("/gate", { query = { key = "k" } })
  e:send('{"a":{"b":1,"c":2},"d":3}')
  local _, _, v = e:expect({ a = { b = 1 } })
  t:eq(v.d, 3)
  e:send("xyz")
  e:expect(function(data, kind) return kind == "text" and data:sub(1, 1) == "x" end)
  g:expect("hello nil")
end)

test("http", function(t)
  local status, headers, body = t:http("POST", "/gate", { body = "it" })
  t:eq({ status, headers["x-seen"], body }, { 201, "POST", "got it" })
end)

test("fails", function(t)
  local msg = t:fails(function() error("boom") end, "boom$")
  t:match(msg, "boom")
end)
`)
	if code != 0 || !strings.Contains(out, "7 passed, 0 failed") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// TestLuaTestsLimits tries to exceed each bound the runner sets.
func TestLuaTestsLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, file string
		args       []string
		want       string
	}{
		{"busy loop past -timeout", `test("spin", function(t) while true do end end)`, []string{"-timeout", "300ms"}, "test timed out after 300ms"},
		{"recv past -timeout", `test("wait", function(t) local c = t:connect("/echo"); c:recv(60) end)`, []string{"-timeout", "300ms"}, "test timed out after 300ms"},
		{"expect gets nothing", `test("quiet", function(t) local c = t:connect("/echo"); c:expect("x", 0.05) end)`, nil, "expected \"x\"\n    got nothing within 50ms"},
		{"recv timeout too long", `test("long", function(t) local c = t:connect("/echo"); c:recv(3601) end)`, nil, "timeout must be between 0 and 3600 seconds"},
		{"bad close code", `test("code", function(t) local c = t:connect("/echo"); c:close(1006) end)`, nil, "a client may close with 1000 or 3000-4999"},
		{"long close reason", `test("reason", function(t) local c = t:connect("/echo"); c:close(1000, string.rep("r", 124)) end)`, nil, "a close reason is at most 123 bytes"},
		{"too many connections", fmt.Sprintf(`test("many", function(t) for i = 1, %d do t:connect("/echo") end end)`, 257), []string{"-timeout", "2m"}, "too many connections in one test (limit 256)"},
		{"unknown option", `test("opt", { setings = {} }, function(t) end)`, nil, `unknown option "setings"`},
		{"duplicate name", `test("a", function() end) test("a", function() end)`, nil, `test "a" is declared twice`},
		{"deep settings", `local s = {} local x = s for i = 1, 40 do x.n = {} x = x.n end test("deep", { settings = s }, function() end)`, nil, "nested too deep"},
		{"no file access", `test("io", function(t) dofile("/etc/passwd") end)`, nil, "attempt to call a non-function object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := luaTests(t, tc.file, tc.args...)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want 1 and %q\n%s%s", code, tc.want, out, errOut)
			}
		})
	}
}

func TestLuaTestsNoFiles(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{"moonwire.toml": testConfig, "echo.lua": echoScript, "gate.lua": gateScript})
	code, _, errOut := runCmd(t, "test", "-config", filepath.Join(dir, "moonwire.toml"))
	if code != 1 || !strings.Contains(errOut, "no *_test.lua files") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

// BenchmarkFreshServer measures what every Lua test pays before it runs:
// a server for the built-in config started and stopped.
func BenchmarkFreshServer(b *testing.B) {
	cfg, err := config.Load("../scripts/default.toml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := startTestServer(scripttest.Fresh{Config: scripttest.FreshConfig(cfg, nil), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
}

// TestLuaTestsAfterATimeout: a test stopped by its deadline leaves the
// file's Lua state usable for the next one, and a file that does not load
// is reported as such.
func TestLuaTestsAfterATimeout(t *testing.T) {
	t.Parallel()
	code, out, _ := luaTests(t, `
test("spin", function(t) while true do end end)
test("next", function(t)
  local c = t:connect("/echo")
  c:send("still here")
  c:expect("still here")
end)
`, "-timeout", "3s")
	if code != 1 || !strings.Contains(out, "--- FAIL: spin") || !strings.Contains(out, "\n1 passed, 1 failed, 0 skipped\n") {
		t.Errorf("exit %d\n%s", code, out)
	}
	code, out, _ = luaTests(t, "test(\"x\", function(t)\n")
	if code != 1 || !strings.Contains(out, "[load error]") || !strings.Contains(out, "1 file(s) did not load") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

// clockConfig has a route whose script starts timers on request and a
// route with a short heartbeat, for t:advance.
const clockConfig = `
[scripts]
dir = "."

[[routes]]
path = "/tick"
script = "tick.lua"

[[routes]]
path = "/echo"
script = "echo.lua"
heartbeat = { interval = "10s", timeout = "30s" }
`

// tick.lua: "every" starts a 1s timer.every that reports how many times it
// ran and the virtual seconds since it started; "after" a 5s timer.after.
// Each is acknowledged, so the test knows the timer exists.
const tickScript = `
local M = {}
function M.on_message(conn, data)
  local t0 = time.now()
  if data == "every" then
    local n = 0
    timer.every(1, function()
      n = n + 1
      conn:send(string.format("tick %d %.3f", n, time.now() - t0))
    end)
  elseif data == "after" then
    timer.after(5, function() conn:send(string.format("after %.3f", time.now() - t0)) end)
  elseif data == "fast" then
    timer.every(0.01, function() end)
  end
  conn:send("started " .. data)
end
return M
`

// TestLuaTestsVirtualClock: t:advance fires timers a known number of
// times at their virtual times, time.now() follows the clock, and a
// silent client is evicted by the heartbeat at its timeout, not before.
func TestLuaTestsVirtualClock(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": clockConfig, "echo.lua": echoScript, "tick.lua": tickScript, "x_test.lua": `
test("every and after", function(t)
  local c = t:connect("/tick")
  c:send("every")
  c:expect("started every")
  c:send("after")
  c:expect("started after")
  t:advance(0.5)
  t:eq({ c:recv(0.05) }, { nil, "timeout" }, "nothing due yet")
  t:advance("4s")
  for i = 1, 4 do c:expect(string.format("tick %d %d.000", i, i)) end
  t:eq({ c:recv(0.05) }, { nil, "timeout" }, "four ticks in 4.5s")
  t:advance(0.5)
  -- Both due at 5s: the after was set first (at 0s, the tick's next run
  -- at 4s), so it runs first.
  c:expect("after 5.000")
  c:expect("tick 5 5.000")
  t:advance(20) -- 25.5s in all: under the heartbeat's 30s timeout
  local n = 0
  while true do
    local data = c:recv(0.05)
    if not data then break end
    n = n + 1
  end
  t:eq(n, 20, "one tick a second")
end)

test("heartbeat timeout", function(t)
  local c = t:connect("/echo")
  t:advance("29.5s")
  t:eq({ c:closed(0.05) }, { nil, "timeout" }, "open before the timeout")
  t:advance(1)
  t:eq({ c:closed() }, { 1001, "heartbeat timeout" })
end)

test("a client that sends stays", function(t)
  local c = t:connect("/echo")
  t:advance(20)
  c:send("alive")
  c:expect("alive")
  t:advance(29)
  t:eq({ c:closed(0.05) }, { nil, "timeout" }, "30s not yet silent")
  t:advance(2)
  t:eq({ c:closed() }, { 1001, "heartbeat timeout" })
end)

test("bad durations", function(t)
  t:fails(function() t:advance(-1) end, "between 0 and 86400 seconds")
  t:fails(function() t:advance("25h") end, "up to 24h0m0s")
  t:fails(function() t:advance("soon") end, "bad duration")
  t:fails(function() t:advance({}) end, "a number of seconds or a duration string")
end)
`})
	code, out, errOut := runCmd(t, "test", "-v", "-config", filepath.Join(dir, "moonwire.toml"))
	if code != 0 || !strings.Contains(out, "4 passed, 0 failed") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// TestLuaTestsAdvanceBounded: a t:advance over a timer that fires 100
// times a second for 24 hours is stopped by the test's -timeout.
func TestLuaTestsAdvanceBounded(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": clockConfig, "echo.lua": echoScript, "tick.lua": tickScript, "x_test.lua": `
test("runaway", function(t)
  local c = t:connect("/tick")
  c:send("fast")
  c:expect("started fast")
  t:advance("24h")
end)
`})
	code, out, errOut := runCmd(t, "test", "-timeout", "500ms", "-config", filepath.Join(dir, "moonwire.toml"))
	if code != 1 || !strings.Contains(out, "test timed out after 500ms") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

package lua_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestMemoryHeavyScripts: scripts that try to take memory without bound are
// stopped with 1011, and the server carries on. Not parallel: the memory
// limit watches the process heap, which parallel tests would share.
func TestMemoryHeavyScripts(t *testing.T) {
	s := moontest.Start(t, moontest.Files(`
[scripts]
memory_limit = "128MiB"
handler_timeout = "20s"

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", `
local probes = {
  concat = function() local s = string.rep("x", 65536) while true do s = s .. s end end,
  table = function() local t, i = {}, 0 while true do i = i + 1; t[i] = string.rep("y", 65536) .. i end end,
  sparse = function() local t = {} t[60000000] = 1 t[2^40] = 2 return tostring(t[60000000] + t[2^40]) end,
  coroutines = function() for i = 1, 1e6 do coroutine.create(function() end) end end,
  deep_json = function() local v, err = json.decode(string.rep("[", 100000)) return tostring(v) .. " " .. tostring(err ~= nil) end,
  huge_json = function()
    local v, err = json.decode("[" .. string.rep("1,", 5000000) .. "1]")
    return tostring(v) .. " " .. tostring(err)
  end,
}
return { on_message = function(conn, name)
  local r = probes[name]()
  conn:send(name .. " " .. tostring(r))
end }
`))
	other := moontest.Dial(t, s.URL("/t"))
	for _, tc := range []struct{ probe, want string }{
		{"concat", "memory limit exceeded"},
		{"table", "memory limit exceeded"},
		{"coroutines", "too many coroutines in one callback (limit 1000)"},
	} {
		c := moontest.Dial(t, s.URL("/t"))
		// Building hundreds of megabytes is slow under the race detector.
		c.ReadTimeout = time.Minute
		c.Send(tc.probe)
		c.ExpectClose(1011)
		s.WaitLog(t, "script error", tc.want)
		other.Send("sparse")
		other.Expect("sparse 3")
	}
	other.Send("deep_json")
	other.Expect("deep_json nil true")
	other.Send("huge_json")
	if got := other.Next().Text(); !strings.HasPrefix(got, "huge_json nil json: input too large") {
		t.Fatalf("huge json: %q", got)
	}
}

package lua_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestMemoryHeavyScripts: scripts that try to take memory without bound are
// stopped with 1011, and the server carries on. Not parallel: the memory
// limit watches the process heap, which parallel tests would share.
//
// Under the race detector only the probes that allocate little run: there
// every heap byte has shadow bytes beside it and `s .. s` copies a string
// as one long step that stops the world's safe points, so a doubling
// string outruns the watchdog by several steps and reaches gigabytes (a
// 69 s stall on CI). Without it a runaway is stopped within a few times
// the limit (540 MB peak RSS here for 128 MiB); .ci/run runs this test so.
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
	type probe struct{ probe, want string }
	probes := []probe{{"coroutines", "too many coroutines in one callback (limit 1000)"}}
	if !raceEnabled {
		probes = append(probes, probe{"concat", "memory limit exceeded"}, probe{"table", "memory limit exceeded"})
	}
	for _, tc := range probes {
		c := moontest.Dial(t, s.URL("/t"))
		c.ReadTimeout = time.Minute // hundreds of megabytes on a busy machine
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

// TestMemoryWatchdogBlamesTheAllocator: memory held by something that is
// not running (here a VM's table, filled a little at a time by short
// callbacks, as the shared store used to be) puts the heap over the limit;
// a callback that then runs long without allocating is innocent and must
// finish, while one that allocates is stopped. The watchdog used to stop
// whatever ran for a tick once the heap was over the limit. Not parallel:
// it measures the process heap. Not under the race detector, for the
// reason TestMemoryHeavyScripts gives.
func TestMemoryWatchdogBlamesTheAllocator(t *testing.T) {
	if raceEnabled {
		t.Skip("runaway allocation is measured without the race detector (.ci/run)")
	}
	s := moontest.Start(t, moontest.Files(`
[scripts]
memory_limit = "96MiB"
handler_timeout = "20s"

[[routes]]
path = "/t"
script = "t.lua"
vms = 1
`, "scripts/t.lua", `
local hoard = {}
local probes = {
  hoard = function() hoard[#hoard + 1] = string.rep("h", 8 * 1024 * 1024) .. #hoard return #hoard end,
  busy = function()
    local t = time.monotonic()
    while time.monotonic() - t < 0.3 do end
    return "done"
  end,
  grow = function() local s = string.rep("x", 65536) while true do s = s .. s end end,
  free = function() hoard = {} return "freed" end,
}
return { on_message = function(conn, name) conn:send(name .. " " .. tostring(probes[name]())) end }
`))
	c := moontest.Dial(t, s.URL("/t"))
	c.ReadTimeout = time.Minute
	for i := 1; i <= 14; i++ { // 112 MiB held by the VM
		c.Send("hoard")
		c.Expect("hoard " + strconv.Itoa(i))
	}
	for range 3 {
		c.Send("busy")
		c.Expect("busy done")
	}
	s.WaitLog(t, "no running callback is making it grow")
	g := moontest.Dial(t, s.URL("/t"))
	g.ReadTimeout = time.Minute
	g.Send("grow")
	g.ExpectClose(1011)
	s.WaitLog(t, "script error", "memory limit exceeded")
	c.Send("free")
	c.Expect("free freed")
}

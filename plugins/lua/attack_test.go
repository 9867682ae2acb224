package lua_test

import (
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// attackScript runs, in on_message, the attack the client names ("name:"
// then the payload) on the client's payload. Each used to hold a VM in
// one call into a Go builtin, out of the watchdog's reach, for seconds to
// hours, or to build gigabytes.
const attackScript = `
local attacks = {
  -- The trim idiom, quadratic when something follows the spaces.
  trim = function(s) return (s:gsub("^%s*(.-)%s*$", "%1")) end,
  -- Cubic backtracking.
  find = function(s) return s:find("%s*%s*y") end,
  match = function(s) return s:match(".-.-.-y") end,
  gmatch = function(s) for w in s:gmatch("%s*%s*y") do end end,
  -- gopher-lua's gsub copied the whole string for each replacement.
  gsub = function(s)
    local big = s:rep(10)
    while true do big:gsub(" ", "ab") end
  end,
  -- Results of gigabytes, from a 16 MiB string and its references.
  concat = function(s)
    local t, big = {}, s:rep(math.floor(16 * 2^20 / #s))
    for i = 1, 40 do t[i] = big end
    return #table.concat(t)
  end,
  format = function(s)
    local t, big = {}, s:rep(math.floor(16 * 2^20 / #s))
    for i = 1, 40 do t[i] = big end
    return #string.format(string.rep("%s", 40), unpack(t))
  end,
  json = function(s)
    local t, big = {}, s:rep(math.floor(16 * 2^20 / #s))
    for i = 1, 40 do t[i] = big end
    return assert(json.encode(t))
  end,
  -- Source that takes gopher-lua's parser and compiler gigabytes.
  nesting = function(s)
    return tostring(assert(loadstring("return " .. ("("):rep(#s) .. "1" .. (")"):rep(#s))))
  end,
  chunk = function(s)
    return tostring(assert(loadstring("return " .. ("("):rep(1e6) .. "1" .. (")"):rep(1e6))))
  end,
  reader = function(s)
    return tostring(assert(load(function() return s end)))
  end,
}
return {
  on_open = function(conn) conn:send(conn.id) end,
  on_message = function(conn, data)
    local i = data:find(":", 1, true)
    if not i then conn:send(data) return end
    conn:send(tostring(attacks[data:sub(1, i - 1)](data:sub(i + 1))))
  end,
}
`

// TestAttacksOnBuiltins: each attack on a builtin through a client's
// message ends within the handler timeout (or is refused, for results
// past the string limit) with the connection closed 1011 and the reason
// logged, and the route's only VM goes on serving another client. Each
// fails with gopher-lua's builtins: the pattern attacks hold the VM for
// minutes, and the others succeed, building hundreds of megabytes.
func TestAttacksOnBuiltins(t *testing.T) {
	t.Parallel()
	spaces := strings.Repeat(" ", 30000)
	const timeout = "handler timeout (200ms) exceeded"
	for _, tc := range []struct {
		test, attack, payload string
		want                  string // in the log
	}{
		{"trim", "trim", "x" + spaces + "x", timeout},
		{"find", "find", spaces + "x", timeout},
		{"match", "match", spaces + "x", timeout},
		{"gmatch", "gmatch", spaces + "x", timeout},
		{"gsub", "gsub", spaces + "x", timeout},
		{"concat", "concat", spaces + "x", "table.concat: result of"},
		{"format", "format", spaces + "x", "string.format: result of"},
		{"json", "json", spaces + "x", "json: encoding too large"},
		{"loadstring_nesting", "nesting", spaces + "x", "loadstring: chunk has too many syntax levels"},
		{"loadstring_size", "chunk", "", "loadstring: chunk of 2000008 bytes exceeds the limit of 262144 bytes"},
		{"load_reader", "reader", "x = 1 ", "load: chunk of at least 262146 bytes exceeds the limit of 262144 bytes"},
	} {
		t.Run(tc.test, func(t *testing.T) {
			// The refused attacks build a 16 MiB string first, which on a
			// busy machine under the race detector can take longer than
			// the pattern attacks' timeout: they get a longer one, so what
			// is tested is the refusal.
			timeout := "200ms"
			if !strings.Contains(tc.want, "handler timeout") {
				timeout = "10s"
			}
			s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "`+timeout+`"
vms = 1

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", attackScript))
			other := moontest.Dial(t, s.URL("/t"))
			other.Next() // its id
			c := moontest.Dial(t, s.URL("/t"))
			// Generous: what these did before took minutes.
			c.ReadTimeout = 20 * time.Second
			id := c.Next().Text()
			start := time.Now()
			c.Send(tc.attack + ":" + tc.payload)
			c.ExpectClose(1011)
			s.WaitLog(t, "script error", "conn="+id, tc.want)
			t.Logf("%s: %v", tc.test, time.Since(start))
			other.Send("still serving")
			other.Expect("still serving")
		})
	}
}

// TestLogFieldIsBounded: a table logged as a field is expanded only up to
// 64 KiB; past that (here a table shared 2^40 times over) the line shows
// its address, and the callback goes on at once.
func TestLogFieldIsBounded(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "1m"

[[routes]]
path = "/t"
script = "t.lua"
`, "scripts/t.lua", `
return { on_message = function(conn)
  local t = {}
  for i = 1, 40 do t = {t, t} end
  log.info("shared table", { v = t, small = { 1, 2 } })
  conn:send("logged")
end }
`))
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("go")
	c.Expect("logged")
	s.WaitLog(t, "shared table", `v="table: 0x`, `small="[1 2]"`)
}

package router_test

import (
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/broker"
)

// TestClusterThroughTheBroker runs two nodes that share an in-process
// broker: broadcasts, sends by id and closes by id cross from one to the
// other, as they will through Redis or NATS.
func TestClusterThroughTheBroker(t *testing.T) {
	t.Parallel()
	files := moontest.Files(`
[[routes]]
path = "/room"
script = "room.lua"
`, "scripts/room.lua", `
local M = {}
function M.on_open(conn) conn:join("r"); conn:send(conn.id) end
function M.on_message(conn, data)
  local cmd, arg = data:match("^(%S+)%s*(.*)$")
  if cmd == "all" then conn:send("local " .. ws.broadcast("r", arg, { except = conn }))
  elseif cmd == "to" then
    local id, text = arg:match("^(%S+)%s+(.*)$")
    conn:send("sent " .. tostring(ws.send(id, text)))
  elseif cmd == "kick" then ws.close(arg, 4003, "kicked") end
end
return M
`)
	shared := broker.NewMemory()
	n1 := moontest.Start(t, files, func(rc *router.Config) { rc.Broker, rc.NodeID = shared, "n1" })
	n2 := moontest.Start(t, files, func(rc *router.Config) { rc.Broker, rc.NodeID = shared, "n2" })

	a := moontest.Dial(t, n1.URL("/room"))
	idA := a.Next().Text()
	b := moontest.Dial(t, n2.URL("/room"))
	idB := b.Next().Text()
	c := moontest.Dial(t, n2.URL("/room"))
	c.Next()
	if !strings.HasPrefix(idA, "n1-") || !strings.HasPrefix(idB, "n2-") {
		t.Fatalf("ids %q %q do not name their nodes", idA, idB)
	}

	a.Send("all hello cluster")
	a.Expect("local 0") // no other member on n1
	b.Expect("hello cluster")
	c.Expect("hello cluster")

	b.Send("all from b")
	b.Expect("local 1") // c, on the same node
	a.Expect("from b")
	c.Expect("from b")

	a.Send("to " + idB + " direct")
	a.Expect("sent true")
	b.Expect("direct")

	a.Send("kick " + idB)
	b.ExpectClose(4003, "kicked")
}

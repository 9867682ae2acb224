package lua_test

import (
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

func TestQuickEcho(t *testing.T) {
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", `
local M = {}
function M.on_message(conn, data, kind) conn:send(data, kind) end
return M
`))
	c := moontest.Dial(t, s.URL("/echo"))
	c.Send("hello")
	c.Expect("hello")
	c.SendBinary([]byte{0, 1, 2})
	c.ExpectBinary([]byte{0, 1, 2})
	c.Close(1000)
}

package moonwire_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/moonwire/moonwire/internal/browsertest"
	"github.com/moonwire/moonwire/internal/moontest"
)

// consoleRooms is a room per path: what the Broadcasts tab listens to.
const consoleRooms = `local M = {}
function M.on_open(conn) conn:join(conn.params.room) end
function M.on_message(conn, data) ws.broadcast(conn.params.room, data, { except = conn }) end
return M
`

// consoleProto wants ?token=t and picks the first subprotocol offered.
const consoleProto = `local M = {}
function M.on_handshake(req)
  if req.query.token ~= "t" then return false, 401 end
  return { subprotocol = req.subprotocols[1] }
end
function M.on_message(conn, data, kind) conn:send(data, kind) end
return M
`

// consoleFlood answers any message with 2,100 short ones and one of
// 10,000 bytes, then closes 4001.
const consoleFlood = `local M = {}
function M.on_message(conn)
  for i = 1, 2100 do conn:send("m" .. i) end
  conn:send(string.rep("x", 10000))
  conn:close(4001, "done")
end
return M
`

// TestConsoleBrowser drives the console in a real browser: the page
// loads and lists the routes, connects to an echo route picked from the
// list, sends text and binary (hex) and shows the echoes with their
// sizes, shows the close code and reason after a close, and the server's
// 1009 for a message over the route's limit; the Broadcasts tab shows
// what another member sends to a room.
func TestConsoleBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Chromium(t)
	files := consoleConfig("console = true")
	files["scripts/rooms.lua"] = consoleRooms
	files["scripts/flood.lua"] = consoleFlood
	files["scripts/proto.lua"] = consoleProto
	files["moonwire.toml"] += "\n[[routes]]\npath = \"/proto\"\nscript = \"proto.lua\"\n"
	files["moonwire.toml"] += "\n[[routes]]\npath = \"/flood\"\nscript = \"flood.lua\"\n"
	files["moonwire.toml"] = strings.Replace(files["moonwire.toml"], "path = \"/rooms/{room}\"\nscript = \"echo.lua\"", "path = \"/rooms/{room}\"\nscript = \"rooms.lua\"", 1)
	s := moontest.Start(t, files)
	shots := browsertest.Screenshots(t)

	n := 0
	shot := func(name string) {
		n++
		browsertest.Shot(t, ctx, shots, fmt.Sprintf("%02d-%s", n, name))
	}
	// step runs actions with a deadline; on failure it keeps a screenshot
	// of what the page shows and ends the test (the server's log is
	// logged by moontest when the test fails).
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, shots, what, actions...)
	}
	text := func(sel string) string {
		t.Helper()
		return browsertest.Run(t, ctx, shots, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
	}
	eval := func(js string) string {
		t.Helper()
		return browsertest.Run(t, ctx, shots, "evaluate "+js, chromedp.Evaluate[string](js))
	}
	check := func(what, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			shot("failed")
			t.Errorf("%s: %q, want %q in it", what, got, want)
		}
	}

	step("load the console",
		chromedp.Navigate(s.HTTPURL("/_console")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="true"]`)),
	)
	check("route list", eval(`[...document.querySelectorAll("#main .route option")].map(o => o.value).join(" ")`), "/echo /rooms/{room}")
	// Pick /echo from the list, as a user would.
	eval(`(() => { const s = document.querySelector("#main .route"); s.value = "/echo"; s.dispatchEvent(new Event("change")); return s.value })()`)
	check("URL from the route list", eval(`document.querySelector("#url").value`), s.URL("/echo"))
	shot("loaded")

	step("connect", chromedp.Click(chromedp.CSS("#connect")), chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="open"]`)))
	step("send text",
		chromedp.SendKeys(chromedp.CSS("#msg"), "hello console"),
		chromedp.WaitEnabled(chromedp.CSS("#send")),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="in"][data-kind="text"]`)),
	)
	check("echo", text(`#log tr[data-dir="in"][data-kind="text"] td:nth-child(5)`), "hello console")
	check("echo size", text(`#log tr[data-dir="in"][data-kind="text"] td:nth-child(4)`), "13")

	step("send binary",
		chromedp.Click(chromedp.CSS("#kind-binary")),
		chromedp.SetValue(chromedp.CSS("#msg"), "de ad be ef"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="in"][data-kind="binary"]`)),
	)
	check("binary echo", text(`#log tr[data-dir="in"][data-kind="binary"] td:nth-child(5)`), "de ad be ef")
	check("binary size", text(`#log tr[data-dir="in"][data-kind="binary"] td:nth-child(4)`), "4")
	step("bad hex is refused in the page",
		chromedp.SetValue(chromedp.CSS("#msg"), "zz"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="error"]`)),
	)
	check("bad hex", text(`#log tr[data-kind="error"] td:nth-child(5)`), "not hex")

	step("close 4000",
		chromedp.SetValue(chromedp.CSS("#code"), "4000"),
		chromedp.SetValue(chromedp.CSS("#reason"), "bye"),
		chromedp.Click(chromedp.CSS("#close")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="info"][data-kind="close"]`)),
	)
	check("close sent", text(`#log tr[data-dir="out"][data-kind="close"] td:nth-child(5)`), `code 4000 reason "bye"`)
	// The server answers with the code (echo.lua's router sends no reason back).
	check("close received", text(`#log tr[data-dir="info"][data-kind="close"] td:nth-child(5)`), "code 4000")
	check("status", text("#status"), "closed 4000")
	shot("closed")

	// What browsers have instead of headers: the query and subprotocols.
	step("query and subprotocols",
		chromedp.Click(chromedp.CSS("#main .clear")),
		chromedp.SetValue(chromedp.CSS("#url"), s.URL("/proto")),
		chromedp.SetValue(chromedp.CSS("#query"), "token=t"),
		chromedp.SetValue(chromedp.CSS("#protos"), "v2.moonwire, v1.moonwire"),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="open"]`)),
	)
	check("subprotocol", text(`#log tr[data-kind="open"] td:nth-child(5)`), "subprotocol: v2.moonwire")
	check("URL with the query", text(`#log tr[data-kind="connecting"] td:nth-child(5)`), s.URL("/proto")+"?token=t")
	step("disconnect",
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="info"][data-kind="close"]`)),
		chromedp.Click(chromedp.CSS("#main .clear")),
	)
	eval(`document.querySelector("#query").value = document.querySelector("#protos").value = ""`)
	step("connect without the token",
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="info"][data-kind="close"]`)),
	)
	check("refused without the token", text(`#log tr[data-dir="info"][data-kind="close"] td:nth-child(5)`), "code 1006")
	check("refusal explained", text(`#log tr[data-kind="error"] td:nth-child(5)`), "refused handshake")

	// The server's own close: a message over the route's 16 bytes.
	step("back to /echo", chromedp.SetValue(chromedp.CSS("#url"), s.URL("/echo")))
	step("reconnect and send too much",
		chromedp.Click(chromedp.CSS("#main .clear")),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="open"]`)),
		chromedp.Click(chromedp.CSS(`#main input[value="text"]`)),
		chromedp.SetValue(chromedp.CSS("#msg"), "seventeen bytes!!"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="info"][data-kind="close"]`)),
	)
	check("1009", text(`#log tr[data-dir="info"][data-kind="close"] td:nth-child(5)`), "code 1009")

	// Broadcasts: the second tab listens in room r; the first sends to it.
	step("listen in a room",
		chromedp.Click(chromedp.CSS("#tab-bcast")),
		chromedp.WaitVisible(chromedp.CSS("#bcast-url")),
		chromedp.SetValue(chromedp.CSS("#bcast-url"), s.URL("/rooms/r")),
		chromedp.Click(chromedp.CSS("#bcast-connect")),
		chromedp.WaitVisible(chromedp.CSS(`#bcast-log tr[data-kind="open"]`)),
		chromedp.Click(chromedp.CSS("#tab-main")),
		chromedp.WaitVisible(chromedp.CSS("#url")),
		chromedp.SetValue(chromedp.CSS("#url"), s.URL("/rooms/r")),
		chromedp.Click(chromedp.CSS("#main .clear")),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="open"]`)),
		chromedp.SetValue(chromedp.CSS("#msg"), "to the room"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.Click(chromedp.CSS("#tab-bcast")),
		chromedp.WaitVisible(chromedp.CSS(`#bcast-log tr[data-dir="in"][data-kind="text"]`)),
	)
	check("broadcast", text(`#bcast-log tr[data-dir="in"][data-kind="text"] td:nth-child(5)`), "to the room")
	shot("broadcasts")

	// The page's own bounds: a long message is shown cut (its size whole),
	// and the log keeps its last 2000 rows, however much a route sends.
	step("flood",
		chromedp.Click(chromedp.CSS("#tab-main")),
		chromedp.WaitVisible(chromedp.CSS("#url")),
		chromedp.Click(chromedp.CSS("#close")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-dir="info"][data-kind="close"]`)),
		chromedp.SetValue(chromedp.CSS("#url"), s.URL("/flood")),
		chromedp.Click(chromedp.CSS("#main .clear")),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="open"]`)),
		chromedp.SetValue(chromedp.CSS("#msg"), "go"),
		chromedp.Click(chromedp.CSS("#send")),
		chromedp.WaitVisible(chromedp.CSS(`#log tr[data-kind="close"][data-dir="info"]`)),
	)
	if rows := eval(`String(document.querySelectorAll("#log tbody tr").length)`); rows != "2000" {
		t.Errorf("log rows after a flood: %s, want 2000", rows)
	}
	check("last row", eval(`[...document.querySelectorAll("#log tbody tr")].at(-1).textContent`), "code 4001")
	long := eval(`(() => { const r = [...document.querySelectorAll("#log tbody tr")].at(-2); return r.cells[3].textContent + " " + r.cells[4].textContent.length })()`)
	if long != "10000 4098" {
		t.Errorf("a 10000-byte message: size and characters shown %q, want \"10000 4098\" (4096 and \" …\")", long)
	}
	shot("flood")
}

package interop

import (
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// Policy closes seen by real client libraries. A client that bursts past
// its rate limit (or sends a message over the size limit) is failed while
// the rest of its burst is still arriving; the client must see the close
// code the server logged, after the echoes it was allowed, not 1006.

func startPolicy(t *testing.T) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(`
[server]
max_message_size = "4KiB"

[[routes]]
path = "/echo"
script = "echo.lua"
rate_limit = { messages = 5, per = "1m", burst = 5 }
`, "scripts/echo.lua", "return { on_message = function(conn, data, kind) conn:send(data, kind) end }"))
}

func TestPolicyClosesPython(t *testing.T) {
	t.Parallel()
	needPython(t)
	s := startPolicy(t)
	out := runClient(t, python, "-c", `
import asyncio, sys
import websockets

url = sys.argv[1]

async def burst(last, want_code):
    async with websockets.connect(url) as ws:
        msg = "m" * 1000
        try:
            for i in range(200):
                await ws.send(last if i == 5 else msg)
        except websockets.exceptions.ConnectionClosed:
            pass  # the server closed while we were still sending
        echoes = 0
        try:
            while True:
                assert await asyncio.wait_for(ws.recv(), 10) == msg
                echoes += 1
        except websockets.exceptions.ConnectionClosed:
            pass
        code = ws.close_code
        assert (echoes, code) == (5, want_code), (echoes, code)
        print("close", want_code, "after", echoes, "echoes")

asyncio.run(burst("m" * 1000, 1008))
asyncio.run(burst("x" * 8192, 1009))
`, "ws://"+s.Addr()+"/echo")
	for _, want := range []string{"close 1008 after 5 echoes", "close 1009 after 5 echoes"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
}

func TestPolicyClosesNode(t *testing.T) {
	t.Parallel()
	needNode(t)
	s := startPolicy(t)
	out := runClient(t, "node", "-e", `
const WebSocket = require("ws");
const url = process.argv[1];
const fail = (m) => { console.error(m); process.exit(1); };
setTimeout(() => fail("timeout"), 30000).unref();

function burst(last, wantCode) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    const msg = "m".repeat(1000);
    let echoes = 0;
    ws.on("message", (data) => { if (data.toString() !== msg) fail("echo"); echoes++; });
    ws.on("error", () => {}); // the close event reports the outcome
    ws.on("open", () => { for (let i = 0; i < 200; i++) ws.send(i === 5 ? last : msg); });
    ws.on("close", (code) => {
      if (echoes !== 5 || code !== wantCode) fail("got " + echoes + " echoes and close " + code + ", want 5 and " + wantCode);
      console.log("close " + code + " after " + echoes + " echoes");
      resolve();
    });
  });
}

(async () => {
  await burst("m".repeat(1000), 1008);
  await burst("x".repeat(8192), 1009);
})().catch((err) => fail(err.stack));
`, "ws://"+s.Addr()+"/echo")
	for _, want := range []string{"close 1008 after 5 echoes", "close 1009 after 5 echoes"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
}

package interop

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router/config"
	"github.com/moonwire/moonwire/scripts"
)

const python = "/usr/bin/python3"

// nodeWS is where Debian's node-ws lives.
const nodeWS = "/usr/share/nodejs/ws"

func startDefault(t *testing.T) *moontest.Server {
	t.Helper()
	cfg, err := config.LoadFS(scripts.FS, scripts.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	return moontest.StartConfig(t, cfg)
}

// needPython skips the test without Debian's python3-websockets.
func needPython(t *testing.T) {
	t.Helper()
	if err := exec.Command(python, "-c", "import websockets").Run(); err != nil {
		t.Skip("python3-websockets is not installed")
	}
}

// needNode skips the test without node and Debian's node-ws.
func needNode(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(nodeWS); err != nil {
		t.Skip("node-ws is not installed")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
}

// startCompressedEcho starts a node with permessage-deflate on and an echo
// route.
func startCompressedEcho(t *testing.T) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(`
[server]
compression = true

[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", "return { on_message = function(conn, data, kind) conn:send(data, kind) end }"))
}

// runClient runs a client program and returns its output; a non-zero exit
// fails the test.
func runClient(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

func TestPythonWebsockets(t *testing.T) {
	t.Parallel()
	needPython(t)
	s := startDefault(t)
	out := runClient(t, python, "-c", `
import asyncio, json, sys
import websockets

base = sys.argv[1]

async def main():
    async with websockets.connect(base + "/echo") as ws:
        await ws.send("Hello WebSocket!")
        assert await ws.recv() == "Hello WebSocket!"
        await ws.send(b"\x00\x01" * 40000)
        assert await ws.recv() == b"\x00\x01" * 40000
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 5)
    print("echo ok")

    try:
        async with websockets.connect(base + "/auth") as ws:
            raise SystemExit("auth accepted without a token")
    except websockets.exceptions.InvalidStatusCode as e:
        assert e.status_code == 401, e.status_code
    async with websockets.connect(base + "/auth", extra_headers={"X-Auth-Token": "dev-token"}) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
    print("auth ok")

    # Two connections' on_open run on their own lanes, in either order
    # on a busy machine: each client waits until it has heard a join
    # that counts both, whoever joined first.
    async def joined(ws):
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if m["type"] == "join" and m["members"] == 2:
                return

    a = await websockets.connect(base + "/chat/py")
    b = await websockets.connect(base + "/chat/py")
    await joined(a); await joined(b)
    await a.send("from a")
    while True:
        msg = json.loads(await asyncio.wait_for(b.recv(), 30))
        if msg["type"] == "message":
            break
    assert msg["text"] == "from a", msg
    await b.close()
    assert b.close_code == 1000
    await a.close()
    print("chat ok")

asyncio.run(main())
`, "ws://"+s.Addr())
	for _, want := range []string{"echo ok", "auth ok", "chat ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
}

func TestNodeWS(t *testing.T) {
	t.Parallel()
	needNode(t)
	s := startDefault(t)
	out := runClient(t, "node", "-e", `
const WebSocket = require("ws");
const base = process.argv[1];
const fail = (m) => { console.error(m); process.exit(1); };
setTimeout(() => fail("timeout"), 30000).unref();

// open connects and queues messages from the start: a server may speak
// first (auth sends a welcome) before a listener would otherwise be added.
function open(path, opts) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, opts);
    ws.queue = [];
    ws.waiters = [];
    ws.on("message", (data, isBinary) => {
      const m = { data, isBinary };
      const w = ws.waiters.shift();
      if (w) w(m); else ws.queue.push(m);
    });
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (req, res) => reject(new Error("HTTP " + res.statusCode)));
    ws.once("error", reject);
  });
}
const next = (ws) => ws.queue.length ? Promise.resolve(ws.queue.shift()) : new Promise((resolve) => ws.waiters.push(resolve));

(async () => {
  const e = await open("/echo");
  e.send("hello node");
  let m = await next(e);
  if (m.isBinary || m.data.toString() !== "hello node") fail("echo text " + m.data);
  e.send(Buffer.from([1, 2, 3]));
  m = await next(e);
  if (!m.isBinary || !m.data.equals(Buffer.from([1, 2, 3]))) fail("echo binary");
  await new Promise((resolve) => { e.once("close", (code) => { if (code !== 1000) fail("close " + code); resolve(); }); e.close(1000); });
  console.log("echo ok");

  try { await open("/auth"); fail("auth accepted"); } catch (err) { if (err.message !== "HTTP 401") fail(err.message); }
  const a = await open("/auth", { headers: { "X-Auth-Token": "dev-token" } });
  m = await next(a);
  if (JSON.parse(m.data).type !== "welcome") fail("welcome");
  a.close();
  console.log("auth ok");
})().catch((err) => fail(err.stack));
`, "ws://"+s.Addr())
	for _, want := range []string{"echo ok", "auth ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
}

// TestPythonWebsocketsCompressed: websockets offers permessage-deflate by
// default; against a server with compression on, it is negotiated and
// large messages round-trip.
func TestPythonWebsocketsCompressed(t *testing.T) {
	t.Parallel()
	needPython(t)
	s := startCompressedEcho(t)
	out := runClient(t, python, "-c", `
import asyncio, sys
import websockets

async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        names = [e.name for e in ws.extensions]
        assert names == ["permessage-deflate"], names
        for msg in ["small", "compress me " * 5000, bytes(range(256)) * 100]:
            await ws.send(msg)
            assert await ws.recv() == msg
    print("compressed echo ok")

asyncio.run(main())
`, s.URL("/echo"))
	if !strings.Contains(out, "compressed echo ok") {
		t.Fatalf("output:\n%s", out)
	}
}

// TestNodeWSCompressed: ws offers permessage-deflate by default and checks
// the server's answer strictly; against a server with compression on, it
// is negotiated, and small, large, text and binary messages round-trip, one
// of them fragmented by the client.
func TestNodeWSCompressed(t *testing.T) {
	t.Parallel()
	needNode(t)
	s := startCompressedEcho(t)
	out := runClient(t, "node", "-e", `
const WebSocket = require("ws");
const fail = (m) => { console.error(m); process.exit(1); };
setTimeout(() => fail("timeout"), 30000).unref();
const ws = new WebSocket(process.argv[1]);
const msgs = [
  ["small", {}],
  ["compress me ".repeat(5000), {}],
  [Buffer.alloc(30000, 7), { binary: true }],
  ["in fragments ".repeat(300), { fin: false }],
];
let i = 0;
ws.on("open", () => {
  if (!/^permessage-deflate/.test(ws.extensions)) fail("extensions: " + ws.extensions);
  send();
});
function send() {
  const [data, opts] = msgs[i];
  if (opts.fin === false) {
    ws.send(data.slice(0, 100), { fin: false });
    ws.send(data.slice(100), { fin: true });
  } else {
    ws.send(data, opts);
  }
}
ws.on("message", (data, isBinary) => {
  const [want, opts] = msgs[i];
  const same = Buffer.isBuffer(want) ? isBinary && want.equals(data) : !isBinary && data.toString() === want;
  if (!same) fail("echo " + i + " differs: " + data.length + " bytes");
  if (++i < msgs.length) return send();
  console.log("compressed echo ok");
  ws.close(1000);
});
ws.on("error", (e) => fail(e.message));
`, s.URL("/echo"))
	if !strings.Contains(out, "compressed echo ok") {
		t.Fatalf("output:\n%s", out)
	}
}

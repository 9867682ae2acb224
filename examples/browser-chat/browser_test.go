//go:build unix

// Package browserchat_test runs the browser-chat example's page in
// headless Chromium against real moonwire nodes over Redis: the JavaScript
// client (moonwire.js) connects, exchanges messages, survives a server
// restart and a node change, and recovers what it missed without
// duplicates.
package browserchat_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/browsertest"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router/config"
)

// wait bounds every wait on the page: generous for a loaded 2-core machine,
// well under the ~20 s a browser test may take.
const wait = 10 * time.Second

// TestBrowserChatServerRestart stops the node the page is connected to,
// sends while it is down (through a second node), starts a new node on the
// same address, and checks that the page gets exactly what it missed; a
// message the page sent while disconnected is delivered after the
// reconnect.
func TestBrowserChatServerRestart(t *testing.T) {
	t.Parallel()
	cfg := exampleConfig(t)
	a := startNode(t, cfg, "127.0.0.1:0")
	b := startNode(t, cfg, "127.0.0.1:0")
	addr := a.Addr()
	p := openPage(t, a.Addr(), "/?room=restart&delay=100&max=500&servers=ws://"+addr)
	p.waitFor(`chat.events.some(e => e.type === "open")`, "the page connects")

	g := moontest.Dial(t, b.URL("/chat/restart"))
	sendUntilSeen(t, p, g, "one")
	p.eval(`chat.mw.send("hello from the browser")`)
	expectText(t, g, "hello from the browser")
	p.screenshot("1-connected")

	a.stop(t)
	p.waitFor(`chat.events.some(e => e.type === "reconnecting")`, "the page notices the restart")
	if got := p.eval(`chat.mw.send("sent while away")`); got != `"queued"` {
		t.Fatalf("send while reconnecting = %s, want \"queued\"", got)
	}
	g.Send("two")
	g.Send("three")
	expectText(t, g, "three") // stamped and kept: the node has published it
	p.screenshot("2-restarting")

	startNode(t, cfg, addr)
	p.waitFor(`chat.events.some(e => e.type === "recovered")`, "the page recovers")
	p.waitFor(`["two", "three"].every(t => chat.messages.some(m => m.text === t))`, "the page gets what it missed")
	expectText(t, g, "sent while away")
	sendUntilSeen(t, p, g, "four")
	p.checkNoDuplicates()
	p.screenshot("3-recovered")
}

// TestBrowserChatNodeChange gives the page two nodes; the one it is
// connected to goes away for good, and the page moves to the other and
// recovers what it missed there.
func TestBrowserChatNodeChange(t *testing.T) {
	t.Parallel()
	cfg := exampleConfig(t)
	a := startNode(t, cfg, "127.0.0.1:0")
	b := startNode(t, cfg, "127.0.0.1:0")
	p := openPage(t, a.Addr(), "/?room=move&delay=100&max=500&servers=ws://"+a.Addr()+",ws://"+b.Addr())
	p.waitFor(`chat.events.some(e => e.type === "open" && e.url.includes("`+a.Addr()+`"))`, "the page connects to the first node")

	g := moontest.Dial(t, b.URL("/chat/move"))
	sendUntilSeen(t, p, g, "one")
	p.screenshot("1-first-node")

	a.stop(t)
	g.Send("two")
	g.Send("three")
	p.waitFor(`chat.events.some(e => e.type === "open" && e.url.includes("`+b.Addr()+`") && e.resumed)`, "the page moves to the second node")
	p.waitFor(`chat.events.some(e => e.type === "recovered")`, "the page recovers")
	p.waitFor(`["two", "three"].every(t => chat.messages.some(m => m.text === t))`, "the page gets what it missed")
	p.eval(`chat.mw.send("hello from the second node")`)
	expectText(t, g, "hello from the second node")
	sendUntilSeen(t, p, g, "four")
	p.checkNoDuplicates()
	p.screenshot("2-second-node")
}

// TestBrowserClientLimits exercises the client's bounds against a URL
// nothing listens on, so that it stays disconnected: the send queue under
// each policy, close(), the backoff's growth, cap and jitter, maxRetries,
// and options out of range.
func TestBrowserClientLimits(t *testing.T) {
	t.Parallel()
	cfg := exampleConfig(t)
	a := startNode(t, cfg, "127.0.0.1:0")
	p := openPage(t, a.Addr(), "/?room=queue&servers=ws://"+a.Addr())
	p.waitFor(`chat.events.some(e => e.type === "open")`, "the page loads")
	got := p.evalAsync(`(async () => {
	  const { MoonWire, SendError } = await import("/_moonwire.js");
	  const dead = "ws://127.0.0.1:1/";
	  const out = {};
	  const run = (policy) => {
	    const mw = new MoonWire(dead, { queueSize: 2, queuePolicy: policy, initialDelay: 10, maxDelay: 20 });
	    const drops = [];
	    mw.on("drop", (d) => drops.push(d.data));
	    const r = [];
	    for (const m of ["a", "b", "c"]) {
	      try { r.push(mw.send(m)); } catch (e) { r.push(e instanceof SendError ? e.reason : String(e)); }
	    }
	    r.push(mw._queue.join(""), drops.join(""));
	    mw.close();
	    try { mw.send("x"); r.push("sent after close"); } catch (e) { r.push(e instanceof SendError ? e.reason : String(e)); }
	    r.push(mw.state, mw.queued);
	    return r;
	  };
	  for (const p of ["drop-oldest", "drop-newest", "error"]) out[p] = run(p);
	  out.bad = [{ queuePolicy: "keep-all" }, { qeueSize: 1 }, { queueSize: -1 }, { queueSize: 1.5 }, { jitter: 2 },
	    { factor: 0.5 }, { initialDelay: 100, maxDelay: 10 }, { maxRetries: -1 }].map((o) => {
	    try { new MoonWire(dead, o).close(); return "accepted " + JSON.stringify(o); } catch (e) { return e.name; }
	  });
	  // The backoff: 10, 20, 40, then capped at 50 ms; jitter cuts a delay
	  // by up to its fraction; after maxRetries the client gives up.
	  const backoff = (jitter) => new Promise((ok) => {
	    const mw = new MoonWire(dead, { initialDelay: 10, maxDelay: 50, jitter, maxRetries: 5 });
	    const delays = [];
	    mw.on("reconnecting", (d) => delays.push(d.delay));
	    mw.on("close", (d) => d.final && ok({ delays, state: mw.state }));
	  });
	  out.backoff = await backoff(0);
	  const jittered = await backoff(0.5);
	  const bases = [10, 20, 40, 50, 50];
	  out.jitterInRange = jittered.delays.length === 5 && jittered.delays.every((d, i) => d >= bases[i] / 2 && d <= bases[i]);
	  // close() stops reconnecting: after it, the backoff's timer must not
	  // fire another attempt while a twin that was not closed makes five.
	  const opts = { initialDelay: 10, maxDelay: 10, jitter: 0 };
	  const mw = new MoonWire(dead, opts);
	  let attempts = 0;
	  mw.on("reconnecting", () => attempts++);
	  await new Promise((ok) => mw.on("reconnecting", ok));
	  mw.close();
	  const before = attempts;
	  const twin = new MoonWire(dead, { ...opts, maxRetries: 5 });
	  await new Promise((ok) => twin.on("close", (d) => d.final && ok()));
	  out.afterClose = attempts - before;
	  return out;
	})()`)
	want := `{"afterClose":0,"backoff":{"delays":[10,20,40,50,50],"state":"closed"},` +
		`"bad":["TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError","TypeError"],` +
		`"jitterInRange":true,"drop-newest":["queued","queued","dropped","ab","c","closed","closed",0],` +
		`"drop-oldest":["queued","queued","queued","bc","a","closed","closed",0],` +
		`"error":["queued","queued","full","ab","","closed","closed",0]}`
	if got := normalJSON(t, got); got != normalJSON(t, want) {
		t.Fatalf("queue and close:\n got %s\nwant %s", got, want)
	}
}

// normalJSON re-encodes a JSON value with its keys sorted.
func normalJSON(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBrowserClientResume runs the client against a route that plays a
// history's part by hand, to reach the paths a healthy cluster rarely
// takes: the token and query on the URL, duplicates (dropped), a gap in
// the offsets (reported, then a reconnect with since/epoch that fills it),
// a reload message and a new epoch (reported as gaps that cannot be
// filled).
func TestBrowserClientResume(t *testing.T) {
	t.Parallel()
	browsertest.Skip(t)
	s := moontest.Start(t, moontest.Files(`
[server]
client_js = true

[[routes]]
path = "/fake"
script = "fake.lua"
`, "scripts/fake.lua", `
local M = {}
local function send(conn, offset, epoch, kind)
  conn:send(json.encode({ room = "r", offset = offset, epoch = epoch, type = kind or "message" }))
end
function M.on_open(conn)
  if conn:query("rooms") then
    -- More rooms than the client keeps positions for (MAX_ROOMS, 1000):
    -- the first thousand are tracked, the rest delivered unchecked.
    for i = 1, 1001 do
      conn:send(json.encode({ room = "x" .. i, offset = 1, epoch = "e" }))
    end
    conn:send(json.encode({ room = "x1", offset = 1, epoch = "e" }))     -- a duplicate: dropped
    conn:send(json.encode({ room = "x1001", offset = 1, epoch = "e" }))  -- untracked: delivered
    conn:send(json.encode({ room = "x1", offset = -1, epoch = "e" }))    -- not an offset: unstamped
    conn:send(json.encode({ type = "done" }))
    return
  end
  local since = conn:query("since")
  log.info("fake open", { since = since or "none", epoch = conn:query("epoch") or "none",
    token = conn:query("token") or "none", k = conn:query("k") or "none" })
  if not since then
    send(conn, 1, "e"); send(conn, 2, "e"); send(conn, 2, "e"); send(conn, 1, "e")
    send(conn, 5, "e") -- 3 and 4 missing
    send(conn, 6, "e") -- after the gap: ignored, the client is reconnecting
  elseif since == "2" then
    send(conn, 3, "e"); send(conn, 4, "e"); send(conn, 5, "e"); send(conn, 5, "e")
    conn:send(json.encode({ type = "reload", room = "r", offset = 9, epoch = "f", reason = "trimmed" }))
    send(conn, 10, "f")
    send(conn, 11, "g") -- the history was lost meanwhile
  end
end
return M
`))
	p := openPage(t, s.Addr(), "/_moonwire.js") // a page of the client's origin, to import it from
	got := p.evalAsync(`(async () => {
	  const { MoonWire } = await import("/_moonwire.js");
	  const mw = new MoonWire("` + s.URL("/fake") + `", { token: async () => "tok-1", query: { k: "v" }, room: "r", initialDelay: 10 });
	  const log = [];
	  mw.on("open", (d) => log.push(d.resumed ? "open resumed" : "open"));
	  mw.on("reconnecting", () => log.push("reconnecting"));
	  mw.on("recovered", (d) => log.push("recovered since " + d.since));
	  mw.on("gap", (d) => log.push("gap " + (d.reload ? "reload " + d.reason : "") + " " + d.from + "-" + d.offset));
	  await new Promise((ok) => mw.on("message", (d) => { log.push("m" + d.offset); if (d.offset === 11) ok(); }));
	  mw.close();
	  return { log, stats: mw.stats };
	})()`)
	want := `{"log":["open","m1","m2","gap  2-5","reconnecting","open resumed","recovered since 2","m3","m4","m5",` +
		`"gap reload trimmed 5-9","m10","gap reload epoch 10-11","m11"],` +
		`"stats":{"dropped":0,"duplicates":3,"gaps":3,"reconnects":1}}`
	if got := normalJSON(t, got); got != normalJSON(t, want) {
		t.Fatalf("resume:\n got %s\nwant %s", got, want)
	}
	rooms := p.evalAsync(`(async () => {
	  const { MoonWire, MAX_ROOMS } = await import("/_moonwire.js");
	  const mw = new MoonWire("` + s.URL("/fake?rooms=1") + `");
	  let stamped = 0, unstamped = 0;
	  await new Promise((ok) => mw.on("message", (d) => {
	    if (d.json.type === "done") ok(); else if (d.offset === undefined) unstamped++; else stamped++;
	  }));
	  mw.close();
	  return [MAX_ROOMS, mw.positions.size, stamped, unstamped, mw.stats.duplicates];
	})()`)
	if rooms != "[1000,1000,1002,1,1]" {
		t.Errorf("past MAX_ROOMS: [MAX_ROOMS, tracked, stamped, unstamped, duplicates] = %s, want [1000,1000,1002,1,1]", rooms)
	}
	s.WaitLog(t, "fake open", "since=none", "token=tok-1", "k=v")
	s.WaitLog(t, "fake open", "since=2", "epoch=e", "token=tok-1", "k=v")
}

// exampleConfig loads the example's config with a Redis prefix of the
// test's own, or skips when there is no Redis or no Chromium.
func exampleConfig(t *testing.T) *config.Config {
	t.Helper()
	browsertest.Skip(t)
	c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second)
	if err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379 (%v)", err)
	}
	c.Close()
	cfg, err := config.Load("moonwire.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Broker.Prefix = fmt.Sprintf("browser-chat-test-%d", time.Now().UnixNano())
	return cfg
}

// node is a moonwire node a test may stop before its end.
type node struct {
	*moonwire.Server
	stopped bool
}

// startNode starts a node of cfg on listen (an address a stopped node had,
// to restart it in its place), stopped when the test ends.
func startNode(t *testing.T, cfg *config.Config, listen string) *node {
	t.Helper()
	logs := &moontest.Logs{}
	s, err := moonwire.New(moonwire.Options{Config: cfg, Listen: listen, OwnProcess: true,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{Server: s}
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("log of the node on %s:\n%s", s.Addr(), logs.String())
		}
	})
	return n
}

// URL returns the ws:// URL of path on the node.
func (n *node) URL(path string) string { return "ws://" + n.Addr() + path }

// stop drains the node: its clients get 1001 going away.
func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.stopped {
		return
	}
	n.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// page is the example's page open in headless Chromium.
type page struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
}

// openPage opens pathQuery (the example's page: "/?room=..."), from the
// node on addr: the page from its static folder, the client from its
// /_moonwire.js.
func openPage(t *testing.T, addr, pathQuery string) *page {
	t.Helper()
	base := "http://" + addr
	if !servesClient(base) {
		t.Fatalf("%s/_moonwire.js does not serve the client (server.client_js = true)", base)
	}

	artifacts := browsertest.Screenshots(t)
	p := &page{t: t, ctx: browser.Tab(t), artifacts: artifacts} // a tab of its own
	t.Cleanup(func() {
		if t.Failed() {
			p.screenshot("failed")
			t.Logf("page events: %s", p.tryEval(`JSON.stringify(window.chat?.events ?? "not the chat page")`))
		}
	})
	if err := chromedp.Do(p.ctx, chromedp.Navigate(base+pathQuery)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	return p
}

// browser is the one headless Chromium the package's tests share, each in
// a tab of its own: starting a browser is most of a test's time on a
// loaded machine.
var browser = browsertest.Browser{Width: 800, Height: 600}

func TestMain(m *testing.M) {
	code := m.Run()
	browser.Close() // waits for Chromium to exit, then removes its profile
	os.Exit(code)
}

// servesClient reports whether base serves the JavaScript client at
// /_moonwire.js.
func servesClient(base string) bool {
	resp, err := http.Get(base + "/_moonwire.js")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "class MoonWire")
}

// waitFor waits until the page's expression is true.
func (p *page) waitFor(expr, what string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		p.t.Fatalf("%s: %v (waited for %s)", what, err, expr)
	}
}

// eval evaluates expr on the page and returns its value as JSON.
func (p *page) eval(expr string) string {
	p.t.Helper()
	v, err := p.evalErr(expr, false)
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// evalAsync is eval for an expression that gives a promise.
func (p *page) evalAsync(expr string) string {
	p.t.Helper()
	v, err := p.evalErr(expr, true)
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (p *page) tryEval(expr string) string {
	v, err := p.evalErr(expr, false)
	if err != nil {
		return err.Error()
	}
	return v
}

func (p *page) evalErr(expr string, async bool) (string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	var opts []chromedp.EvaluateOption
	if async {
		opts = append(opts, chromedp.EvalAwaitPromise)
	}
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, opts...))
	return string(raw), err
}

// screenshot saves the page as NAME.png in the test's artifacts folder.
func (p *page) screenshot(name string) {
	browsertest.Shot(p.t, p.ctx, p.artifacts, name)
}

// checkNoDuplicates checks that the page got every offset of its room
// once, in order, from its first message on: nothing twice, nothing missed.
func (p *page) checkNoDuplicates() {
	p.t.Helper()
	var msgs []struct {
		Offset uint64
		Type   string
		Text   string
	}
	if err := json.Unmarshal([]byte(p.eval(`chat.messages`)), &msgs); err != nil {
		p.t.Fatal(err)
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Offset != msgs[i-1].Offset+1 {
			p.t.Fatalf("offsets %d then %d (%s %q): a duplicate or a gap in %+v",
				msgs[i-1].Offset, msgs[i].Offset, msgs[i].Type, msgs[i].Text, msgs)
		}
	}
	if dups := p.eval(`chat.mw.stats.duplicates`); dups != "0" {
		// Dropping them is the client's job; a resume that sends any back is
		// the route's bug, which this example would hide otherwise.
		p.t.Logf("the client dropped %s duplicates", dups)
	}
}

// sendUntilSeen sends text from g until the page has it: the page's node
// may not have its subscription to the room in Redis yet when g first
// sends (then the page hears a later copy, sees the gap and recovers the
// first one).
func sendUntilSeen(t *testing.T, p *page, g *moontest.Client, text string) {
	t.Helper()
	seen := fmt.Sprintf(`chat.messages.some(m => m.text === %q)`, text)
	for deadline := time.Now().Add(wait); ; {
		g.Send(text)
		ctx, cancel := context.WithTimeout(p.ctx, time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](seen, chromedp.WithPollingInterval(20*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the page never got %q: %v", text, err)
		}
	}
}

// expectText reads g's messages until a chat message with text arrives.
func expectText(t *testing.T, g *moontest.Client, text string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		f, err := g.ReadFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %q: %v", text, err)
		}
		var m struct{ Text string }
		if json.Unmarshal(f.Payload, &m) == nil && m.Text == text {
			return
		}
	}
	t.Fatalf("no message %q within %v", text, wait)
}

package moonwire_test

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/browsertest"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/scripts"
)

// TestMonitorBrowser opens the built-in /monitor page in headless
// Chromium: without a token it waits for one, a wrong one is refused, the
// right one goes live; three clients reporting JSON get a line each (and
// a legend entry), and a client that disconnects leaves the chart with
// the next snapshot.
func TestMonitorBrowser(t *testing.T) {
	t.Parallel()
	cfg, err := moonwire.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Routes {
		if cfg.Routes[i].Path == "/monitor" {
			cfg.Routes[i].Settings["interval"] = 0.5 // snapshots every 0.5 s: a line grows quickly
		}
	}
	s := moontest.StartConfig(t, cfg)
	ctx := browsertest.Chromium(t)
	shots := browsertest.Screenshots(t)
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		browsertest.Step(t, ctx, shots, what, actions...)
	}
	waitJS := func(what, expr string) {
		t.Helper()
		browsertest.WaitJS(t, ctx, shots, what, expr)
	}

	step("open the page without a token",
		chromedp.Navigate(s.HTTPURL("/monitor?window=30")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="idle"] #token`)),
	)
	step("a wrong token is refused",
		chromedp.SetValue(chromedp.CSS("#token"), "wrong"),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="refused"]`)),
	)
	step("the right token goes live",
		chromedp.SetValue(chromedp.CSS("#token"), "monitor-token"),
		chromedp.Click(chromedp.CSS("#connect")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"]`)),
	)

	hdr := http.Header{"X-Monitor-Token": {"monitor-token"}}
	var rs []*browsertest.Reporter
	for k := range 3 {
		rs = append(rs, browsertest.Report(t, s.URL("/monitor"), hdr, 200*time.Millisecond, func(i int) string {
			return fmt.Sprintf(`{"cpu":%g,"mem":%g}`, browsertest.Wave(i, k, 45, 30), browsertest.Wave(i, k+1, 60, 10))
		}))
	}
	// A few points each, so that the screenshot shows lines, not dots
	// (more for the README's picture).
	points := " >= 6"
	if os.Getenv(browsertest.ScreenshotsEnv) == "1" {
		points = " >= 40"
	}
	for _, r := range rs {
		waitJS("a line for "+r.Addr, browsertest.MonitorPoints(r.Addr)+points)
	}
	waitJS("three clients", `document.querySelector("#clients-count").dataset.value === "3" &&
	  document.querySelectorAll("#monitor-chart path[data-client]").length === 3`)
	for _, r := range rs {
		waitJS("a legend entry for "+r.Addr, fmt.Sprintf(`document.querySelector('[data-legend][data-addr=%q]') !== null`, r.Addr))
	}
	if got := browsertest.Eval[string](t, ctx, `[...document.querySelectorAll("#metric option")].map(o => o.value).join(",")`); got != "cpu,mem" {
		t.Errorf("metrics listed: %q, want cpu,mem", got)
	}
	browsertest.KeepShot(t, ctx, "monitor", "docs/screenshots/monitor.png")

	// The page picks another metric; then one client goes.
	step("pick mem", chromedp.SetValue(chromedp.CSS("#metric"), "mem"))
	browsertest.Eval[bool](t, ctx, `document.querySelector("#metric").dispatchEvent(new Event("change"))`)
	gone := rs[0]
	gone.Leave()
	waitJS("the closed client's line leaves", browsertest.MonitorPoints(gone.Addr)+` === 0 &&
	  document.querySelector('[data-legend][data-addr="`+gone.Addr+`"]') === null &&
	  document.querySelector("#clients-count").dataset.value === "2"`)
	for _, r := range rs[1:] {
		waitJS("the others stay", browsertest.MonitorPoints(r.Addr)+" > 0")
	}
	browsertest.Shot(t, ctx, shots, "after-leave")
}

// monitorFeed plays the built-in monitor's part with a crafted snapshot:
// more clients than the page draws, reports it cannot read, a huge one, a
// binary one, and markup where a name goes.
const monitorFeed = `local M = {}
local page = require "monitor_page"
function M.on_http(req) return page.answer(req) end
function M.on_open(conn)
  local clients = json.array()
  local function add(e) e.at = 1; clients[#clients + 1] = e end
  add({ id = "bin", addr = "10.0.0.2:1", kind = "binary", report = crypto.base64_encode("12.5|40") })
  add({ id = "huge", addr = "10.0.0.2:2", kind = "text", report = "cpu: 1% " .. string.rep("x", 100000) })
  add({ id = "words", addr = "10.0.0.2:3", kind = "text", report = "no numbers here" })
  add({ id = "nested", addr = "10.0.0.2:4", kind = "text", report = { name = "n", load = "3.5%", deep = { cpu = 9 } } })
  add({ id = "markup", addr = "<img src=x onerror=\"document.body.dataset.pwned=1\">", kind = "text", report = { cpu = 2 } })
  for i = 1, 150 do add({ id = "c" .. i, addr = "10.0.0.1:" .. i, kind = "text", report = { cpu = i } }) end
  conn:send(json.encode({ type = "snapshot", at = 1, clients = clients }))
end
return M
`

// TestMonitorPageBounds feeds the page a snapshot of 155 clients: it
// draws 100 (and says how many more there are), plots nothing for a
// report without numbers, reads binary and text reports, survives a huge
// one, and shows markup as text.
func TestMonitorPageBounds(t *testing.T) {
	t.Parallel()
	page, err := fs.ReadFile(scripts.FS, "monitor_page.lua")
	if err != nil {
		t.Fatal(err)
	}
	s := moontest.Start(t, moontest.Files("[[routes]]\npath = \"/monitor\"\nscript = \"feed.lua\"\n",
		"scripts/feed.lua", monitorFeed, "scripts/monitor_page.lua", string(page)))
	ctx := browsertest.Chromium(t)
	shots := browsertest.Screenshots(t)
	browsertest.Step(t, ctx, shots, "open the page",
		chromedp.Navigate(s.HTTPURL("/monitor?token=x")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"]`)),
	)
	browsertest.WaitJS(t, ctx, shots, "100 lines", `document.querySelector("#clients-count").dataset.value === "100" &&
	  document.querySelectorAll("#monitor-chart path[data-client]").length === 100`)
	got := browsertest.Eval[string](t, ctx, `JSON.stringify({
	  count: document.querySelector("#clients-count").textContent,
	  metrics: [...document.querySelectorAll("#metric option")].map(o => o.value),
	  bin: document.querySelector('[data-legend="bin"] .value')?.textContent,
	  huge: document.querySelector('[data-legend="huge"] .value')?.textContent,
	  words: document.querySelector('[data-legend="words"]') !== null,
	  markup: document.querySelector('[data-legend="markup"]')?.textContent.includes("<img"),
	  img: document.querySelectorAll("img").length,
	  pwned: document.body.dataset.pwned ?? "no",
	  c97: document.querySelector('path[data-client="c96"]') !== null,
	  c98: document.querySelector('path[data-client="c97"]') !== null,
	})`)
	want := `{"count":"100 (+54 not drawn)","metrics":["cpu","mem","load"],"bin":"12.5","huge":"1",` +
		`"words":false,"markup":true,"img":0,"pwned":"no","c97":true,"c98":false}`
	if got != want {
		t.Errorf("page after a snapshot of 155 clients:\n got %s\nwant %s", got, want)
	}
}

// Package tutorial_test opens the tutorial's /monitor page in headless
// Chromium against the tutorial's own config.
package tutorial_test

import (
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/moonwire/moonwire/internal/browsertest"
	"github.com/moonwire/moonwire/internal/moontest"
)

// TestTutorialMonitorBrowser opens the tutorial's /monitor page: three
// clients reporting the tutorial's "CPU: x%, MEM: y%" get a line each from
// the relays; one that falls silent leaves after the page's ?silence=2
// seconds (the tutorial has no leave message), the others stay; a wrong
// token is refused.
func TestTutorialMonitorBrowser(t *testing.T) {
	t.Parallel()
	s := moontest.StartFile(t, "moonwire.toml")
	ctx := browsertest.Chromium(t)
	shots := browsertest.Screenshots(t)
	waitJS := func(what, expr string) {
		t.Helper()
		browsertest.WaitJS(t, ctx, shots, what, expr)
	}

	browsertest.Step(t, ctx, shots, "a wrong token is refused",
		chromedp.Navigate(s.HTTPURL("/monitor?token=wrong")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="refused"]`)),
	)
	browsertest.Step(t, ctx, shots, "open the page",
		chromedp.Navigate(s.HTTPURL("/monitor?token=monitor_token_2025&silence=2&window=30")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"]`)),
	)

	hdr := http.Header{"X-Monitor-Token": {"monitor_token_2025"}}
	var rs []*browsertest.Reporter
	for k := range 3 {
		rs = append(rs, browsertest.Report(t, s.URL("/monitor"), hdr, 200*time.Millisecond, func(i int) string {
			return fmt.Sprintf("CPU: %.2f%%, MEM: %.2f%%", browsertest.Wave(i, k, 45, 30), browsertest.Wave(i, k+1, 60, 10))
		}))
	}
	points := " >= 6"
	if os.Getenv(browsertest.ScreenshotsEnv) == "1" {
		points = " >= 100" // 20 s of reports for the README's picture
	}
	for _, r := range rs {
		// The relay names a client by its address: that is its id.
		waitJS("a line for "+r.Addr, browsertest.MonitorPoints(r.Addr)+points+
			fmt.Sprintf(` && document.querySelector('path[data-client=%q]') !== null`, r.Addr))
	}
	waitJS("three clients and their legend", `document.querySelector("#clients-count").dataset.value === "3" &&
	  document.querySelectorAll("#legend [data-legend]").length === 3`)
	if got := browsertest.Eval[string](t, ctx, `[...document.querySelectorAll("#metric option")].map(o => o.value).join(",")`); got != "cpu,mem" {
		t.Errorf("metrics listed: %q, want cpu,mem", got)
	}
	browsertest.KeepShot(t, ctx, "tutorial-monitor", "../../docs/screenshots/tutorial-monitor.png")

	silent := rs[0]
	silent.Silence() // connected, but reporting nothing
	waitJS("the silent client's line leaves", browsertest.MonitorPoints(silent.Addr)+` === 0 &&
	  document.querySelector("#clients-count").dataset.value === "2"`)
	for _, r := range rs[1:] {
		waitJS("the others stay", browsertest.MonitorPoints(r.Addr)+" > 0")
	}
	browsertest.Shot(t, ctx, shots, "after-silence")
}

package moonwire_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/moonwire/moonwire/internal/browsertest"
	"github.com/moonwire/moonwire/internal/moontest"
)

const dashToken = "dash-secret-token"

const dashConfig = `
[admin]
listen = "127.0.0.1:0"
token = "` + dashToken + `"

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/chat/{room}"
script = "room.lua"
`

// dashEcho echoes, tells a client its id on "id", and fails on "boom".
const dashEcho = `local M = {}
function M.on_message(conn, data)
  if data == "boom" then error("boom on purpose") end
  if data == "id" then conn:send(conn.id) return end
  conn:send(data)
end
return M
`

const dashRoom = `local M = {}
function M.on_open(conn) conn:join(conn.params.room) end
function M.on_message(conn, data) ws.broadcast(conn.params.room, data) end
return M
`

// dashBroken does not compile: line 3 has a syntax error.
const dashBroken = `local M = {}
function M.on_open(conn) conn:join(conn.params.room) end
function M.on_message(conn, data) ws.broadcast(conn.params.room data) end
return M
`

// scrapeAuth reads /metrics with the admin token.
func scrapeAuth(t *testing.T, addr, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s: %s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sum adds up every series of a counter or gauge family.
func sum(fams map[string]*dto.MetricFamily, name string) float64 {
	var total float64
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// TestDashboardBrowser drives the admin dashboard in headless Chromium
// against a real node: log in with the admin token; after a scripted
// burst of traffic its totals and per-route figures equal /metrics; a
// script error is listed with its route and callback; the rooms view
// finds a room; a reload of a broken script shows the error with
// file:line; the close action closes a connection with 1008 "closed by an
// operator". With MOONWIRE_SCREENSHOTS=1 it also writes
// docs/screenshots/dashboard.png for the README.
func TestDashboardBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.Chromium(t)
	s := moontest.Start(t, moontest.Files(dashConfig, "scripts/echo.lua", dashEcho, "scripts/room.lua", dashRoom))
	shots := browsertest.Screenshots(t)
	admin := "http://" + s.AdminAddr()

	n := 0
	shot := func(name string) {
		n++
		browsertest.Shot(t, ctx, shots, fmt.Sprintf("%02d-%s", n, name))
	}
	const wait = 30 * time.Second
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			shot("failed")
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, s.Logs())
		}
	}
	eval := func(js string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](js))
		if err != nil {
			shot("failed")
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	// until polls the page until js returns want.
	until := func(what, js, want string) {
		t.Helper()
		deadline := time.Now().Add(wait)
		var got string
		for {
			got = eval(js)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				shot("failed")
				t.Fatalf("%s: the page shows %q, want %q\nserver log:\n%s", what, got, want, s.Logs())
			}
			time.Sleep(100 * time.Millisecond) // a poll interval, not a synchronisation
		}
	}
	attr := func(sel, name string) string {
		return fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? String(e.getAttribute(%q)) : "missing" })()`, sel, name)
	}

	step("load the login form",
		chromedp.Navigate(admin+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="login"]`)),
	)
	step("a wrong token is refused",
		chromedp.SetValue(chromedp.CSS("#login-token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#login-button")),
	)
	// The error's paragraph is there (empty) from the start: wait for its
	// text, and for the button the attempt disabled.
	browsertest.WaitJS(t, ctx, shots, "the wrong token's error",
		`document.querySelector("#login-error").textContent.includes("wrong token") && !document.querySelector("#login-button").disabled`)
	step("log in",
		chromedp.SetValue(chromedp.CSS("#login-token"), dashToken),
		chromedp.Click(chromedp.CSS("#login-button")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"]`)),
	)

	// The burst: echo round trips, a room of three with broadcasts, a
	// refused handshake and a script error.
	echo := moontest.Dial(t, s.URL("/echo"))
	for i := range 40 {
		msg := "m" + strconv.Itoa(i)
		echo.Send(msg)
		echo.Expect(msg)
	}
	var members []*moontest.Client
	for range 3 {
		members = append(members, moontest.Dial(t, s.URL("/chat/lobby")))
	}
	moontest.WaitFor(t, "three members in lobby", func() bool { return s.Router.RoomSize("lobby") == 3 })
	for i := range 10 {
		members[i%3].Send("hello " + strconv.Itoa(i))
		for _, m := range members {
			m.Expect("hello " + strconv.Itoa(i))
		}
	}
	if _, err := moontest.TryDial(t, s.URL("/nowhere")); err == nil {
		t.Fatal("a handshake to an unknown path was accepted")
	}
	bad := moontest.Dial(t, s.URL("/echo"))
	bad.Send("boom")
	bad.ExpectClose(1011)
	moontest.WaitFor(t, "the failed connection to go", func() bool { return s.Router.Stats().Connections == 4 })

	// Traffic has stopped: the page's next snapshot must equal /metrics.
	fams := scrapeAuth(t, s.AdminAddr(), dashToken)
	for _, c := range []struct{ total, metric string }{
		{"connections", "moonwire_connections"},
		{"messages_in", "moonwire_messages_received_total"},
		{"messages_out", "moonwire_messages_sent_total"},
		{"bytes_in", "moonwire_received_bytes_total"},
		{"bytes_out", "moonwire_sent_bytes_total"},
		{"deliveries", "moonwire_broadcast_deliveries_total"},
		{"broadcasts", "moonwire_broadcasts_total"},
		{"handshakes_refused", "moonwire_handshakes_refused_total"},
		{"handshakes_accepted", "moonwire_handshakes_accepted_total"},
	} {
		want := strconv.FormatFloat(sum(fams, c.metric), 'f', -1, 64)
		until("total "+c.total, attr(`[data-total="`+c.total+`"]`, "data-value"), want)
	}
	for _, route := range []string{"/echo", "/chat/{room}"} {
		for _, c := range []struct{ field, metric string }{
			{"connections", "moonwire_connections"},
			{"messages_in", "moonwire_messages_received_total"},
			{"messages_out", "moonwire_messages_sent_total"},
		} {
			v, _ := value(fams, c.metric, map[string]string{"route": route})
			want := strconv.FormatFloat(v, 'f', -1, 64)
			until(route+" "+c.field, attr(`tr[data-route="`+route+`"] td[data-field="`+c.field+`"]`, "data-value"), want)
		}
	}
	until("errors on /echo", attr(`tr[data-route="/echo"] td[data-field="errors"]`, "data-value"), "1")
	until("the script error", `(() => { const e = document.querySelector(".script-error [data-field=error]"); return e ? String(e.textContent.includes("boom on purpose")) : "none" })()`, "true")
	until("the script error's route", `(() => { const e = document.querySelector(".script-error [data-field=route]"); return e ? e.textContent : "none" })()`, "/echo")
	until("a chart drawn", `(() => { const p = document.querySelector('svg[data-chart="connections"] path[data-series]'); return p && p.getAttribute("d") ? "drawn" : "empty" })()`, "drawn")

	step("find the room",
		chromedp.SendKeys(chromedp.CSS("#rooms-search"), "lob"),
		chromedp.WaitVisible(chromedp.CSS(`[data-room="lobby"]`)),
	)
	until("lobby's size", `(() => { const e = document.querySelector('[data-room="lobby"] [data-field=members]'); return e ? e.textContent.trim() : "none" })()`, "3")
	shot("burst")
	if os.Getenv("MOONWIRE_SCREENSHOTS") == "1" {
		browsertest.KeepShot(t, ctx, "dashboard", filepath.Join("docs", "screenshots", "dashboard.png"))
	}

	// A broken script, applied from the dashboard: the reload fails with
	// file:line and the previous version keeps serving.
	s.WriteFile(t, "scripts/room.lua", dashBroken)
	step("reload from the dashboard",
		chromedp.Click(chromedp.CSS("#reload-button")),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm-yes")),
		chromedp.WaitVisible(chromedp.CSS(`.reload-entry[data-ok="false"] .reload-error`)),
	)
	until("the reload error", `document.querySelector('.reload-entry[data-ok="false"] .reload-error').textContent.includes("room.lua:3:") ? "file:line" : document.querySelector('.reload-entry[data-ok="false"] .reload-error').textContent`, "file:line")
	members[0].Send("still served")
	for _, m := range members {
		m.Expect("still served")
	}

	// Close a connection from the dashboard.
	echo.Send("id")
	id := echo.Next().Text()
	step("close a connection",
		chromedp.SetValue(chromedp.CSS("#close-conn-id"), id),
		chromedp.Click(chromedp.CSS("#close-conn-button")),
		chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm-yes")),
		chromedp.WaitVisible(chromedp.CSS(`#action-result[data-ok="true"]`)),
	)
	echo.ExpectClose(1008, "closed by an operator")
	s.WaitLog(t, "admin action", id)
	shot("actions")
}

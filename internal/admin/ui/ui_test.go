package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/moonwire/moonwire/internal/admin/ui"
	"github.com/moonwire/moonwire/internal/browsertest"
)

// csp is the Content-Security-Policy the admin listener sends with the
// page (the dashboard contract): the test serves the page under the same
// one, so an inline script or style the policy blocks fails here too.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// sessionCookie is the fake's session: any value will do, the fake only
// checks that the page sends back what login set.
const sessionCookie = "fake-session"

// failedReload is the error of the fake's failed reload, as the back end
// words it ("file:line: message"); '<eof>' checks that it is shown as
// text, not parsed as markup.
const failedReload = "chat.lua:3: unexpected symbol near '<eof>'"

// closeRequest is a POST /dashboard/close the fake received.
type closeRequest struct {
	Action      string // the X-Moonwire-Action header
	ContentType string
	Conn        string `json:"conn"`
	Code        int    `json:"code"`
	Reason      string `json:"reason"`
}

// shown is the part of the fake's last snapshot the test looks for in the
// page.
type shown struct {
	connections, messagesIn, bytesIn, refused int64
	chatIn                                    int64
	chatInPerSec, chatP50                     float64
}

// fake is a dashboard back end that follows the contract with canned,
// changing numbers, and records the actions it receives.
type fake struct {
	token string // "" when no login is needed
	// forbidden is the session's error when the dashboard is refused (a
	// non-loopback admin listener without a token); "" otherwise.
	forbidden string
	done      chan struct{} // closed at the end of the test: ends the feeds

	mu      sync.Mutex
	n       int  // snapshots sent
	frozen  bool // numbers stop changing (snapshots still flow)
	last    shown
	closes  []closeRequest
	reloads int
	queries []string // rooms ?q= values
}

func newFake(t *testing.T, token, forbidden string) (*fake, *httptest.Server) {
	t.Helper()
	f := &fake{token: token, forbidden: forbidden, done: make(chan struct{})}
	srv := httptest.NewServer(f.handler(t))
	// Cleanups run last-registered first: the feeds end before the server
	// closes, as Close waits for every request to finish.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(f.done) })
	return f, srv
}

func (f *fake) freeze() shown {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
	return f.last
}

func (f *fake) recorded() (closes []closeRequest, reloads int, queries []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.closes), f.reloads, slices.Clone(f.queries)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fake) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	static := func(name, ctype string) http.HandlerFunc {
		body, err := fs.ReadFile(ui.FS, name)
		if err != nil {
			t.Fatalf("read %s from ui.FS: %v", name, err)
		}
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", ctype)
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cache-Control", "no-cache")
			_, _ = w.Write(body)
		}
	}
	mux.HandleFunc("GET /{$}", static("index.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /ui/dashboard.js", static("dashboard.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /ui/dashboard.css", static("dashboard.css", "text/css; charset=utf-8"))

	mux.HandleFunc("GET /dashboard/session", func(w http.ResponseWriter, r *http.Request) {
		if f.forbidden != "" {
			writeJSON(w, http.StatusOK, map[string]any{
				"auth_required": true, "logged_in": false, "node": "node-a", "version": "v1.2.3", "error": f.forbidden,
			})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"auth_required": f.token != "", "logged_in": f.authed(r), "node": "node-a", "version": "v1.2.3",
		})
	})
	mux.HandleFunc("POST /dashboard/login", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Token string `json:"token"`
		}
		if !actionOK(w, r, &body) {
			return
		}
		if f.token != "" && body.Token != f.token {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "wrong token"})
			return
		}
		if f.token != "" {
			http.SetCookie(w, &http.Cookie{Name: "moonwire_admin", Value: sessionCookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: 12 * 3600})
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /dashboard/logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "moonwire_admin", Value: "", Path: "/", MaxAge: -1})
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /dashboard/feed", f.auth(f.feed))
	mux.HandleFunc("GET /dashboard/rooms", f.auth(f.rooms))
	mux.HandleFunc("GET /dashboard/members", f.auth(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"room": r.URL.Query().Get("room"), "presence": true,
			"members": []map[string]any{
				{"conn": "c-1", "info": map[string]string{"name": `<img src=x id=injected>`}},
				{"conn": "c-2", "info": nil},
			},
		})
	}))
	mux.HandleFunc("POST /dashboard/close", f.auth(func(w http.ResponseWriter, r *http.Request) {
		var c closeRequest
		if !actionOK(w, r, &c) {
			return
		}
		c.Action, c.ContentType = r.Header.Get("X-Moonwire-Action"), r.Header.Get("Content-Type")
		f.mu.Lock()
		f.closes = append(f.closes, c)
		f.mu.Unlock()
		if c.Conn == "gone" {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such connection"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": fmt.Sprintf("connection %s closed with %d", c.Conn, c.Code)})
	}))
	mux.HandleFunc("POST /dashboard/reload", f.auth(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if !actionOK(w, r, &body) {
			return
		}
		f.mu.Lock()
		f.reloads++
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"at": time.Now().UnixMilli(), "ok": false, "error": failedReload,
			"changed": []string{}, "removed": []string{}, "server": []string{}, "by": "dashboard",
		})
	}))
	return mux
}

// actionOK checks what the contract asks of every POST (the action header
// and a JSON body of bounded size) and decodes the body into v.
func actionOK(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Header.Get("X-Moonwire-Action") != "1" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "missing X-Moonwire-Action or JSON content type"})
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON: " + err.Error()})
		return false
	}
	return true
}

func (f *fake) authed(r *http.Request) bool {
	if f.token == "" {
		return false
	}
	c, err := r.Cookie("moonwire_admin")
	return err == nil && c.Value == sessionCookie
}

func (f *fake) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if f.forbidden != "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": f.forbidden})
			return
		}
		if f.token != "" && !f.authed(r) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "login required"})
			return
		}
		h(w, r)
	}
}

var fakeRooms = []map[string]any{
	{"name": "lobby", "members": 12},
	{"name": "chat:news", "members": 5},
	{"name": "chat:sports", "members": 3},
	{"name": "<b>odd</b>", "members": 1},
}

func (f *fake) rooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit < 1 || limit > 500 {
		limit = 50
	}
	f.mu.Lock()
	if len(f.queries) < 1000 {
		f.queries = append(f.queries, q)
	}
	f.mu.Unlock()
	var out []map[string]any
	for _, room := range fakeRooms {
		if strings.Contains(room["name"].(string), q) {
			out = append(out, room)
		}
	}
	total := len(out)
	if len(out) > limit {
		out = out[:limit]
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "rooms": out})
}

// point is the charts' sample n.
func point(at int64, n int) map[string]any {
	return map[string]any{
		"at": at, "connections": 40 + n%7, "messages_in": float64(n%10) + 0.5, "messages_out": float64(n % 13),
		"deliveries": float64(n % 5), "slow_consumer_closes": float64(n % 3),
		"handshakes_refused": map[string]float64{"401": float64(n % 4), "429": 1},
		"heap_bytes":         8<<20 + n*4096, "goroutines": 30 + n%9,
	}
}

// snapshot is the feed's snapshot n, with numbers that change with n, and
// records what the page should show from it.
func (f *fake) snapshot() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen {
		f.n++
	}
	n := f.n
	now := time.Now().UnixMilli()
	f.last = shown{
		connections: int64(40 + n%7), messagesIn: int64(1000 + 7*n), bytesIn: int64(123456 + 1000*n),
		refused: int64(3+n) + 2, chatIn: int64(800 + 5*n), chatInPerSec: float64(n) + 0.5, chatP50: 0.42,
	}
	var nodes any = []map[string]any{
		{"id": "node-a", "self": true, "connections": 40 + n%7, "rooms": 4, "broker_connected": true, "broker_queued": 0, "at": now, "age_ms": 0},
		{"id": "node-b", "self": false, "connections": 17, "rooms": 2, "broker_connected": true, "broker_queued": 3, "at": now - 1500, "age_ms": 1500},
	}
	return map[string]any{
		"at": now, "node": "node-a", "version": "v1.2.3", "uptime_s": 3723 + n, "draining": false,
		"totals": map[string]any{
			"connections": f.last.connections, "handshakes_accepted": 500 + n,
			"handshakes_refused": map[string]int64{"401": int64(3 + n), "429": 2},
			"messages_in":        f.last.messagesIn, "messages_out": 2000 + 11*n, "bytes_in": f.last.bytesIn, "bytes_out": 654321 + 2000*n,
			"broadcasts": 90 + n, "deliveries": 900 + 10*n, "slow_consumer_closes": 1, "queue_drops": 0, "protocol_errors": 2,
			"script_errors": 1, "script_timeouts": 1, "reloads_ok": 1, "reloads_failed": 1,
		},
		"rates": map[string]any{
			"messages_in": 7.5, "messages_out": 11, "bytes_in": 1000, "bytes_out": 2000, "deliveries": 10,
			"slow_consumer_closes": 0, "handshakes_refused": map[string]float64{"401": 1},
		},
		"routes": []map[string]any{
			{"path": "/chat", "script": "chat.lua", "version": "a1b2c3", "loaded_at": now - 60000, "connections": 30,
				"messages_in": f.last.chatIn, "messages_out": 1600 + 9*n, "bytes_in": 90000, "bytes_out": 180000,
				"in_per_s": f.last.chatInPerSec, "out_per_s": 9, "p50_ms": f.last.chatP50, "p99_ms": 3.1, "errors": 2, "timeouts": 1},
			{"path": "/echo", "script": "echo.lua", "version": "d4e5f6", "loaded_at": now - 3600000, "connections": 10,
				"messages_in": 200, "messages_out": 200, "bytes_in": 1000, "bytes_out": 1000,
				"in_per_s": 0, "out_per_s": 0, "p50_ms": -1, "p99_ms": -1, "errors": 0, "timeouts": 0},
		},
		"runtime": map[string]any{"heap_bytes": 8<<20 + n*4096, "goroutines": 30 + n%9},
		"reloads": []map[string]any{
			{"at": now - 5000, "ok": false, "error": failedReload, "changed": []string{}, "removed": []string{}, "server": []string{}, "by": "watch"},
			{"at": now - 120000, "ok": true, "changed": []string{"/chat"}, "removed": []string{"/old"}, "server": []string{"server.max_connections"}, "by": "signal"},
		},
		"errors": []map[string]any{
			{"at": now - 2000, "route": "/chat", "callback": "on_message", "conn": "c-17",
				"error":     "chat.lua:9: attempt to index a nil value (field 'user')",
				"traceback": "stack traceback:\n\tchat.lua:9: in function 'on_message'"},
		},
		"broker":  map[string]any{"kind": "redis", "connected": true, "publishes": 100 + n, "receives": 90, "errors": 0, "reconnects": 1, "dropped": 0, "queued": 3, "rooms": 4},
		"nodes":   nodes,
		"actions": map[string]any{"close": true, "reload": true},
		"point":   point(now, n),
	}
}

// feed is GET /dashboard/feed: the series, then a snapshot at once and
// every 200 ms (faster than the real once a second, to keep the test
// short), until the client goes or the test ends.
func (f *fake) feed(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flusher", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	now := time.Now().UnixMilli()
	var pts []map[string]any
	for i := 30; i > 0; i-- {
		pts = append(pts, point(now-int64(i)*1000, 30-i))
	}
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		fl.Flush()
		return err == nil
	}
	if !send("series", map[string]any{"interval_s": 1, "points": pts}) {
		return
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	// Bounded: at most 5 minutes of snapshots per feed.
	for range 1500 {
		if !send("snapshot", f.snapshot()) {
			return
		}
		if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		case <-tick.C:
		}
	}
}

// tab is one browser tab on one fake, with the helpers of the steps.
type tab struct {
	t     *testing.T
	ctx   context.Context
	shots string

	mu       sync.Mutex
	problems []string // uncaught exceptions, console errors, CSP reports
}

// Deadlines bound a failure, not the speed: generous for a loaded
// two-core machine running chromium beside the race detector.
const wait = 25 * time.Second

// cspProbe runs before the page's own script in every document: it
// records securitypolicyviolation events, which also catch a violation
// that the browser reports to no log.
const cspProbe = `window.__csp = []; document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));`

func newTab(t *testing.T, browserCtx context.Context, shots string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx, shots: shots}
	// Start the tab, then listen before the first navigation.
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe})
		return err
	}))
	if err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			bad := m.IsException() || strings.Contains(m.Text, "Content Security Policy") ||
				// The network's own log entries (a 401 on a wrong token) are
				// expected; the page's console.error calls are not.
				(m.Type == chromedp.ConsoleError && m.Source == "")
			if bad {
				tb.mu.Lock()
				if len(tb.problems) < 100 {
					tb.problems = append(tb.problems, m.String()+" at "+m.URL+":"+strconv.FormatInt(m.Line+1, 10))
				}
				tb.mu.Unlock()
			}
		}
	}()
	return tb
}

func (tb *tab) shot(name string) {
	sctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(tb.shots, strings.ReplaceAll(tb.t.Name(), "/", "_")+"-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
	}
}

// step runs actions with a deadline; on failure it takes a screenshot and
// ends the test.
func (tb *tab) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	sctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		tb.shot("failed")
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// until polls a JavaScript predicate until it is true.
func (tb *tab) until(what, js string) {
	tb.t.Helper()
	sctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	if _, err := chromedp.Run(sctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(wait))); err != nil {
		tb.shot("failed")
		tb.t.Fatalf("%s: waiting for %s: %v", what, js, err)
	}
}

func (tb *tab) eval(js string) string {
	tb.t.Helper()
	sctx, cancel := context.WithTimeout(tb.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.shot("failed")
		tb.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

func (tb *tab) text(sel string) string {
	return tb.eval(fmt.Sprintf(`document.querySelector(%q)?.textContent ?? "(no %s)"`, sel, strings.ReplaceAll(sel, `"`, `'`)))
}

func (tb *tab) contains(what, got, want string) {
	tb.t.Helper()
	if !strings.Contains(got, want) {
		tb.shot("failed")
		tb.t.Errorf("%s: %q, want %q in it", what, got, want)
	}
}

// clean fails the test on an uncaught exception, a console error or a CSP
// violation seen so far.
func (tb *tab) clean() {
	tb.t.Helper()
	if v := tb.eval(`JSON.stringify(window.__csp || [])`); v != "[]" {
		tb.t.Errorf("CSP violations: %s", v)
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, p := range tb.problems {
		tb.t.Errorf("console: %s", p)
	}
}

// attr is the JavaScript for an element's attribute ("" when missing).
func attr(sel, name string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.getAttribute(%q) ?? "")`, sel, name)
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// TestDashboardBrowser drives the page in headless Chromium against the
// fake back end: it goes live, shows the fake's latest numbers, draws the
// charts, lists reloads, errors, the cluster and rooms, and runs the close
// and reload actions through the confirm dialog; a second tab logs in.
func TestDashboardBrowser(t *testing.T) {
	ctx := browsertest.Chromium(t)
	shots := browsertest.Screenshots(t)

	t.Run("live", func(t *testing.T) {
		f, srv := newFake(t, "", "")
		tb := newTab(t, ctx, shots)
		tb.step("load the page",
			chromedp.Navigate(srv.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"] #main`)),
		)
		tb.contains("node id", tb.text("#node-id"), "node-a")
		tb.contains("version", tb.text("#node-version"), "v1.2.3")

		// Charts: every series gets a path once there are two points.
		tb.until("charts drawn", `(() => {
			const want = {connections: ["connections"], messages: ["in", "out"], deliveries: ["deliveries"],
				slow_closes: ["slow_closes"], refusals: ["401", "429"], heap: ["heap"], goroutines: ["goroutines"]};
			return Object.entries(want).every(([c, ss]) => ss.every(s =>
				(document.querySelector('svg[data-chart="' + c + '"] path[data-series="' + s + '"]')?.getAttribute("d") || "").length > 10));
		})()`)

		// The numbers: stop them changing, then wait for the page to show
		// the last ones sent.
		last := f.freeze()
		want := map[string]string{
			`[data-total="connections"]`:                          strconv.FormatInt(last.connections, 10),
			`[data-total="messages_in"]`:                          strconv.FormatInt(last.messagesIn, 10),
			`[data-total="bytes_in"]`:                             strconv.FormatInt(last.bytesIn, 10),
			`[data-total="handshakes_refused"]`:                   strconv.FormatInt(last.refused, 10),
			`tr[data-route="/chat"] td[data-field="messages_in"]`: strconv.FormatInt(last.chatIn, 10),
			`tr[data-route="/chat"] td[data-field="in_per_s"]`:    ftoa(last.chatInPerSec),
			`tr[data-route="/chat"] td[data-field="p50_ms"]`:      ftoa(last.chatP50),
			`tr[data-route="/echo"] td[data-field="p99_ms"]`:      "-1",
			`tr[data-route="/chat"] td[data-field="script"]`:      "chat.lua",
			`tr[data-route="/chat"] td[data-field="version"]`:     "a1b2c3",
		}
		var conds []string
		for sel, v := range want {
			conds = append(conds, attr(sel, "data-value")+" === "+strconv.Quote(v))
		}
		slices.Sort(conds)
		tb.until("the last numbers", strings.Join(conds, " && "))
		tb.contains("bytes formatted", tb.text(`[data-total="bytes_in"] .value`), "kB")
		tb.contains("p50 formatted", tb.text(`tr[data-route="/chat"] td[data-field="p50_ms"]`), "0.42 ms")
		tb.contains("messages formatted", tb.text(`[data-total="messages_in"] .value`), "k")

		// Reloads, newest first; the failed one shows its error verbatim.
		tb.step("reload history", chromedp.WaitVisible(chromedp.CSS(`.reload-entry[data-ok="false"] .reload-error`)))
		tb.contains("reload error", tb.text(`.reload-entry[data-ok="false"] .reload-error`), failedReload)
		tb.contains("reload by", tb.text(`.reload-entry[data-ok="true"] .reload-by`), "signal")
		tb.contains("reload changed", tb.text(`.reload-entry[data-ok="true"] .reload-changed`), "/chat")
		tb.contains("reload order", tb.eval(`document.querySelector(".reload-entry").getAttribute("data-ok")`), "false")

		// Script errors.
		tb.contains("error route", tb.text(`.script-error [data-field="route"]`), "/chat")
		tb.contains("error callback", tb.text(`.script-error [data-field="callback"]`), "on_message")
		tb.contains("error conn", tb.text(`.script-error [data-field="conn"]`), "c-17")
		tb.contains("error text", tb.text(`.script-error [data-field="error"]`), "chat.lua:9:")
		tb.contains("traceback", tb.text(`.script-error .traceback`), "stack traceback:")

		// Cluster and broker.
		tb.step("cluster", chromedp.WaitVisible(chromedp.CSS(`#cluster [data-node="node-b"]`)))
		tb.contains("broker", tb.text("#broker"), "redis")

		// Close a connection: confirmed, then POSTed with the header.
		tb.step("ask to close c-42",
			chromedp.SetValue(chromedp.CSS("#close-conn-id"), "c-42"),
			chromedp.Click(chromedp.CSS("#close-conn-button")),
			chromedp.WaitVisible(chromedp.CSS("#confirm")),
		)
		tb.contains("confirm text", tb.text("#confirm-text"), "c-42")
		tb.step("confirm",
			chromedp.Click(chromedp.CSS("#confirm-yes")),
			chromedp.WaitVisible(chromedp.CSS(`#action-result[data-ok="true"]`)),
		)
		tb.contains("close result", tb.text("#action-result"), "connection c-42 closed with 1008")
		closes, _, _ := f.recorded()
		wantClose := closeRequest{Action: "1", ContentType: "application/json", Conn: "c-42", Code: 1008, Reason: "closed by an operator"}
		if len(closes) != 1 || closes[0] != wantClose {
			t.Errorf("close requests %+v, want one %+v", closes, wantClose)
		}

		// Cancel sends nothing: a reload confirmed after it is the next
		// request the fake sees.
		tb.step("ask to close c-43 and cancel",
			chromedp.SetValue(chromedp.CSS("#close-conn-id"), "c-43"),
			chromedp.Click(chromedp.CSS("#close-conn-button")),
			chromedp.WaitVisible(chromedp.CSS("#confirm")),
			chromedp.Click(chromedp.CSS("#confirm-no")),
			chromedp.WaitNotVisible(chromedp.CSS("#confirm")),
		)
		tb.step("reload",
			chromedp.Click(chromedp.CSS("#reload-button")),
			chromedp.WaitVisible(chromedp.CSS("#confirm")),
			chromedp.Click(chromedp.CSS("#confirm-yes")),
			chromedp.WaitVisible(chromedp.CSS(`#action-result[data-ok="false"]`)),
		)
		tb.contains("reload result", tb.text("#action-result"), failedReload)
		closes, reloads, _ := f.recorded()
		if len(closes) != 1 || reloads != 1 {
			t.Errorf("after a cancel and a reload: %d closes (want 1), %d reloads (want 1)", len(closes), reloads)
		}

		// Rooms: listed, searched (debounced) and their members.
		tb.step("rooms", chromedp.WaitVisible(chromedp.CSS(`[data-room="lobby"] [data-field="members"]`)))
		tb.contains("room members", tb.eval(attr(`[data-room="lobby"] [data-field="members"]`, "data-value")), "12")
		tb.contains("room name as text", tb.text(`[data-room="<b>odd</b>"]`), "<b>odd</b>")
		tb.step("search", chromedp.SendKeys(chromedp.CSS("#rooms-search"), "chat"))
		tb.until("search results", `[...document.querySelectorAll("#rooms-body tr")].map(r => r.dataset.room).join(",") === "chat:news,chat:sports"`)
		if _, _, queries := f.recorded(); !slices.Contains(queries, "chat") {
			t.Errorf("rooms queries %q, want one for %q", queries, "chat")
		}
		tb.step("members",
			chromedp.Click(chromedp.CSS(`[data-room="chat:news"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#members [data-member="c-1"] button.close-member`)),
		)
		tb.contains("member info as text", tb.text(`#members [data-member="c-1"]`), "<img src=x id=injected>")
		if got := tb.eval(`String(document.querySelectorAll("#injected, #members img").length)`); got != "0" {
			t.Errorf("member info was parsed as markup: %s elements", got)
		}
		tb.step("close a member",
			chromedp.Click(chromedp.CSS(`#members [data-member="c-1"] button.close-member`)),
			chromedp.WaitVisible(chromedp.CSS("#confirm")),
		)
		tb.contains("member confirm", tb.text("#confirm-text"), "c-1")
		tb.step("confirm the member's close",
			chromedp.Click(chromedp.CSS("#confirm-yes")),
			chromedp.WaitVisible(chromedp.CSS(`#action-result[data-ok="true"]`)),
		)
		tb.until("member closed", `document.querySelector("#action-result").textContent.includes("c-1 closed")`)
		closes, _, _ = f.recorded()
		if len(closes) != 2 || closes[1].Conn != "c-1" || closes[1].Code != 1008 {
			t.Errorf("close requests %+v, want the second for c-1 with 1008", closes)
		}

		tb.shot("live")
		tb.clean()
	})

	t.Run("login", func(t *testing.T) {
		_, srv := newFake(t, "s3cret", "")
		tb := newTab(t, ctx, shots)
		tb.step("load the page",
			chromedp.Navigate(srv.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="login"] #login-token`)),
		)
		tb.step("wrong token",
			chromedp.SendKeys(chromedp.CSS("#login-token"), "nope"),
			chromedp.Click(chromedp.CSS("#login-button")),
			chromedp.Poll[chromedp.Void](`document.querySelector("#login-error").textContent.length > 0`),
		)
		tb.contains("login error", tb.text("#login-error"), "wrong token")
		tb.step("right token",
			chromedp.SetValue(chromedp.CSS("#login-token"), "s3cret"),
			chromedp.Click(chromedp.CSS("#login-button")),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="live"] #logout-button`)),
		)
		tb.step("log out",
			chromedp.Click(chromedp.CSS("#logout-button")),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="login"] #login-token`)),
		)
		tb.shot("login")
		tb.clean()
	})

	t.Run("forbidden", func(t *testing.T) {
		_, srv := newFake(t, "", "the dashboard needs [admin] token when the admin listener is not loopback")
		tb := newTab(t, ctx, shots)
		tb.step("load the page",
			chromedp.Navigate(srv.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="forbidden"] #forbidden-text`)),
		)
		tb.contains("reason", tb.text("#forbidden-text"), "[admin] token")
		tb.clean()
	})
}

// TestIndexHTML checks the page against its CSP by reading it: scripts and
// styles only from /ui/, no inline script bodies, style attributes,
// <style> blocks or inline event handlers.
func TestIndexHTML(t *testing.T) {
	b, err := fs.ReadFile(ui.FS, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(b)
	for _, m := range regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script body: %q", m[2])
		}
		if !regexp.MustCompile(`\bsrc="/ui/[\w.-]+\.js"`).MatchString(m[1]) {
			t.Errorf("script not from /ui/: %q", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`(?i)\b(?:src|href|action|srcset|poster|data)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(html, -1) {
		// The one data: URL is the empty favicon, which keeps the browser
		// from asking for /favicon.ico.
		if !strings.HasPrefix(m[1], "/ui/") && m[1] != "data:," {
			t.Errorf("reference outside /ui/: %s", m[0])
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)\sstyle\s*=`),
		regexp.MustCompile(`(?i)<style\b`),
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),
		regexp.MustCompile(`(?i)javascript:`),
	} {
		if loc := bad.FindStringIndex(html); loc != nil {
			t.Errorf("index.html has %q", html[loc[0]:min(len(html), loc[1]+20)])
		}
	}
	for _, f := range []string{"dashboard.js", "dashboard.css"} {
		if !strings.Contains(html, `"/ui/`+f+`"`) {
			t.Errorf("index.html does not load /ui/%s", f)
		}
	}
	js, err := fs.ReadFile(ui.FS, "dashboard.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("dashboard.js uses %s", bad)
		}
	}
	// The hooks the Go end-to-end tests rely on are in the markup.
	for _, id := range []string{"close-conn-id", "close-conn-code", "close-conn-reason", "close-conn-button", "reload-button",
		"confirm", "confirm-text", "confirm-yes", "confirm-no", "action-result", "rooms-search", "members", "cluster",
		"login-token", "login-button", "login-error", "logout-button"} {
		if !strings.Contains(html, `id="`+id+`"`) {
			t.Errorf("index.html has no #%s", id)
		}
	}
}

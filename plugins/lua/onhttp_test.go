package lua_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/moonwire/moonwire/internal/moontest"
)

// httpClient talks plain HTTP to the servers under test; every request is
// bounded.
var httpClient = &http.Client{Timeout: moontest.Timeout}

// httpResult is an answer read whole.
type httpResult struct {
	status int
	header http.Header
	body   string
}

// do sends a request and reads its answer, failing the test on a
// transport error.
func do(t testing.TB, method, url string, body string, header http.Header) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return httpResult{resp.StatusCode, resp.Header, string(b)}
}

// httpRoute starts a node with the route /hook/{room} running script, plus
// extra config before the route.
func httpRoute(t *testing.T, script, extra, routeKeys string) *moontest.Server {
	t.Helper()
	cfg := extra + "\n[[routes]]\npath = \"/hook/{room}\"\nscript = \"t.lua\"\n" + routeKeys
	return moontest.Start(t, moontest.Files(cfg, "scripts/t.lua", script))
}

func TestOnHTTPRequestFields(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local M = {}
function M.on_http(req)
  local tags = req:query_all("tag")
  return 200, { ["X-Route"] = ws.route }, table.concat({
    req.method, req.path, req.params.room, req.query.q or "-", req.query.tag or "-",
    table.concat(tags, ","), #req:query_all("none"), req.headers["x-test"] or "-",
    req.headers["x-many"] or "-", req.body, tostring(req.remote_addr:match("^127%.0%.0%.1:%d+$") ~= nil),
    req.host:match("^127%.0%.0%.1:%d+$") and "host" or req.host,
  }, "|")
end
return M
`, "", "")
	r := do(t, "GET", s.HTTPURL("/hook/lobby%20one?q=a%20b&tag=x&tag=y"), "",
		http.Header{"X-Test": {"yes"}, "X-Many": {"1", "2"}})
	if r.status != 200 {
		t.Fatalf("status %d, body %q", r.status, r.body)
	}
	if want := "GET|/hook/lobby%20one|lobby one|a b|x|x,y|0|yes|1, 2||true|host"; r.body != want {
		t.Fatalf("body\n got %q\nwant %q", r.body, want)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("content-type %q", ct)
	}
	if r.header.Get("X-Route") != "/hook/{room}" {
		t.Fatalf("X-Route %q", r.header.Get("X-Route"))
	}

	// POST: the body arrives whole, and any method reaches on_http.
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		body := strings.Repeat("é", 1000) + "\x00end"
		r = do(t, m, s.HTTPURL("/hook/r"), body, nil)
		if r.status != 200 || !strings.HasPrefix(r.body, m+"|/hook/r|r|-|-||0|-|-|"+body+"|") {
			t.Fatalf("%s: %d %q", m, r.status, r.body)
		}
	}
	// HEAD: the script runs, the answer has no body.
	r = do(t, "HEAD", s.HTTPURL("/hook/r"), "", nil)
	if r.status != 200 || r.body != "" {
		t.Fatalf("HEAD: %d %q", r.status, r.body)
	}
}

func TestOnHTTPResponses(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local M = {}
function M.on_http(req)
  local p = req.params.room
  if p == "json" then return 201, nil, { ok = true, n = 3, list = {1, 2}, name = req.query.name } end
  if p == "typed" then return 200, { ["content-type"] = "text/html" }, "<b>hi</b>" end
  if p == "jsontyped" then return nil, { ["Content-Type"] = "application/vnd.x+json" }, { a = 1 } end
  if p == "nothing" then return end
  if p == "nocontent" then return 204, { ["x-a"] = "b" }, "dropped" end
  if p == "missing" then return 404, nil, "no such thing" end
  if p == "headers" then
    return 200, { ["Set-Cookie"] = { "a=1", "b=2" }, ["X-Num"] = 42, ["x-lower"] = "v" }, ""
  end
  if p == "empty" then return 200, {}, {} end
  if p == "array" then return 200, {}, json.array({}) end
  return 599, nil, "edge"
end
return M
`, "", "")
	r := do(t, "GET", s.HTTPURL("/hook/json?name=ann"), "", nil)
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 201 ||
		r.header.Get("Content-Type") != "application/json" || got["ok"] != true || got["n"] != 3.0 || got["name"] != "ann" {
		t.Fatalf("json: %d %v %q (%v)", r.status, r.header, r.body, err)
	}
	if r.body != `{"list":[1,2],"n":3,"name":"ann","ok":true}` {
		t.Fatalf("json body %q", r.body)
	}
	cases := []struct {
		path, body, ctype string
		status            int
	}{
		{"typed", "<b>hi</b>", "text/html", 200},
		{"jsontyped", `{"a":1}`, "application/vnd.x+json", 200},
		{"nothing", "", "", 200},
		{"nocontent", "", "", 204},
		{"missing", "no such thing", "text/plain; charset=utf-8", 404},
		{"empty", "{}", "application/json", 200},
		{"array", "[]", "application/json", 200},
		{"other", "edge", "text/plain; charset=utf-8", 599},
	}
	for _, c := range cases {
		r := do(t, "GET", s.HTTPURL("/hook/"+c.path), "", nil)
		if r.status != c.status || r.body != c.body || r.header.Get("Content-Type") != c.ctype {
			t.Errorf("%s: %d %q %q, want %d %q %q", c.path, r.status, r.header.Get("Content-Type"), r.body, c.status, c.ctype, c.body)
		}
		if c.path == "nocontent" && (r.header.Get("X-A") != "b" || r.header.Get("Content-Length") != "") {
			t.Errorf("204: headers %v", r.header)
		}
	}
	r = do(t, "GET", s.HTTPURL("/hook/headers"), "", nil)
	if c := r.header.Values("Set-Cookie"); len(c) != 2 || c[0] != "a=1" || c[1] != "b=2" ||
		r.header.Get("X-Num") != "42" || r.header.Get("X-Lower") != "v" {
		t.Fatalf("headers: %v", r.header)
	}
	// No content type was set and none is guessed: an empty body has none.
	if _, ok := r.header["Content-Type"]; ok {
		t.Fatalf("content type guessed: %v", r.header)
	}
}

// TestOnHTTPWebhook: on_http shares the route's rooms, so a plain request
// can broadcast to the WebSocket clients of a room, and read the store a
// socket callback wrote.
func TestOnHTTPWebhook(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local M = {}
function M.on_open(conn)
  conn:join(conn.params.room)
  store.set("joined:" .. conn.params.room, conn.id)
  conn:send("joined")
end
function M.on_http(req)
  if req.method ~= "POST" then return 405, { allow = "POST" }, "POST only" end
  if not crypto.equal(req.headers["x-secret"] or "", ws.settings.secret) then return 401, nil, "bad secret" end
  local n = ws.broadcast(req.params.room, req.body)
  return 200, nil, { delivered = n, member = store.get("joined:" .. req.params.room) }
end
return M
`, "", `settings = { secret = "s3" }`)
	a := moontest.Dial(t, s.URL("/hook/orders"))
	a.Expect("joined")
	b := moontest.Dial(t, s.URL("/hook/other"))
	b.Expect("joined")

	r := do(t, "POST", s.HTTPURL("/hook/orders"), `{"order":7,"state":"shipped"}`, http.Header{"X-Secret": {"s3"}})
	var got struct {
		Delivered int
		Member    string
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 || got.Delivered != 1 || got.Member == "" {
		t.Fatalf("webhook: %d %q (%v)", r.status, r.body, err)
	}
	a.Expect(`{"order":7,"state":"shipped"}`)

	if r := do(t, "POST", s.HTTPURL("/hook/orders"), "x", http.Header{"X-Secret": {"wrong"}}); r.status != 401 || r.body != "bad secret" {
		t.Fatalf("wrong secret: %d %q", r.status, r.body)
	}
	if r := do(t, "GET", s.HTTPURL("/hook/orders"), "", nil); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d %v", r.status, r.header)
	}
	// b, in another room, heard nothing, and a only the one message: a
	// second broadcast to each is what arrives next.
	do(t, "POST", s.HTTPURL("/hook/other"), "for b", http.Header{"X-Secret": {"s3"}})
	b.Expect("for b")
	do(t, "POST", s.HTTPURL("/hook/orders"), "for a", http.Header{"X-Secret": {"s3"}})
	a.Expect("for a")
}

func TestOnHTTPScriptErrors(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local M = {}
local function deep() error("the secret is hunter2") end
function M.on_http(req)
  local p = req.params.room
  if p == "error" then deep() end
  if p == "status" then return tonumber(req.query.s) or req.query.s end
  if p == "crlf" then return 200, { ["X-Evil"] = "a\r\nSet-Cookie: pwned=1" }, "x" end
  if p == "lf" then return 200, { ["X-Evil"] = "a\nb" }, "x" end
  if p == "name" then return 200, { ["Bad Name"] = "x" }, "x" end
  if p == "namecrlf" then return 200, { ["X\r\nInjected"] = "x" }, "x" end
  if p == "framing" then return 200, { ["Content-Length"] = "1" }, "xyz" end
  if p == "transfer" then return 200, { ["transfer-encoding"] = "chunked" }, "xyz" end
  if p == "headertype" then return 200, { ["x-a"] = { true } }, "x" end
  if p == "headers" then return 200, "nope", "x" end
  if p == "manyheaders" then
    local h = {}
    for i = 1, 101 do h["x-h" .. i] = "v" end
    return 200, h, "x"
  end
  if p == "bigheaders" then return 200, { ["x-big"] = string.rep("a", 17000) }, "x" end
  if p == "body" then return 200, nil, true end
  if p == "big" then return 200, nil, string.rep("a", 1025) end
  if p == "limit" then return 200, nil, string.rep("a", 1024) end
  if p == "bigjson" then local t = {} for i = 1, 1000 do t[i] = i end return 200, nil, t end
  if p == "badjson" then return 200, nil, { f = function() end } end
  return 200, nil, "ok"
end
return M
`, "", `max_message_size = "1KiB"`)
	r := do(t, "GET", s.HTTPURL("/hook/error"), "", nil)
	if r.status != 500 || r.body != "internal error\n" {
		t.Fatalf("error: %d %q", r.status, r.body)
	}
	line := s.WaitLog(t, "script error", "callback=on_http", "t.lua:3:", "hunter2", "traceback=")
	if !strings.Contains(line, "route=/hook/{room}") {
		t.Fatalf("log line: %s", line)
	}

	bad := []string{
		"status?s=42", "status?s=100", "status?s=101", "status?s=600", "status?s=200.5", "status?s=1e300", "status?s=-1", "status?s=abc",
		"crlf", "lf", "name", "namecrlf", "framing", "transfer", "headertype", "headers",
		"manyheaders", "bigheaders", "body", "big", "bigjson", "badjson",
	}
	for _, p := range bad {
		r := do(t, "GET", s.HTTPURL("/hook/"+p), "", nil)
		if r.status != 500 || r.body != "internal error\n" || r.header.Get("X-Evil") != "" || r.header.Get("Set-Cookie") != "" {
			t.Errorf("%s: %d %v %q, want 500", p, r.status, r.header, r.body)
		}
	}
	s.WaitLog(t, "script error", "callback=on_http", "bad status 42")
	s.WaitLog(t, "script error", "callback=on_http", "bad status 101")
	s.WaitLog(t, "script error", "callback=on_http", "t.lua:4:", "CR, LF or NUL")
	s.WaitLog(t, "script error", "callback=on_http", `bad header name`)
	s.WaitLog(t, "script error", "callback=on_http", `is set by the server`)
	s.WaitLog(t, "script error", "callback=on_http", `over the limit of 1024`)
	s.WaitLog(t, "script error", "callback=on_http", `more than the limit of 1024`)
	s.WaitLog(t, "script error", "callback=on_http", `headers over the limit`)
	s.WaitLog(t, "script error", "callback=on_http", `too many headers`)

	// Counted by route and status; only the Lua error is a handler error.
	if got := counter(t, s, "moonwire_http_responses_total", map[string]string{"route": "/hook/{room}", "status": "500"}); got != float64(len(bad)+1) {
		t.Errorf("500s counted: %v, want %d", got, len(bad)+1)
	}
	if got := counter(t, s, "moonwire_handler_errors_total", map[string]string{"route": "/hook/{room}", "callback": "on_http", "kind": "error"}); got != 1 {
		t.Errorf("handler errors counted: %v, want 1", got)
	}
	// The limit itself is fine, and the route goes on serving.
	if r := do(t, "GET", s.HTTPURL("/hook/limit"), "", nil); r.status != 200 || len(r.body) != 1024 {
		t.Fatalf("at the limit: %d %d", r.status, len(r.body))
	}
	if r := do(t, "GET", s.HTTPURL("/hook/fine"), "", nil); r.status != 200 || r.body != "ok" {
		t.Fatalf("after errors: %d %q", r.status, r.body)
	}
}

// TestOnHTTPTimeout: a callback that never ends is stopped at the handler
// timeout and answered 503; its lane goes on serving.
func TestOnHTTPTimeout(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local M = {}
function M.on_message(conn, data) conn:send("echo " .. data) end
function M.on_http(req)
  if req.params.room == "loop" then while true do end end
  return 200, nil, "fine"
end
return M
`, "[scripts]\nhandler_timeout = \"300ms\"\n", "vms = 1\n")
	c := moontest.Dial(t, s.URL("/hook/x"))
	r := do(t, "GET", s.HTTPURL("/hook/loop"), "", nil)
	if r.status != 503 || r.body != "service unavailable\n" {
		t.Fatalf("loop: %d %q", r.status, r.body)
	}
	s.WaitLog(t, "script error", "callback=on_http", "handler timeout (300ms) exceeded")
	if r := do(t, "GET", s.HTTPURL("/hook/after"), "", nil); r.status != 200 || r.body != "fine" {
		t.Fatalf("after the timeout: %d %q", r.status, r.body)
	}
	c.Send("still here")
	c.Expect("echo still here")
	if got := counter(t, s, "moonwire_handler_errors_total", map[string]string{"route": "/hook/{room}", "callback": "on_http", "kind": "timeout"}); got != 1 {
		t.Errorf("timeouts counted: %v, want 1", got)
	}
	if got := counter(t, s, "moonwire_http_responses_total", map[string]string{"route": "/hook/{room}", "status": "503"}); got != 1 {
		t.Errorf("503s counted: %v, want 1", got)
	}
}

// TestOnHTTPLimitsAndFallbacks: the request body limit (413), routes
// without on_http (426, 405), and paths that are no route (404) keep
// behaving as before.
func TestOnHTTPLimitsAndFallbacks(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/hook/{room}"
script = "t.lua"

[[routes]]
path = "/plain"
script = "plain.lua"
`, "scripts/t.lua", `return { on_http = function(req) return 200, nil, tostring(#req.body) end }`,
		"scripts/plain.lua", `return { on_message = function(conn, data) conn:send(data) end }`))
	// 64 KiB is the plain-HTTP body limit.
	if r := do(t, "POST", s.HTTPURL("/hook/a"), strings.Repeat("b", 64<<10), nil); r.status != 200 || r.body != "65536" {
		t.Fatalf("at the limit: %d %q", r.status, r.body)
	}
	if r := do(t, "POST", s.HTTPURL("/hook/a"), strings.Repeat("b", 64<<10+1), nil); r.status != 413 {
		t.Fatalf("over the limit: %d %q", r.status, r.body)
	}
	// Without a Content-Length (chunked), the limit holds as the body
	// arrives.
	req, _ := http.NewRequest("POST", s.HTTPURL("/hook/a"), io.MultiReader(strings.NewReader(strings.Repeat("c", 70<<10))))
	req.ContentLength = -1
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked over the limit: %d", resp.StatusCode)
	}

	// A GET without an upgrade is a failed upgrade (400) as the first
	// request of a connection, 426 on a kept-alive one.
	for range 2 {
		if r := do(t, "GET", s.HTTPURL("/plain"), "", nil); r.status != 400 && (r.status != 426 || r.header.Get("Upgrade") != "websocket") {
			t.Fatalf("no on_http, GET: %d %v", r.status, r.header)
		}
	}
	if r := do(t, "POST", s.HTTPURL("/plain"), "x", nil); r.status != 405 {
		t.Fatalf("no on_http, POST: %d", r.status)
	}
	if r := do(t, "GET", s.HTTPURL("/nowhere"), "", nil); r.status != 404 {
		t.Fatalf("no route: %d", r.status)
	}
	// The WebSocket side of a route with on_http is untouched.
	c := moontest.Dial(t, s.URL("/plain"))
	c.Send("hi")
	c.Expect("hi")
	if _, err := moontest.TryDial(t, s.URL("/hook/a")); err != nil {
		t.Fatalf("upgrade on an on_http route: %v", err)
	}
}

// TestOnHTTPConcurrent: many requests at once over two lanes are all
// answered, each with its own answer, and counted in the metrics.
func TestOnHTTPConcurrent(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
local n = 0
return { on_http = function(req)
  n = n + 1 -- per VM: the lanes never run one VM at once
  return 200, nil, req.query.i
end }
`, "", "vms = 2\n")
	const total = 200
	var wg sync.WaitGroup
	errs := make(chan error, total)
	tr := &http.Transport{MaxIdleConnsPerHost: total}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: moontest.Timeout}
	for i := range total {
		wg.Go(func() {
			resp, err := client.Get(s.HTTPURL(fmt.Sprintf("/hook/r?i=%d", i)))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != fmt.Sprint(i) {
				errs <- fmt.Errorf("request %d: %d %q", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := counter(t, s, "moonwire_http_responses_total", map[string]string{"route": "/hook/{room}", "status": "200"}); got != total {
		t.Fatalf("moonwire_http_responses_total = %v, want %d", got, total)
	}
}

// counter reads a counter from the server's registry (0 when absent).
func counter(t testing.TB, s *moontest.Server, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := s.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if want, ok := labels[l.GetName()]; ok {
			if l.GetValue() != want {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

// TestOnHTTPReload: a reload that adds on_http serves plain requests from
// then on, and one that removes it brings the 426 back.
func TestOnHTTPReload(t *testing.T) {
	t.Parallel()
	plain := `return { on_message = function(conn, data) conn:send("v1 " .. data) end }`
	withHTTP := `return {
  on_message = function(conn, data) conn:send("v2 " .. data) end,
  on_http = function(req) return 200, nil, "v2 http" end,
}`
	s := httpRoute(t, plain, "[scripts]\nreload = false\n", "vms = 2\n")
	c := moontest.Dial(t, s.URL("/hook/x"))
	if r := do(t, "GET", s.HTTPURL("/hook/x"), "", nil); r.status != 400 && r.status != 426 {
		t.Fatalf("before: %d", r.status)
	}
	s.WriteFile(t, "scripts/t.lua", withHTTP)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	// Every lane switched: requests go round-robin over both.
	for range 4 {
		if r := do(t, "GET", s.HTTPURL("/hook/x"), "", nil); r.status != 200 || r.body != "v2 http" {
			t.Fatalf("after adding on_http: %d %q", r.status, r.body)
		}
	}
	c.Send("a")
	c.Expect("v2 a")
	s.WriteFile(t, "scripts/t.lua", plain)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if r := do(t, "GET", s.HTTPURL("/hook/x"), "", nil); r.status != 400 && r.status != 426 {
			t.Fatalf("after removing on_http: %d %q", r.status, r.body)
		}
		if r := do(t, "POST", s.HTTPURL("/hook/x"), "x", nil); r.status != 405 {
			t.Fatalf("after removing on_http, POST: %d %q", r.status, r.body)
		}
	}
	// A reload that removes the route: its path is no route any more.
	s.WriteFile(t, "scripts/t.lua", withHTTP)
	s.WriteFile(t, "moonwire.toml", "[scripts]\nreload = false\n[[routes]]\npath = \"/other\"\nscript = \"t.lua\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := do(t, "GET", s.HTTPURL("/hook/x"), "", nil); r.status != 404 {
		t.Fatalf("route removed: %d", r.status)
	}
	if r := do(t, "GET", s.HTTPURL("/other"), "", nil); r.status != 200 || r.body != "v2 http" {
		t.Fatalf("new route: %d %q", r.status, r.body)
	}
}

// TestOnHTTPOrUpgrade: on a route with on_http, a GET is an upgrade when
// its head has WebSocket headers and a plain request otherwise, whatever
// the head's size and however it arrives.
func TestOnHTTPOrUpgrade(t *testing.T) {
	t.Parallel()
	s := httpRoute(t, `
return {
  on_message = function(conn, data) conn:send("ws " .. data) end,
  on_http = function(req) return 200, nil, "http " .. #(req.headers["x-big"] or "") end,
}
`, "", "")
	big := strings.Repeat("b", 6000)
	// A head past the router's 4 KiB peek window, without WebSocket headers.
	if r := do(t, "GET", s.HTTPURL("/hook/a"), "", http.Header{"X-Big": {big}}); r.status != 200 || r.body != "http 6000" {
		t.Fatalf("big plain head: %d %q", r.status, r.body)
	}
	// An upgrade with a big header still upgrades.
	c := moontest.Dial(t, s.URL("/hook/a"), moontest.DialOptions{Header: http.Header{"Cookie": {"c=" + big}}})
	c.Send("x")
	c.Expect("ws x")

	raw := func(t *testing.T, parts ...string) string {
		t.Helper()
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if err := nc.SetDeadline(time.Now().Add(moontest.Timeout)); err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if _, err := nc.Write([]byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	// Byte by byte across the head: the router reads on until it knows.
	head := "GET /hook/a HTTP/1.1\r\nHost: x\r\nX-Big: abc\r\nConnection: close\r\n\r\n"
	parts := strings.Split(head, "")
	if got := raw(t, parts...); got != "200 http 3" {
		t.Fatalf("head in pieces: %q", got)
	}
	// The WebSocket headers after 5 KiB of others: an upgrade, as the
	// Upgrade header comes first.
	up := "GET /hook/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Big: " + big[:5000] +
		"\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if got := raw(t, up); !strings.HasPrefix(got, "101 ") {
		t.Fatalf("upgrade with a big head: %q", got)
	}
	// A second request on a kept-alive plain connection asking for an
	// upgrade cannot have one: 426.
	keep := "GET /hook/a HTTP/1.1\r\nHost: x\r\n\r\n"
	second := "GET /hook/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.SetDeadline(time.Now().Add(moontest.Timeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte(keep + second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	for i, want := range []int{200, 426} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("response %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
}

// heldBackend is an app backend on loopback: /fast answers at once, /held
// when the test lets it (arrived says a held request is in).
type heldBackend struct {
	*httptest.Server
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func newHeldBackend(t *testing.T) *heldBackend {
	b := &heldBackend{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			b.arrived <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "backend %s", r.URL.Path)
	}))
	t.Cleanup(func() {
		b.let()
		b.Server.CloseClientConnections()
		b.Server.Close()
	})
	return b
}

func (b *heldBackend) let() { b.once.Do(func() { close(b.release) }) }

func (b *heldBackend) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-b.arrived:
	case <-time.After(moontest.Timeout):
		t.Fatal("the request did not reach the backend")
	}
}

const backendScript = `
local M = {}
function M.on_message(conn, data) conn:send("ws " .. data) end
function M.on_http(req)
  if not req.query.path then return 200, nil, "no wait" end
  local status, headers, body = http.request{ url = ws.settings.backend .. req.query.path }
  if not status then return 502, nil, "backend: " .. headers end
  return 200, nil, { status = status, body = body }
end
return M
`

// TestOnHTTPWaitsForBackend: on a route with the http module, on_http
// may wait in http.request; the lane serves other requests and
// connections meanwhile, and the answer goes out when the callback ends.
// A reload while it waits answers it 503.
func TestOnHTTPWaitsForBackend(t *testing.T) {
	t.Parallel()
	b, b2 := newHeldBackend(t), newHeldBackend(t)
	cfg := fmt.Sprintf(`
[scripts]
reload = false

[http]
allow = [%q, %q]

[[routes]]
path = "/hook/{room}"
script = "t.lua"
vms = 1
modules = ["http"]
settings = { backend = %q }
`, strings.TrimPrefix(b.URL, "http://"), strings.TrimPrefix(b2.URL, "http://"), b.URL)
	s := moontest.Start(t, moontest.Files(cfg, "scripts/t.lua", backendScript))
	if r := do(t, "GET", s.HTTPURL("/hook/a?path=/fast"), "", nil); r.status != 200 || r.body != `{"body":"backend /fast","status":200}` {
		t.Fatalf("fast: %d %q", r.status, r.body)
	}

	type result struct {
		code int
		body string
	}
	held := func() chan result {
		res := make(chan result, 1)
		go func() {
			resp, err := httpClient.Get(s.HTTPURL("/hook/a?path=/held"))
			if err != nil {
				res <- result{0, err.Error()}
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			res <- result{resp.StatusCode, string(body)}
		}()
		return res
	}
	wait := func(res chan result) result {
		t.Helper()
		select {
		case r := <-res:
			return r
		case <-time.After(moontest.Timeout):
			t.Fatal("no answer")
		}
		return result{}
	}
	res := held()
	b.waitArrived(t)
	// The one lane is free while on_http waits.
	if r := do(t, "GET", s.HTTPURL("/hook/a"), "", nil); r.status != 200 || r.body != "no wait" {
		t.Fatalf("beside a waiting on_http: %d %q", r.status, r.body)
	}
	c := moontest.Dial(t, s.URL("/hook/a"))
	c.Send("x")
	c.Expect("ws x")
	b.let()
	if r := wait(res); r.code != 200 || r.body != `{"body":"backend /held","status":200}` {
		t.Fatalf("held: %d %q", r.code, r.body)
	}

	// A reload that replaces the script while on_http waits: the old VM
	// closes, the callback is dropped, the client gets 503.
	s.WriteFile(t, "moonwire.toml", strings.ReplaceAll(cfg, "backend = \""+b.URL, "backend = \""+b2.URL))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	res = held()
	select {
	case <-b2.arrived:
	case r := <-res:
		t.Fatalf("answered before reaching the backend: %d %q", r.code, r.body)
	case <-time.After(moontest.Timeout):
		t.Fatal("the request did not reach the backend")
	}
	s.WriteFile(t, "scripts/t.lua", backendScript+"\n-- v2\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := wait(res); r.code != 503 {
		t.Fatalf("dropped by a reload: %d %q", r.code, r.body)
	}
	s.WaitLog(t, "callback dropped while waiting", "callback=on_http")
}

// BenchmarkOnHTTP is one plain request answered by a script over a
// kept-alive loopback connection: the router's hand-off to a lane and
// back, the req table, the callback and a JSON answer.
func BenchmarkOnHTTP(b *testing.B) {
	s := moontest.Start(b, moontest.Files("[[routes]]\npath = \"/hook/{room}\"\nscript = \"t.lua\"\nvms = 1\n", "scripts/t.lua", `
return { on_http = function(req) return 200, nil, { room = req.params.room, n = #req.body } end }
`))
	url := s.HTTPURL("/hook/lobby")
	b.ReportAllocs()
	for b.Loop() {
		resp, err := httpClient.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}

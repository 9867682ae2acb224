package http_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// backend is an httptest server the scripts call. Its handlers:
//
//	/echo?x=...   200, body x (and the request's method and body)
//	/hold         waits until release (or the request is cancelled)
//	/sleep?d=2s   answers after d
//	/status?code= answers that status
//	/huge         streams 100 MiB
//	/huge-cl      declares and streams 100 MiB
//	/redirect?to= 302 to "to"
//	/auth?token=  200 "ok" for token "good", 403 otherwise
type backend struct {
	*httptest.Server
	release   chan struct{}
	releaseMu sync.Once
	arrived   atomic.Int64 // requests that reached /hold
	cancelled atomic.Int64 // /hold requests whose client went away
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 1024)
		n, _ := r.Body.Read(body)
		w.Header().Set("X-Method", r.Method)
		fmt.Fprintf(w, "%s%s", r.URL.Query().Get("x"), body[:n])
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		b.arrived.Add(1)
		select {
		case <-b.release:
			fmt.Fprint(w, "released")
		case <-r.Context().Done():
			b.cancelled.Add(1)
		}
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
			fmt.Fprint(w, "slept")
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
		fmt.Fprint(w, "status body")
	})
	huge := func(declare bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			const size = 100 << 20
			if declare {
				w.Header().Set("Content-Length", strconv.Itoa(size))
			}
			chunk := make([]byte, 64<<10)
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return // the client gave up: what it should do
				}
			}
		}
	}
	mux.HandleFunc("/huge", huge(false))
	mux.HandleFunc("/huge-cl", huge(true))
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "good" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, "ok")
	})
	b.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		b.Release()
		b.Server.CloseClientConnections()
		b.Server.Close()
	})
	return b
}

// Release lets every held request go, now and later.
func (b *backend) Release() { b.releaseMu.Do(func() { close(b.release) }) }

// hostPort is the backend's 127.0.0.1:port.
func (b *backend) hostPort() string { return strings.TrimPrefix(b.URL, "http://") }

// fetchScript answers "fetch PATH" with the backend's answer ("STATUS
// BODY" or "err MESSAGE") and echoes anything else.
const fetchScript = `
local M = {}
function M.on_message(c, data)
  local path = data:match("^fetch (.*)$")
  if not path then c:send(data) return end
  local url = path
  if path:sub(1, 1) == "/" then url = ws.settings.backend .. path end
  local status, headers, body = http.request{ url = url, timeout = tonumber(c:query("timeout")) }
  if not status then c:send("err " .. headers) return end
  c:send(status .. " " .. body)
end
return M
`

// start runs script on /t with the http module, the backend allowed, and
// extra [http] keys.
func start(t *testing.T, b *backend, script, httpKeys string, routeKeys ...string) *moontest.Server {
	t.Helper()
	if !strings.Contains(httpKeys, "allow") {
		httpKeys = fmt.Sprintf("allow = [%q]\n", b.hostPort()) + httpKeys
	}
	cfg := fmt.Sprintf(`
[scripts]
handler_timeout = "1s"

[http]
%s

[[routes]]
path = "/t"
script = "t.lua"
vms = 1
modules = ["http"]
settings = { backend = "%s" }
%s
`, httpKeys, b.URL, strings.Join(routeKeys, "\n"))
	return moontest.Start(t, moontest.Files(cfg, "scripts/t.lua", script))
}

// TestSlowBackendDoesNotBlockTheLane is the measure: while one
// connection's on_message waits 2 s on a backend, another connection on
// the same lane (vms = 1) keeps its echo round trips under 50 ms (p90 of
// many, robust to a loaded machine's outliers); and the waiting
// connection's next messages are handled after the answer, in order.
func TestSlowBackendDoesNotBlockTheLane(t *testing.T) {
	b := newBackend(t)
	s := start(t, b, fetchScript, "")
	slow := moontest.Dial(t, s.URL("/t"))
	other := moontest.Dial(t, s.URL("/t"))
	other.Send("warm")
	other.Expect("warm")

	began := time.Now()
	slow.Send("fetch /sleep?d=2s")
	slow.Send("after-1")
	slow.Send("after-2")

	var rtts []time.Duration
	for i := 0; time.Since(began) < 1500*time.Millisecond; i++ {
		msg := "ping " + strconv.Itoa(i)
		t0 := time.Now()
		other.Send(msg)
		other.Expect(msg)
		rtts = append(rtts, time.Since(t0))
	}
	slices.Sort(rtts)
	p90 := rtts[len(rtts)*9/10]
	t.Logf("%d round trips while the backend waited: median %v, p90 %v, max %v", len(rtts), rtts[len(rtts)/2], p90, rtts[len(rtts)-1])
	if len(rtts) < 20 {
		t.Fatalf("only %d round trips in 1.5 s: the lane was blocked", len(rtts))
	}
	if p90 > 50*time.Millisecond {
		t.Fatalf("p90 round trip %v while a callback waited on the backend; want < 50ms", p90)
	}
	slow.Expect("200 slept")
	if d := time.Since(began); d < 2*time.Second {
		t.Fatalf("answer after %v, before the backend's 2 s", d)
	}
	slow.Expect("after-1")
	slow.Expect("after-2")
}

// TestThousandSuspended: 1,000 connections each wait on a backend that
// holds them; all are answered once it lets go, and the goroutines go
// back to where they were once the server stops.
func TestThousandSuspended(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connections")
	}
	const n = 1000
	baseline := runtime.NumGoroutine()
	b := newBackend(t)
	func() {
		s := start(t, b, fetchScript, "concurrency = 1100\nper_host = 1100")
		clients := make([]*moontest.Client, n)
		for i := range clients {
			clients[i] = moontest.Dial(t, s.URL("/t"))
			clients[i].Send("fetch /hold")
		}
		moontest.WaitFor(t, "1,000 requests at the backend", func() bool { return b.arrived.Load() == n })
		// Still answering others while 1,000 wait.
		extra := moontest.Dial(t, s.URL("/t"))
		extra.Send("hello")
		extra.Expect("hello")
		b.Release()
		for _, c := range clients {
			c.Expect("200 released")
			c.Close(1000)
		}
		extra.Close(1000)
		ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	b.CloseClientConnections()
	moontest.WaitFor(t, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline+5
	})
}

// TestFailures: every way a request can fail is nil plus a message, and
// the connection goes on.
func TestFailures(t *testing.T) {
	b := newBackend(t)
	other := newBackend(t) // a host that is not in the allow list
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	s := start(t, b, fetchScript, fmt.Sprintf("allow = [%q, %q]\ntimeout = \"3s\"\nmax_response = \"1MiB\"", b.hostPort(), downAddr))
	c := moontest.Dial(t, s.URL("/t"))
	short := moontest.Dial(t, s.URL("/t?timeout=0.3")) // its requests time out at 300ms
	short.Send("fetch /sleep?d=5s")
	short.Expect("err http: timed out after 300ms")
	cases := []struct{ send, want string }{
		{"fetch /echo?x=hi", "200 hi"},
		{"fetch /status?code=503", "503 status body"},
		{"fetch http://" + downAddr + "/", "err http: dial " + downAddr + ": connect: connection refused"},
		{"fetch /huge", "err http: response body too large: more than max_response (1048576 bytes)"},
		{"fetch /huge-cl", "err http: response body too large: 104857600 bytes declared, max_response is 1048576"},
		{"fetch " + other.URL + "/echo", "err http: host not allowed: " + other.hostPort()},
		{"fetch /redirect?to=" + other.URL + "/echo", "err http: redirect to " + other.URL + "/echo: host not allowed: " + other.hostPort()},
		{"fetch /redirect?to=/echo%3Fx%3Dagain", "200 again"},
		{"fetch file:///etc/passwd", `err http: host not allowed: scheme "file" (only http and https)`},
		{"fetch http://localhost:" + strings.Split(b.hostPort(), ":")[1] + "/echo", "err http: host not allowed: localhost:" + strings.Split(b.hostPort(), ":")[1]},
		{"fetch http://user:pw@" + b.hostPort() + "/echo", "err http: credentials in the URL are not allowed: use an Authorization header"},
		{"fetch gopher://" + b.hostPort() + "/", `err http: host not allowed: scheme "gopher" (only http and https)`},
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, tc := range cases {
		c.Send(tc.send)
		c.Expect(tc.want)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 50<<20 {
		t.Errorf("heap grew by %d MiB across the 100 MiB responses; they must not be read whole", grew>>20)
	}
	if after.TotalAlloc-before.TotalAlloc > 100<<20 {
		t.Errorf("%d MiB allocated across the 100 MiB responses; they must not be read whole", (after.TotalAlloc-before.TotalAlloc)>>20)
	}
}

// TestConcurrencyLimit: past [http] concurrency a request fails at once.
func TestConcurrencyLimit(t *testing.T) {
	b := newBackend(t)
	s := start(t, b, fetchScript, "concurrency = 2")
	c1, c2, c3 := moontest.Dial(t, s.URL("/t")), moontest.Dial(t, s.URL("/t")), moontest.Dial(t, s.URL("/t"))
	c1.Send("fetch /hold")
	c2.Send("fetch /hold")
	moontest.WaitFor(t, "two requests at the backend", func() bool { return b.arrived.Load() == 2 })
	c3.Send("fetch /echo?x=3")
	c3.Expect("err http: too many requests in flight (limit 2)")
	b.Release()
	c1.Expect("200 released")
	c2.Expect("200 released")
	c3.Send("fetch /echo?x=3")
	c3.Expect("200 3")
}

// TestRequestArguments: method, headers, body; arguments of the wrong
// type raise; a body over max_request_body fails.
func TestRequestArguments(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_message(c, data)
  if data == "post" then
    local s, h, body = http.request{ method = "post", url = ws.settings.backend .. "/echo?x=q", body = "payload", headers = { ["X-A"] = "1" } }
    c:send(s .. " " .. h["x-method"] .. " " .. body)
  elseif data == "big" then
    local s, err = http.request{ url = ws.settings.backend .. "/echo", method = "POST", body = string.rep("x", 2000) }
    c:send(tostring(s) .. " " .. err)
  elseif data == "badarg" then
    local ok, err = pcall(http.request, { url = 5 })
    c:send(tostring(ok) .. " " .. tostring(err))
  elseif data == "inpcall" then
    local ok, s, err = pcall(function() return http.request(ws.settings.backend .. "/echo") end)
    c:send(tostring(ok) .. " " .. tostring(s) .. " " .. tostring(err))
  elseif data == "string" then
    local s, _, body = http.request(ws.settings.backend .. "/echo?x=plain")
    c:send(s .. " " .. body)
  elseif data == "header-inject" then
    local ok, err = pcall(http.request, { url = ws.settings.backend, headers = { a = "x\r\nb: y" } })
    c:send(tostring(ok))
  end
end
return M
`
	s := start(t, b, script, "max_request_body = 1000")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("post")
	c.Expect("200 POST qpayload")
	c.Send("big")
	c.Expect("nil http: request body of 2000 bytes exceeds max_request_body (1000)")
	c.Send("badarg")
	if f := c.Next(); !strings.HasPrefix(f.Text(), "false ") || !strings.Contains(f.Text(), "url must be a string") {
		t.Fatalf("got %q", f.Text())
	}
	c.Send("inpcall")
	c.Expect("true nil http: cannot wait inside pcall, xpcall or a function a builtin calls (table.sort, string.gsub): call it from the callback's code")
	c.Send("string")
	c.Expect("200 plain")
	c.Send("header-inject")
	c.Expect("false")
}

// TestHandshakeAsksBackend: on_handshake asks the backend whether to
// accept; its answer decides.
func TestHandshakeAsksBackend(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_handshake(req)
  local status, _, body = http.request(ws.settings.backend .. "/auth?token=" .. (req.query.token or ""))
  if status ~= 200 then return false, 403, "backend says no" end
  return { user = body }
end
function M.on_open(c) c:send("hello " .. c:get("user")) end
return M
`
	s := start(t, b, script, "")
	c := moontest.Dial(t, s.URL("/t?token=good"))
	c.Expect("hello ok")
	_, err := moontest.TryDial(t, s.URL("/t?token=bad"))
	ref, ok := err.(*moontest.Refusal)
	if !ok || ref.Status != 403 || !strings.Contains(ref.Body, "backend says no") {
		t.Fatalf("got %v, want a 403 refusal", err)
	}
}

// TestTimerRequest: a timer callback waits on the backend too.
func TestTimerRequest(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_open(c)
  local id = c.id
  timer.after(0, function()
    local status, _, body = http.request(ws.settings.backend .. "/echo?x=from-timer")
    ws.send(id, status .. " " .. body)
  end)
end
return M
`
	s := start(t, b, script, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Expect("200 from-timer")
}

// TestCloseWhileSuspended: the peer leaves while on_message waits; the
// callback still resumes with the answer, and on_close runs after it.
func TestCloseWhileSuspended(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_message(c, data)
  local status = http.request(ws.settings.backend .. "/hold")
  log.info("resumed", { status = status })
end
function M.on_close(c, code) log.info("on_close ran") end
return M
`
	s := start(t, b, script, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("go")
	moontest.WaitFor(t, "the request at the backend", func() bool { return b.arrived.Load() == 1 })
	// The peer's close frame waits behind the suspended callback, as
	// its messages would: send it without waiting for the answer.
	if err := c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(1000, "")); err != nil {
		t.Fatal(err)
	}
	b.Release()
	c.ExpectClose(1000)
	s.WaitLog(t, "on_close ran")
	logs := s.Logs()
	resumed, closed := strings.Index(logs, "msg=resumed"), strings.Index(logs, "on_close ran")
	if resumed < 0 || resumed > closed {
		t.Fatalf("on_close ran before the suspended callback resumed:\n%s", logs)
	}
	if !strings.Contains(logs, "status=200") {
		t.Fatalf("the callback did not get the answer:\n%s", logs)
	}
}

// TestErrorAfterResume: a script error after the wait is logged with
// file:line and closes the connection 1011, as in any callback.
func TestErrorAfterResume(t *testing.T) {
	b := newBackend(t)
	script := `local M = {}
function M.on_message(c, data)
  local status = http.request(ws.settings.backend .. "/echo")
  error("boom after " .. status)
end
return M
`
	s := start(t, b, script, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("go")
	c.ExpectClose(1011)
	s.WaitLog(t, "script error", "t.lua:4", "boom after 200")
}

// TestReloadWhileInFlight: a reload that replaces the script while a
// request waits cancels it (the backend sees its client go), the
// connection goes on under the new script, and nothing is left behind.
func TestReloadWhileInFlight(t *testing.T) {
	baseline := runtime.NumGoroutine()
	b := newBackend(t)
	func() {
		s := start(t, b, fetchScript, "")
		c := moontest.Dial(t, s.URL("/t"))
		c.Send("fetch /hold")
		moontest.WaitFor(t, "the request at the backend", func() bool { return b.arrived.Load() == 1 })
		s.WriteFile(t, "scripts/t.lua", strings.Replace(fetchScript, "c:send(data) return", "c:send('v2 ' .. data) return", 1))
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		moontest.WaitFor(t, "the backend to see the request cancelled", func() bool { return b.cancelled.Load() == 1 })
		s.WaitLog(t, "callback dropped while waiting")
		c.Send("x")
		c.Expect("v2 x")
		c.Send("fetch /echo?x=after")
		c.Expect("200 after")
		c.Close(1000)
		ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}()
	b.CloseClientConnections()
	moontest.WaitFor(t, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline+5
	})
}

// TestNotListed: a route without modules = ["http"] has no http global.
func TestNotListed(t *testing.T) {
	b := newBackend(t)
	cfg := fmt.Sprintf("[http]\nallow = [%q]\n\n[[routes]]\npath = \"/t\"\nscript = \"t.lua\"\n", b.hostPort())
	s := moontest.Start(t, moontest.Files(cfg, "scripts/t.lua", `return { on_open = function(c) c:send(type(http)) end }`))
	c := moontest.Dial(t, s.URL("/t"))
	c.Expect("nil")
}

// TestOnHTTPWaits: on_http waits on the backend too; its answer goes out
// when it resumes.
func TestOnHTTPWaits(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_http(req)
  local status, _, body = http.request(ws.settings.backend .. "/echo?x=" .. (req.query.x or ""))
  return 200, { ["content-type"] = "text/plain" }, "backend said " .. status .. " " .. body
end
return M
`
	s := start(t, b, script, "")
	resp, err := http.Get(s.HTTPURL("/t?x=yo"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := make([]byte, 100)
	n, _ := resp.Body.Read(body)
	if resp.StatusCode != 200 || string(body[:n]) != "backend said 200 yo" {
		t.Fatalf("got %d %q", resp.StatusCode, body[:n])
	}
}

// TestHandshakeTimeout: an on_handshake still waiting at the handshake
// timeout is refused 503; its late answer is dropped.
func TestHandshakeTimeout(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_handshake(req)
  http.request(ws.settings.backend .. "/hold")
  return true
end
function M.on_message(c, d) c:send(d) end
return M
`
	cfg := fmt.Sprintf(`
[server]
handshake_timeout = "300ms"

[http]
allow = [%q]

[[routes]]
path = "/t"
script = "t.lua"
vms = 1
modules = ["http"]
settings = { backend = %q }
`, b.hostPort(), b.URL)
	s := moontest.Start(t, moontest.Files(cfg, "scripts/t.lua", script))
	_, err := moontest.TryDial(t, s.URL("/t"))
	ref, ok := err.(*moontest.Refusal)
	if !ok || ref.Status != 503 || !strings.Contains(ref.Body, "handshake timed out") {
		t.Fatalf("got %v, want 503 handshake timed out", err)
	}
	b.Release()
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("x")
	c.Expect("x")
}

// TestMetrics: requests are counted by allow pattern and status class;
// the in-flight gauge goes back to 0.
func TestMetrics(t *testing.T) {
	b := newBackend(t)
	s := start(t, b, fetchScript, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("fetch /echo?x=1")
	c.Expect("200 1")
	c.Send("fetch /status?code=502")
	c.Expect("502 status body")
	c.Send("fetch http://elsewhere.example/")
	c.Expect("err http: host not allowed: elsewhere.example")
	fams, err := s.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	host := b.hostPort()
	for key, want := range map[string]float64{
		"moonwire_http_requests_total code=2xx host=" + host:     1,
		"moonwire_http_requests_total code=5xx host=" + host:     1,
		"moonwire_http_requests_total code=refused host=refused": 1,
		"moonwire_http_request_duration_seconds host=" + host:    2,
		"moonwire_http_requests_in_flight":                       0,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}

// TestRouteRemovedWhileInFlight: a reload that removes the route while a
// request waits: the connection is closed going away once the callback
// is dropped, the request is cancelled, the route stops.
func TestRouteRemovedWhileInFlight(t *testing.T) {
	b := newBackend(t)
	s := start(t, b, fetchScript, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("fetch /hold")
	moontest.WaitFor(t, "the request at the backend", func() bool { return b.arrived.Load() == 1 })
	s.WriteFile(t, "moonwire.toml", fmt.Sprintf("[http]\nallow = [%q]\n\n[[routes]]\npath = \"/other\"\nscript = \"t.lua\"\n", b.hostPort()))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	b.Release()
	f := c.Next()
	for f.Text() == "200 released" {
		f = c.Next() // the answer may beat the close
	}
	if code, _ := f.CloseCode(); code != 1001 {
		t.Fatalf("got %q, want a 1001 close", f.Text())
	}
}

// TestWhereItCannotWait: inside a coroutine or a builtin's callback the
// request fails with a message instead of corrupting the VM; a
// coroutine.yield in the callback's own code is an error, as in a plain
// callback; the route goes on serving.
func TestWhereItCannotWait(t *testing.T) {
	b := newBackend(t)
	script := `
local M = {}
function M.on_message(c, data)
  if data == "co" then
    local co = coroutine.create(function() return http.request(ws.settings.backend .. "/echo") end)
    local ok, s, err = coroutine.resume(co)
    c:send(tostring(ok) .. " " .. tostring(s) .. " " .. tostring(err))
  elseif data == "sort" then
    local t = { 2, 1 }
    local msg
    table.sort(t, function(a, b) local s, err = http.request(ws.settings.backend .. "/echo"); msg = err; return a < b end)
    c:send(msg)
  elseif data == "yield" then
    coroutine.yield()
  else
    c:send(data)
  end
end
return M
`
	s := start(t, b, script, "")
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("co")
	c.Expect("true nil http: cannot wait here: only a route callback's own code can (not on_start, the script's top level or a coroutine)")
	c.Send("sort")
	c.Expect("http: cannot wait inside pcall, xpcall or a function a builtin calls (table.sort, string.gsub): call it from the callback's code")
	c.Send("yield")
	c.ExpectClose(1011)
	s.WaitLog(t, "script error", "attempt to yield from outside a coroutine")
	c2 := moontest.Dial(t, s.URL("/t"))
	c2.Send("still here")
	c2.Expect("still here")
}

package router_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// httpSide is a Go handler with an HTTP side, to drive the router's part
// of plain HTTP on routes without a script in the way.
type httpSide struct {
	mu      sync.Mutex
	started chan struct{} // a request reached HTTP
	dones   []func(router.HTTPResponse)
}

func (h *httpSide) Start(*router.Route) error                      { return nil }
func (h *httpSide) Handshake(int, *router.Request) router.Verdict  { return router.Verdict{} }
func (h *httpSide) Open(int, *router.Conn)                         {}
func (h *httpSide) Message(int, *router.Conn, router.Kind, []byte) {}
func (h *httpSide) Close(int, *router.Conn, int, string)           {}
func (h *httpSide) Stop()                                          {}
func (h *httpSide) ServesHTTP() bool                               { return true }
func (h *httpSide) HTTP(lane int, req *router.HTTPRequest, done func(router.HTTPResponse)) {
	switch req.Path {
	case "/h/never":
		// Keeps the answer owed, as a suspended callback would.
		h.mu.Lock()
		h.dones = append(h.dones, done)
		h.mu.Unlock()
		h.started <- struct{}{}
	case "/h/panic":
		panic("handler bug")
	case "/h/status":
		done(router.HTTPResponse{Status: 42})
	case "/h/twice":
		done(router.HTTPResponse{Body: []byte("first")})
		done(router.HTTPResponse{Body: []byte("second")})
	default:
		done(router.HTTPResponse{Header: http.Header{"X-Lane": {"ok"}}, Body: []byte(req.Method + " " + string(req.Body))})
	}
}

// startRouter serves h at /h/{what} on a bare router over loopback.
func startRouter(t *testing.T, h router.Handler, logs io.Writer) (*router.Server, string) {
	t.Helper()
	cfg := router.Config{
		Routes:   []router.RouteSpec{{Pattern: "/h/{what}", Handler: h, Lanes: 1}},
		Logger:   slog.New(slog.NewTextHandler(logs, nil)),
		NoPoller: true,
	}
	s, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return s, "http://" + ln.Addr().String()
}

// TestHTTPHandlerRouterSide: the router's half of plain HTTP on a route:
// answers, a handler that panics or answers badly (500, the lane goes on),
// done called twice (the first wins), and an answer still owed when the
// route is removed and its lane stops (503).
func TestHTTPHandlerRouterSide(t *testing.T) {
	t.Parallel()
	h := &httpSide{started: make(chan struct{}, 1)}
	logs := &moontest.Logs{}
	s, base := startRouter(t, h, logs)
	client := &http.Client{Timeout: moontest.Timeout}
	get := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("POST", "/h/echo", "data"); code != 200 || body != "POST data" {
		t.Fatalf("echo: %d %q", code, body)
	}
	if code, _ := get("GET", "/h/panic", ""); code != 500 {
		t.Fatalf("panic: %d", code)
	}
	if !strings.Contains(logs.String(), "handler panic") {
		t.Fatalf("the panic was not logged: %s", logs)
	}
	if code, _ := get("GET", "/h/status", ""); code != 500 {
		t.Fatalf("bad status: %d", code)
	}
	if !strings.Contains(logs.String(), "bad status 42") {
		t.Fatalf("the bad answer was not logged: %s", logs)
	}
	if code, body := get("GET", "/h/twice", ""); code != 200 || body != "first" {
		t.Fatalf("twice: %d %q", code, body)
	}
	if code, body := get("PUT", "/h/after", "x"); code != 200 || body != "PUT x" {
		t.Fatalf("after the failures: %d %q", code, body)
	}

	// An answer owed when the route goes: the lane stops, the client
	// gets 503, and a late done is harmless.
	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		// Not get: a goroutine may not end the test.
		resp, err := client.Get(base + "/h/never")
		if err != nil {
			res <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b)}
	}()
	select {
	case <-h.started:
	case <-time.After(moontest.Timeout):
		t.Fatal("the request did not reach the handler")
	}
	if err := s.Reconfigure(router.Config{NoPoller: true}); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(moontest.Timeout):
		t.Fatal("no answer after the route was removed")
	}
	if r.code != 503 {
		t.Fatalf("owed answer on a removed route: %d %q", r.code, r.body)
	}
	h.mu.Lock()
	for _, done := range h.dones {
		done(router.HTTPResponse{Body: []byte("late")})
	}
	h.mu.Unlock()
	if code, _ := get("GET", "/h/echo", ""); code != 404 {
		t.Fatalf("removed route: %d", code)
	}
}

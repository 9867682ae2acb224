package moonwire_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/moonwire/moonwire/internal/moontest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestAdminSurface(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[admin]
listen = "127.0.0.1:0"

[[routes]]
path = "/m"
script = "m.lua"
`, "scripts/m.lua", `
local hits = metrics.counter("demo_hits_total", "Messages seen by the demo.")
local open = metrics.gauge("demo_open")
return {
  on_handshake = function(req) if req.query.deny then return false, 401, "no" end end,
  on_open = function(conn) open:inc() end,
  on_message = function(conn, data)
    hits:inc()
    if data == "boom" then error("boom") end
    conn:send(data)
  end,
  on_close = function(conn) open:dec() end,
}`))
	addr := s.AdminAddr()
	if addr == "" {
		t.Fatal("no admin listener")
	}
	c := moontest.Dial(t, s.URL("/m"))
	for range 3 {
		c.Send("x")
		c.Expect("x")
	}
	_, _ = moontest.TryDial(t, s.URL("/m?deny=1"))
	bad := moontest.Dial(t, s.URL("/m"))
	bad.Send("boom")
	bad.ExpectClose(1011)
	moontest.WaitFor(t, "the failed connection to close", func() bool { return s.Router.Stats().Connections == 1 })

	fams := scrape(t, addr)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"moonwire_connections", map[string]string{"route": "/m"}, 1},
		{"moonwire_handshakes_accepted_total", map[string]string{"route": "/m"}, 2},
		{"moonwire_handshakes_refused_total", map[string]string{"status": "401"}, 1},
		{"moonwire_messages_received_total", map[string]string{"route": "/m"}, 4},
		{"moonwire_messages_sent_total", map[string]string{"route": "/m"}, 3},
		{"moonwire_closes_total", map[string]string{"code": "1011"}, 1},
		{"moonwire_handler_errors_total", map[string]string{"route": "/m", "callback": "on_message", "kind": "error"}, 1},
		{"moonwire_handler_duration_seconds", map[string]string{"route": "/m", "callback": "on_message"}, 4},
		{"demo_hits_total", map[string]string{"route": "/m"}, 4},
		{"demo_open", map[string]string{"route": "/m"}, 1},
		{"moonwire_reload_last_success", nil, 1},
	}
	for _, ck := range checks {
		got, ok := value(fams, ck.name, ck.labels)
		if !ok || got != ck.want {
			t.Errorf("%s%v = %v (present %v), want %v", ck.name, ck.labels, got, ok, ck.want)
		}
	}
	for _, name := range []string{"moonwire_received_bytes_total", "moonwire_sent_bytes_total", "go_goroutines", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	// /routes and /healthz, then a broken reload shows in both and in metrics.
	code, body := get(t, "http://"+addr+"/routes")
	var routes []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &routes) != nil || len(routes) != 1 || routes[0]["path"] != "/m" || routes[0]["connections"] != 1.0 {
		t.Fatalf("/routes: %d %s", code, body)
	}
	version := routes[0]["version"]
	code, body = get(t, "http://"+addr+"/healthz")
	if code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	s.WriteFile(t, "scripts/m.lua", "return {\n")
	if err := s.Reload(); err == nil {
		t.Fatal("broken script reloaded")
	}
	code, body = get(t, "http://"+addr+"/healthz")
	if code != 200 || !strings.Contains(body, `"ok":false`) || !strings.Contains(body, "m.lua:2:") {
		t.Fatalf("/healthz after a failed reload: %d %s", code, body)
	}
	fams = scrape(t, addr)
	if v, _ := value(fams, "moonwire_reloads_total", map[string]string{"result": "failed"}); v != 1 {
		t.Errorf("reloads failed = %v", v)
	}
	if v, _ := value(fams, "moonwire_reload_last_success", nil); v != 0 {
		t.Errorf("reload_last_success = %v", v)
	}
	s.WriteFile(t, "scripts/m.lua", `local hits = metrics.counter("demo_hits_total")
return { on_message = function(conn, data) hits:inc() conn:send("v2 " .. data) end }`)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c.Send("y")
	c.Expect("v2 y")
	_, body = get(t, "http://"+addr+"/routes")
	if strings.Contains(body, version.(string)) {
		t.Fatalf("version unchanged after a reload: %s", body)
	}
	// Script metrics survive the reload: 4 before, 1 after.
	if v, _ := value(scrape(t, addr), "demo_hits_total", map[string]string{"route": "/m"}); v != 5 {
		t.Errorf("demo_hits_total after reload = %v, want 5", v)
	}
}

// TestAdminPprof: admin.pprof puts the Go profiler on the admin port, and
// only there; without it the profiler is not served.
func TestAdminPprof(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files("[admin]\nlisten = \"127.0.0.1:0\"\npprof = true\n"+reloadConfig, "scripts/v.lua", versioned("v1")))
	code, body := get(t, "http://"+s.AdminAddr()+"/debug/pprof/heap?debug=1")
	if code != 200 || !strings.Contains(body, "heap profile") {
		t.Fatalf("GET /debug/pprof/heap: %d %.100s", code, body)
	}
	if code, _ := get(t, "http"+s.URL("/debug/pprof/heap")[len("ws"):]); code == 200 {
		t.Fatal("the profiler is served on the WebSocket port")
	}

	off := moontest.Start(t, moontest.Files("[admin]\nlisten = \"127.0.0.1:0\"\n"+reloadConfig, "scripts/v.lua", versioned("v1")))
	if code, _ := get(t, "http://"+off.AdminAddr()+"/debug/pprof/"); code != 404 {
		t.Fatalf("without admin.pprof: GET /debug/pprof/ = %d, want 404", code)
	}
}

// TestReadinessFailsFirst: once a drain starts, /healthz answers 503 while
// connections are still being closed.
func TestReadinessFailsFirst(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files("[admin]\nlisten = \"127.0.0.1:0\"\n"+reloadConfig, "scripts/v.lua", versioned("v1")))
	addr := s.AdminAddr()
	c := moontest.Dial(t, s.URL("/v"))
	ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	// The client holds its answer to the close: the drain is in progress.
	f, err := c.ReadFrame(0)
	if err != nil || f.Op != ws.OpClose {
		t.Fatalf("want a close frame: %v %v", f.Op, err)
	}
	code, body := get(t, "http://"+addr+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Fatalf("/healthz while draining: %d %s", code, body)
	}
	if code, reason := f.CloseCode(); code != 1001 || reason != "going away" {
		t.Fatalf("close %d %q", code, reason)
	}
	if err := c.WriteFrame(ws.OpClose, true, f.Payload[:2]); err != nil {
		t.Fatal(err)
	}
	c.ExpectEOF()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

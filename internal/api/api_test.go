package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/internal/api"
	"github.com/moonwire/moonwire/internal/moontest"
)

const key = "test-key-0123456789abcdef"

// config serves /room (joins "lobby", says its id) and the API on a free
// port with a 1 KiB body limit.
const config = `
[api]
listen = "127.0.0.1:0"
keys = ["` + key + `"]
max_body = "1KiB"

[[routes]]
path = "/room"
script = "room.lua"
`

const script = `
local M = {}
function M.on_open(conn) conn:join("lobby"); conn:send("id " .. conn.id) end
return M
`

func start(t *testing.T) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(config, "scripts/room.lua", script))
}

// post sends body to /api/cmd with the Authorization header auth ("":
// none) and returns the status and the decoded JSON answer.
func post(t *testing.T, addr, cmd, auth, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/"+cmd, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %d %q is not a JSON object: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, m
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := start(t)
	body := `{"room":"lobby","data":"x"}`
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401},
		{"apikey", 401},
		{"apikey ", 401},
		{"apikey wrong-key-0123456789abcdef", 401},
		{"apikey " + key + "x", 401},
		{"apikey " + key[:len(key)-1], 401},
		{"Basic " + key, 401},
		{"Token " + key, 401},
		{key, 401},
		{"apikey " + key, 200},
		{"ApiKey " + key, 200},
		{"Bearer " + key, 200},
		{"bearer   " + key, 200},
	} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.APIAddr()+"/api/publish", strings.NewReader(body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		code, m := do(t, req)
		if code != tc.want {
			t.Errorf("Authorization %q: %d %v, want %d", tc.auth, code, m, tc.want)
		}
		if code == 401 && !strings.Contains(fmt.Sprint(m["error"]), "unauthorized") {
			t.Errorf("401 without a JSON error: %v", m)
		}
	}
	// Unauthenticated callers learn nothing about paths or methods.
	for _, p := range []string{"/api/nope", "/", "/metrics"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.APIAddr()+p, nil)
		if code, _ := do(t, req); code != 401 {
			t.Errorf("GET %s without a key: %d, want 401", p, code)
		}
	}
	if strings.Contains(s.Logs(), key) {
		t.Error("the key shows in the log")
	}
}

func TestMethodAndPath(t *testing.T) {
	t.Parallel()
	s := start(t)
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.APIAddr()+"/api/rooms", nil)
	req.Header.Set("Authorization", "apikey "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q, want 405 POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
	for _, p := range []string{"nope", "batch/x", "", "Publish"} {
		if code, m := post(t, s.APIAddr(), p, "apikey "+key, "{}"); code != 404 || !strings.Contains(fmt.Sprint(m["error"]), "unknown command") {
			t.Errorf("/api/%s: %d %v, want 404", p, code, m)
		}
	}
}

// TestBadRequests: every malformed body is a 400 whose message names the
// field, or the body.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	s := start(t)
	for _, tc := range []struct{ cmd, body, want string }{
		{"publish", ``, `body: want a JSON object`},
		{"publish", `null`, `body: want a JSON object`},
		{"publish", `{`, `body: the JSON ends early`},
		{"publish", `{"room":}`, `body: invalid JSON`},
		{"publish", `[1,2]`, `body: must be a JSON object, not array`},
		{"publish", `"x"`, `body: must be a JSON object, not string`},
		{"publish", `{"room":"a","data":"x"} {}`, `body: data after the JSON object`},
		{"publish", `{"data":"x"}`, `"room": required`},
		{"publish", `{"room":"","data":"x"}`, `"room": required`},
		{"publish", `{"room":5,"data":"x"}`, `"room": must be a string, not number`},
		{"publish", `{"room":"a"}`, `"data": required`},
		{"publish", `{"room":"a","data":5}`, `"data": must be a string, not number`},
		{"publish", `{"room":"a","data":{"x":1}}`, `"data": must be a string, not object`},
		{"publish", `{"room":"a","data":"x","binary":"eA=="}`, `"data": give data (text) or binary (base64), not both`},
		{"publish", `{"room":"a","binary":"not base64!"}`, `"binary": must be standard base64`},
		{"publish", `{"room":"a","data":"x","colour":"red"}`, `"colour": unknown field`},
		{"publish", `{"room":"a","data":"x","except":"nobody"}`, `"except": "nobody" is not a connection id`},
		{"publish", `{"room":"a","data":"x","stamp":"yes"}`, `"stamp": must be true or false, not string`},
		{"publish", `{"room":"a","data":"plain","stamp":true}`, `"stamp": needs a JSON object as data`},
		{"send", `{"data":"x"}`, `"conn": required`},
		{"send", `{"conn":"x","data":"x"}`, `"conn": "x" is not a connection id`},
		{"send", `{"conn":"abc-1"}`, `"data": required`},
		{"close", `{"conn":"abc-1","code":1005}`, `"code": 1005 is not a code a server may send`},
		{"close", `{"conn":"abc-1","code":999}`, `"code": 999 is not a code`},
		{"close", `{"conn":"abc-1","code":"4000"}`, `"code": must be an integer, not string`},
		{"close", `{"conn":"abc-1","code":4000.5}`, `"code": must be an integer, not number 4000.5`},
		{"close", `{"conn":"abc-1","reason":"` + strings.Repeat("r", 124) + `"}`, `"reason": at most 123 bytes`},
		{"room_size", `{}`, `"room": required`},
		{"room_size", `{"room":["a"]}`, `"room": must be a string, not array`},
		{"presence", `{"rooms":"a"}`, `"rooms": unknown field`},
		{"history", `{"room":"a","limit":0}`, `"limit": must be at least 1`},
		{"history", `{"room":"a","since":-1}`, `"since": must be a non-negative integer, not number -1`},
		{"history", `{"room":"a","since":1e99}`, `"since": must be a non-negative integer`},
		{"rooms", `{"all":true}`, `"all": unknown field`},
		{"conn", `{}`, `"conn": required`},
		{"batch", `{}`, `"commands": required`},
		{"batch", `{"commands":{}}`, `"commands": must be an array, not object`},
	} {
		code, m := post(t, s.APIAddr(), tc.cmd, "apikey "+key, tc.body)
		if code != 400 || !strings.Contains(fmt.Sprint(m["error"]), tc.want) {
			t.Errorf("%s %s: %d %v, want 400 ...%s...", tc.cmd, tc.body, code, m, tc.want)
		}
	}
	// Every failure is logged with its reason, never with the key.
	s.WaitLog(t, "api request", "command=history", "status=400", `limit`)
}

// TestBodyLimit: a body over api.max_body (1 KiB here) is a 413, whether
// it says its length or not; one at the limit is read.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := start(t)
	at := `{"room":"a","data":"` + strings.Repeat("x", 1024-len(`{"room":"a","data":""}`)) + `"}`
	if code, m := post(t, s.APIAddr(), "publish", "apikey "+key, at); code != 200 {
		t.Fatalf("a body of exactly 1 KiB: %d %v", code, m)
	}
	over := at + " "
	if code, _ := post(t, s.APIAddr(), "publish", "apikey "+key, over); code != 413 {
		t.Errorf("Content-Length over: %d, want 413", code)
	}
	// Chunked, with no length: cut at the limit while reading.
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.APIAddr()+"/api/publish", io.MultiReader(strings.NewReader(over), strings.NewReader(strings.Repeat(" ", 1<<20))))
	req.Header.Set("Authorization", "apikey "+key)
	if code, _ := do(t, req); code != 413 {
		t.Errorf("chunked over: %d, want 413", code)
	}
	// A batch is one body: its commands share the limit.
	if code, _ := post(t, s.APIAddr(), "batch", "apikey "+key, `{"commands":[`+strings.Repeat(`{"method":"rooms"},`, 60)+`{"method":"rooms"}]}`); code != 413 {
		t.Errorf("batch over: %d, want 413", code)
	}
	// Headers are bounded too.
	req, _ = http.NewRequest(http.MethodPost, "http://"+s.APIAddr()+"/api/rooms", strings.NewReader("{}"))
	req.Header.Set("Authorization", "apikey "+key)
	req.Header.Set("X-Padding", strings.Repeat("p", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 431 {
		t.Errorf("64 KiB of headers: %d, want 431", resp.StatusCode)
	}
}

// TestBatch: commands apply in order, each with its own result; one that
// fails stops none of the others.
func TestBatch(t *testing.T) {
	t.Parallel()
	s := start(t)
	c := moontest.Dial(t, s.URL("/room"))
	id := strings.TrimPrefix(c.Next().Text(), "id ")
	code, m := post(t, s.APIAddr(), "batch", "apikey "+key, `{"commands":[
		{"method":"publish","params":{"room":"lobby","data":"one"}},
		{"method":"publish","params":{"room":"lobby"}},
		{"method":"nope","params":{}},
		{"method":"batch","params":{"commands":[]}},
		{"params":{}},
		{"method":"send","params":{"conn":"`+id+`","data":"two"}},
		{"method":"room_size","params":{"room":"lobby"}},
		{"method":"rooms"},
		{"method":"publish","params":{"room":"lobby","data":"three"},"extra":1},
		"not an object",
		{"method":"close","params":{"conn":"`+id+`","code":4001,"reason":"bye"}}
	]}`)
	if code != 200 {
		t.Fatalf("batch: %d %v", code, m)
	}
	rs := m["results"].([]any)
	want := []string{"200", "400", "404", "400", "400", "200", "200", "200", "400", "400", "200"}
	if len(rs) != len(want) {
		t.Fatalf("%d results, want %d: %v", len(rs), len(want), rs)
	}
	for i, r := range rs {
		if got := fmt.Sprint(r.(map[string]any)["status"]); got != want[i] {
			t.Errorf("result %d: %v, want status %s", i, r, want[i])
		}
	}
	if got := fmt.Sprint(rs[6].(map[string]any)["result"]); got != "map[size:1]" {
		t.Errorf("room_size in a batch: %s", got)
	}
	if got := fmt.Sprint(rs[1].(map[string]any)["error"]); got != `"data": required (or binary, base64)` {
		t.Errorf("error in a batch: %s", got)
	}
	c.Expect("one")
	c.Expect("two")
	c.ExpectClose(4001, "bye")

	many := `{"commands":[` + strings.Repeat(`{},`, api.MaxBatch) + `{}]}`
	h := startHandler(t, s, api.Options{}, 0)
	if code, m := post(t, h, "batch", "apikey "+key, many); code != 400 || !strings.Contains(fmt.Sprint(m["error"]), `"commands": at most 1000 commands in a batch, got 1001`) {
		t.Errorf("%d commands: %d %v", api.MaxBatch+1, code, m)
	}
}

// startHandler serves an api.Handler of s's router with opts on a port of
// its own, with a 1 MiB body limit and at most maxConns connections (0:
// the default).
func startHandler(t *testing.T, s *moontest.Server, opts api.Options, maxConns int) string {
	t.Helper()
	opts.Router = s.Router
	opts.Settings = func() api.Settings { return api.Settings{Keys: []string{key}} }
	opts.Logger = slog.New(slog.DiscardHandler)
	h, err := api.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(h, opts.Logger, maxConns)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestInFlightLimit: with every slot held by a request still sending its
// body, the next request waits QueueWait and is answered 503; once the
// slot frees, requests go through again.
func TestInFlightLimit(t *testing.T) {
	t.Parallel()
	s := start(t)
	reg := prometheus.NewRegistry()
	addr := startHandler(t, s, api.Options{MaxInFlight: 1, QueueWait: 50 * time.Millisecond, Metrics: reg}, 0)
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	body := `{"room":"lobby","data":"slow"}`
	fmt.Fprintf(slow, "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey %s\r\nContent-Length: %d\r\n\r\n%s", key, len(body), body[:5])
	// The slow request holds the only slot once the handler reads its
	// body: wait for the 503 rather than for a moment.
	moontest.WaitFor(t, "a 503 while the slot is held", func() bool {
		code, m := post(t, addr, "rooms", "apikey "+key, "{}")
		if code == 503 && !strings.Contains(fmt.Sprint(m["error"]), "busy") {
			t.Errorf("503 without its reason: %v", m)
		}
		return code == 503
	})
	if _, err := io.WriteString(slow, body[5:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the slow request: %d", resp.StatusCode)
	}
	if code, m := post(t, addr, "rooms", "apikey "+key, "{}"); code != 200 {
		t.Errorf("after the slot freed: %d %v", code, m)
	}
	if n := counter(t, reg, "rooms", "503"); n < 1 {
		t.Errorf("503s counted: %v", n)
	}
}

// counter returns moonwire_api_requests_total{command,code} of reg.
func counter(t *testing.T, reg *prometheus.Registry, command, code string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "moonwire_api_requests_total" {
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["command"] == command && labels["code"] == code {
				return m.Counter.GetValue()
			}
		}
	}
	return 0
}

// TestMetricsAndLog: every request is counted by command and code, timed,
// and logged with what it touched.
func TestMetricsAndLog(t *testing.T) {
	t.Parallel()
	s := start(t)
	post(t, s.APIAddr(), "publish", "apikey "+key, `{"room":"news","data":"x"}`)
	post(t, s.APIAddr(), "publish", "apikey "+key, `{"room":"news"}`)
	post(t, s.APIAddr(), "publish", "", `{}`)
	post(t, s.APIAddr(), "what", "apikey "+key, `{}`)
	post(t, s.APIAddr(), "batch", "apikey "+key, `{"commands":[{"method":"rooms"},{"method":"conn","params":{}}]}`)
	fams, err := s.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			k := f.GetName() + "{" + strings.Join(ls, ",") + "}"
			if m.Counter != nil {
				got[k] = m.Counter.GetValue()
			} else if m.Histogram != nil {
				got[k] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for k, v := range map[string]float64{
		"moonwire_api_requests_total{code=200,command=publish}":     1,
		"moonwire_api_requests_total{code=400,command=publish}":     1,
		"moonwire_api_requests_total{code=401,command=publish}":     1,
		"moonwire_api_requests_total{code=404,command=unknown}":     1,
		"moonwire_api_requests_total{code=200,command=batch}":       1,
		"moonwire_api_request_duration_seconds{command=publish}":    3,
		"moonwire_api_batch_commands_total{code=200,command=rooms}": 1,
		"moonwire_api_batch_commands_total{code=400,command=conn}":  1,
		"moonwire_api_request_duration_seconds{command=unknown}":    1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	line := s.WaitLog(t, "api request", "command=publish", "room=news", "status=200")
	for _, part := range []string{"duration=", "remote=127.0.0.1:"} {
		if !strings.Contains(line, part) {
			t.Errorf("log line %q lacks %s", line, part)
		}
	}
	s.WaitLog(t, "api request", "command=batch", "2 commands, 1 failed")
	if strings.Contains(s.Logs(), key) {
		t.Error("the key shows in the log")
	}
}

// TestCommandsOnOneNode: each command does what its Lua twin does.
func TestCommandsOnOneNode(t *testing.T) {
	t.Parallel()
	s := start(t)
	c := moontest.Dial(t, s.URL("/room"))
	id := strings.TrimPrefix(c.Next().Text(), "id ")
	c2 := moontest.Dial(t, s.URL("/room"))
	id2 := strings.TrimPrefix(c2.Next().Text(), "id ")
	auth := "apikey " + key
	addr := s.APIAddr()

	code, m := post(t, addr, "publish", auth, `{"room":"lobby","data":"héllo"}`)
	if code != 200 || m["delivered"] != 2.0 || m["offset"] != nil {
		t.Fatalf("publish: %d %v", code, m)
	}
	c.Expect("héllo")
	c2.Expect("héllo")
	code, m = post(t, addr, "publish", auth, `{"room":"lobby","binary":"AAEC/w==","except":"`+id+`"}`)
	if code != 200 || m["delivered"] != 1.0 {
		t.Fatalf("publish binary: %d %v", code, m)
	}
	c2.ExpectBinary([]byte{0, 1, 2, 255})
	// Unknown room: nothing delivered, not an error.
	if code, m = post(t, addr, "publish", auth, `{"room":"nobody-here","data":"x"}`); code != 200 || m["delivered"] != 0.0 {
		t.Errorf("publish to an empty room: %d %v", code, m)
	}

	if code, m = post(t, addr, "send", auth, `{"conn":"`+id+`","data":"just you"}`); code != 200 || m["sent"] != true {
		t.Fatalf("send: %d %v", code, m)
	}
	c.Expect("just you")
	dead := s.Router.NodeID() + "-zzzz"
	if code, m = post(t, addr, "send", auth, `{"conn":"`+dead+`","data":"x"}`); code != 404 || !strings.Contains(fmt.Sprint(m["error"]), "closed") {
		t.Errorf("send to no one: %d %v", code, m)
	}

	if code, m = post(t, addr, "room_size", auth, `{"room":"lobby"}`); code != 200 || m["size"] != 2.0 {
		t.Errorf("room_size: %d %v", code, m)
	}
	if code, m = post(t, addr, "room_size", auth, `{"room":"nobody-here"}`); code != 200 || m["size"] != 0.0 {
		t.Errorf("room_size of an empty room: %d %v", code, m)
	}
	code, m = post(t, addr, "presence", auth, `{"room":"lobby"}`)
	if p, _ := m["presence"].(map[string]any); code != 200 || len(p) != 2 || p[id] != nil {
		t.Errorf("presence: %d %v", code, m)
	}
	if code, m = post(t, addr, "presence", auth, `{"room":"nobody-here"}`); code != 200 || fmt.Sprint(m["presence"]) != "map[]" {
		t.Errorf("presence of an empty room: %d %v", code, m)
	}
	// No [history] here: an empty history, not an error.
	if code, m = post(t, addr, "history", auth, `{"room":"lobby"}`); code != 200 || fmt.Sprint(m) != "map[entries:[] epoch: offset:0]" {
		t.Errorf("history without [history]: %d %v", code, m)
	}
	code, m = post(t, addr, "rooms", auth, ``)
	if code != 200 || m["node"] != s.Router.NodeID() || fmt.Sprint(m["rooms"]) != "[map[members:2 room:lobby]]" {
		t.Errorf("rooms: %d %v", code, m)
	}

	code, m = post(t, addr, "conn", auth, `{"conn":"`+id+`"}`)
	ci, _ := m["conn"].(map[string]any)
	if code != 200 || m["local"] != true || ci["id"] != id || ci["route"] != "/room" || ci["path"] != "/room" ||
		!strings.HasPrefix(fmt.Sprint(ci["remote_addr"]), "127.0.0.1:") || fmt.Sprint(ci["rooms"]) != "[lobby]" || ci["closed"] != false {
		t.Errorf("conn: %d %v", code, m)
	}
	if created, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ci["created"])); err != nil || time.Since(created) > time.Hour {
		t.Errorf("conn created %v (%v)", ci["created"], err)
	}
	if code, m = post(t, addr, "conn", auth, `{"conn":"`+dead+`"}`); code != 200 || m["conn"] != nil || m["local"] != true {
		t.Errorf("conn of a gone connection: %d %v", code, m)
	}
	if code, m = post(t, addr, "conn", auth, `{"conn":"othernode-5"}`); code != 200 || m["node"] != "othernode" || m["local"] != false || m["conn"] != nil {
		t.Errorf("conn of another node: %d %v", code, m)
	}

	if code, m = post(t, addr, "close", auth, `{"conn":"`+id2+`","code":4000,"reason":"kicked"}`); code != 200 || m["closed"] != true {
		t.Fatalf("close: %d %v", code, m)
	}
	c2.ExpectClose(4000, "kicked")
	if code, _ = post(t, addr, "close", auth, `{"conn":"`+dead+`"}`); code != 404 {
		t.Errorf("close of no one: %d", code)
	}
	moontest.WaitFor(t, "the closed member to leave", func() bool {
		_, m := post(t, addr, "room_size", auth, `{"room":"lobby"}`)
		return m["size"] == 1.0
	})
}

// TestBatchTime: a batch that runs out of time applies no more commands;
// each one left is answered 503, and nothing of it happens.
func TestBatchTime(t *testing.T) {
	t.Parallel()
	s := start(t)
	c := moontest.Dial(t, s.URL("/room"))
	c.Next() // the greeting
	addr := startHandler(t, s, api.Options{BatchTime: time.Nanosecond}, 0)
	code, m := post(t, addr, "batch", "apikey "+key, `{"commands":[
		{"method":"publish","params":{"room":"lobby","data":"never"}},
		{"method":"rooms"}
	]}`)
	if code != 200 || fmt.Sprint(m["results"]) != "[map[error:not applied: the batch ran out of time, or its client left status:503] map[error:not applied: the batch ran out of time, or its client left status:503]]" {
		t.Fatalf("batch out of time: %d %v", code, m)
	}
	// The connection hears the next publish, not the one never applied.
	if code, _ := post(t, s.APIAddr(), "publish", "apikey "+key, `{"room":"lobby","data":"next"}`); code != 200 {
		t.Fatal(code)
	}
	c.Expect("next")
}

// TestMaxConns: past the listener's connection limit a new connection is
// closed at once; once one closes, the next is served.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	s := start(t)
	addr := startHandler(t, s, api.Options{}, 2)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The two held connections are accepted (they answer a request).
	for _, c := range held {
		fmt.Fprintf(c, "POST /api/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: apikey %s\r\nContent-Length: 2\r\n\r\n{}", key)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("held connection: %d", resp.StatusCode)
		}
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(moontest.Timeout))
	if n, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a third connection was served (%d bytes)", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a third connection was left open")
	}
	held[0].Close()
	moontest.WaitFor(t, "a connection to be served after one closed", func() bool {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/rooms", strings.NewReader("{}"))
		req.Header.Set("Authorization", "apikey "+key)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

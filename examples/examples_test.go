// Package examples_test loads every example configuration in this folder
// and runs its scenario against a real node, so the examples cannot rot.
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire"
	_ "github.com/moonwire/moonwire/examples/plugin/greet"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router/config"
)

// scenarios maps an example folder to its scenario. Every example must
// have one.
var scenarios = map[string]func(t *testing.T, cfg *config.Config){
	"tutorial": tutorial,
	"autobahn": autobahn,
	"plugin":   plugin,
	"cluster":  cluster,
	"backend":  backend,
	// browser-chat/browser_test.go runs the page in Chromium.
	"browser-chat": browserChat,
}

// browserChat serves the browser-chat example over the machine's Redis:
// the page, the client it imports, and a chat room that stamps offsets.
// TestMain caps gopher-lua's array part (lua.LimitArrays, a package
// variable of gopher-lua) before any test runs, as the moonwire command
// does for its process. The servers moontest starts set it too, and the
// first one doing so while another test ran moonwire.Check's Lua was a
// data race (go test -race ./examples/, beside two busy loops).
func TestMain(m *testing.M) {
	lua.LimitArrays()
	os.Exit(m.Run())
}

func browserChat(t *testing.T, cfg *config.Config) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second); err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379 (%v)", err)
	} else {
		c.Close()
	}
	cfg.Broker.Prefix = fmt.Sprintf("example-%d", time.Now().UnixNano())
	s := moontest.StartConfig(t, cfg)
	for path, want := range map[string]string{"/": `from "/_moonwire.js"`, "/_moonwire.js": "export class MoonWire"} {
		resp, err := http.Get(s.HTTPURL(path))
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body.String(), want) {
			t.Fatalf("GET %s: %d %v, want %q in the body", path, resp.StatusCode, err, want)
		}
	}
	_, first := dialChat(t, s.URL("/chat/ex"))
	var join struct {
		Type, Epoch string
		Offset      uint64
	}
	if err := json.Unmarshal(first.Payload, &join); err != nil || join.Type != "join" || join.Offset == 0 || join.Epoch == "" {
		t.Fatalf("first message %+v (%v), want a join stamped with an offset and an epoch", join, err)
	}
}

// backend runs the backend example's config without its backend: the
// handshake's question to it fails, so joins are refused 503.
// backend/backend_test.go runs the whole example, backend included.
func backend(t *testing.T, cfg *config.Config) {
	cfg.API.Listen = "127.0.0.1:0"
	cfg.HTTP.Allow = []string{"127.0.0.1:1"}
	settings(cfg, "/chat/{room}")["backend"] = "http://127.0.0.1:1"
	s := moontest.StartConfig(t, cfg)
	_, err := moontest.TryDial(t, s.URL("/chat/lobby?token=ann-token"))
	var r *moontest.Refusal
	if !errors.As(err, &r) || r.Status != 503 {
		t.Fatalf("without the backend: %v, want a 503 refusal", err)
	}
}

// cluster runs two nodes of the cluster example in-process, over the
// machine's Redis with a prefix of the test's own: a message crosses, and
// a client that left comes back to the other node and gets what it
// missed. cluster/cluster_test.go runs it as processes, through failures.
func cluster(t *testing.T, cfg *config.Config) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second); err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379 (%v)", err)
	} else {
		c.Close()
	}
	cfg.Broker.Prefix = fmt.Sprintf("example-%d", time.Now().UnixNano())
	a, b := moontest.StartConfig(t, cfg), moontest.StartConfig(t, cfg)
	type msg struct {
		Type, Text, Epoch string
		Offset            uint64
	}
	decode := func(f moontest.Frame) msg {
		var m msg
		if err := json.Unmarshal(f.Payload, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	read := func(c *moontest.Client) msg { return decode(c.Next()) }
	x, first := dialChat(t, a.URL("/chat/ex"))
	join := decode(first)
	y, _ := dialChat(t, b.URL("/chat/ex"))
	// y's subscription on node b may take a moment: x speaks until y hears.
	var last msg
	for deadline := time.Now().Add(20 * time.Second); last.Text == ""; {
		if time.Now().After(deadline) {
			t.Fatal("no message crossed the nodes")
		}
		x.Send("hi")
		if f, err := y.ReadFrame(200 * time.Millisecond); err == nil {
			_ = json.Unmarshal(f.Payload, &last)
		}
	}
	y.Close(1000)
	for m := read(x); m.Type != "leave"; m = read(x) {
	}
	x.Send("while you were away")
	back, first := dialChat(t, a.URL(fmt.Sprintf("/chat/ex?since=%d&epoch=%s", last.Offset, join.Epoch)))
	for m := decode(first); ; m = read(back) {
		if m.Offset <= last.Offset {
			t.Fatalf("replayed %d, already had %d", m.Offset, last.Offset)
		}
		if m.Text == "while you were away" {
			break
		}
	}
}

// dialChat connects to a chat room and returns the client with its first
// message. chat.lua turns a newcomer away (1013, try again later) when it
// cannot read the room's history in time, as on a loaded machine; a
// client comes back, and so does this one.
func dialChat(t *testing.T, url string) (*moontest.Client, moontest.Frame) {
	t.Helper()
	var c *moontest.Client
	var first moontest.Frame
	moontest.WaitFor(t, "the chat room at "+url+" to let a client in", func() bool {
		var err error
		if c, err = moontest.TryDial(t, url); err != nil {
			return false
		}
		if first, err = c.ReadFrame(0); err == nil && first.Op != ws.OpClose {
			return true
		}
		_ = c.Conn.Close()
		return false
	})
	return c, first
}

// plugin runs the custom build's config in-process (the import above
// registers greet, as the custom build's does); plugin/main_test.go
// builds and runs the binary itself.
func plugin(t *testing.T, cfg *config.Config) {
	s := moontest.StartConfig(t, cfg)
	c := moontest.Dial(t, s.URL("/hello"))
	c.Send("Grace")
	c.Expect("Hello, Grace!")
	e := moontest.Dial(t, s.URL("/echo"))
	e.Expect("greet is nil")
}

func TestEveryExampleLoadsAndRuns(t *testing.T) {
	files, err := filepath.Glob("*/moonwire.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, file := range files {
		name := filepath.Dir(file)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Load(file)
			if err != nil {
				t.Fatal(err)
			}
			if problems := moonwire.Check(cfg); len(problems) > 0 {
				t.Fatalf("check: %v", problems)
			}
			run, ok := scenarios[name]
			if !ok {
				t.Fatalf("example %s has no scenario in examples_test.go", name)
			}
			run(t, cfg)
		})
	}
}

func settings(cfg *config.Config, path string) map[string]any {
	for i := range cfg.Routes {
		if cfg.Routes[i].Path == path {
			return cfg.Routes[i].Settings
		}
	}
	panic("no route " + path)
}

// tutorial checks every server of the websockets tutorial, with the exact
// replies its clients compare.
func tutorial(t *testing.T, cfg *config.Config) {
	// Shorten the tutorial's 10 and 30 second timers so the test is quick.
	settings(cfg, "/heartbeat")["ping_every"] = 0.05
	// b below stays silent while it checks four relays: the timeout must
	// outlast them on a loaded machine (a CI run under the race detector
	// once took 0.73 s between two of them), and bounds how long the test
	// then waits for the close. tutorial_test.lua checks the timing itself,
	// on a virtual clock.
	settings(cfg, "/monitor")["silent_timeout"] = 2
	settings(cfg, "/monitor")["check_every"] = 0.05
	s := moontest.StartConfig(t, cfg)

	t.Run("echo", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		c.Send("Hello WebSocket!")
		c.Expect("Echo: Hello WebSocket!")
		for _, m := range []string{"测试消息1", "测试消息2"} {
			c.Send(m)
			c.Expect("Echo: " + m)
		}
	})
	t.Run("binary", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/binary"))
		c.Send("这是文本消息")
		c.Expect("文本响应: 这是文本消息")
		c.SendBinary([]byte("hello_binary"))
		c.ExpectBinary([]byte("hello_binary_response"))
	})
	t.Run("close", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/close"))
		c.Send("hi")
		c.Expect("收到: hi")
		c.Send("close")
		c.ExpectClose(1000, "客户端请求关闭")
	})
	t.Run("exceptions", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/exceptions"))
		c.Send("测试消息")
		c.Expect("响应: 测试消息")
	})
	t.Run("heartbeat", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/heartbeat"))
		c.Send("ping")
		c.Expect("pong")
		c.Send("业务消息1")
		c.Expect("响应: 业务消息1")
		// The server's own protocol ping arrives on its timer.
		for {
			f, err := c.ReadFrame(0)
			if err != nil {
				t.Fatal(err)
			}
			if f.Op == ws.OpPing {
				break
			}
		}
	})
	t.Run("auth", func(t *testing.T) {
		for _, h := range []http.Header{nil, {"X-Auth-Token": {"invalid_token"}}} {
			_, err := moontest.TryDial(t, s.URL("/auth"), moontest.DialOptions{Header: h})
			if r, ok := err.(*moontest.Refusal); !ok || r.Status != 401 || r.Body != "Invalid or missing token" {
				t.Fatalf("token %v: %v", h, err)
			}
		}
		for _, tok := range []string{"token_123", "token_456"} {
			c := moontest.Dial(t, s.URL("/auth"), moontest.DialOptions{Header: http.Header{"X-Auth-Token": {tok}}})
			c.Send("认证后的业务消息")
			c.Expect("认证通过的响应: 认证后的业务消息")
		}
	})
	t.Run("chat", func(t *testing.T) {
		a := moontest.Dial(t, s.URL("/chat"))
		b := moontest.Dial(t, s.URL("/chat"))
		waitRoom(t, s, "chat", 2)
		a.Send("用户1 你好")
		b.Expect("[" + a.Conn.LocalAddr().String() + "] 用户1 你好")
		b.Send("用户2 hi")
		// a's first message is b's: its own was not echoed to it.
		a.Expect("[" + b.Conn.LocalAddr().String() + "] 用户2 hi")
	})
	t.Run("monitor", func(t *testing.T) {
		_, err := moontest.TryDial(t, s.URL("/monitor"), moontest.DialOptions{Header: http.Header{"X-Monitor-Token": {"nope"}}})
		if r, ok := err.(*moontest.Refusal); !ok || r.Status != 401 || r.Body != "Invalid Monitor Token" {
			t.Fatalf("bad token: %v", err)
		}
		hdr := moontest.DialOptions{Header: http.Header{"X-Monitor-Token": {"monitor_token_2025"}}}
		a := moontest.Dial(t, s.URL("/monitor"), hdr)
		b := moontest.Dial(t, s.URL("/monitor"), hdr)
		waitRoom(t, s, "monitor", 2)
		addrA := a.Conn.LocalAddr().String()
		a.Send("ping")
		a.Expect("pong")
		a.Send("CPU: 12.34%, MEM: 56.78%")
		b.Expect("[" + addrA + "] CPU: 12.34%, MEM: 56.78%...")
		a.SendBinary([]byte("12.34|56.78"))
		b.Expect("[" + addrA + "] 12.34|56.78...")
		long := strings.Repeat("监", 20) // 60 bytes: cut to 48, a character boundary
		a.Send(long)
		b.Expect("[" + addrA + "] " + strings.Repeat("监", 16) + "...")
		a.SendBinary([]byte{0xff, 0xfe})
		f := b.Next()
		if f.Op != ws.OpBinary || !bytes.Equal(f.Payload, []byte("["+addrA+"] \xff\xfe...")) {
			t.Fatalf("binary relay: %v %q", f.Op, f.Payload)
		}
		// b has been silent all along: the monitor's own check closes it.
		for {
			f := b.Next()
			if f.Op == ws.OpClose {
				code, reason := f.CloseCode()
				if code != 1001 || reason != "Heartbeat timeout" {
					t.Fatalf("close %d %q", code, reason)
				}
				break
			}
		}
	})
}

func waitRoom(t *testing.T, s *moontest.Server, room string, n int) {
	t.Helper()
	moontest.WaitFor(t, room+" to fill", func() bool { return s.Router.RoomSize(room) >= n })
}

// autobahn checks what the Autobahn|Testsuite setup exists for: the offers
// of cases 12.x and 13.x are accepted, a 16 MiB message (9.1.6) is echoed,
// and nothing pings a quiet connection.
func autobahn(t *testing.T, cfg *config.Config) {
	s := moontest.StartConfig(t, cfg)
	for _, offer := range []string{
		"permessage-deflate; client_no_context_takeover; client_max_window_bits",                             // 12.x, 13.1
		"permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits", // 13.2
		"permessage-deflate; server_max_window_bits=8; client_no_context_takeover; client_max_window_bits",   // 13.3
	} {
		c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{Extension: offer})
		if !strings.HasPrefix(c.Extensions, "permessage-deflate") {
			t.Fatalf("offer %q: accepted %q", offer, c.Extensions)
		}
		msg := []byte(strings.Repeat(`{"moonwire": "echo"}`, 400))
		if err := c.WriteCompressed(ws.OpText, msg); err != nil {
			t.Fatal(err)
		}
		if f := c.Next(); !bytes.Equal(f.Payload, msg) {
			t.Fatalf("offer %q: echo of %d bytes came back as %d", offer, len(msg), len(f.Payload))
		}
	}
	c := moontest.Dial(t, s.URL("/echo"))
	big := bytes.Repeat([]byte{'*'}, 16<<20)
	c.SendBinary(big)
	c.ReadTimeout = time.Minute
	if f := c.Next(); f.Op != ws.OpBinary || !bytes.Equal(f.Payload, big) {
		t.Fatalf("16 MiB echo: %v, %d bytes", f.Op, len(f.Payload))
	}
	if iv := cfg.Heartbeat.Interval; iv < 5*time.Minute {
		t.Errorf("heartbeat.interval = %v: cases would see pings they did not ask for", iv)
	}
}

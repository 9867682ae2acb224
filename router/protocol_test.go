package router_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// These tests run the whole stack (router, Lua engine, echo script) on
// loopback and speak to it with a real client, frame by frame.

const echoScript = `
local M = {}
function M.on_message(conn, data, kind) conn:send(data, kind) end
return M
`

func startEcho(t *testing.T, extra string) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(extra+`
[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", echoScript))
}

func TestEchoTextAndBinary(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	c := moontest.Dial(t, s.URL("/echo"))
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 200000} {
		msg := strings.Repeat("x", n)
		c.Send(msg)
		c.Expect(msg)
		bin := bytes.Repeat([]byte{0xff}, n)
		c.SendBinary(bin)
		c.ExpectBinary(bin)
	}
	c.Close(1000)
}

func TestFragmentedMessageIsReassembled(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	c := moontest.Dial(t, s.URL("/echo"))
	// A ping between fragments is answered at once (RFC 6455 §5.4).
	must(t, c.WriteFrame(ws.OpText, false, []byte("hel")))
	must(t, c.WriteFrame(ws.OpPing, true, []byte("p")))
	f, err := c.ReadFrame(0)
	must(t, err)
	if f.Op != ws.OpPong || string(f.Payload) != "p" {
		t.Fatalf("got %v %q, want pong \"p\"", f.Op, f.Payload)
	}
	must(t, c.WriteFrame(ws.OpContinuation, false, []byte("lo ")))
	must(t, c.WriteFrame(ws.OpContinuation, true, []byte("世界")))
	c.Expect("hello 世界")
	// A UTF-8 character split across fragments is fine.
	must(t, c.WriteFrame(ws.OpText, false, []byte("\xe4\xb8")))
	must(t, c.WriteFrame(ws.OpContinuation, true, []byte("\x96")))
	c.Expect("世")
}

func TestPingPongAndUnsolicitedPong(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	c := moontest.Dial(t, s.URL("/echo"))
	must(t, c.WriteFrame(ws.OpPong, true, []byte("unsolicited")))
	must(t, c.WriteFrame(ws.OpPing, true, bytes.Repeat([]byte("a"), 125)))
	f, err := c.ReadFrame(0)
	must(t, err)
	if f.Op != ws.OpPong || len(f.Payload) != 125 {
		t.Fatalf("got %v len %d, want a pong echoing 125 bytes", f.Op, len(f.Payload))
	}
	c.Send("still here")
	c.Expect("still here")
}

func TestProtocolViolationsClose(t *testing.T) {
	t.Parallel()
	s := startEcho(t, `
[server]
max_message_size = "1KiB"
`)
	unmasked := func(op ws.OpCode, p []byte) []byte {
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, ws.NewFrame(op, true, p))
		return b.Bytes()
	}
	masked := func(h ws.Header, p []byte) []byte {
		var b bytes.Buffer
		h.Masked, h.Mask, h.Length = true, ws.NewMask(), int64(len(p))
		_ = ws.WriteHeader(&b, h)
		q := append([]byte(nil), p...)
		ws.Cipher(q, h.Mask, 0)
		b.Write(q)
		return b.Bytes()
	}
	cases := []struct {
		name string
		send [][]byte
		code int
	}{
		{"unmasked frame", [][]byte{unmasked(ws.OpText, []byte("hi"))}, 1002},
		{"reserved opcode", [][]byte{masked(ws.Header{Fin: true, OpCode: 0x3}, nil)}, 1002},
		{"reserved control opcode", [][]byte{masked(ws.Header{Fin: true, OpCode: 0xb}, nil)}, 1002},
		{"rsv1 without extension", [][]byte{masked(ws.Header{Fin: true, Rsv: 4, OpCode: ws.OpText}, []byte("x"))}, 1002},
		{"continuation without start", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpContinuation}, []byte("x"))}, 1002},
		{"new message inside fragmented one", [][]byte{
			masked(ws.Header{OpCode: ws.OpText}, []byte("a")),
			masked(ws.Header{Fin: true, OpCode: ws.OpText}, []byte("b")),
		}, 1002},
		{"fragmented control frame", [][]byte{masked(ws.Header{OpCode: ws.OpPing}, nil)}, 1002},
		{"control payload over 125", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpPing}, make([]byte, 126))}, 1002},
		{"invalid utf-8", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpText}, []byte{0xce, 0xba, 0xe1, 0xbd})}, 1007},
		{"invalid utf-8 in a fragment", [][]byte{
			masked(ws.Header{OpCode: ws.OpText}, []byte("ok")),
			masked(ws.Header{OpCode: ws.OpContinuation}, []byte{0xed, 0xa0, 0x80}), // a surrogate: fails at once
		}, 1007},
		{"truncated utf-8 at the end", [][]byte{
			masked(ws.Header{OpCode: ws.OpText}, []byte("ok")),
			masked(ws.Header{Fin: true, OpCode: ws.OpContinuation}, []byte{0xe4, 0xb8}),
		}, 1007},
		{"message too big", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpBinary}, make([]byte, 1025))}, 1009},
		{"fragmented message too big", [][]byte{
			masked(ws.Header{OpCode: ws.OpBinary}, make([]byte, 600)),
			masked(ws.Header{Fin: true, OpCode: ws.OpContinuation}, make([]byte, 600)),
		}, 1009},
		{"close with one byte", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{3})}, 1002},
		{"close with invalid code", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{0x03, 0xed})}, 1002},
		{"close with reserved code 1005", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{0x03, 0xed})}, 1002},
		{"close with invalid utf-8 reason", [][]byte{masked(ws.Header{Fin: true, OpCode: ws.OpClose}, []byte{0x03, 0xe8, 0xff})}, 1002},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := moontest.Dial(t, s.URL("/echo"))
			for _, b := range tc.send {
				must(t, c.WriteRaw(b))
			}
			f := c.Next()
			if f.Op != ws.OpClose {
				t.Fatalf("got %v %q, want close %d", f.Op, f.Payload, tc.code)
			}
			if code, reason := f.CloseCode(); code != tc.code {
				t.Fatalf("close %d %q, want %d", code, reason, tc.code)
			}
			c.ExpectEOF()
		})
	}
	// The server carries on serving others.
	c := moontest.Dial(t, s.URL("/echo"))
	c.Send("alive")
	c.Expect("alive")
}

func TestOversizedFrameFailsBeforeItsPayload(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "[server]\nmax_message_size = \"1KiB\"\n")
	c := moontest.Dial(t, s.URL("/echo"))
	// Only the header of a 1 GiB frame: the verdict must not wait for data.
	var b bytes.Buffer
	must(t, ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 1 << 30}))
	must(t, c.WriteRaw(b.Bytes()))
	c.ExpectClose(1009)
}

func TestCloseHandshake(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	t.Run("client closes with a code", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		c.Close(4000)
	})
	t.Run("client closes without a code", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		must(t, c.WriteFrame(ws.OpClose, true, nil))
		f := c.Next()
		if f.Op != ws.OpClose || len(f.Payload) != 0 {
			t.Fatalf("got %v %q, want an empty close", f.Op, f.Payload)
		}
		c.ExpectEOF()
	})
	// Registered with IANA since RFC 6455: a peer may send them.
	for _, code := range []int{1012, 1013, 1014} {
		t.Run(fmt.Sprintf("client closes with %d", code), func(t *testing.T) {
			c := moontest.Dial(t, s.URL("/echo"))
			c.Close(code)
		})
	}
	t.Run("client closes with 1015", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		must(t, c.WriteFrame(ws.OpClose, true, binary.BigEndian.AppendUint16(nil, 1015)))
		c.ExpectClose(1002)
	})
	// The close frame waits on the lane behind the messages it came
	// with, and whoever runs it then writes the answer: every echo comes
	// first, then the close, then the end of the stream.
	t.Run("messages and close in one write", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		var b bytes.Buffer
		const n = 50
		for i := range n {
			must(t, ws.WriteFrame(&b, ws.MaskFrame(ws.NewTextFrame(fmt.Appendf(nil, "m%d", i)))))
		}
		must(t, ws.WriteFrame(&b, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))))
		must(t, c.WriteRaw(b.Bytes()))
		for i := range n {
			f := c.Next()
			if want := fmt.Sprintf("m%d", i); f.Op != ws.OpText || string(f.Payload) != want {
				t.Fatalf("frame %d: %v %q, want %q", i, f.Op, f.Payload, want)
			}
		}
		f := c.Next()
		if code, _ := f.CloseCode(); f.Op != ws.OpClose || code != 1000 {
			t.Fatalf("got %v %q, want close 1000", f.Op, f.Payload)
		}
		c.ExpectEOF()
	})
	t.Run("data after close is ignored", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		// One write: a second one could meet a socket the server has
		// already closed.
		var b bytes.Buffer
		must(t, ws.WriteFrame(&b, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")))))
		must(t, ws.WriteFrame(&b, ws.MaskFrame(ws.NewTextFrame([]byte("late")))))
		must(t, c.WriteRaw(b.Bytes()))
		f := c.Next()
		if code, _ := f.CloseCode(); f.Op != ws.OpClose || code != 1000 {
			t.Fatalf("got %v %q, want close 1000", f.Op, f.Payload)
		}
		c.ExpectEOF()
	})
}

func TestFramesRightBehindTheHandshake(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "")
	nc, err := net.Dial("tcp", s.Addr())
	must(t, err)
	defer nc.Close()
	req := "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	var frame bytes.Buffer
	f := ws.MaskFrameInPlace(ws.NewTextFrame([]byte("early")))
	must(t, ws.WriteFrame(&frame, f))
	// One write: request and frame arrive together.
	_, err = nc.Write(append([]byte(req), frame.Bytes()...))
	must(t, err)
	_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
	resp := readUntil(t, nc, "early")
	if !strings.HasPrefix(resp, "HTTP/1.1 101") {
		t.Fatalf("response: %q", resp)
	}
}

func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, got)
		}
	}
	return string(got)
}

func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[server]
allowed_origins = ["https://app.example.com", "https://*.example.org"]

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/limited"
script = "echo.lua"
max_connections_per_ip = 1
`, "scripts/echo.lua", echoScript))

	t.Run("unknown path", func(t *testing.T) {
		_, err := moontest.TryDial(t, s.URL("/nope"))
		expectRefusal(t, err, 404, "")
	})
	t.Run("origin not allowed", func(t *testing.T) {
		_, err := moontest.TryDial(t, s.URL("/echo"), moontest.DialOptions{Header: http.Header{"Origin": {"https://evil.example.com"}}})
		expectRefusal(t, err, 403, "origin not allowed")
	})
	t.Run("origins allowed", func(t *testing.T) {
		for _, o := range []string{"https://app.example.com", "https://a.b.example.org", ""} {
			h := http.Header{}
			if o != "" {
				h.Set("Origin", o)
			}
			c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{Header: h})
			c.Send("x")
			c.Expect("x")
		}
	})
	t.Run("per-ip limit", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/limited"))
		_, err := moontest.TryDial(t, s.URL("/limited"))
		expectRefusal(t, err, 429, "")
		c.Close(1000)
		// The slot is released with the connection.
		moontest.WaitFor(t, "the per-ip slot to free", func() bool {
			c, err := moontest.TryDial(t, s.URL("/limited"))
			if err == nil {
				c.Conn.Close()
			}
			return err == nil
		})
	})
	t.Run("not an upgrade", func(t *testing.T) {
		resp, err := http.Get(s.HTTPURL("/echo"))
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("GET /echo without upgrade: %d", resp.StatusCode)
		}
		// The socket is closed after the refusal, so the refusal says so:
		// a client would otherwise send its next request on it.
		if !resp.Close {
			t.Fatalf("GET /echo without upgrade: %d without Connection: close (header %v)", resp.StatusCode, resp.Header)
		}
		resp, err = http.Post(s.HTTPURL("/echo"), "text/plain", strings.NewReader("x"))
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("POST /echo: %d", resp.StatusCode)
		}
		resp, err = http.Get(s.HTTPURL("/missing"))
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET /missing: %d", resp.StatusCode)
		}
	})
	t.Run("bad handshakes", func(t *testing.T) {
		for _, req := range []string{
			"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",                                               // no key
			"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", // old version
			"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n",
			"garbage\r\n\r\n",
		} {
			status, head := rawRequestHead(t, s.Addr(), req)
			if status < 400 || status > 505 || status == 500 {
				t.Fatalf("request %q answered %d", req, status)
			}
			if !strings.Contains(head, "\r\nConnection: close\r\n") {
				t.Fatalf("request %q answered %d without Connection: close:\n%s", req, status, head)
			}
		}
	})
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "[server]\nmax_connections = 2\n")
	a := moontest.Dial(t, s.URL("/echo"))
	b := moontest.Dial(t, s.URL("/echo"))
	_, err := moontest.TryDial(t, s.URL("/echo"))
	expectRefusal(t, err, 503, "too many connections")
	a.Close(1000)
	moontest.WaitFor(t, "a slot to free", func() bool {
		c, err := moontest.TryDial(t, s.URL("/echo"))
		if err == nil {
			c.Close(1000)
		}
		return err == nil
	})
	b.Send("b")
	b.Expect("b")
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	s := startEcho(t, "[server]\nhandshake_timeout = \"200ms\"\n")
	// Silent, and byte at a time: both are cut off, while others are served.
	silent, err := net.Dial("tcp", s.Addr())
	must(t, err)
	defer silent.Close()
	slow, err := net.Dial("tcp", s.Addr())
	must(t, err)
	defer slow.Close()
	done := make(chan error, 1)
	go func() {
		req := "GET /echo HTTP/1.1\r\nHost: x\r\n"
		for i := 0; ; i++ {
			if _, err := slow.Write([]byte{req[i%len(req)]}); err != nil {
				done <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	c := moontest.Dial(t, s.URL("/echo"))
	c.Send("served")
	c.Expect("served")
	expectHangup(t, silent)
	select {
	case <-done:
	case <-time.After(moontest.Timeout):
		t.Fatal("byte-at-a-time handshake was never cut off")
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/echo"
script = "echo.lua"
heartbeat = { interval = "100ms", timeout = "1500ms" }
`, "scripts/echo.lua", echoScript))
	t.Run("quiet clients are pinged and pongs keep them", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		pings := 0
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			f, err := c.ReadFrame(moontest.Timeout)
			must(t, err)
			if f.Op != ws.OpPing {
				t.Fatalf("got %v, want ping", f.Op)
			}
			pings++
			must(t, c.WriteFrame(ws.OpPong, true, f.Payload))
		}
		if pings < 2 {
			t.Fatalf("%d pings in 1s with a 100ms interval", pings)
		}
		c.Send("alive")
		c.Expect("alive")
	})
	t.Run("silent clients are closed 1001", func(t *testing.T) {
		c := moontest.Dial(t, s.URL("/echo"))
		for {
			f, err := c.ReadFrame(moontest.Timeout)
			must(t, err)
			if f.Op == ws.OpClose {
				code, reason := f.CloseCode()
				if code != 1001 || reason != "heartbeat timeout" {
					t.Fatalf("close %d %q, want 1001 \"heartbeat timeout\"", code, reason)
				}
				break
			}
		}
		c.ExpectEOF()
	})
}

func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	const flood = `
local M = {}
function M.on_open(conn) conn:join("r") end
function M.on_message(conn, data)
  -- The sender floods the room; each broadcast is 16 KiB.
  local chunk = string.rep("x", 16384)
  for i = 1, 400 do ws.broadcast("r", chunk, { except = conn }) end
  conn:send("done")
end
function M.on_close(conn, code, reason) log.info("closed", { code = code, reason = reason }) end
return M
`
	for _, policy := range []string{"close", "drop"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			s := moontest.Start(t, moontest.Files(fmt.Sprintf(`
[server]
write_queue = "64KiB"
slow_consumer = %q

[[routes]]
path = "/room"
script = "flood.lua"
`, policy), "scripts/flood.lua", flood))
			// The reader never reads: its socket buffers fill, then its queue.
			reader := moontest.Dial(t, s.URL("/room"))
			_ = reader.Conn.(*net.TCPConn).SetReadBuffer(4096)
			sender := moontest.Dial(t, s.URL("/room"))
			moontest.WaitFor(t, "both to join", func() bool { return s.Router.RoomSize("r") == 2 })
			sender.Send("go")
			sender.Expect("done")
			switch policy {
			case "close":
				s.WaitLog(t, "closed", "code=1008", "reason=\"slow consumer\"")
				if st := s.Router.Stats(); st.SlowCloses != 1 {
					t.Fatalf("slow closes = %d, want 1", st.SlowCloses)
				}
			case "drop":
				moontest.WaitFor(t, "dropped messages counted", func() bool { return s.Router.Stats().QueueDrops > 0 })
				// The reader is still connected and gets the rest once it reads.
				if st := s.Router.Stats(); st.SlowCloses != 0 || st.Connections != 2 {
					t.Fatalf("drop policy closed a connection: %+v", st)
				}
			}
			// Everyone else is still served.
			c := moontest.Dial(t, s.URL("/room"))
			c.Send("again")
		})
	}
}

func TestStaticFilesOnTheSamePort(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[server]
static_dir = "public"

[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", echoScript, "public/index.html", "<h1>hello</h1>"))
	resp, err := http.Get(s.HTTPURL("/index.html"))
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "<h1>hello</h1>" {
		t.Fatalf("GET /index.html: %d %q", resp.StatusCode, body)
	}
	c := moontest.Dial(t, s.URL("/echo"))
	c.Send("ws too")
	c.Expect("ws too")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/echo"
script = "echo.lua"
rate_limit = { messages = 5, per = "1h", burst = 5 }
`, "scripts/echo.lua", echoScript))
	c := moontest.Dial(t, s.URL("/echo"))
	for i := range 5 {
		c.Send(fmt.Sprint(i))
		c.Expect(fmt.Sprint(i))
	}
	c.Send("one too many")
	c.ExpectClose(1008, "rate limit")
}

func expectRefusal(t *testing.T, err error, status int, body string) {
	t.Helper()
	r, ok := err.(*moontest.Refusal)
	if !ok {
		t.Fatalf("got %v, want HTTP %d", err, status)
	}
	if r.Status != status || (body != "" && r.Body != body) {
		t.Fatalf("refused %d %q, want %d %q", r.Status, r.Body, status, body)
	}
}

func rawRequest(t *testing.T, addr, req string) int {
	t.Helper()
	status, _ := rawRequestHead(t, addr, req)
	return status
}

// rawRequestHead sends req on a socket of its own and returns the
// answer's status and head (everything up to the blank line).
func rawRequestHead(t *testing.T, addr, req string) (int, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	must(t, err)
	defer nc.Close()
	_, err = nc.Write([]byte(req))
	must(t, err)
	_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
	resp, err := io.ReadAll(nc)
	if err != nil && len(resp) == 0 {
		t.Fatalf("request %q: %v", req, err)
	}
	var status int
	if _, err := fmt.Sscanf(string(resp), "HTTP/1.1 %d", &status); err != nil {
		t.Fatalf("response %q: %v", resp, err)
	}
	head, _, _ := strings.Cut(string(resp), "\r\n\r\n")
	return status, head + "\r\n"
}

func expectHangup(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(moontest.Timeout))
	buf := make([]byte, 1024)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server kept a silent handshake open")
		}
		return
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

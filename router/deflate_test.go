package router_test

import (
	"bytes"
	"compress/flate"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// permessage-deflate (RFC 7692) against the echo script and a room.

func startDeflate(t *testing.T) *moontest.Server {
	t.Helper()
	return moontest.Start(t, moontest.Files(`
[server]
compression = true
max_message_size = "64KiB"

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/room"
script = "room.lua"
`, "scripts/echo.lua", echoScript, "scripts/room.lua", `
return {
  on_open = function(conn) conn:join("r") end,
  on_message = function(conn, data, kind) ws.broadcast("r", data, { kind = kind }) end,
}`))
}

func TestDeflateNegotiation(t *testing.T) {
	t.Parallel()
	s := startDeflate(t)
	cases := []struct {
		offer string
		want  string // accepted extension, "" for declined
	}{
		{"permessage-deflate", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"permessage-deflate; client_max_window_bits", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate;server_no_context_takeover;client_no_context_takeover;server_max_window_bits=10"},
		{"permessage-deflate; client_max_window_bits=9", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"},
		{"permessage-deflate; server_max_window_bits=16", ""}, // invalid value: declined
		{"permessage-deflate; unknown_param", ""}, // unknown parameter: declined
		{"permessage-deflate; server_max_window_bits=7, permessage-deflate", "permessage-deflate;server_no_context_takeover;client_no_context_takeover"}, // the second offer
		{"x-webkit-deflate-frame", ""},
	}
	for _, tc := range cases {
		c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{Extension: tc.offer})
		if got := strings.ReplaceAll(c.Extensions, " ", ""); got != tc.want {
			t.Errorf("offer %q: accepted %q, want %q", tc.offer, got, tc.want)
		}
		c.Send("hello")
		c.Expect("hello")
	}
}

func TestDeflateEcho(t *testing.T) {
	t.Parallel()
	s := startDeflate(t)
	c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{Deflate: true})
	big := strings.Repeat("moonwire compresses ", 1000)
	for _, msg := range []string{"tiny", big, strings.Repeat("x", 60000)} {
		// Compressed in; the reply is compressed when it is worth it.
		if err := c.WriteCompressed(ws.OpText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		f := c.Next()
		if f.Op != ws.OpText || string(f.Payload) != msg {
			t.Fatalf("echo of %d bytes: %v %d bytes", len(msg), f.Op, len(f.Payload))
		}
		if want := len(msg) >= 128; f.Compressed != want {
			t.Fatalf("reply of %d bytes compressed=%v", len(msg), f.Compressed)
		}
		// Uncompressed in is fine too: compression is per message.
		c.Send(msg)
		if f := c.Next(); string(f.Payload) != msg {
			t.Fatal("plain echo")
		}
	}
	bin := bytes.Repeat([]byte{1, 2, 3, 4}, 5000)
	if err := c.WriteCompressed(ws.OpBinary, bin); err != nil {
		t.Fatal(err)
	}
	if f := c.Next(); f.Op != ws.OpBinary || !bytes.Equal(f.Payload, bin) || !f.Compressed {
		t.Fatalf("binary: %v %d compressed=%v", f.Op, len(f.Payload), f.Compressed)
	}
	// A fragmented compressed message: RSV1 on the first frame only.
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = w.Write([]byte(big))
	_ = w.Flush()
	body := bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	must(t, c.WriteRaw(clientFrame(false, 0x4, ws.OpText, body[:7])))
	must(t, c.WriteRaw(clientFrame(false, 0, ws.OpContinuation, body[7:20])))
	must(t, c.WriteRaw(clientFrame(true, 0, ws.OpContinuation, body[20:])))
	if f := c.Next(); string(f.Payload) != big {
		t.Fatal("fragmented compressed message")
	}
}

func TestDeflateBombClosesWithoutInflating(t *testing.T) {
	t.Parallel()
	s := startDeflate(t)
	c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{Deflate: true})
	// 16 MiB of zeros deflate to about 16 KiB: small on the wire, far past
	// the 64 KiB limit once inflated.
	if err := c.WriteCompressed(ws.OpBinary, make([]byte, 16<<20)); err != nil {
		t.Fatal(err)
	}
	c.ExpectClose(1009)
}

func TestDeflateProtocolErrors(t *testing.T) {
	t.Parallel()
	s := startDeflate(t)
	for name, frame := range map[string][]byte{
		"rsv1 on a ping":      clientFrame(true, 0x4, ws.OpPing, []byte{0}),
		"rsv2":                clientFrame(true, 0x2, ws.OpText, []byte("x")),
		"garbage deflate":     clientFrame(true, 0x4, ws.OpBinary, []byte{0xff, 0xff, 0xff, 0xff}),
		"rsv1 not negotiated": nil,
	} {
		t.Run(name, func(t *testing.T) {
			opts := moontest.DialOptions{Deflate: true}
			if frame == nil {
				opts, frame = moontest.DialOptions{}, clientFrame(true, 0x4, ws.OpText, []byte{0x02, 0x00})
			}
			c := moontest.Dial(t, s.URL("/echo"), opts)
			must(t, c.WriteRaw(frame))
			f := c.Next()
			code, _ := f.CloseCode()
			if f.Op != ws.OpClose || (code != 1002 && code != 1007) {
				t.Fatalf("got %v code %d", f.Op, code)
			}
		})
	}
}

// TestDeflateBroadcastToMixedRoom: one broadcast reaches compressing and
// plain members alike, each in its own encoding.
func TestDeflateBroadcastToMixedRoom(t *testing.T) {
	t.Parallel()
	s := startDeflate(t)
	z := moontest.Dial(t, s.URL("/room"), moontest.DialOptions{Deflate: true})
	p := moontest.Dial(t, s.URL("/room"))
	moontest.WaitFor(t, "both to join", func() bool { return s.Router.RoomSize("r") == 2 })
	msg := strings.Repeat("to everyone ", 100)
	p.Send(msg)
	if f := z.Next(); string(f.Payload) != msg || !f.Compressed {
		t.Fatalf("compressing member: %d bytes compressed=%v", len(f.Payload), f.Compressed)
	}
	if f := p.Next(); string(f.Payload) != msg || f.Compressed {
		t.Fatalf("plain member: %d bytes compressed=%v", len(f.Payload), f.Compressed)
	}
}

// clientFrame encodes a masked client frame with the given RSV bits.
func clientFrame(fin bool, rsv byte, op ws.OpCode, p []byte) []byte {
	var b bytes.Buffer
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	_ = ws.WriteHeader(&b, h)
	q := append([]byte(nil), p...)
	ws.Cipher(q, h.Mask, 0)
	b.Write(q)
	return b.Bytes()
}

package router_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
)

// goEcho is a handler without Lua: what the router itself costs.
type goEcho struct{}

func (goEcho) Start(*router.Route) error                     { return nil }
func (goEcho) Handshake(int, *router.Request) router.Verdict { return router.Verdict{} }
func (goEcho) Open(int, *router.Conn)                        {}
func (goEcho) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	_ = c.Send(k, d)
}
func (goEcho) Close(int, *router.Conn, int, string) {}
func (goEcho) Stop()                                {}
func (goEcho) SkipHandshake() bool                  { return true }

// echoClient is an allocation-free client: a pre-encoded masked frame out,
// the reply read into a fixed buffer, so allocations counted by the
// benchmark are the server's.
type echoClient struct {
	conn  net.Conn
	br    *bufio.Reader
	frame []byte
	buf   []byte
}

func dialEcho(b *testing.B, url string, payload []byte) *echoClient {
	b.Helper()
	conn, br, _, err := ws.Dial(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	var f bytes.Buffer
	if err := ws.WriteFrame(&f, ws.MaskFrameInPlace(ws.NewTextFrame(append([]byte(nil), payload...)))); err != nil {
		b.Fatal(err)
	}
	return &echoClient{conn: conn, br: br, frame: f.Bytes(), buf: make([]byte, len(payload)+16)}
}

func (e *echoClient) roundTrip(b *testing.B) {
	if _, err := e.conn.Write(e.frame); err != nil {
		b.Fatal(err)
	}
	h, err := ws.ReadHeader(e.br)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(e.br, e.buf[:h.Length]); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkEchoRoundTrip is one 32-byte message out and back through the
// router with a Go handler: the router's own steady-state cost (read,
// dispatch on the lane, encode, queue, vectored write). Target: 0 allocs.
func BenchmarkEchoRoundTrip(b *testing.B) {
	s, err := router.New(router.Config{Routes: []router.RouteSpec{{Pattern: "/echo", Handler: goEcho{}}}})
	if err != nil {
		b.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	c := dialEcho(b, "ws://"+ln.Addr().String()+"/echo", []byte(strings.Repeat("x", 32)))
	defer c.conn.Close()
	for range 100 { // warm the pools
		c.roundTrip(b)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.roundTrip(b)
	}
}

// BenchmarkLuaEchoRoundTrip is the same through scripts/echo.lua: the
// difference is the Lua dispatch (the payload becomes a Lua string: one
// allocation for its bytes, one for its interface box).
func BenchmarkLuaEchoRoundTrip(b *testing.B) {
	s := moontest.Start(b, moontest.Files("[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\nvms = 1\n",
		"scripts/echo.lua", echoScript))
	c := dialEcho(b, s.URL("/echo"), []byte(strings.Repeat("x", 32)))
	defer c.conn.Close()
	for range 100 {
		c.roundTrip(b)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c.roundTrip(b)
	}
}

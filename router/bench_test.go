package router_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// measure times round trips, after warming the pools with a hundred.
func (e *echoClient) measure(b *testing.B) {
	for range 100 {
		e.roundTrip(b)
	}
	b.ReportAllocs()
	for b.Loop() { // b.Loop starts the timer afresh on its first call
		e.roundTrip(b)
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
	c.measure(b)
}

// BenchmarkLuaEchoRoundTrip is the same through scripts/echo.lua: the
// difference is the Lua dispatch (the payload becomes a Lua string: one
// allocation for its bytes, one for its interface box).
func BenchmarkLuaEchoRoundTrip(b *testing.B) {
	s := moontest.Start(b, moontest.Files("[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\nvms = 1\n",
		"scripts/echo.lua", echoScript))
	c := dialEcho(b, s.URL("/echo"), []byte(strings.Repeat("x", 32)))
	defer c.conn.Close()
	c.measure(b)
}

// BenchmarkBroadcastFanout1k broadcasts a 64-byte message to a room of
// 1,000 connections and waits until every member has read it: one op is
// one framing, 1,000 queue appends and 1,000 writes.
func BenchmarkBroadcastFanout1k(b *testing.B) {
	const members = 1000
	s, err := router.New(router.Config{Routes: []router.RouteSpec{{Pattern: "/room", Handler: joiner{}}}})
	if err != nil {
		b.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	defer s.Close()
	var got, want atomic.Int64
	done := make(chan struct{}, 1)
	var conns []net.Conn
	for range members {
		conn, br, _, err := ws.Dial(context.Background(), "ws://"+ln.Addr().String()+"/room")
		if err != nil {
			b.Fatal(err)
		}
		if br != nil {
			b.Fatal("unexpected buffered handshake data")
		}
		conns = append(conns, conn)
		go func() {
			// Every broadcast is one 66-byte frame: count frames by bytes.
			buf := make([]byte, 4096)
			n := 0
			for {
				m, err := conn.Read(buf)
				if err != nil {
					return
				}
				n += m
				if k := int64(n / 66); k > 0 && got.Add(k) == want.Load() {
					done <- struct{}{}
				}
				n %= 66
			}
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for s.RoomSize("r") < members {
		time.Sleep(time.Millisecond)
	}
	payload := strings.Repeat("x", 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		want.Add(members)
		s.BroadcastString("r", router.Text, payload, nil)
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*members), "ns/delivery")
}

// joiner puts every connection in room "r".
type joiner struct{ goEcho }

func (joiner) Open(_ int, c *router.Conn) { _ = c.Join("r") }

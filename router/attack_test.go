package router_test

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

// The attacks in this file need no credentials: each is what one client
// can do to a server on its default config. Each test measures what the
// server holds for the attacker against what the operator configured.
// Tests that measure the process's heap are not parallel: they run while
// no other test of the package does.

// liveHeap returns the bytes of live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// routeBytesIn is what the server has read on the route so far.
func routeBytesIn(s *moontest.Server, pattern string) int64 {
	for _, r := range s.Router.RouteStats() {
		if r.Pattern == pattern {
			return r.BytesIn
		}
	}
	return 0
}

// TestPingFloodHoldsOnePong: a client that sends pings as fast as it can
// and never reads fills its socket, then every later pong waits in the
// server's queue. Pongs coalesce there (only the latest ping needs an
// answer), so the flood costs the server one queued pong, not one per
// ping: 100,000 pings of 125 bytes used to hold about 50 MB.
func TestPingFloodHoldsOnePong(t *testing.T) {
	s := startEcho(t, "")
	c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{ReadBuffer: 4096})
	moontest.WaitFor(t, "the handshake's bytes to be counted", func() bool { return routeBytesIn(s, "/echo") == 0 })
	before := liveHeap()

	var ping bytes.Buffer
	if err := ws.WriteFrame(&ping, ws.MaskFrame(ws.NewPingFrame(bytes.Repeat([]byte("p"), 125)))); err != nil {
		t.Fatal(err)
	}
	const pings, perWrite = 100_000, 100
	batch := bytes.Repeat(ping.Bytes(), perWrite)
	for range pings / perWrite {
		if err := c.WriteRaw(batch); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	total := int64(pings * ping.Len())
	moontest.WaitFor(t, "the server to read every ping", func() bool { return routeBytesIn(s, "/echo") >= total })
	grown := liveHeap() - before
	t.Logf("heap grew by %d KiB for %d pings", grown>>10, pings)
	if grown > 8<<20 {
		t.Fatalf("a ping flood grew the heap by %d MiB; want under 8 MiB (pongs must coalesce)", grown>>20)
	}
}

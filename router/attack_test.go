package router_test

import (
	"bytes"
	"compress/flate"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router"
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

// heapPeak samples the heap every millisecond until stop is called, and
// returns the largest figure seen above the figure at the start.
func heapPeak() (stop func() int64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() int64 { metrics.Read(sample); return int64(sample[0].Value.Uint64()) }
	base := read()
	var peak atomic.Int64
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if d := read() - base; d > peak.Load() {
					peak.Store(d)
				}
			}
		}
	}()
	return func() int64 { close(done); <-exited; return peak.Load() }
}

// deflated compresses p as one permessage-deflate message (RFC 7692
// §7.2.1: the sync flush's tail removed).
func deflated(p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(p)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// counter counts the messages and bytes it receives; its first message
// keeps it busy for a while, so the rest of a read is parsed meanwhile;
// "done" gets the counts back. It allocates nothing per message, so the
// heap shows what the router holds.
type counter struct {
	goEcho
	n, bytes int
}

func (h *counter) Message(_ int, c *router.Conn, k router.Kind, d []byte) {
	h.n++
	h.bytes += len(d)
	if h.n == 1 {
		time.Sleep(500 * time.Millisecond) // a slow handler, not a wait
	}
	if string(d) == "done" {
		_ = c.SendString(router.Text, fmt.Sprintf("%d %d", h.n, h.bytes))
	}
}

// TestCompressedFramesInflateOneAtATime: with compression on, one large
// frame grows a connection's read buffer, and the next read fills its
// spare room with hundreds of tiny frames that each inflate to the size
// limit. Inflating them as they were parsed held them all at once (800
// frames here: 185 MiB of heap at the peak; with the default 1 MiB limit,
// gigabytes for one connection). A message is inflated on its lane just
// before its handler takes it, so one inflated message exists at a time.
func TestCompressedFramesInflateOneAtATime(t *testing.T) {
	const limit, small = 64 << 10, 800
	srv, addr := serve(t, router.Config{
		Routes:         []router.RouteSpec{{Pattern: "/count", Handler: &counter{}, Lanes: 1}},
		Compression:    true,
		MaxMessageSize: limit,
		Logger:         slog.New(slog.DiscardHandler),
	})
	t.Cleanup(func() { _ = srv.Close() })
	c := moontest.Dial(t, "ws://"+addr+"/count", moontest.DialOptions{Deflate: true})
	bomb := deflated(make([]byte, limit))
	var b bytes.Buffer
	b.Write(clientFrame(true, 0, ws.OpBinary, make([]byte, limit))) // grows the read buffer
	for range small {
		b.Write(clientFrame(true, 0x4, ws.OpBinary, bomb))
	}
	b.Write(clientFrame(true, 0, ws.OpText, []byte("done")))
	t.Logf("%d frames in %d KiB, inflating to %d MiB", small+2, b.Len()>>10, (small+1)*limit>>20)

	stop := heapPeak()
	must(t, c.WriteRaw(b.Bytes()))
	c.ReadTimeout = 30 * time.Second
	want := fmt.Sprintf("%d %d", small+2, (small+1)*limit+4)
	got := c.Next()
	peak := stop()
	if got.Text() != want {
		t.Fatalf("server counted %q, want %q", got.Text(), want)
	}
	t.Logf("heap peak: %d KiB above the start", peak>>10)
	if peak > 16<<20 {
		t.Fatalf("heap peaked %d MiB above the start; want under 16 MiB (one inflated message at a time)", peak>>20)
	}
}

// TestPolicyCloseReachesTheClient: a client over its rate limit (or its
// message size) is failed with 1008 (1009) while more of its burst is
// still on the way. Closing a socket with unread input makes the kernel
// reset the connection: a client still writing then fails its write with
// a reset and, like Python's websockets and Node's ws, reports 1006 and
// drops what it had not read, the allowed echoes and the close frame
// among them. The server shuts its write side and drains the rest
// instead, so the client's writes keep succeeding while it reads every
// echo it was allowed, then the close frame the server logged.
func TestPolicyCloseReachesTheClient(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[server]
max_message_size = "4KiB"

[[routes]]
path = "/echo"
script = "echo.lua"
rate_limit = { messages = 5, per = "1m", burst = 5 }
`, "scripts/echo.lua", echoScript))
	msg := bytes.Repeat([]byte("m"), 1000)
	frame := func(p []byte) []byte {
		var b bytes.Buffer
		must(t, ws.WriteFrame(&b, ws.MaskFrame(ws.NewBinaryFrame(p))))
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		last []byte // sent after the allowed messages
		code int
	}{
		{"rate limit", msg, 1008},
		{"message too big", make([]byte, 8<<10), 1009},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := moontest.Dial(t, s.URL("/echo"))
			// A client that writes its burst message by message, as the
			// libraries do, while it reads.
			writeErr := make(chan error, 1)
			go func() {
				var err error
				for i := 0; i < 300 && err == nil; i++ {
					switch {
					case i < 5:
						err = c.WriteRaw(frame(msg))
					case i == 5:
						err = c.WriteRaw(frame(tc.last))
					default:
						err = c.WriteRaw(frame(msg))
						time.Sleep(time.Millisecond) // paces the burst past the close
					}
				}
				writeErr <- err
			}()
			for i := range 5 {
				f, err := c.ReadFrame(0)
				if err != nil || f.Op != ws.OpBinary || len(f.Payload) != len(msg) {
					t.Fatalf("echo %d: %v %v (%d bytes)", i, err, f.Op, len(f.Payload))
				}
			}
			f, err := c.ReadFrame(0)
			if code, _ := f.CloseCode(); err != nil || f.Op != ws.OpClose || code != tc.code {
				t.Fatalf("after the echoes: %v %v %q, want close %d", err, f.Op, f.Payload, tc.code)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("the client's burst failed (reset by the server?): %v", err)
			}
			c.ExpectEOF()
		})
	}
}

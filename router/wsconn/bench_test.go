package wsconn

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
	"github.com/moonwire/moonwire/router/internal/tcptest"
)

// BenchmarkParserBatch decodes 8 masked 32-byte text frames from one
// buffer, as one read from a busy connection would hold them.
func BenchmarkParserBatch(b *testing.B) {
	var frames [][]byte
	for range 8 {
		frames = append(frames, mframe(ws.OpText, textOf(32)))
	}
	pristine := cat(frames...)
	buf := make([]byte, len(pristine))
	p := &Parser{MaxMessage: 1 << 20}
	b.SetBytes(int64(len(pristine)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, pristine) // Next unmasks in place
		off, events := 0, 0
		for off < len(buf) {
			ev, n, err := p.Next(buf[off:])
			if err != nil || n == 0 {
				b.Fatalf("n=%d err=%v", n, err)
			}
			off += n
			if ev.Kind == Text {
				events++
			}
		}
		if events != 8 {
			b.Fatalf("%d events", events)
		}
	}
}

// BenchmarkParserFragmented reassembles a text message of 4 fragments.
func BenchmarkParserFragmented(b *testing.B) {
	pristine := cat(
		mfrag(false, ws.OpText, textOf(256)),
		mfrag(false, ws.OpContinuation, textOf(256)),
		mfrag(false, ws.OpContinuation, textOf(256)),
		mfrag(true, ws.OpContinuation, textOf(256)),
	)
	buf := make([]byte, len(pristine))
	p := &Parser{MaxMessage: 1 << 20}
	b.SetBytes(int64(len(pristine)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, pristine)
		for off := 0; off < len(buf); {
			ev, n, err := p.Next(buf[off:])
			if err != nil || n == 0 {
				b.Fatalf("n=%d err=%v", n, err)
			}
			off += n
			if ev.Owned {
				bufpool.Put(ev.Payload)
			}
		}
	}
}

func BenchmarkNewFrameRelease(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"32B", 32}, {"4KiB", 4096}} {
		payload := make([]byte, bc.size)
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				NewFrame(ws.OpBinary, payload).Release()
			}
		})
	}
}

// BenchmarkNewDeflatedFrame compresses a chat-sized JSON message and a
// large, highly compressible one, as a broadcast does once per message.
func BenchmarkNewDeflatedFrame(b *testing.B) {
	for _, bc := range []struct {
		name    string
		payload []byte
	}{
		{"json1KiB", []byte(strings.Repeat(`{"user":"ada","text":"hi"}`, 40))},
		{"zeros256KiB", make([]byte, 256<<10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.payload)))
			b.ReportAllocs()
			for b.Loop() {
				NewDeflatedFrame(ws.OpText, bc.payload, "").Release()
			}
		})
	}
}

// BenchmarkQueueFlush pushes 8 frames and flushes them with one vectored
// write to a loopback TCP socket whose peer discards everything.
func BenchmarkQueueFlush(b *testing.B) {
	w, r := tcptest.Pair(b)
	go io.Copy(io.Discard, r)
	frames := make([]*Frame, 8)
	for i := range frames {
		frames[i] = NewFrame(ws.OpText, []byte(textOf(32)))
	}
	defer releaseAll(frames...)
	var q Queue
	var fl Flusher
	b.SetBytes(int64(8 * len(frames[0].Bytes())))
	b.ReportAllocs()
	for b.Loop() {
		for _, f := range frames {
			if _, err := q.Push(f); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := fl.Flush(&q, w, time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

package wsconn

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// Frame is one encoded server-to-client frame. A broadcast encodes its
// payload once and queues the same Frame on every recipient, so a Frame is
// immutable once built and reference counted: each queue holding it owns a
// reference, and the last Release returns its memory to the pool.
type Frame struct {
	b    []byte
	base []byte // the pooled buffer b lies in, when b does not start it
	// refs counts the references. It is set with a plain store while the
	// frame is still private to its builder (fresh from a pool, which
	// orders it after the last Release) and changed only atomically once
	// the frame is shared: an atomic store is an XCHG, a full barrier,
	// and was two thirds of building an echo's frame.
	refs int32
}

var framePool = sync.Pool{New: func() any { return new(Frame) }}

// smallFrames recycles frames of up to bufpool.Smallest bytes together
// with their buffer. Most frames are small (chat lines, echoes, ticks),
// and taking frame and buffer from one pool is one pool operation each
// way where separate pools made three (BenchmarkNewFrameRelease/32B:
// 39 → 24 ns).
var smallFrames sync.Pool

// getFrame returns a frame with no references whose b has length n.
func getFrame(n int) *Frame {
	if n <= bufpool.Smallest {
		if f, _ := smallFrames.Get().(*Frame); f != nil {
			f.b = f.b[:n]
			return f
		}
	}
	f := framePool.Get().(*Frame)
	f.b = bufpool.Get(n)
	return f
}

// NewFrame encodes a final, unmasked frame with opcode op around payload.
// payload is copied. The returned Frame holds one reference, owned by the
// caller: queue it (each queue takes its own reference), then Release it.
func NewFrame(op ws.OpCode, payload []byte) *Frame {
	return newFrame(op, payload, "")
}

// NewFrameString is NewFrame for a string payload, which spares callers
// holding strings (scripts) a conversion copy.
func NewFrameString(op ws.OpCode, payload string) *Frame {
	return newFrame(op, nil, payload)
}

func newFrame(op ws.OpCode, pb []byte, ps string) *Frame {
	n := len(pb) + len(ps)
	hl := headerLen(n)
	f := getFrame(hl + n)
	putHeader(f.b, op, n)
	copy(f.b[hl+copy(f.b[hl:], pb):], ps)
	f.refs = 1
	return f
}

// NewCloseFrame encodes a close frame with code and reason. The reason is
// truncated to fit the 125-byte control payload limit (on a UTF-8 boundary).
func NewCloseFrame(code ws.StatusCode, reason string) *Frame {
	reason = truncateUTF8(reason, ws.MaxControlFramePayloadSize-2)
	f := getFrame(2 + 2 + len(reason))
	putHeader(f.b, ws.OpClose, 2+len(reason))
	binary.BigEndian.PutUint16(f.b[2:], uint16(code))
	copy(f.b[4:], reason)
	f.refs = 1
	return f
}

// Bytes returns the encoded frame. It is valid while the caller holds a
// reference and must not be modified.
func (f *Frame) Bytes() []byte { return f.b }

// Retain adds a reference.
func (f *Frame) Retain() { atomic.AddInt32(&f.refs, 1) }

// Release drops a reference; the last one recycles the frame.
func (f *Frame) Release() {
	switch r := atomic.AddInt32(&f.refs, -1); {
	case r == 0:
		if f.base == nil && cap(f.b) == bufpool.Smallest {
			f.b = f.b[:0]
			smallFrames.Put(f)
			return
		}
		if f.base != nil {
			bufpool.Put(f.base)
		} else {
			bufpool.Put(f.b)
		}
		f.b, f.base = nil, nil
		framePool.Put(f)
	case r < 0:
		panic("wsconn: Frame released more times than retained")
	}
}

func headerLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// putHeader writes a FIN frame header for an n-byte unmasked payload at the
// front of b (RFC 6455 §5.2).
func putHeader(b []byte, op ws.OpCode, n int) {
	b[0] = 0x80 | byte(op)
	switch {
	case n <= 125:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
}

func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && s[max]&0xc0 == 0x80 {
		max--
	}
	return s[:max]
}

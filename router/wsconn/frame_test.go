package wsconn

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// decodeServerFrame reads one frame with gobwas and checks that it is a
// final, unmasked frame that fills b exactly, with a minimal length
// encoding.
func decodeServerFrame(t *testing.T, b []byte) ws.Frame {
	t.Helper()
	r := bytes.NewReader(b)
	f, err := readServerFrame(r)
	if err != nil {
		t.Fatalf("ws.ReadFrame: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes left after the frame", r.Len())
	}
	if !f.Header.Fin || f.Header.Rsv != 0 || f.Header.Masked {
		t.Fatalf("header %+v: want FIN, no RSV, unmasked", f.Header)
	}
	if int64(len(f.Payload)) != f.Header.Length {
		t.Fatalf("payload %d bytes, header says %d", len(f.Payload), f.Header.Length)
	}
	wantHL := 2
	switch {
	case f.Header.Length > 0xffff:
		wantHL = 10
	case f.Header.Length > 125:
		wantHL = 4
	}
	if hl := len(b) - len(f.Payload); hl != wantHL {
		t.Fatalf("header is %d bytes for length %d, want %d (minimal encoding)", hl, f.Header.Length, wantHL)
	}
	return f
}

func TestNewFrameEncoding(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 70000, 1 << 20}
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPing, ws.OpPong} {
		for _, n := range sizes {
			if op.IsControl() && n > 125 {
				continue
			}
			t.Run(fmt.Sprintf("%v/%d", op, n), func(t *testing.T) {
				t.Parallel()
				payload := []byte(textOf(n))
				for _, ctor := range []struct {
					name string
					f    func() *Frame
				}{
					{"bytes", func() *Frame { return NewFrame(op, payload) }},
					{"string", func() *Frame { return NewFrameString(op, string(payload)) }},
				} {
					f := ctor.f()
					if r := atomic.LoadInt32(&f.refs); r != 1 {
						t.Fatalf("%s: new frame has %d references, want 1", ctor.name, r)
					}
					got := decodeServerFrame(t, f.Bytes())
					if got.Header.OpCode != op {
						t.Fatalf("%s: opcode %v, want %v", ctor.name, got.Header.OpCode, op)
					}
					if !bytes.Equal(got.Payload, payload) {
						t.Fatalf("%s: payload differs", ctor.name)
					}
					f.Release()
				}
			})
		}
	}
}

// TestNewFrameCopiesPayload: the frame owns its bytes.
func TestNewFrameCopiesPayload(t *testing.T) {
	t.Parallel()
	p := []byte("original")
	f := NewFrame(ws.OpBinary, p)
	defer f.Release()
	copy(p, "XXXXXXXX")
	if got := decodeServerFrame(t, f.Bytes()); string(got.Payload) != "original" {
		t.Fatalf("payload %q after the caller changed its slice", got.Payload)
	}
}

func TestNewCloseFrame(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		code   ws.StatusCode
		reason string
		want   string // reason after truncation
	}{
		{"no reason", 1000, "", ""},
		{"short", 1001, "going away", "going away"},
		{"private code", 4999, "x", "x"},
		{"123 ascii kept", 1000, textOf(123), textOf(123)},
		{"124 ascii cut", 1000, textOf(124), textOf(123)},
		{"200 ascii cut", 1011, textOf(200), textOf(123)},
		{"2-byte runes cut to 122", 1000, strings.Repeat("é", 100), strings.Repeat("é", 61)},
		{"3-byte runes fit 123", 1000, strings.Repeat("世", 50), strings.Repeat("世", 41)},
		{"3-byte runes offset cut to 121", 1000, "a" + strings.Repeat("世", 50), "a" + strings.Repeat("世", 40)},
		{"4-byte runes cut to 120", 1000, strings.Repeat("😀", 40), strings.Repeat("😀", 30)},
		{"4-byte rune straddling 123", 1000, textOf(121) + "😀", textOf(121)},
		{"4-byte rune ending at 123", 1000, textOf(119) + "😀" + "z", textOf(119) + "😀"},
		{"rune starting at 123", 1000, textOf(123) + "é", textOf(123)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := NewCloseFrame(tc.code, tc.reason)
			defer f.Release()
			got := decodeServerFrame(t, f.Bytes())
			if got.Header.OpCode != ws.OpClose {
				t.Fatalf("opcode %v", got.Header.OpCode)
			}
			if len(got.Payload) > ws.MaxControlFramePayloadSize {
				t.Fatalf("close payload %d bytes", len(got.Payload))
			}
			code, reason := ws.ParseCloseFrameData(got.Payload)
			if code != tc.code || reason != tc.want {
				t.Fatalf("got (%d, %q), want (%d, %q)", code, reason, tc.code, tc.want)
			}
			if !utf8.ValidString(reason) || !strings.HasPrefix(tc.reason, reason) {
				t.Fatalf("reason %q is not a valid prefix of the original", reason)
			}
			// The frame reads back through our own parser once masked.
			masked := encodeClient(true, 0, ws.OpClose, got.Payload, true)
			ev, _, err := (&Parser{MaxMessage: 1}).Next(masked)
			if err != nil || ev.Code != tc.code || ev.Reason != tc.want {
				t.Fatalf("parser reads back (%d, %q, %v)", ev.Code, ev.Reason, err)
			}
		})
	}
}

func TestTruncateUTF8Property(t *testing.T) {
	t.Parallel()
	// Every cut of every mix of rune widths lands on a boundary, as long
	// as possible.
	s := "aé世😀" + "é世😀a" + "世😀aé" + "😀aé世"
	for start := range len(s) {
		if !utf8.RuneStart(s[start]) {
			continue
		}
		for max := range 12 {
			if len(s[start:]) <= max {
				if got := truncateUTF8(s[start:], max); got != s[start:] {
					t.Fatalf("truncateUTF8(%q, %d) = %q, want it unchanged", s[start:], max, got)
				}
				continue
			}
			got := truncateUTF8(s[start:], max)
			if !utf8.ValidString(got) || !strings.HasPrefix(s[start:], got) || len(got) > max {
				t.Fatalf("truncateUTF8(%q, %d) = %q", s[start:], max, got)
			}
			if len(s[start:]) > max {
				// Not shorter than needed: the next rune would not fit.
				_, size := utf8.DecodeRuneInString(s[start+len(got):])
				if len(got)+size <= max {
					t.Fatalf("truncateUTF8(%q, %d) = %q: cut too short", s[start:], max, got)
				}
			}
		}
	}
}

// TestFrameRefcount is not parallel: a frame released to zero goes back to
// a pool (smallFrames, for this one), and a parallel NewFrame could take it
// while this test still looks at it.
func TestFrameRefcount(t *testing.T) {
	f := NewFrameString(ws.OpText, "hello")
	if got := atomic.LoadInt32(&f.refs); got != 1 {
		t.Fatalf("refs = %d, want 1", got)
	}
	f.Retain()
	f.Retain()
	if got := atomic.LoadInt32(&f.refs); got != 3 {
		t.Fatalf("refs = %d, want 3", got)
	}
	f.Release()
	f.Release()
	if got := atomic.LoadInt32(&f.refs); got != 1 || f.Bytes() == nil {
		t.Fatalf("refs = %d, bytes nil = %v: released too early", got, f.Bytes() == nil)
	}
	f.Release()
	if len(f.Bytes()) != 0 {
		t.Fatal("the last Release left the frame's bytes readable")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("over-release did not panic")
			}
		}()
		f.Release()
	}()
	// Make the pooled frame harmless for whoever takes it next.
	atomic.StoreInt32(&f.refs, 0)
}

// TestFrameOverReleasePanics uses a frame that never was pooled.
func TestFrameOverReleasePanics(t *testing.T) {
	t.Parallel()
	f := &Frame{}
	defer func() {
		if recover() == nil {
			t.Fatal("Release of a frame with no reference did not panic")
		}
	}()
	f.Release()
}

// TestFrameConcurrentRelease: a broadcast frame released from many
// goroutines reaches zero exactly once.
func TestFrameConcurrentRelease(t *testing.T) {
	t.Parallel()
	const holders = 32
	f := &Frame{b: make([]byte, 4)} // not from the pools: its recycling is harmless
	atomic.StoreInt32(&f.refs, 1)
	for range holders {
		f.Retain()
	}
	done := make(chan struct{})
	for range holders {
		go func() {
			f.Release()
			done <- struct{}{}
		}()
	}
	for range holders {
		<-done
	}
	if got := atomic.LoadInt32(&f.refs); got != 1 || f.b == nil {
		t.Fatalf("refs = %d after %d releases", got, holders)
	}
}

// TestDeflatedFrameHoldsWhatItUses: a compressed frame is charged to a
// write queue by its length, so the buffer it keeps must not be many times
// that. The compressor's first buffer is a guess from the payload size; a
// payload that compresses a thousandfold (a peer echoing a deflate bomb)
// made every ~1 KiB queued frame pin 512 KiB, and a write queue of 1 MiB
// hold hundreds of MiB.
func TestDeflatedFrameHoldsWhatItUses(t *testing.T) {
	t.Parallel()
	mixed := make([]byte, 64<<10)
	for i := range mixed {
		mixed[i] = byte(i*2654435761>>13) ^ byte(i>>5)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"a thousandfold", make([]byte, 1<<20)},
		{"text", []byte(strings.Repeat(`{"user":"ada","text":"hello, moonwire"}`, 300))},
		{"less compressible", mixed},
		{"small", []byte(strings.Repeat("m", 200))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, asString := range []bool{false, true} {
				var f *Frame
				if asString {
					f = NewDeflatedFrame(ws.OpBinary, nil, string(tc.payload))
				} else {
					f = NewDeflatedFrame(ws.OpBinary, tc.payload, "")
				}
				kept := f.b
				if f.base != nil {
					kept = f.base
				}
				if limit := 2 * max(len(f.b), 512); cap(kept) > limit {
					t.Errorf("%d-byte frame keeps a %d-byte buffer (limit %d)", len(f.b), cap(kept), limit)
				}
				r := bytes.NewReader(f.Bytes())
				fr, err := readServerFrame(r)
				if err != nil || r.Len() != 0 || !fr.Header.Fin || fr.Header.Rsv != rsv1 || fr.Header.Masked {
					t.Fatalf("frame %+v (%d bytes left, %v): want FIN, RSV1, unmasked", fr.Header, r.Len(), err)
				}
				if got := inflateAll(t, fr.Payload); !bytes.Equal(got, tc.payload) {
					t.Errorf("inflates to %d bytes, want the %d-byte payload", len(got), len(tc.payload))
				}
				f.Release()
			}
		})
	}
}

func inflateAll(t *testing.T, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail)))
	b, err := io.ReadAll(r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("inflate: %v", err)
	}
	return b
}

// TestSmallFramesReuseTheirBuffer: a small frame goes back to its pool with
// its buffer; one built from it next, shorter or longer, carries exactly its
// own header and payload, nothing of the frame before.
func TestSmallFramesReuseTheirBuffer(t *testing.T) {
	t.Parallel()
	for i, n := range []int{125, 1, 0, bufpool.Smallest - 4, 126, 3, bufpool.Smallest - 5, 40} {
		payload := bytes.Repeat([]byte{byte('a' + i)}, n)
		f := NewFrame(ws.OpBinary, payload)
		if c := cap(f.Bytes()); c != bufpool.Smallest {
			t.Fatalf("a frame of %d bytes has a buffer of %d, want %d", len(f.Bytes()), c, bufpool.Smallest)
		}
		if got := decodeServerFrame(t, f.Bytes()); !bytes.Equal(got.Payload, payload) {
			t.Fatalf("frame %d (%d bytes): payload %q", i, n, got.Payload)
		}
		f.Release()
		c := NewCloseFrame(1000, strings.Repeat("r", i))
		if got := decodeServerFrame(t, c.Bytes()); len(got.Payload) != 2+i {
			t.Fatalf("close frame after frame %d: payload of %d bytes, want %d", i, len(got.Payload), 2+i)
		}
		c.Release()
	}
}

package wsconn

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func TestKindString(t *testing.T) {
	t.Parallel()
	for k, want := range map[Kind]string{None: "none", Text: "text", Binary: "binary", Ping: "ping", Pong: "pong", Close: "close", Kind(99): "none"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

func TestCloseStatus(t *testing.T) {
	t.Parallel()
	ce := &CloseError{Code: ws.StatusPolicyViolation, Reason: "rate"}
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"direct", ce, true},
		{"wrapped", fmt.Errorf("read: %w", ce), true},
		{"joined", errors.Join(errors.New("x"), ce), true},
		{"other", errors.New("boom"), false},
		{"nil", nil, false},
	} {
		code, reason, ok := CloseStatus(tc.err)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if ok && (code != ws.StatusPolicyViolation || reason != "rate") {
			t.Errorf("%s: got (%d, %q)", tc.name, code, reason)
		}
		if !ok && (code != 0 || reason != "") {
			t.Errorf("%s: got (%d, %q) with ok=false", tc.name, code, reason)
		}
	}
	if s := ce.Error(); !strings.Contains(s, "1008") || !strings.Contains(s, "rate") {
		t.Errorf("Error() = %q", s)
	}
}

// TestParserLengthClasses decodes masked frames of every length encoding,
// and checks at prefixes of each that Next asks for more with the right Need
// without consuming or changing state.
func TestParserLengthClasses(t *testing.T) {
	t.Parallel()
	type tc struct {
		op     ws.OpCode
		length int
		hl     int // header length including the mask key
	}
	var cases []tc
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
		cases = append(cases,
			tc{op, 0, 6}, tc{op, 1, 6}, tc{op, 125, 6}, tc{op, 126, 8},
			tc{op, 65535, 8}, tc{op, 65536, 14}, tc{op, 1 << 20, 14})
	}
	for _, op := range []ws.OpCode{ws.OpPing, ws.OpPong} {
		cases = append(cases, tc{op, 0, 6}, tc{op, 125, 6})
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%v/%d", c.op, c.length), func(t *testing.T) {
			t.Parallel()
			payload := textOf(c.length)
			frame := mframe(c.op, payload)
			if len(frame) != c.hl+c.length {
				t.Fatalf("test frame is %d bytes, want %d", len(frame), c.hl+c.length)
			}
			p := &Parser{MaxMessage: 2 << 20}

			// Prefixes: every one for small frames, the interesting ones
			// for large frames.
			var cuts []int
			if len(frame) <= 300 {
				for k := range len(frame) {
					cuts = append(cuts, k)
				}
			} else {
				cuts = []int{0, 1, 2, c.hl - 1, c.hl, c.hl + 1, len(frame) / 2, len(frame) - 1}
			}
			for _, k := range cuts {
				ev, n, err := p.Next(frame[:k])
				if err != nil || n != 0 || ev.Kind != None || ev.Payload != nil {
					t.Fatalf("prefix %d: got (%v, %d, %v), want a None event", k, ev.Kind, n, err)
				}
				want := len(frame)
				if k < c.hl {
					want = 0
				}
				if ev.Need != want {
					t.Fatalf("prefix %d/%d: Need = %d, want %d", k, len(frame), ev.Need, want)
				}
			}

			ev, n, err := p.Next(frame)
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if n != len(frame) {
				t.Fatalf("n = %d, want %d", n, len(frame))
			}
			wantKind := map[ws.OpCode]Kind{ws.OpText: Text, ws.OpBinary: Binary, ws.OpPing: Ping, ws.OpPong: Pong}[c.op]
			if ev.Kind != wantKind || ev.Owned || ev.Need != 0 {
				t.Fatalf("event %+v, want kind %v, not owned", got{Kind: ev.Kind, Owned: ev.Owned}, wantKind)
			}
			if string(ev.Payload) != payload {
				t.Fatalf("payload differs (len %d, want %d)", len(ev.Payload), len(payload))
			}
			if c.length > 0 && &ev.Payload[0] != &frame[c.hl] {
				t.Fatalf("payload does not alias the input buffer at offset %d", c.hl)
			}
			// Trailing bytes are left alone.
			ev, n, err = p.Next(append(mframe(c.op, payload), 0x81))
			if err != nil || n != len(frame) || string(ev.Payload) != payload {
				t.Fatalf("with a trailing byte: n=%d err=%v", n, err)
			}
		})
	}
}

// TestParserMaxLengthBoundary checks MaxMessage is inclusive.
func TestParserMaxLengthBoundary(t *testing.T) {
	t.Parallel()
	p := &Parser{MaxMessage: 126}
	frame := mframe(ws.OpBinary, textOf(126))
	ev, n, err := p.Next(frame)
	if err != nil || n != len(frame) || len(ev.Payload) != 126 {
		t.Fatalf("126 bytes with MaxMessage 126: n=%d err=%v", n, err)
	}
	_, _, err = p.Next(mframe(ws.OpBinary, textOf(127)))
	wantCode(t, err, ws.StatusMessageTooBig)
}

// stream is a sequence of client frames with the events they decode to.
type stream struct {
	name   string
	frames [][]byte
	want   []got
}

func parserStreams() []stream {
	owned := func(k Kind, s string) got { return got{Kind: k, Payload: s, Owned: true} }
	return []stream{
		{
			name: "singles",
			frames: [][]byte{
				mframe(ws.OpText, "hello"),
				mframe(ws.OpBinary, "\x00\xff\x80"),
				mframe(ws.OpPing, "p"),
				mframe(ws.OpPong, ""),
				mframe(ws.OpText, ""),
				mframe(ws.OpText, "héllo wörld 世界 😀"),
				mframe(ws.OpClose, closePayload(1000, "bye")),
			},
			want: []got{
				{Kind: Text, Payload: "hello"},
				{Kind: Binary, Payload: "\x00\xff\x80"},
				{Kind: Ping, Payload: "p"},
				{Kind: Pong, Payload: ""},
				{Kind: Text, Payload: ""},
				{Kind: Text, Payload: "héllo wörld 世界 😀"},
				{Kind: Close, Payload: closePayload(1000, "bye"), Code: 1000, Reason: "bye"},
			},
		},
		{
			name: "fragmented text with controls interleaved",
			frames: [][]byte{
				mfrag(false, ws.OpText, "Hel"),
				mframe(ws.OpPing, "ping1"),
				mfrag(false, ws.OpContinuation, "lo, \xe4"), // 世 = e4 b8 96, split
				mframe(ws.OpPong, "pong1"),
				mfrag(false, ws.OpContinuation, "\xb8"),
				mfrag(false, ws.OpContinuation, ""),
				mfrag(true, ws.OpContinuation, "\x96界"),
				mframe(ws.OpText, "after"),
			},
			want: []got{
				{Kind: Ping, Payload: "ping1"},
				{Kind: Pong, Payload: "pong1"},
				owned(Text, "Hello, 世界"),
				{Kind: Text, Payload: "after"},
			},
		},
		{
			name: "fragmented binary",
			frames: [][]byte{
				mfrag(false, ws.OpBinary, "\xff\xfe"),
				mframe(ws.OpPing, ""),
				mfrag(false, ws.OpContinuation, "\x00"),
				mfrag(true, ws.OpContinuation, "\xc0\x80"),
				mfrag(false, ws.OpBinary, "a"),
				mfrag(true, ws.OpContinuation, "b"),
			},
			want: []got{
				{Kind: Ping, Payload: ""},
				owned(Binary, "\xff\xfe\x00\xc0\x80"),
				owned(Binary, "ab"),
			},
		},
		{
			name: "empty fragments",
			frames: [][]byte{
				mfrag(false, ws.OpText, ""),
				mfrag(true, ws.OpContinuation, ""),
				mfrag(false, ws.OpBinary, ""),
				mfrag(false, ws.OpContinuation, ""),
				mfrag(true, ws.OpContinuation, ""),
			},
			want: []got{owned(Text, ""), owned(Binary, "")},
		},
		{
			name: "close inside fragmented message",
			frames: [][]byte{
				mfrag(false, ws.OpText, "part"),
				mframe(ws.OpClose, ""),
			},
			want: []got{{Kind: Close, Payload: "", Code: ws.StatusNoStatusRcvd}},
		},
		{
			name: "medium frames",
			frames: [][]byte{
				mframe(ws.OpBinary, textOf(126)),
				mfrag(false, ws.OpText, textOf(200)),
				mframe(ws.OpPing, textOf(125)),
				mfrag(true, ws.OpContinuation, textOf(3)),
			},
			want: []got{
				{Kind: Binary, Payload: textOf(126)},
				{Kind: Ping, Payload: textOf(125)},
				owned(Text, textOf(200)+textOf(3)),
			},
		},
	}
}

// TestParserBatch decodes several frames from one buffer.
func TestParserBatch(t *testing.T) {
	t.Parallel()
	for _, s := range parserStreams() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			p := &Parser{MaxMessage: 4096}
			b := cat(s.frames...)
			evs, off, err := parseAll(t, p, b)
			if err != nil {
				t.Fatalf("error after %d bytes: %v", off, err)
			}
			if off != len(b) {
				t.Fatalf("consumed %d of %d bytes", off, len(b))
			}
			if !equalEvents(evs, s.want) {
				t.Fatalf("events\n got %v\nwant %v", evs, s.want)
			}
			p.Reset()
		})
	}
}

// feedChunked simulates a reader: it appends at most chunk bytes at a time to
// a buffer and decodes what it can, checking at every None-without-progress
// answer that Need is exactly what the pending frame requires.
func feedChunked(t *testing.T, p *Parser, frames [][]byte, chunk int) []got {
	t.Helper()
	b := cat(frames...)
	// Frame boundaries, to know what Need must be.
	starts := make([]int, len(frames)+1)
	for i, f := range frames {
		starts[i+1] = starts[i] + len(f)
	}
	var evs []got
	r, w, fi := 0, 0, 0
	for w < len(b) {
		w = min(w+chunk, len(b))
		for r < w {
			ev, n, err := p.Next(b[r:w])
			if err != nil {
				t.Fatalf("chunk %d: error at offset %d: %v", chunk, r, err)
			}
			if n == 0 {
				if ev.Kind != None {
					t.Fatalf("chunk %d: kind %v with n == 0", chunk, ev.Kind)
				}
				f := frames[fi]
				want := len(f)
				if w-r < headerLenOf(f) {
					want = 0
				}
				if ev.Need != want {
					t.Fatalf("chunk %d: frame %d with %d/%d bytes: Need = %d, want %d", chunk, fi, w-r, len(f), ev.Need, want)
				}
				break
			}
			if r != starts[fi] || n != len(frames[fi]) {
				t.Fatalf("chunk %d: consumed [%d,%d), want frame %d = [%d,%d)", chunk, r, r+n, fi, starts[fi], starts[fi+1])
			}
			r += n
			fi++
			if ev.Kind != None {
				evs = append(evs, capture(t, ev))
			}
		}
	}
	if r != len(b) {
		t.Fatalf("chunk %d: consumed %d of %d", chunk, r, len(b))
	}
	return evs
}

// TestParserEverySplit feeds each stream at every chunk size and split
// point: the events must not depend on how the bytes arrive.
func TestParserEverySplit(t *testing.T) {
	t.Parallel()
	for _, s := range parserStreams() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			total := len(cat(s.frames...))
			step := 1
			if total > 400 {
				step = 7 // the medium stream: every split is still tried below
			}
			for chunk := 1; chunk <= total; chunk += step {
				p := &Parser{MaxMessage: 4096}
				evs := feedChunked(t, p, cloneFrames(s.frames), chunk)
				if !equalEvents(evs, s.want) {
					t.Fatalf("chunk %d: events\n got %v\nwant %v", chunk, evs, s.want)
				}
			}
			// Two pieces, split at every point.
			for k := 0; k <= total; k++ {
				p := &Parser{MaxMessage: 4096}
				b := cat(s.frames...)
				evs, off, err := parseAll(t, p, b[:k])
				if err != nil {
					t.Fatalf("split %d: %v", k, err)
				}
				more, off2, err := parseAll(t, p, b[off:])
				if err != nil || off+off2 != total {
					t.Fatalf("split %d: consumed %d of %d, err %v", k, off+off2, total, err)
				}
				if evs = append(evs, more...); !equalEvents(evs, s.want) {
					t.Fatalf("split %d: events\n got %v\nwant %v", k, evs, s.want)
				}
			}
		})
	}
}

func cloneFrames(frames [][]byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = bytes.Clone(f)
	}
	return out
}

// TestParserFragmentedAssembly follows the Assembling flag and the Owned
// buffer through large and many-piece messages.
func TestParserFragmentedAssembly(t *testing.T) {
	t.Parallel()
	t.Run("large", func(t *testing.T) {
		t.Parallel()
		p := &Parser{MaxMessage: 1 << 20}
		parts := []string{textOf(100000), textOf(300000), textOf(5), textOf(200000)}
		var frames [][]byte
		for i, s := range parts {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpBinary
			}
			frames = append(frames, encodeClient(i == len(parts)-1, 0, op, []byte(s), true))
		}
		for i, f := range frames {
			ev, n, err := p.Next(f)
			if err != nil || n != len(f) {
				t.Fatalf("fragment %d: n=%d err=%v", i, n, err)
			}
			if i < len(frames)-1 {
				if ev.Kind != None || ev.Payload != nil || !p.Assembling() {
					t.Fatalf("fragment %d: kind %v, assembling %v", i, ev.Kind, p.Assembling())
				}
				continue
			}
			if ev.Kind != Binary || !ev.Owned || p.Assembling() {
				t.Fatalf("final: kind %v owned %v assembling %v", ev.Kind, ev.Owned, p.Assembling())
			}
			if string(ev.Payload) != strings.Join(parts, "") {
				t.Fatalf("assembled payload differs")
			}
			capture(t, ev)
		}
	})
	t.Run("many small", func(t *testing.T) {
		t.Parallel()
		p := &Parser{MaxMessage: 4096}
		want := strings.Repeat("ü", 1000) // 2000 bytes, every rune split in two
		var frames [][]byte
		for i := range len(want) {
			op := ws.OpContinuation
			if i == 0 {
				op = ws.OpText
			}
			frames = append(frames, encodeClient(i == len(want)-1, 0, op, []byte{want[i]}, true))
		}
		evs, off, err := parseAll(t, p, cat(frames...))
		if err != nil || off != len(cat(frames...)) {
			t.Fatalf("consumed %d, err %v", off, err)
		}
		if len(evs) != 1 || evs[0].Kind != Text || evs[0].Payload != want || !evs[0].Owned {
			t.Fatalf("events %v", evs)
		}
	})
	t.Run("reset drops the message", func(t *testing.T) {
		t.Parallel()
		p := &Parser{MaxMessage: 4096}
		if _, n, err := p.Next(mfrag(false, ws.OpText, "abc\xe4")); err != nil || n == 0 {
			t.Fatalf("first fragment: n=%d err=%v", n, err)
		}
		if !p.Assembling() {
			t.Fatal("not assembling after a first fragment")
		}
		p.Reset()
		p.Reset() // idempotent
		if p.Assembling() {
			t.Fatal("still assembling after Reset")
		}
		_, _, err := p.Next(mfrag(true, ws.OpContinuation, "x"))
		wantCode(t, err, ws.StatusProtocolError)
		// The UTF-8 state was dropped too: a fresh message starting with a
		// continuation byte is judged on its own.
		ev, _, err := p.Next(mfrag(false, ws.OpText, "ok"))
		if err != nil {
			t.Fatal(err)
		}
		ev, _, err = p.Next(mfrag(true, ws.OpContinuation, "!"))
		if err != nil || ev.Kind != Text || string(ev.Payload) != "ok!" {
			t.Fatalf("after reset: %v %q", err, ev.Payload)
		}
		capture(t, ev)
	})
}

// TestParserProtocolErrors: every violation fails with its close code,
// consumes nothing, and is reported as soon as the bytes that prove it are
// present (header-only inputs for header violations).
func TestParserProtocolErrors(t *testing.T) {
	t.Parallel()
	const max = 4096
	type tc struct {
		name     string
		extended bool
		prep     [][]byte // accepted first
		bad      []byte
		code     ws.StatusCode
	}
	var cases []tc
	add := func(c tc) { cases = append(cases, c) }

	add(tc{name: "unmasked text", bad: encodeClient(true, 0, ws.OpText, []byte("hi"), false), code: 1002})
	add(tc{name: "unmasked ping", bad: encodeClient(true, 0, ws.OpPing, nil, false), code: 1002})
	add(tc{name: "unmasked close", bad: encodeClient(true, 0, ws.OpClose, []byte(closePayload(1000, "")), false), code: 1002})
	add(tc{name: "unmasked header only", bad: encodeHeader(true, 0, ws.OpBinary, 100, false), code: 1002})
	for op := ws.OpCode(3); op <= 0xf; op++ {
		if op >= 8 && op <= 0xa {
			continue
		}
		add(tc{name: fmt.Sprintf("reserved opcode %#x", op), bad: encodeClient(true, 0, op, []byte("x"), true), code: 1002})
		add(tc{name: fmt.Sprintf("reserved opcode %#x header only", op), bad: encodeHeader(true, 0, op, 10, true), code: 1002})
		add(tc{name: fmt.Sprintf("reserved opcode %#x in fragmented message", op),
			prep: [][]byte{mfrag(false, ws.OpText, "a")}, bad: encodeClient(true, 0, op, nil, true), code: 1002})
	}
	for _, rsv := range []byte{1, 2, 4, 3, 7} {
		add(tc{name: fmt.Sprintf("rsv %03b text", rsv), bad: encodeClient(true, rsv, ws.OpText, []byte("x"), true), code: 1002})
		add(tc{name: fmt.Sprintf("rsv %03b ping", rsv), bad: encodeClient(true, rsv, ws.OpPing, nil, true), code: 1002})
		add(tc{name: fmt.Sprintf("rsv %03b continuation", rsv),
			prep: [][]byte{mfrag(false, ws.OpBinary, "a")}, bad: encodeClient(true, rsv, ws.OpContinuation, nil, true), code: 1002})
	}
	add(tc{name: "continuation without start", bad: mfrag(true, ws.OpContinuation, "x"), code: 1002})
	add(tc{name: "non-final continuation without start", bad: mfrag(false, ws.OpContinuation, "x"), code: 1002})
	add(tc{name: "continuation after complete message",
		prep: [][]byte{mfrag(false, ws.OpText, "a"), mfrag(true, ws.OpContinuation, "b")},
		bad:  mfrag(true, ws.OpContinuation, "c"), code: 1002})
	for _, first := range []ws.OpCode{ws.OpText, ws.OpBinary} {
		for _, second := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			for _, fin := range []bool{false, true} {
				add(tc{name: fmt.Sprintf("%v fin=%v inside fragmented %v", second, fin, first),
					prep: [][]byte{mfrag(false, first, "a"), mfrag(false, ws.OpContinuation, "b")},
					bad:  mfrag(fin, second, "c"), code: 1002})
			}
		}
	}
	for _, op := range []ws.OpCode{ws.OpPing, ws.OpPong, ws.OpClose} {
		add(tc{name: fmt.Sprintf("fragmented %v", op), bad: mfrag(false, op, ""), code: 1002})
		add(tc{name: fmt.Sprintf("fragmented %v inside message", op),
			prep: [][]byte{mfrag(false, ws.OpText, "a")}, bad: mfrag(false, op, ""), code: 1002})
		add(tc{name: fmt.Sprintf("%v payload 126", op), bad: encodeClient(true, 0, op, []byte(closePayload(1000, textOf(124))), true), code: 1002})
		add(tc{name: fmt.Sprintf("%v payload 126 header only", op), bad: encodeHeader(true, 0, op, 126, true), code: 1002})
		add(tc{name: fmt.Sprintf("%v payload 65536 header only", op), bad: encodeHeader(true, 0, op, 65536, true), code: 1002})
	}
	msb := func(op ws.OpCode, low byte) []byte {
		return append([]byte{0x80 | byte(op), 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, low}, testMask[:]...)
	}
	add(tc{name: "64-bit length with MSB set", bad: msb(ws.OpBinary, 5), code: 1002})
	add(tc{name: "64-bit length all ones", bad: append([]byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, testMask[:]...), code: 1002})
	add(tc{name: "64-bit length with MSB set, ping", bad: msb(ws.OpPing, 0), code: 1002})

	add(tc{name: "too big single frame header only", bad: encodeHeader(true, 0, ws.OpBinary, max+1, true), code: 1009})
	add(tc{name: "too big single text header only", bad: encodeHeader(true, 0, ws.OpText, 1<<40, true), code: 1009})
	add(tc{name: "too big first fragment header only", bad: encodeHeader(false, 0, ws.OpText, max+1, true), code: 1009})
	add(tc{name: "too big single frame whole", bad: mframe(ws.OpBinary, textOf(max+1)), code: 1009})
	add(tc{name: "too big across fragments header only",
		prep: [][]byte{mfrag(false, ws.OpBinary, textOf(3000)), mframe(ws.OpPing, "x"), mfrag(false, ws.OpContinuation, textOf(1000))},
		bad:  encodeHeader(true, 0, ws.OpContinuation, max-4000+1, true), code: 1009})
	add(tc{name: "too big across fragments, non-final header only",
		prep: [][]byte{mfrag(false, ws.OpText, textOf(4096))},
		bad:  encodeHeader(false, 0, ws.OpContinuation, 1, true), code: 1009})

	add(tc{name: "invalid UTF-8 single text", bad: mframe(ws.OpText, "abc\xff"), code: 1007})
	add(tc{name: "surrogate single text", bad: mframe(ws.OpText, "\xed\xa0\x80"), code: 1007})
	add(tc{name: "overlong single text", bad: mframe(ws.OpText, "\xc0\x80"), code: 1007})
	add(tc{name: "truncated single text", bad: mframe(ws.OpText, "ab\xe4\xb8"), code: 1007})
	add(tc{name: "invalid UTF-8 in first fragment", bad: mfrag(false, ws.OpText, "ab\xf5cd"), code: 1007})
	add(tc{name: "invalid UTF-8 in middle fragment (fails before the end)",
		prep: [][]byte{mfrag(false, ws.OpText, "hello ")},
		bad:  mfrag(false, ws.OpContinuation, "w\xc3\x28rld"), code: 1007})
	add(tc{name: "surrogate split across fragments",
		prep: [][]byte{mfrag(false, ws.OpText, "x\xed")},
		bad:  mfrag(false, ws.OpContinuation, "\xa0\x80"), code: 1007})
	add(tc{name: "overlong split across fragments",
		prep: [][]byte{mfrag(false, ws.OpText, "\xe0")},
		bad:  mfrag(false, ws.OpContinuation, "\x80\x80"), code: 1007})
	add(tc{name: "above U+10FFFF split across fragments",
		prep: [][]byte{mfrag(false, ws.OpText, "\xf4"), mfrag(false, ws.OpContinuation, "")},
		bad:  mfrag(false, ws.OpContinuation, "\x90"), code: 1007})
	add(tc{name: "truncated at final fragment",
		prep: [][]byte{mfrag(false, ws.OpText, "a\xe4")},
		bad:  mfrag(true, ws.OpContinuation, "\xb8"), code: 1007})
	add(tc{name: "truncated at empty final fragment",
		prep: [][]byte{mfrag(false, ws.OpText, "a\xf0\x9f\x98")},
		bad:  mfrag(true, ws.OpContinuation, ""), code: 1007})
	add(tc{name: "invalid UTF-8 in final fragment",
		prep: [][]byte{mfrag(false, ws.OpText, "a")},
		bad:  mfrag(true, ws.OpContinuation, "b\x80"), code: 1007})

	add(tc{name: "close 1 byte", bad: mframe(ws.OpClose, "\x03"), code: 1002})
	add(tc{name: "close invalid UTF-8 reason", bad: mframe(ws.OpClose, closePayload(1000, "bad \xff")), code: 1002})
	add(tc{name: "close truncated UTF-8 reason", bad: mframe(ws.OpClose, closePayload(1000, "\xe4\xb8")), code: 1002})
	for _, code := range []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999} {
		add(tc{name: fmt.Sprintf("close code %d", code), bad: mframe(ws.OpClose, closePayload(code, "")), code: 1002})
		add(tc{name: fmt.Sprintf("close code %d with reason", code), bad: mframe(ws.OpClose, closePayload(code, "why")), code: 1002})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := &Parser{MaxMessage: max, Deflate: c.extended}
			for i, f := range c.prep {
				ev, n, err := p.Next(f)
				if err != nil || n != len(f) {
					t.Fatalf("prep frame %d: n=%d err=%v", i, n, err)
				}
				capture(t, ev)
			}
			ev, n, err := p.Next(c.bad)
			if n != 0 || ev.Kind != None || ev.Payload != nil || ev.Owned {
				t.Errorf("failing Next returned n=%d kind=%v owned=%v", n, ev.Kind, ev.Owned)
			}
			wantCode(t, err, c.code)
			p.Reset()
			if p.Assembling() {
				t.Error("assembling after Reset")
			}
		})
	}
}

// TestParserDeflate: with permessage-deflate negotiated, RSV1 on the first
// frame of a data message means compressed; every other reserved bit, and
// RSV1 anywhere else, is a protocol error; the size limit applies to the
// inflated message and invalid compressed data fails with 1007.
func TestParserDeflate(t *testing.T) {
	t.Parallel()
	deflate := func(s string) []byte {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, flate.BestSpeed)
		_, _ = w.Write([]byte(s))
		_ = w.Flush()
		return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	}
	long := strings.Repeat("moonwire ", 200)
	t.Run("single frames", func(t *testing.T) {
		p := &Parser{MaxMessage: 1 << 20, Deflate: true}
		b := cat(
			encodeClient(true, rsv1, ws.OpText, deflate(long), true),
			encodeClient(true, rsv1, ws.OpBinary, deflate("bin"), true),
			encodeClient(true, 0, ws.OpText, []byte("plain"), true),
		)
		evs, off, err := parseAll(t, p, b)
		if err != nil || off != len(b) {
			t.Fatalf("consumed %d/%d, err %v", off, len(b), err)
		}
		want := []got{{Kind: Text, Payload: long, Compressed: true}, {Kind: Binary, Payload: "bin", Compressed: true}, {Kind: Text, Payload: "plain"}}
		if !equalEvents(evs, want) {
			t.Fatalf("events %v", evs)
		}
	})
	t.Run("fragmented", func(t *testing.T) {
		p := &Parser{MaxMessage: 1 << 20, Deflate: true}
		c := deflate(long)
		b := cat(
			encodeClient(false, rsv1, ws.OpText, c[:10], true),
			encodeClient(true, 0, ws.OpPing, []byte("p"), true),
			encodeClient(false, 0, ws.OpContinuation, c[10:20], true),
			encodeClient(true, 0, ws.OpContinuation, c[20:], true),
		)
		evs, off, err := parseAll(t, p, b)
		if err != nil || off != len(b) {
			t.Fatalf("consumed %d/%d, err %v", off, len(b), err)
		}
		if want := []got{{Kind: Ping, Payload: "p"}, {Kind: Text, Payload: long, Owned: true, Compressed: true}}; !equalEvents(evs, want) {
			t.Fatalf("events %v", evs)
		}
	})
	bomb := deflate(strings.Repeat("a", 1<<20))
	cases := []struct {
		name string
		b    []byte
		max  int64
		code int
	}{
		{"rsv2", encodeClient(true, 2, ws.OpText, []byte("x"), true), 4096, 1002},
		{"rsv3", encodeClient(true, 1, ws.OpText, []byte("x"), true), 4096, 1002},
		{"rsv1 on a ping", encodeClient(true, rsv1, ws.OpPing, []byte("x"), true), 4096, 1002},
		{"rsv1 on a continuation", cat(encodeClient(false, rsv1, ws.OpText, deflate("ab")[:1], true), encodeClient(true, rsv1, ws.OpContinuation, deflate("ab")[1:], true)), 4096, 1002},
		{"bomb", encodeClient(true, rsv1, ws.OpBinary, bomb, true), 64 << 10, 1009},
		{"garbage", encodeClient(true, rsv1, ws.OpBinary, []byte{0xff, 0xff, 0xff, 0xff, 0xff}, true), 4096, 1007},
		{"invalid utf-8 inside", encodeClient(true, rsv1, ws.OpText, deflate("ok \xff"), true), 4096, 1007},
	}
	for _, tc := range cases {
		p := &Parser{MaxMessage: tc.max, Deflate: true}
		_, _, err := parseAll(t, p, tc.b)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		wantCode(t, err, ws.StatusCode(tc.code))
	}
	// Without the extension RSV1 is an error too.
	p := &Parser{MaxMessage: 4096}
	_, _, err := parseAll(t, p, encodeClient(true, rsv1, ws.OpText, deflate("x"), true))
	wantCode(t, err, 1002)
}

// TestParserCloseFrames checks close codes and reasons as
// ws.CheckCloseFrameData judges them.
func TestParserCloseFrames(t *testing.T) {
	t.Parallel()
	p := &Parser{MaxMessage: 16}
	ev, n, err := p.Next(mframe(ws.OpClose, ""))
	if err != nil || n != 6 || ev.Kind != Close || ev.Code != ws.StatusNoStatusRcvd || ev.Reason != "" || len(ev.Payload) != 0 {
		t.Fatalf("empty close: %+v n=%d err=%v", ev, n, err)
	}
	// A close reason may make the frame larger than MaxMessage: control
	// frames are not messages.
	reasons := []string{"", "bye", "å∫ç 😀", textOf(123)}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		for _, reason := range reasons {
			frame := mframe(ws.OpClose, closePayload(code, reason))
			ev, n, err := p.Next(frame)
			if err != nil {
				t.Fatalf("close %d %q: %v", code, reason, err)
			}
			if n != len(frame) || ev.Kind != Close || ev.Code != ws.StatusCode(code) || ev.Reason != reason ||
				string(ev.Payload) != closePayload(code, reason) || ev.Owned {
				t.Fatalf("close %d %q: got %v n=%d", code, reason, capture(t, ev), n)
			}
		}
	}
	// Every code outside the registry's sendable set is rejected (with
	// 1002), and every code in it is accepted: gobwas's check, except
	// that 1012-1014 (registered since RFC 6455) are valid.
	for code := 0; code < 5000; code++ {
		frame := mframe(ws.OpClose, closePayload(uint16(code), "r"))
		_, _, err := p.Next(frame)
		gwErr := ws.CheckCloseFrameData(ws.StatusCode(code), "r")
		if registered := code >= 1012 && code <= 1014; registered {
			gwErr = nil
		}
		if gwErr != nil {
			wantCode(t, err, ws.StatusProtocolError)
		} else if err != nil {
			t.Fatalf("close code %d: %v", code, err)
		}
	}
}

// TestParserCloseCodeOutOfRange: RFC 6455 §7.4.2 defines close codes up to
// 4999 only; the brief's table (and Autobahn's strict reading) treat 5000 and
// above as a protocol error, but ws.CheckCloseFrameData accepts them.
func TestParserCloseCodeOutOfRange(t *testing.T) {
	t.Parallel()
	for _, code := range []uint16{5000, 5001, 9999, 65535} {
		p := &Parser{MaxMessage: 16}
		_, _, err := p.Next(mframe(ws.OpClose, closePayload(code, "")))
		wantCode(t, err, ws.StatusProtocolError)
	}
}

// TestParserUnmasksInPlace: the payload is unmasked inside the caller's
// buffer, so the bytes after the header read as plain text afterwards.
func TestParserUnmasksInPlace(t *testing.T) {
	t.Parallel()
	p := &Parser{MaxMessage: 4096}
	frame := mframe(ws.OpText, "hello, world, this is longer than sixteen bytes")
	hl := headerLenOf(frame)
	if _, _, err := p.Next(frame); err != nil {
		t.Fatal(err)
	}
	if string(frame[hl:]) != "hello, world, this is longer than sixteen bytes" {
		t.Fatalf("buffer after Next: %q", frame[hl:])
	}
	if !utf8.Valid(frame[hl:]) {
		t.Fatal("not unmasked")
	}
}

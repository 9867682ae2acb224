package wsconn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// testMask is the masking key of every client frame the tests build; it has
// no zero byte, so an unmasked payload never equals its masked form.
var testMask = [4]byte{0xa1, 0x5b, 0x3c, 0xe7}

// encodeHeader returns a client frame header announcing length payload
// bytes, minimally encoded (RFC 6455 §5.2).
func encodeHeader(fin bool, rsv byte, op ws.OpCode, length int64, masked bool) []byte {
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: masked, Length: length}
	if masked {
		h.Mask = testMask
	}
	var buf bytes.Buffer
	if err := ws.WriteHeader(&buf, h); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// encodeClient returns a whole client frame, masked when masked is set.
func encodeClient(fin bool, rsv byte, op ws.OpCode, payload []byte, masked bool) []byte {
	hdr := encodeHeader(fin, rsv, op, int64(len(payload)), masked)
	b := append(hdr, payload...)
	if masked {
		ws.Cipher(b[len(hdr):], testMask, 0)
	}
	return b
}

// mframe is a final masked client frame.
func mframe(op ws.OpCode, payload string) []byte {
	return encodeClient(true, 0, op, []byte(payload), true)
}

// mfrag is a masked client frame with an explicit FIN bit.
func mfrag(fin bool, op ws.OpCode, payload string) []byte {
	return encodeClient(fin, 0, op, []byte(payload), true)
}

// closePayload is a close frame body: code then reason.
func closePayload(code uint16, reason string) string {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], code)
	return string(b[:]) + reason
}

func cat(frames ...[]byte) []byte {
	return bytes.Join(frames, nil)
}

// headerLenOf returns the header length of an encoded frame.
func headerLenOf(frame []byte) int {
	hl := 2
	switch frame[1] & 0x7f {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	if frame[1]&0x80 != 0 {
		hl += 4
	}
	return hl
}

// got is an Event with its payload copied out, so that it outlives the
// parser's buffer and pooled assembly buffers.
type got struct {
	Kind    Kind
	Payload string // inflated, for a Compressed event
	Owned   bool
	Code    ws.StatusCode
	Reason  string
	// Compressed: the event carried a compressed message, which parseAll
	// inflated the way the router does on the lane.
	Compressed bool
}

func (g got) String() string {
	p := g.Payload
	if len(p) > 40 {
		p = fmt.Sprintf("%.40q...(%d bytes)", p, len(p))
	} else {
		p = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("{%v %s owned=%v code=%d reason=%q}", g.Kind, p, g.Owned, g.Code, g.Reason)
}

// capture copies ev and returns an Owned payload to the pool, checking that
// it is a pool-sized buffer.
func capture(t testing.TB, ev Event) got {
	t.Helper()
	g := got{Kind: ev.Kind, Payload: string(ev.Payload), Owned: ev.Owned, Code: ev.Code, Reason: ev.Reason}
	if ev.Owned {
		if c := cap(ev.Payload); c < 512 || c&(c-1) != 0 {
			t.Errorf("Owned payload has cap %d, not a bufpool class", c)
		}
		bufpool.Put(ev.Payload)
	}
	return g
}

// parseAll decodes every complete frame of b with p. It returns the events
// (absorbed fragments produce none), the bytes consumed and the first error.
func parseAll(t testing.TB, p *Parser, b []byte) (evs []got, off int, err error) {
	t.Helper()
	for off < len(b) {
		ev, n, err := p.Next(b[off:])
		if err != nil {
			if n != 0 {
				t.Errorf("Next returned n=%d with error %v", n, err)
			}
			return evs, off, err
		}
		if n == 0 {
			return evs, off, nil
		}
		off += n
		if ev.Kind == None {
			continue
		}
		if !ev.Compressed {
			evs = append(evs, capture(t, ev))
			continue
		}
		out, err := Inflate(ev.Kind, ev.Payload, p.MaxMessage)
		if ev.Owned {
			bufpool.Put(ev.Payload)
		}
		if err != nil {
			return evs, off - n, err
		}
		evs = append(evs, got{Kind: ev.Kind, Payload: string(out), Owned: ev.Owned, Compressed: true})
		bufpool.Put(out)
	}
	return evs, off, nil
}

func equalEvents(a, b []got) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// within reports whether the non-empty slice s lies inside b.
func within(s, b []byte) bool {
	if len(s) == 0 {
		return true
	}
	if len(b) == 0 {
		return false
	}
	sp := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	bp := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return sp >= bp && sp+uintptr(len(s)) <= bp+uintptr(len(b))
}

// textOf returns n bytes of printable ASCII.
func textOf(n int) string {
	var sb strings.Builder
	sb.Grow(n)
	for i := range n {
		sb.WriteByte(byte('a' + i%26))
	}
	return sb.String()
}

// wantCode checks that err is a *CloseError with code.
func wantCode(t testing.TB, err error, code ws.StatusCode) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want close code %d", code)
	}
	c, reason, ok := CloseStatus(err)
	if !ok {
		t.Fatalf("error %v (%T) carries no close status, want %d", err, err, code)
	}
	if c != code {
		t.Fatalf("close code %d (%q), want %d", c, reason, code)
	}
	if reason == "" {
		t.Errorf("close code %d has an empty reason", c)
	}
}

// readServerFrame reads one frame: ws.ReadHeader, then exactly the
// declared payload (these are trusted test peers; ws.ReadFrame is
// deprecated for reading whatever length a peer declares).
func readServerFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r, p); err != nil {
		return ws.Frame{}, err
	}
	return ws.Frame{Header: h, Payload: p}, nil
}

package wsconn

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// Kind tells what a decoded Event carries.
type Kind uint8

// Event kinds. None means "nothing complete yet": either more bytes are
// needed or a non-final fragment was absorbed into the message being
// assembled.
const (
	None Kind = iota
	Text
	Binary
	Ping
	Pong
	Close
)

// String returns the lower-case name scripts see ("text", "binary", ...).
func (k Kind) String() string {
	switch k {
	case Text:
		return "text"
	case Binary:
		return "binary"
	case Ping:
		return "ping"
	case Pong:
		return "pong"
	case Close:
		return "close"
	}
	return "none"
}

// Event is one decoded unit of client traffic: a complete data message or a
// control frame.
type Event struct {
	Kind Kind
	// Payload is the unmasked message or control payload. It aliases the
	// buffer given to Next, or, when Owned is set, a pooled assembly buffer
	// that now belongs to the caller (return it with bufpool.Put).
	Payload []byte
	Owned   bool
	// Compressed marks a permessage-deflate message: Payload is what the
	// peer sent, still compressed, and Inflate turns it into the message.
	// The parser does not inflate: a read can hold a thousand small frames
	// that each inflate to the size limit, and inflating them all at once
	// would hold a thousand messages' worth of memory for one connection.
	// The consumer inflates each when it is about to use it, so one
	// inflated message per consumer exists at a time.
	Compressed bool
	// Code and Reason are set for Close events. A close frame without a
	// status code reports ws.StatusNoStatusRcvd (1005), as RFC 6455 §7.1.5
	// prescribes.
	Code   ws.StatusCode
	Reason string
	// Need is set when Next returns None without consuming anything: the
	// total number of bytes the current frame occupies once complete (0 when
	// even its header is incomplete). Callers grow their buffer to it.
	Need int
}

// Parser decodes client-to-server frames from a byte stream held by the
// caller, reassembling fragmented messages, answering nothing itself: it
// reports control frames as events and protocol violations as *CloseError.
//
// It is incremental: Next never blocks and never reads; the caller feeds it
// whatever bytes it has and calls again with more. This is what lets an idle
// or half-sent connection sit on epoll without a goroutine.
//
// The zero value is not usable: set MaxMessage.
type Parser struct {
	// MaxMessage bounds a reassembled message; a longer message fails with
	// close code 1009 before its payload is buffered.
	MaxMessage int64
	// Deflate is set when permessage-deflate was negotiated: RSV1 on the
	// first frame of a data message then means the message is compressed.
	// Without it any RSV bit is a protocol error.
	Deflate bool

	frag       bool      // inside a fragmented data message
	fragOp     ws.OpCode // its opcode (text or binary)
	compressed bool      // the fragmented message is compressed
	msg        []byte    // assembly buffer (pooled) for the fragmented message
	utf8       utf8Tail  // validation state of the text message being read
	// checked counts the payload bytes of the frame at the front of the
	// buffer that are already unmasked and, for text, validated: text is
	// checked as it arrives, so invalid UTF-8 fails before the rest of its
	// frame is even sent (RFC 6455 §8.1, "fail fast").
	checked int64
}

// Reset drops any partially assembled message, returning its buffer.
func (p *Parser) Reset() {
	if p.msg != nil {
		bufpool.Put(p.msg)
		p.msg = nil
	}
	p.frag, p.compressed = false, false
	p.utf8 = utf8Tail{}
	p.checked = 0
}

// Assembling reports whether a fragmented message is in progress (and so
// holds a buffer).
func (p *Parser) Assembling() bool { return p.frag }

// Next decodes at most one frame from the front of b. It returns the event,
// the number of bytes consumed and, for a protocol violation, a *CloseError
// carrying the close code the connection must fail with. Frames are unmasked
// in place.
//
// When b does not yet hold a whole frame, Next returns a None event, n == 0,
// and ev.Need says how large the frame is when known. A header is validated
// as soon as it is complete, so an oversized or malformed frame fails before
// its payload arrives.
func (p *Parser) Next(b []byte) (ev Event, n int, err error) {
	if len(b) < 2 {
		return ev, 0, nil
	}
	var h ws.Header
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	hl := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		hl += 2
	case 127:
		hl += 8
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		hl += 4
	}
	if len(b) < hl {
		return ev, 0, nil
	}
	switch hl - boolInt(h.Masked)*4 {
	case 4:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 10:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return ev, 0, protocolError("payload length has the most significant bit set")
		}
		h.Length = int64(u)
	}
	if h.Masked {
		copy(h.Mask[:], b[hl-4:hl])
	}

	state := ws.StateServerSide
	if p.frag {
		state |= ws.StateFragmented
	}
	compressed := false
	if h.Rsv != 0 {
		// RSV1 is permessage-deflate's, and only on the first frame of a
		// data message (RFC 7692 §6); every other reserved bit is an error.
		if !p.Deflate || h.Rsv != rsv1 || (h.OpCode != ws.OpText && h.OpCode != ws.OpBinary) {
			return ev, 0, protocolError("reserved bits set")
		}
		compressed = true
		state |= ws.StateExtended
	}
	if e := ws.CheckHeader(h, state); e != nil {
		return ev, 0, protocolError(e.Error())
	}
	if h.OpCode.IsData() || h.OpCode == ws.OpContinuation {
		total := h.Length
		if h.OpCode == ws.OpContinuation {
			total += int64(len(p.msg))
		}
		if total > p.MaxMessage {
			return ev, 0, &CloseError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
		}
	}

	frameLen := int64(hl) + h.Length
	if text := !compressed && (h.OpCode == ws.OpText ||
		h.OpCode == ws.OpContinuation && p.fragOp == ws.OpText && !p.compressed); text {
		// Unmask and validate whatever part of the payload has arrived.
		if h.OpCode == ws.OpText && p.checked == 0 {
			p.utf8 = utf8Tail{}
		}
		avail := min(int64(len(b)), frameLen) - int64(hl)
		if avail > p.checked {
			seg := b[int64(hl)+p.checked : int64(hl)+avail]
			if h.Masked {
				ws.Cipher(seg, h.Mask, int(p.checked))
			}
			if !p.utf8.feed(seg) {
				p.checked = 0
				return ev, 0, invalidUTF8()
			}
			p.checked = avail
		}
	}
	if int64(len(b)) < frameLen {
		ev.Need = int(frameLen)
		return ev, 0, nil
	}
	n = int(frameLen)
	payload := b[hl:n]
	if h.Masked {
		ws.Cipher(payload[p.checked:], h.Mask, int(p.checked))
	}
	p.checked = 0

	switch h.OpCode {
	case ws.OpPing:
		return Event{Kind: Ping, Payload: payload}, n, nil
	case ws.OpPong:
		return Event{Kind: Pong, Payload: payload}, n, nil
	case ws.OpClose:
		return p.closeEvent(payload, n)
	case ws.OpText, ws.OpBinary:
		if h.Fin {
			if compressed {
				return Event{Kind: kindOf(h.OpCode), Payload: payload, Compressed: true}, n, nil
			}
			if h.OpCode == ws.OpText && !p.utf8.complete() {
				return ev, 0, invalidUTF8() // ends inside a character
			}
			return Event{Kind: kindOf(h.OpCode), Payload: payload}, n, nil
		}
		p.frag, p.fragOp, p.compressed = true, h.OpCode, compressed
		p.msg = bufpool.Get(int(min(max(h.Length*2, 512), p.MaxMessage)))[:0]
		if err := p.absorb(payload); err != nil {
			return ev, 0, err
		}
		return ev, n, nil
	case ws.OpContinuation:
		if err := p.absorb(payload); err != nil {
			return ev, 0, err
		}
		if !h.Fin {
			return ev, n, nil
		}
		if p.compressed {
			ev = Event{Kind: kindOf(p.fragOp), Payload: p.msg, Owned: true, Compressed: true}
			p.msg, p.frag, p.compressed = nil, false, false
			return ev, n, nil
		}
		if p.fragOp == ws.OpText && !p.utf8.complete() {
			return ev, 0, invalidUTF8()
		}
		ev = Event{Kind: kindOf(p.fragOp), Payload: p.msg, Owned: true}
		p.msg, p.frag = nil, false
		return ev, n, nil
	}
	// CheckHeader rejects reserved opcodes, so this is unreachable; fail
	// closed all the same.
	return ev, 0, protocolError("unknown opcode")
}

// Inflate decompresses a Compressed event's payload into a pooled buffer
// the caller owns (return it with bufpool.Put), applying limit to the
// inflated size (a compression bomb costs at most limit bytes) and checking
// that text is UTF-8. Errors are *CloseError values with the code the
// connection must fail with: 1009 past the limit, 1007 for data that does
// not inflate or text that is not UTF-8.
func Inflate(kind Kind, compressed []byte, limit int64) ([]byte, error) {
	out, err := inflate(compressed, limit)
	switch {
	case errors.Is(err, errTooBig):
		return nil, &CloseError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	case err != nil:
		return nil, &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid compressed data"}
	}
	if kind == Text && !utf8.Valid(out) {
		bufpool.Put(out)
		return nil, invalidUTF8()
	}
	return out, nil
}

// absorb appends a fragment to the assembly buffer. (Text was validated as
// it arrived; compressed text is checked once inflated.)
func (p *Parser) absorb(payload []byte) error {
	if need := len(p.msg) + len(payload); need > cap(p.msg) {
		grown := bufpool.Get(max(need, 2*cap(p.msg)))[:len(p.msg)]
		copy(grown, p.msg)
		bufpool.Put(p.msg)
		p.msg = grown
	}
	p.msg = append(p.msg, payload...)
	return nil
}

func (p *Parser) closeEvent(payload []byte, n int) (Event, int, error) {
	ev := Event{Kind: Close, Payload: payload, Code: ws.StatusNoStatusRcvd}
	switch {
	case len(payload) == 0:
		return ev, n, nil
	case len(payload) == 1:
		return Event{}, 0, protocolError("close frame payload of one byte")
	}
	ev.Code = ws.StatusCode(binary.BigEndian.Uint16(payload))
	switch {
	case ev.Code >= 5000:
		// RFC 6455 §7.4.2 defines codes below 5000 only.
		return Event{}, 0, protocolError("close code out of range")
	case !ValidCloseCode(int(ev.Code)):
		return Event{}, 0, protocolError("invalid close code")
	}
	reason := payload[2:]
	if !utf8.Valid(reason) {
		return Event{}, 0, &CloseError{Code: ws.StatusProtocolError, Reason: "invalid UTF-8 in close reason"}
	}
	ev.Reason = string(reason)
	return ev, n, nil
}

// ValidCloseCode reports whether code may appear in a close frame, sent or
// received: the codes RFC 6455 §7.4.1 defines for use in a frame
// (1000-1003, 1007-1011), those the IANA registry added since (1012 service
// restart, 1013 try again later, 1014 bad gateway), and the ranges for
// libraries and applications (3000-4999). 1004 is reserved, 1005, 1006 and
// 1015 must never be sent, and 1016-2999 are unassigned. (gobwas's check
// refuses 1012-1014, so servers behind it fail clients that use them.)
func ValidCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func kindOf(op ws.OpCode) Kind {
	if op == ws.OpText {
		return Text
	}
	return Binary
}

// rsv1 is the first reserved bit as ws.Header.Rsv holds it.
const rsv1 = 0x4

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// utf8Tail validates UTF-8 that arrives in pieces. It keeps the bytes of a
// code point split across pieces (at most 3) and rejects as soon as a piece
// holds a sequence that no continuation could make valid.
type utf8Tail struct {
	buf [utf8.UTFMax]byte
	n   int
}

// feed validates p given the pending tail; it reports false on a definite
// error.
func (u *utf8Tail) feed(p []byte) bool {
	if u.n > 0 {
		// Complete the pending code point with bytes from p.
		for len(p) > 0 && u.n < utf8.UTFMax && !utf8.FullRune(u.buf[:u.n]) {
			u.buf[u.n] = p[0]
			u.n++
			p = p[1:]
		}
		if !utf8.FullRune(u.buf[:u.n]) {
			return true // still incomplete and still a valid prefix
		}
		if r, size := utf8.DecodeRune(u.buf[:u.n]); r == utf8.RuneError && size <= 1 {
			return false
		}
		u.n = 0
	}
	if utf8.Valid(p) {
		return true
	}
	// Find the last start of a code point; everything before it must be
	// valid, and it must be a valid but incomplete prefix.
	i := len(p) - 1
	for i > 0 && len(p)-i < utf8.UTFMax && !utf8.RuneStart(p[i]) {
		i--
	}
	if !utf8.Valid(p[:i]) || utf8.FullRune(p[i:]) {
		return false
	}
	u.n = copy(u.buf[:], p[i:])
	return true
}

// complete reports whether the text ended on a code point boundary.
func (u *utf8Tail) complete() bool { return u.n == 0 }

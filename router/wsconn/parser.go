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
	hl := clientHeaderLen(b[1])
	if len(b) < hl {
		return ev, 0, nil
	}
	var h ws.Header
	decodeFlags(&h, b[0], b[1])
	if !decodeLength(&h, b[1], b[:hl]) {
		return ev, 0, protocolError("payload length has the most significant bit set")
	}
	if h.Masked {
		copy(h.Mask[:], b[hl-4:hl])
	}
	compressed, ok := p.reservedBits(&h)
	if !ok {
		return ev, 0, protocolError("reserved bits set")
	}
	if e := ws.CheckHeader(h, p.headerState(compressed)); e != nil {
		return ev, 0, protocolError(e.Error())
	}
	if p.tooBig(&h) {
		return ev, 0, &CloseError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
	}
	frameLen := int64(hl) + h.Length
	if p.isText(h.OpCode, compressed) {
		if err := p.checkArrivedText(b[hl:min(int64(len(b)), frameLen)], &h); err != nil {
			return ev, 0, err
		}
	}
	if int64(len(b)) < frameLen {
		ev.Need = int(frameLen)
		return ev, 0, nil
	}
	n = int(frameLen)
	payload := b[hl:n]
	if h.Masked && p.checked < h.Length { // text is unmasked already
		ws.Cipher(payload[p.checked:], h.Mask, int(p.checked))
	}
	p.checked = 0

	switch {
	case h.OpCode.IsControl():
		return p.controlEvent(h.OpCode, payload, n)
	case (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary) && h.Fin:
		// A whole message in one frame. The event is built here rather than
		// in a helper: returning an Event from a call costs a copy per frame.
		if !compressed && h.OpCode == ws.OpText && !p.utf8.complete() {
			return ev, 0, invalidUTF8() // ends inside a character
		}
		return Event{Kind: kindOf(h.OpCode), Payload: payload, Compressed: compressed}, n, nil
	}
	done, err := p.assemble(&h, payload, compressed)
	switch {
	case err != nil:
		return ev, 0, err
	case !done:
		return ev, n, nil
	}
	return p.takeMessage(), n, nil
}

// The header steps below (clientHeaderLen to tooBig) run on every frame and
// are kept small enough for the compiler to inline into Next: as calls they
// cost BenchmarkParserBatch 4-8%. For the same reason they report failure as
// a bool and leave building the error to Next.

// clientHeaderLen returns the length of a frame header from its second
// byte, so that Next knows whether the whole header has arrived before
// decoding any of it.
func clientHeaderLen(b1 byte) int {
	hl := 2
	switch b1 & 0x7f {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	if b1&0x80 != 0 {
		hl += 4
	}
	return hl
}

// decodeFlags reads the FIN, RSV, opcode and MASK bits. The header is
// decoded by hand, in place, because ws.ReadHeader wants an io.Reader.
func decodeFlags(h *ws.Header, b0, b1 byte) {
	h.Fin = b0&0x80 != 0
	h.Rsv = (b0 & 0x70) >> 4
	h.OpCode = ws.OpCode(b0 & 0x0f)
	h.Masked = b1&0x80 != 0
}

// decodeLength reads the payload length from the complete header b. It
// reports false for a 64-bit length with the most significant bit set,
// which RFC 6455 §5.2 forbids.
func decodeLength(h *ws.Header, b1 byte, b []byte) bool {
	switch l := b1 & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return false
		}
		h.Length = int64(u)
	default:
		h.Length = int64(l)
	}
	return true
}

// reservedBits judges the RSV bits, which ws.CheckHeader cannot: RSV1 is
// permessage-deflate's, and only on the first frame of a data message
// (RFC 7692 §6); every other reserved bit is an error. It reports whether
// the frame starts a compressed message.
func (p *Parser) reservedBits(h *ws.Header) (compressed, ok bool) {
	if h.Rsv == 0 {
		return false, true
	}
	if !p.Deflate || h.Rsv != rsv1 || (h.OpCode != ws.OpText && h.OpCode != ws.OpBinary) {
		return false, false
	}
	return true, true
}

// headerState describes the connection to ws.CheckHeader, which judges
// masking, control frames and continuations against it.
func (p *Parser) headerState(compressed bool) ws.State {
	state := ws.StateServerSide
	if p.frag {
		state |= ws.StateFragmented
	}
	if compressed {
		state |= ws.StateExtended
	}
	return state
}

// tooBig reports whether a data frame takes its message past MaxMessage,
// so that the message fails with 1009 before its payload is buffered.
// Control frames are not messages and have their own limit.
func (p *Parser) tooBig(h *ws.Header) bool {
	if h.OpCode.IsControl() {
		return false
	}
	total := h.Length
	if h.OpCode == ws.OpContinuation {
		total += int64(len(p.msg))
	}
	return total > p.MaxMessage
}

// isText reports whether the frame's payload is text to validate as it
// arrives: compressed text can only be checked once inflated.
func (p *Parser) isText(op ws.OpCode, compressed bool) bool {
	return !compressed && (op == ws.OpText ||
		op == ws.OpContinuation && p.fragOp == ws.OpText && !p.compressed)
}

// checkArrivedText unmasks and validates the part of a text frame's payload
// that has arrived, so that invalid UTF-8 fails before the rest of its frame
// is even sent (RFC 6455 §8.1, "fail fast"). p.checked carries how far it
// got from one call to the next, so no byte is unmasked twice.
func (p *Parser) checkArrivedText(arrived []byte, h *ws.Header) error {
	if h.OpCode == ws.OpText && p.checked == 0 {
		p.utf8 = utf8Tail{}
	}
	if avail := int64(len(arrived)); avail > p.checked {
		seg := arrived[p.checked:]
		if h.Masked {
			ws.Cipher(seg, h.Mask, int(p.checked))
		}
		if !p.utf8.feed(seg) {
			p.checked = 0
			return invalidUTF8()
		}
		p.checked = avail
	}
	return nil
}

// controlEvent reports a control frame. Control frames may come between
// the fragments of a message, and leave the message being assembled alone.
func (p *Parser) controlEvent(op ws.OpCode, payload []byte, n int) (Event, int, error) {
	switch op {
	case ws.OpPing:
		return Event{Kind: Ping, Payload: payload}, n, nil
	case ws.OpPong:
		return Event{Kind: Pong, Payload: payload}, n, nil
	case ws.OpClose:
		return p.closeEvent(payload, n)
	}
	// CheckHeader rejects reserved opcodes, so this is unreachable; fail
	// closed all the same.
	return Event{}, 0, protocolError("unknown opcode")
}

// assemble adds a fragment to the message being assembled, opening it on a
// first fragment, and reports whether the fragment completed it (takeMessage
// then hands it over). It returns no Event, so that a fragment that only
// adds to the message costs no Event copy.
func (p *Parser) assemble(h *ws.Header, payload []byte, compressed bool) (done bool, err error) {
	switch h.OpCode {
	case ws.OpText, ws.OpBinary:
		p.frag, p.fragOp, p.compressed = true, h.OpCode, compressed
		// Sized from the first fragment so that a message sent in a few
		// large pieces rarely grows it, but never beyond MaxMessage.
		p.msg = bufpool.Get(int(min(max(h.Length*2, 512), p.MaxMessage)))[:0]
	case ws.OpContinuation:
	default:
		// CheckHeader rejects reserved opcodes, so this is unreachable;
		// fail closed all the same.
		return false, protocolError("unknown opcode")
	}
	if err := p.absorb(payload); err != nil {
		return false, err
	}
	if !h.Fin {
		return false, nil
	}
	if !p.compressed && p.fragOp == ws.OpText && !p.utf8.complete() {
		return false, invalidUTF8() // ends inside a character
	}
	return true, nil
}

// takeMessage hands the assembled message, and its buffer, to the caller.
func (p *Parser) takeMessage() Event {
	ev := Event{Kind: kindOf(p.fragOp), Payload: p.msg, Owned: true, Compressed: p.compressed}
	p.msg, p.frag, p.compressed = nil, false, false
	return ev
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

// utf8Tail validates UTF-8 that arrives in pieces. It keeps the bytes of a
// code point split across pieces (at most 3) and rejects as soon as a piece
// holds a sequence that no continuation could make valid.
type utf8Tail struct {
	buf [utf8.UTFMax]byte
	n   uint8 // a byte, not an int: the Parser sits in every connection
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
	u.n = uint8(copy(u.buf[:], p[i:]))
	return true
}

// complete reports whether the text ended on a code point boundary.
func (u *utf8Tail) complete() bool { return u.n == 0 }

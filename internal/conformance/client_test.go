package conformance

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// The raw client: its own handshake, frame encoder and frame reader, so
// that it can put on the wire exactly what a case asks for.

// Opcodes (RFC 6455 §5.2).
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// maxInbound bounds a frame the client accepts from the server.
const maxInbound = 32 << 20

// frame is one client frame to send. rsv is Autobahn's 3-bit rsv
// argument: 4 is RSV1, 2 is RSV2, 1 is RSV3.
type frame struct {
	op      byte
	fin     bool
	rsv     byte
	payload []byte
	// handshake marks the client's close frame that starts (or answers)
	// the closing handshake, as opposed to a raw close frame a case
	// sends for its own sake.
	handshake bool
}

// encode returns the frame masked with a fresh random key, as a client
// must send it (RFC 6455 §5.3), with the minimal length encoding.
func (f frame) encode() []byte {
	n := len(f.payload)
	b := make([]byte, 0, 14+n)
	b0 := f.op&0x0f | (f.rsv&7)<<4
	if f.fin {
		b0 |= 0x80
	}
	b = append(b, b0)
	switch {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, f.payload...)
	for i := range n {
		b[start+i] ^= mask[i&3]
	}
	return b
}

// inFrame is one frame read from the server.
type inFrame struct {
	fin     bool
	rsv     byte
	op      byte
	masked  bool
	payload []byte
	// nonMinimal is set when the length was not encoded in the fewest
	// bytes (RFC 6455 §5.2: "the minimal number of bytes MUST be used").
	nonMinimal bool
}

// readFrame reads one frame off r.
func readFrame(r *bufio.Reader) (inFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return inFrame{}, err
	}
	f := inFrame{
		fin:    h[0]&0x80 != 0,
		rsv:    (h[0] >> 4) & 7,
		op:     h[0] & 0x0f,
		masked: h[1]&0x80 != 0,
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var x [2]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return inFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(x[:]))
		f.nonMinimal = n <= 125
	case 127:
		var x [8]byte
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return inFrame{}, err
		}
		n = binary.BigEndian.Uint64(x[:])
		f.nonMinimal = n <= 0xffff
	}
	if n > maxInbound {
		return inFrame{}, fmt.Errorf("server frame of %d bytes is larger than the client accepts", n)
	}
	var mask [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return inFrame{}, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return inFrame{}, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= mask[i&3]
		}
	}
	return f, nil
}

// profile is a server configuration and the client's offer. Every profile
// name gets its own node: profiles of one name share the server
// configuration and differ only in the offer.
type profile struct {
	name string
	// compression sets server.compression (permessage-deflate).
	compression bool
	// offer is the client's Sec-WebSocket-Extensions request header, if any.
	offer string
}

// plain is the profile of every case so far: no extension offered.
var plain = profile{name: "plain"}

// Timings of the client. Verdict timings are Autobahn's; the rest bound a
// wait that normally ends as soon as the awaited reply is in.
const (
	handshakeTimeout = 10 * time.Second
	writeTimeout     = 10 * time.Second
	// replyTimeout bounds the wait for the events a case expects (echoes,
	// pongs) before the client closes anyway (Autobahn's closeAfter).
	replyTimeout = 10 * time.Second
	// failTimeout bounds the wait for the server to fail the connection
	// (Autobahn's killAfter), and for the server to drop TCP after the
	// closing handshake (its serverConnectionDropTimeout).
	failTimeout = 10 * time.Second
	// failFastWindow is Autobahn's 1 s pause in 6.4.x: a server that fails
	// within it failed fast.
	failFastWindow = time.Second
	// quietWindow is how long the client watches for a server that fails
	// a connection it should keep open (6.4.x after the valid first part).
	quietWindow = 250 * time.Millisecond
)

// event is something the client records, as Autobahn's Case.received.
type event struct {
	kind    string // "message", "ping", "pong" or "timeout"
	payload []byte // the message or control payload; the label of a timeout
	binary  bool   // messages only
}

func message(p string) event      { return event{kind: "message", payload: []byte(p)} }
func messageBytes(p []byte) event { return event{kind: "message", payload: p} }
func binaryMessage(p []byte) event {
	return event{kind: "message", payload: p, binary: true}
}
func pong(p string) event    { return event{kind: "pong", payload: []byte(p)} }
func timeout(l string) event { return event{kind: "timeout", payload: []byte(l)} }
func (e event) equal(o event) bool {
	return e.kind == o.kind && e.binary == o.binary && bytes.Equal(e.payload, o.payload)
}

func (e event) String() string {
	switch e.kind {
	case "timeout":
		return fmt.Sprintf("timeout %s", e.payload)
	case "message":
		kind := "text"
		if e.binary {
			kind = "binary"
		}
		return fmt.Sprintf("%s message %s", kind, showPayload(e.payload))
	}
	return fmt.Sprintf("%s %s", e.kind, showPayload(e.payload))
}

// showPayload prints a payload briefly: short ones quoted, long ones by
// length and head.
func showPayload(p []byte) string {
	if len(p) <= 40 {
		return fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("(%d bytes, %q...)", len(p), p[:24])
}

func eventsEqual(a, b []event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(b[i]) {
			return false
		}
	}
	return true
}

// isPrefix reports whether a is a prefix of b.
func isPrefix(a, b []event) bool {
	return len(a) <= len(b) && eventsEqual(a, b[:len(a)])
}

func showEvents(es []event) string {
	if len(es) == 0 {
		return "[]"
	}
	var b strings.Builder
	b.WriteString("[")
	for i, e := range es {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == 8 && len(es) > 10 {
			fmt.Fprintf(&b, "... %d more", len(es)-i)
			break
		}
		b.WriteString(e.String())
	}
	b.WriteString("]")
	return b.String()
}

// session is one client connection running one case. Only the case's
// goroutine touches its fields, except the inbox, which the reader
// goroutine fills.
type session struct {
	conn net.Conn
	br   *bufio.Reader
	// extensions is what the server put in Sec-WebSocket-Extensions.
	extensions string
	// pmd is the negotiated permessage-deflate, or nil.
	pmd *pmdState

	mu      sync.Mutex
	inbox   []inFrame
	inErr   error // the reader's terminal error
	notify  chan struct{}
	readerG sync.WaitGroup

	events     []event
	violations []string
	stopped    bool // a pause saw the connection close: later steps are not run
	// midFrame is set while a frame is only partly written (6.4.3): a
	// pong would land inside it, so pongs wait in pendingPongs.
	midFrame     bool
	pendingPongs [][]byte

	// Message assembly.
	inMsg         bool
	msgOp         byte
	msgBuf        []byte
	msgCompressed bool // RSV1 on the first frame (RFC 7692 §6)

	// The closing handshake.
	sentClose     bool // the client's close frame is out
	closedByMe    bool // ...and it went out before the server's
	gotClose      bool // the server's close frame arrived
	remoteHasCode bool
	remoteCode    int
	remoteReason  string
	eof           bool // the server's side of TCP is gone
	droppedByMe   bool // the client had to drop TCP itself
	writeErr      error
}

// dial connects to addr and performs the opening handshake for path with
// the profile's extension offer (RFC 6455 §4.1), checking the server's
// answer as a client must (§4.2.2).
func dial(addr, path string, p profile) (*session, error) {
	conn, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	s, err := handshake(conn, addr, path, p)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func handshake(conn net.Conn, addr, path string, p profile) (*session, error) {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", path, addr)
	fmt.Fprintf(&req, "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key)
	if p.offer != "" {
		fmt.Fprintf(&req, "Sec-WebSocket-Extensions: %s\r\n", p.offer)
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("handshake: status %s", resp.Status)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return nil, fmt.Errorf("handshake: Upgrade %q", resp.Header.Get("Upgrade"))
	}
	if !headerHasToken(resp.Header, "Connection", "upgrade") {
		return nil, fmt.Errorf("handshake: Connection %q", resp.Header.Values("Connection"))
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("handshake: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	if ext != "" && p.offer == "" {
		// RFC 6455 §4.2.2: the server must not accept what was not offered.
		return nil, fmt.Errorf("handshake: server negotiated %q, which was not offered", ext)
	}
	var pmd *pmdState
	if ext != "" {
		if pmd, err = acceptDeflate(p.offer, ext); err != nil {
			return nil, fmt.Errorf("handshake: %w", err)
		}
	}
	if proto := resp.Header.Get("Sec-WebSocket-Protocol"); proto != "" {
		return nil, fmt.Errorf("handshake: server selected subprotocol %q, none was offered", proto)
	}
	_ = conn.SetDeadline(time.Time{})
	s := &session{conn: conn, br: br, extensions: ext, pmd: pmd, notify: make(chan struct{}, 1)}
	s.readerG.Add(1)
	go s.readLoop()
	return s, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// readLoop moves server frames into the inbox until the connection ends.
func (s *session) readLoop() {
	defer s.readerG.Done()
	for {
		f, err := readFrame(s.br)
		s.mu.Lock()
		if err != nil {
			s.inErr = err
		} else {
			s.inbox = append(s.inbox, f)
		}
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// shutdown drops the connection (if still up) and waits for the reader.
func (s *session) shutdown() {
	s.conn.Close()
	s.readerG.Wait()
}

// write puts b on the wire as one write. After the server's side is gone
// there is nothing to write to; errors are kept for the report.
func (s *session) write(b []byte) {
	if s.eof || s.droppedByMe {
		return
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := s.conn.Write(b); err != nil && s.writeErr == nil {
		s.writeErr = err
	}
}

// sendClose sends the client's close frame with payload; the client
// starts the closing handshake if the server has not (Autobahn's
// sendCloseFrame: closedByMe unless it is a reply).
func (s *session) sendClose(payload []byte) {
	if s.sentClose {
		return
	}
	s.markClose()
	s.write(closeFrame(payload).encode())
}

// pump processes server frames until until() holds, the server's side of
// the connection is gone, or the deadline passes. It reports until().
func (s *session) pump(deadline time.Time, until func() bool) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.drain()
		if until() {
			return true
		}
		if s.eof {
			return false
		}
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-s.notify:
		case <-timer.C:
			s.drain()
			return until()
		}
	}
}

// drain handles every frame the reader has delivered so far.
func (s *session) drain() {
	s.mu.Lock()
	frames, err := s.inbox, s.inErr
	s.inbox = nil
	s.mu.Unlock()
	for _, f := range frames {
		s.handle(f)
	}
	if err != nil && !s.eof {
		s.eof = true
		if !s.droppedByMe && !errors.Is(err, io.EOF) && !isReset(err) {
			s.violate("reading from the server: %v", err)
		}
	}
}

// isReset reports a connection the server reset rather than closed: it
// does when it closes with client data still unread, which a server
// failing a connection may well do.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (s *session) violate(format string, args ...any) {
	s.violations = append(s.violations, fmt.Sprintf(format, args...))
}

// handle checks one server frame as RFC 6455 requires of a client and
// records what it carries.
func (s *session) handle(f inFrame) {
	name := opName(f.op)
	if s.gotClose {
		s.violate("%s frame after the server's close frame (RFC 6455 §5.5.1)", name)
		return
	}
	if f.masked {
		s.violate("%s frame is masked (RFC 6455 §5.1: a server must not mask)", name)
	}
	if f.rsv != 0 && !s.rsvAllowed(f) {
		s.violate("%s frame has RSV bits %03b that no negotiated extension allows (RFC 6455 §5.2, RFC 7692 §6)", name, f.rsv)
	}
	if f.nonMinimal {
		s.violate("%s frame length of %d not minimally encoded (RFC 6455 §5.2)", name, len(f.payload))
	}
	if f.op >= 0x8 {
		if !f.fin {
			s.violate("fragmented %s frame (RFC 6455 §5.5)", name)
		}
		if len(f.payload) > 125 {
			s.violate("%s frame payload of %d bytes (RFC 6455 §5.5: at most 125)", name, len(f.payload))
		}
	}
	switch f.op {
	case opText, opBinary:
		if s.inMsg {
			s.violate("new %s message inside a fragmented message (RFC 6455 §5.4)", name)
		}
		s.inMsg, s.msgOp, s.msgBuf = true, f.op, append([]byte(nil), f.payload...)
		// Without a negotiated extension RSV1 is only a violation (above).
		s.msgCompressed = f.rsv&4 != 0 && s.pmd != nil
	case opCont:
		if !s.inMsg {
			s.violate("continuation frame with no message to continue (RFC 6455 §5.4)")
			return
		}
		s.msgBuf = append(s.msgBuf, f.payload...)
	case opPing:
		s.events = append(s.events, event{kind: "ping", payload: f.payload})
		switch {
		case s.sentClose:
		case s.midFrame:
			s.pendingPongs = append(s.pendingPongs, f.payload)
		default:
			s.write(frame{op: opPong, fin: true, payload: f.payload}.encode())
		}
		return
	case opPong:
		s.events = append(s.events, event{kind: "pong", payload: f.payload})
		return
	case opClose:
		s.onClose(f.payload)
		return
	default:
		s.violate("reserved opcode %#x (RFC 6455 §5.2)", f.op)
		return
	}
	if f.fin {
		if s.msgCompressed {
			out, err := s.pmd.inflate(s.msgBuf)
			if err != nil {
				s.violate("compressed %s message does not inflate: %v (RFC 7692 §7.2.2)", opName(s.msgOp), err)
			}
			s.msgBuf = out
		}
		if s.msgOp == opText && !utf8.Valid(s.msgBuf) {
			s.violate("text message is not valid UTF-8 (RFC 6455 §8.1)")
		}
		s.events = append(s.events, event{kind: "message", payload: s.msgBuf, binary: s.msgOp == opBinary})
		s.inMsg, s.msgBuf = false, nil
	}
}

// rsvAllowed reports whether a negotiated extension gives meaning to the
// frame's RSV bits: permessage-deflate allows RSV1 on the first frame of a
// data message, and nothing else (RFC 7692 §6).
func (s *session) rsvAllowed(f inFrame) bool {
	return s.pmd != nil && f.rsv == 4 && (f.op == opText || f.op == opBinary)
}

// onClose handles the server's close frame (RFC 6455 §5.5.1, §7.1.5): it
// checks the body, records the code and answers it if the client has not
// closed yet.
func (s *session) onClose(p []byte) {
	s.gotClose = true
	switch {
	case len(p) == 1:
		s.violate("close frame with a one-byte body (RFC 6455 §5.5.1)")
	case len(p) >= 2:
		s.remoteHasCode = true
		s.remoteCode = int(binary.BigEndian.Uint16(p))
		s.remoteReason = string(p[2:])
		if !sendableCode(s.remoteCode) {
			s.violate("close code %d may not be sent (RFC 6455 §7.4)", s.remoteCode)
		}
		if !utf8.Valid(p[2:]) {
			s.violate("close reason is not valid UTF-8 (RFC 6455 §5.5.1)")
		}
	}
	if s.inMsg {
		s.inMsg, s.msgBuf = false, nil
	}
	if !s.sentClose && !s.midFrame {
		// Echo the status code, as RFC 6455 §5.5.1 suggests. (Inside a
		// partly written frame there is no way to answer: the server
		// failed the connection, it is not waiting for one.)
		s.sendClose(p[:min(2, len(p))])
	}
}

// sendableCode reports whether an endpoint may put code in a close frame:
// the codes RFC 6455 §7.4.1 defines for that, the ones IANA registered
// since (1012-1014), and the application and private ranges.
func sendableCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

func opName(op byte) string {
	switch op {
	case opCont:
		return "continuation"
	case opText:
		return "text"
	case opBinary:
		return "binary"
	case opClose:
		return "close"
	case opPing:
		return "ping"
	case opPong:
		return "pong"
	}
	return fmt.Sprintf("opcode %#x", op)
}

// wasClean is Autobahn's wasClean: both close frames were exchanged and
// the server dropped the TCP connection.
func (s *session) wasClean() bool {
	return s.sentClose && s.gotClose && s.eof && !s.droppedByMe
}

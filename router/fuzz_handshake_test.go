package router_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router"
)

// FuzzHandshake throws arbitrary bytes at a live server's accept path: the
// request head (routed to the upgrader or to net/http) and whatever follows
// it. One server serves the whole run; each input gets a fresh TCP
// connection whose write side is half-closed after the input, and the
// server must, within the handshake timeout plus slack:
//
//   - never panic (a panic in a server goroutine kills the fuzz binary);
//   - answer with an HTTP response ("HTTP/1.1 ", or "HTTP/1.0 " to an
//     HTTP/1.0 request handed to net/http) whose status is in a sensible
//     set, or just close the connection;
//   - after "101 Switching Protocols", send nothing but that response
//     unless the input carried bytes after its head, and then only
//     well-formed server frames (unmasked, valid opcodes and close codes,
//     nothing after a close frame); a 101 carries the right
//     Sec-WebSocket-Accept and only what the client offered;
//   - deliver Open and Close to the handler exactly once per connection,
//     with a reportable close code;
//   - return to zero connections, and to its goroutine and descriptor
//     baseline, after every input.
//
// Run it with:
//
//	go test -run='^$' -fuzz=FuzzHandshake -fuzztime=2000000x ./router/
//
// Seeds are in testdata/fuzz/FuzzHandshake.
func FuzzHandshake(f *testing.F) {
	fs := startFuzzServer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // bigger heads are refused at 20 KiB; keep executions fast
		}
		fs.run(t, data)
	})
}

const (
	fuzzHandshakeTimeout = 200 * time.Millisecond
	// fuzzAnswerWithin bounds how long the server may take to answer or
	// close after the input is written: the handshake timeout plus slack
	// for a loaded machine (the fuzzer runs a worker per CPU).
	fuzzAnswerWithin = time.Second
	// fuzzSlack is what goroutines and descriptors may exceed their
	// baseline by after an input: a few runtime or net/http stragglers,
	// far below what a leak per input accumulates to.
	fuzzSlack = 10
)

// fuzzHandler is a trivial Go handler: "/echo" echoes, "/rooms/{room}"
// joins the room on Open and broadcasts every message to it (the sender
// included). A few query parameters and headers steer Handshake through
// its less travelled paths: reject=1..4 refuse (with default, invalid and
// custom statuses), panic makes it panic, X-Fuzz-Slow makes it answer after
// the handshake deadline. It offers "chat" as its subprotocol. Open sends
// nothing, so a 101 for a client that sends nothing is followed by
// nothing.
type fuzzHandler struct {
	srv atomic.Pointer[router.Server]

	mu       sync.Mutex
	open     map[*router.Conn]bool
	problems []string
	opens    int
	closes   int
}

func (h *fuzzHandler) Start(rt *router.Route) error {
	h.srv.Store(rt.Server())
	return nil
}

func (h *fuzzHandler) Handshake(lane int, req *router.Request) router.Verdict {
	q := req.Query()
	switch q.Get("reject") {
	case "1":
		return router.Verdict{Reject: true} // default status: 403
	case "2":
		return router.Verdict{Reject: true, Status: 99, Body: "not a status"} // clamped to 403
	case "3":
		return router.Verdict{Reject: true, Status: 700} // clamped to 403
	case "4":
		return router.Verdict{Reject: true, Status: http.StatusTeapot}
	}
	if q.Has("panic") {
		panic("fuzz: handshake panic")
	}
	if req.Header.Get("x-fuzz-slow") != "" {
		time.Sleep(fuzzHandshakeTimeout + 50*time.Millisecond)
	}
	v := router.Verdict{Attrs: map[string]any{"path": req.Path}}
	if slices.Contains(req.Subprotocols, "chat") {
		v.Subprotocol = "chat"
	}
	return v
}

func (h *fuzzHandler) problem(format string, args ...any) {
	h.mu.Lock()
	h.problems = append(h.problems, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

func (h *fuzzHandler) Open(lane int, c *router.Conn) {
	h.mu.Lock()
	if h.open[c] {
		h.problems = append(h.problems, "Open delivered twice for "+c.ID())
	}
	h.open[c] = true
	h.opens++
	h.mu.Unlock()
	if room := c.Params()["room"]; room != "" {
		if err := c.Join(room); err != nil && !c.Closed() {
			h.problem("Join(%q) on an open connection: %v", room, err)
		}
	}
}

func (h *fuzzHandler) Message(lane int, c *router.Conn, kind router.Kind, data []byte) {
	if kind == router.Text && !utf8.Valid(data) {
		h.problem("text message with invalid UTF-8 delivered: %q", data)
	}
	if room := c.Params()["room"]; room != "" {
		h.srv.Load().Broadcast(room, kind, data, nil)
		return
	}
	_ = c.Send(kind, data)
}

func (h *fuzzHandler) Close(lane int, c *router.Conn, code int, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open[c] {
		h.problems = append(h.problems, fmt.Sprintf("Close(%d) for %s without Open, or twice", code, c.ID()))
	}
	delete(h.open, c)
	h.closes++
	if !router.SendableCloseCode(code) && code != router.CloseNoStatus && code != router.CloseAbnormal {
		h.problems = append(h.problems, fmt.Sprintf("Close with code %d, which no endpoint sends", code))
	}
}

func (h *fuzzHandler) Stop() {}

// takeProblems returns and clears what the handler noticed.
func (h *fuzzHandler) takeProblems() (problems []string, opens, closes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	problems, h.problems = h.problems, nil
	return problems, h.opens, h.closes
}

type fuzzServer struct {
	srv  *router.Server
	addr string
	h    *fuzzHandler

	goroutines int // baseline, after warm-up
	fds        int
}

// startFuzzServer starts the one server of the run on 127.0.0.1:0 and
// warms it up (an upgrade and a plain HTTP request, which start net/http's
// lazy serving goroutine) before taking the goroutine and descriptor
// baselines.
func startFuzzServer(tb testing.TB) *fuzzServer {
	h := &fuzzHandler{open: make(map[*router.Conn]bool)}
	srv, err := router.New(router.Config{
		Routes: []router.RouteSpec{
			{Pattern: "/echo", Handler: h},
			// One connection per address: a 429 on it after the previous
			// input's connection is gone means a leaked per-IP count.
			{Pattern: "/rooms/{room}", Handler: h, MaxConnectionsPerIP: 1},
		},
		HandshakeTimeout: fuzzHandshakeTimeout,
		// Inputs run one at a time and wait for zero connections, so a
		// 503 "too many connections" means leaked slots (2, not 1, for
		// the instant between a connection leaving the table and freeing
		// its slot).
		MaxConnections: 2,
		MaxMessageSize: 64 << 10,
		CloseTimeout:   500 * time.Millisecond,
		AllowedOrigins: []string{"https://example.com", "http://*.moonwire.test:8080"},
		Compression:    true,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		NoPoller:       os.Getenv("MOONWIRE_TEST_READER") == "goroutine",
	})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		_ = srv.Close()
		<-served
	})
	fs := &fuzzServer{srv: srv, addr: ln.Addr().String(), h: h}

	// Warm up through the same path the inputs take.
	for _, in := range []string{
		"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		resp, _, err := fs.exchange([]byte(in))
		if err != nil || len(resp) == 0 {
			tb.Fatalf("warm-up %q: %q, %v", in, resp, err)
		}
	}
	if !fs.waitIdle() {
		tb.Fatalf("warm-up connections still open: %d", srv.Stats().Connections)
	}
	time.Sleep(50 * time.Millisecond)
	fs.goroutines, fs.fds = runtime.NumGoroutine(), countFDs()
	return fs
}

// exchange writes data on a fresh connection, half-closes, and reads what
// the server sends until it closes, for at most fuzzAnswerWithin after
// the write. It returns the bytes read, how long the server took after the
// write, and the read error that ended it (nil for EOF, a reset counts as
// a close); a timeout is returned as an error.
func (fs *fuzzServer) exchange(data []byte) (resp []byte, took time.Duration, err error) {
	nc, err := net.DialTimeout("tcp", fs.addr, time.Second)
	if err != nil {
		return nil, 0, fmt.Errorf("dial: %w", err)
	}
	defer nc.Close()
	start := time.Now()
	_ = nc.SetDeadline(start.Add(fuzzAnswerWithin))

	// Read while writing: a server that answers early (414, 431) or echoes
	// frames must not deadlock against a blocked write.
	type result struct {
		b   []byte
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	go func() {
		var buf bytes.Buffer
		_, err := buf.ReadFrom(nc)
		got <- result{buf.Bytes(), err, time.Now()}
	}()
	if _, werr := nc.Write(data); werr == nil {
		_ = nc.(*net.TCPConn).CloseWrite()
	}
	written := time.Now()
	r := <-got
	took = max(0, r.at.Sub(written))
	switch {
	case r.err == nil, errors.Is(r.err, syscall.ECONNRESET):
		return r.b, took, nil
	default:
		return r.b, took, r.err
	}
}

func (fs *fuzzServer) run(t *testing.T, data []byte) {
	resp, took, err := fs.exchange(data)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("server neither answered and closed nor closed within %v (handshake timeout %v)\ninput: %s\nread so far: %q",
				fuzzAnswerWithin, fuzzHandshakeTimeout, quoteInput(data), resp)
		}
		t.Fatalf("exchange: %v\ninput: %s", err, quoteInput(data))
	}
	t.Logf("answer after %v: %q (%d bytes)", took.Round(time.Microsecond), firstLine(resp), len(resp))
	if msg := checkResponse(data, resp); msg != "" {
		t.Fatalf("%s\ninput: %s\nresponse (%v): %q", msg, quoteInput(data), took, truncate(resp, 600))
	}
	if !fs.waitIdle() {
		t.Fatalf("connections did not return to 0 (%d open, routes %v)\ninput: %s",
			fs.srv.Stats().Connections, fs.routeConns(), quoteInput(data))
	}
	problems, opens, closes := fs.h.takeProblems()
	if len(problems) > 0 {
		t.Fatalf("handler saw: %s\ninput: %s", strings.Join(problems, "; "), quoteInput(data))
	}
	if opens != closes {
		t.Fatalf("%d Open events but %d Close events once idle\ninput: %s", opens, closes, quoteInput(data))
	}
	if !waitUntil(2*time.Second, func() bool {
		return runtime.NumGoroutine() <= fs.goroutines+fuzzSlack && countFDs() <= fs.fds+fuzzSlack
	}) {
		t.Fatalf("goroutines %d (baseline %d) or descriptors %d (baseline %d) did not return to baseline\ninput: %s",
			runtime.NumGoroutine(), fs.goroutines, countFDs(), fs.fds, quoteInput(data))
	}
}

// waitIdle waits (bounded) for the server and its routes to hold no
// connection.
func (fs *fuzzServer) waitIdle() bool {
	return waitUntil(2*time.Second, func() bool {
		if fs.srv.Stats().Connections != 0 {
			return false
		}
		for _, rt := range fs.srv.Routes() {
			if rt.Connections() != 0 {
				return false
			}
		}
		return true
	})
}

func (fs *fuzzServer) routeConns() map[string]int64 {
	m := map[string]int64{}
	for _, rt := range fs.srv.Routes() {
		m[rt.Pattern()] = rt.Connections()
	}
	return m
}

// checkResponse judges what the server sent for input; "" means fine.
func checkResponse(input, resp []byte) string {
	if len(resp) == 0 {
		return "" // closed without a word: allowed
	}
	http10 := bytes.Contains(firstLine(input), []byte("HTTP/1.0"))
	switch {
	case bytes.HasPrefix(resp, []byte("HTTP/1.1 ")):
	case http10 && bytes.HasPrefix(resp, []byte("HTTP/1.0 ")):
	default:
		return "response does not begin with \"HTTP/1.1 \""
	}
	if len(resp) < 13 || (resp[12] != ' ' && resp[12] != '\r') {
		return "malformed status line"
	}
	status, err := strconv.Atoi(string(resp[9:12]))
	if err != nil {
		return "malformed status code"
	}
	switch status {
	case http.StatusSwitchingProtocols:
		return check101(input, resp)
	case http.StatusBadRequest, // malformed requests, missing or bad upgrade headers
		http.StatusForbidden,                   // origin refused, or the handler's default refusal
		http.StatusNotFound,                    // no route, no HTTP handler
		http.StatusMethodNotAllowed,            // a route path with another method
		http.StatusRequestURITooLong,           // request line > 4 KiB
		http.StatusRequestEntityTooLarge,       // a plain-HTTP body > MaxRequestBody
		http.StatusRequestTimeout,              // a plain-HTTP request that did not arrive in time
		http.StatusExpectationFailed,           // net/http: an Expect it cannot meet
		http.StatusUpgradeRequired,             // a route path without an upgrade, or a bad WebSocket version
		http.StatusRequestHeaderFieldsTooLarge, // headers > 16 KiB
		http.StatusNotImplemented,              // net/http: unknown transfer coding
		http.StatusHTTPVersionNotSupported:     // an upgrade that is not HTTP/1.1
		return ""
	case http.StatusOK:
		if bytes.HasPrefix(input, []byte("OPTIONS * ")) {
			return "" // net/http answers "OPTIONS *" itself
		}
	case http.StatusTeapot:
		if bytes.Contains(input, []byte("reject=4")) {
			return ""
		}
	case http.StatusInternalServerError:
		if bytes.Contains(input, []byte("panic")) {
			return "" // the handler panicked in Handshake
		}
	case http.StatusServiceUnavailable:
		// Only the handshake deadline (a slow handler, or one still busy
		// with the previous input's slow handshake) is a reason here.
		if bytes.Contains(resp, []byte("handshake timed out")) {
			return ""
		}
		return "503 for a reason other than the handshake deadline: leaked connection slots?"
	case http.StatusTooManyRequests:
		return "429 with no other connection open: leaked per-IP count?"
	}
	return fmt.Sprintf("status %d is not one this server should answer", status)
}

// check101 checks an accepted upgrade: the response head, then what
// follows it.
func check101(input, resp []byte) string {
	end := bytes.Index(resp, []byte("\r\n\r\n"))
	if end < 0 {
		return "101 response head not terminated"
	}
	head, rest := resp[:end+4], resp[end+4:]
	r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		return "101 response does not parse: " + err.Error()
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") ||
		!strings.EqualFold(r.Header.Get("Connection"), "Upgrade") {
		return "101 without Upgrade: websocket / Connection: Upgrade"
	}
	accept := r.Header.Get("Sec-WebSocket-Accept")
	ok := false
	for _, key := range headerValues(input, "sec-websocket-key") {
		ok = ok || accept == acceptKey(key)
	}
	if !ok {
		return "101 with a Sec-WebSocket-Accept that answers no Sec-WebSocket-Key of the request"
	}
	if p := r.Header.Get("Sec-WebSocket-Protocol"); p != "" && (p != "chat" || !bytes.Contains(input, []byte("chat"))) {
		return "101 selects subprotocol " + strconv.Quote(p) + ", which the client did not offer"
	}
	deflate := false
	if e := r.Header.Get("Sec-WebSocket-Extensions"); e != "" {
		if !strings.HasPrefix(e, "permessage-deflate") ||
			!bytes.Contains(bytes.ToLower(input), []byte("permessage-deflate")) {
			return "101 accepts extension " + strconv.Quote(e) + ", which the client did not offer"
		}
		deflate = true
	}
	if !carriesFrames(input) {
		if len(rest) > 0 {
			return "server sent frames after the 101 though the client sent none"
		}
		return ""
	}
	return checkServerFrames(rest, deflate)
}

// checkServerFrames checks frames a server sent: unmasked, known opcodes,
// control frames whole and short, RSV1 only on the first frame of a
// message when permessage-deflate is on, uncompressed single-frame text
// valid UTF-8, close codes sendable, nothing after a close frame. A
// truncated last frame is allowed: the client's half-close may end the
// connection while a frame is being written.
func checkServerFrames(b []byte, deflate bool) string {
	r := bytes.NewReader(b)
	inMessage := false
	for r.Len() > 0 {
		h, err := ws.ReadHeader(r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return ""
			}
			return "server frame header: " + err.Error()
		}
		if h.Length > int64(r.Len()) {
			return "" // truncated
		}
		p := make([]byte, h.Length)
		_, _ = io.ReadFull(r, p)
		if h.Masked {
			return "server sent a masked frame"
		}
		rsv1 := h.Rsv&0x4 != 0
		if h.Rsv&^0x4 != 0 || rsv1 && (!deflate || h.OpCode.IsControl() || h.OpCode == ws.OpContinuation) {
			return fmt.Sprintf("server frame with RSV bits %03b (opcode %v, deflate %v)", h.Rsv, h.OpCode, deflate)
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if inMessage {
				return "server started a message inside another"
			}
			inMessage = !h.Fin
			if h.OpCode == ws.OpText && h.Fin && !rsv1 && !utf8.Valid(p) {
				return "server sent a text frame with invalid UTF-8"
			}
		case ws.OpContinuation:
			if !inMessage {
				return "server sent a continuation outside a message"
			}
			inMessage = !h.Fin
		case ws.OpPing, ws.OpPong:
			if !h.Fin || len(p) > 125 {
				return "server sent a fragmented or long control frame"
			}
		case ws.OpClose:
			if !h.Fin || len(p) > 125 || len(p) == 1 {
				return "server sent a malformed close frame"
			}
			if len(p) >= 2 {
				if code := int(binary.BigEndian.Uint16(p)); !router.SendableCloseCode(code) {
					return fmt.Sprintf("server sent close code %d", code)
				}
			}
			if r.Len() > 0 {
				return "server sent bytes after its close frame"
			}
		default:
			return fmt.Sprintf("server sent opcode %v", h.OpCode)
		}
	}
	return ""
}

// carriesFrames reports whether input has bytes after its request head,
// which ends at the first blank line ("\n\n" or "\n\r\n", as the server
// reads it).
func carriesFrames(input []byte) bool {
	for i := 0; i < len(input); i++ {
		if input[i] != '\n' {
			continue
		}
		j := i + 1
		if j < len(input) && input[j] == '\r' {
			j++
		}
		if j < len(input) && input[j] == '\n' {
			return j+1 < len(input)
		}
	}
	return false
}

// headerValues returns the values of header name (lower case) in the
// request head of input, however its lines end.
func headerValues(input []byte, name string) []string {
	var out []string
	for i, line := range bytes.Split(input, []byte("\n")) {
		if i == 0 {
			continue
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			out = append(out, string(bytes.TrimSpace(v)))
		}
	}
	return out
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

// countFDs counts this process's open descriptors.
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0 // not Linux: the check is vacuous
	}
	return len(ents)
}

// waitUntil polls cond for at most d.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for sleep := 100 * time.Microsecond; ; sleep = min(2*sleep, 20*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(sleep)
	}
}

func quoteInput(b []byte) string {
	return fmt.Sprintf("%d bytes %q", len(b), truncate(b, 600))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// The tests below pin down handshake behaviour the fuzz target's
// invariants tolerate (a silent close is allowed there) but a client
// should not see: each was a bug the fuzzing found.

const fuzzUpgradeHead = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

// TestHandshakeDeadlineRefusalIsSent: when the handler (or the lane it
// waits behind) has not decided by the handshake deadline, the router
// refuses with 503 "handshake timed out" and counts a 503 refusal, but the
// client gets no response at all: ask() times out at the very instant the
// socket's deadline (set to the same handshake deadline) expires, so the
// 503 is written to a socket past its write deadline and lost.
func TestHandshakeDeadlineRefusalIsSent(t *testing.T) {
	fs := startFuzzServer(t)
	in := fuzzUpgradeHead + "X-Fuzz-Slow: 1\r\n\r\n"
	resp, took, err := fs.exchange([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	refused := fs.srv.Stats().HandshakesRefused[http.StatusServiceUnavailable]
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 503 ")) || !bytes.Contains(resp, []byte("handshake timed out")) {
		t.Fatalf("a handler slower than the handshake timeout: got %q after %v, want 503 \"handshake timed out\" (the server counts %d such refusals)",
			resp, took, refused)
	}
}

// TestRouteRequestErrorsAreAnswered: requests for a route path that the
// upgrader gives up on before its header loop (a request line whose
// version does not parse, accepted by the router's own, laxer
// parseRequestLine) or while reading the head (over 20 KiB of headers the
// 16 KiB header budget does not count: Sec-WebSocket-Protocol,
// Sec-WebSocket-Extensions, Host) are closed without any response, while
// the server counts a 400 refusal for each.
func TestRouteRequestErrorsAreAnswered(t *testing.T) {
	fs := startFuzzServer(t)
	cases := []struct {
		name, in string
		want     int
	}{
		{"bad version", strings.Replace(fuzzUpgradeHead, "HTTP/1.1", "HTTP/1.x", 1) + "\r\n", http.StatusBadRequest},
		{"bad version digits", strings.Replace(fuzzUpgradeHead, "HTTP/1.1", "HTTP/11", 1) + "\r\n", http.StatusBadRequest},
		{"21 KiB of subprotocols", fuzzUpgradeHead +
			strings.Repeat("Sec-WebSocket-Protocol: "+strings.Repeat("p", 70)+"\r\n", 300) + "\r\n",
			http.StatusRequestHeaderFieldsTooLarge},
		{"21 KiB of extensions", fuzzUpgradeHead +
			strings.Repeat("Sec-WebSocket-Extensions: x-"+strings.Repeat("e", 70)+"\r\n", 300) + "\r\n",
			http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fs.srv.Stats().HandshakesRefused
			resp, _, err := fs.exchange([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			after := fs.srv.Stats().HandshakesRefused
			want := fmt.Sprintf("HTTP/1.1 %d ", tc.want)
			if !bytes.HasPrefix(resp, []byte(want)) {
				t.Errorf("got %q, want %q...; refusals counted meanwhile: %v -> %v", firstLine(resp), want, before, after)
			}
		})
	}
}

// TestRepeatedHeadersCostLinear: onHeader joins a repeated header onto its
// previous value with string concatenation, so n repetitions cost O(n^2)
// bytes; and empty values count nothing against the 16 KiB header budget.
// One 20 KiB request of 5,000 "A:" lines (6,500 with bare \n line ends)
// makes the server allocate 25-45 MB and spend tens of milliseconds of CPU
// before answering 101: an amplification of over 1,000x available to any
// client.
func TestRepeatedHeadersCostLinear(t *testing.T) {
	fs := startFuzzServer(t)
	in := []byte(fuzzUpgradeHead + strings.Repeat("A:\r\n", 5000) + "\r\n")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, took, err := fs.exchange(in)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d-byte request: %q after %v, %.1f MB allocated", len(in), firstLine(resp), took, float64(alloc)/1e6)
	if limit := uint64(40 * len(in)); alloc > limit {
		t.Fatalf("a %d-byte request head made the process allocate %d bytes (limit %d: linear in the head)", len(in), alloc, limit)
	}
}

package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
	"github.com/moonwire/moonwire/router/internal/origin"
	"github.com/moonwire/moonwire/router/wsconn"
)

// The handshake path. Each accepted socket gets a goroutine for its
// handshake only, under one absolute deadline (HandshakeTimeout), so a
// silent or byte-at-a-time client costs at most that long. The request line
// is peeked to pick a route; requests for no route go to net/http on the
// same socket, upgrades go through gobwas/ws's zero-copy Upgrader, whose
// callbacks capture headers without building an http.Request.

const (
	maxRequestLine  = 4096
	maxHeaderBytes  = 16 << 10
	maxHeaderLines  = 100
	connectionClose = "Connection: close\r\n"
)

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxRequestLine) }}

var errLineTooLong = errors.New("request line too long")

// serveConn runs one accepted socket's handshake, step by step: read the
// request line, then either hand the socket to plain HTTP or upgrade it
// and start the connection. The deferred calls release what every path
// holds (the handshake's registration and its place in wg); each step
// releases what it took itself.
//
// hs is the handshaker's state, filled in here (see newHandshakeState).
func (s *Server) serveConn(nc net.Conn, hs *handshake) {
	defer s.wg.Done()
	defer s.handshakeDone(nc)
	deadline := time.Now().Add(s.c().HandshakeTimeout)
	_ = nc.SetDeadline(deadline)

	br := readers.Get().(*bufio.Reader)
	br.Reset(nc)
	rl, reqPath, rawQuery, ok := readTarget(nc, br)
	if !ok {
		s.recycleReader(br)
		_ = nc.Close()
		return
	}
	rt, params := s.routes.Load().lookup(reqPath)
	if rt == nil || rl.method != http.MethodGet || plainRequest(rt, br) {
		s.handOffHTTP(nc, br)
		return
	}
	// Counted so that a route removed meanwhile waits for this upgrade.
	rt.pendingHandshakes.Add(1)
	defer rt.pendingHandshakes.Add(-1)

	s.startHandshake(hs, nc, br, rt, deadline, rl, reqPath, rawQuery, params)
	if err := hs.upgrade(); err != nil {
		s.upgradeFailed(hs, br, err)
		return
	}
	s.establish(hs, br)
}

// readTarget reads and checks the request line and splits its target into
// a normalised path and a raw query, so that a route can be picked before
// the rest of the request is read. On a bad line it answers the client
// (414 or 400; nothing when the socket failed or timed out) and reports
// false; the caller then recycles br and closes nc.
func readTarget(nc net.Conn, br *bufio.Reader) (rl requestLine, reqPath, rawQuery string, ok bool) {
	line, err := peekLine(br)
	if err != nil {
		if errors.Is(err, errLineTooLong) {
			writeStatus(nc, http.StatusRequestURITooLong, "request line too long")
		}
		return rl, "", "", false
	}
	rl, ok = parseRequestLine(line)
	if !ok {
		writeStatus(nc, http.StatusBadRequest, "malformed request line")
		return rl, "", "", false
	}
	reqPath, rawQuery = rl.target, ""
	if i := strings.IndexByte(rl.target, '?'); i >= 0 {
		reqPath, rawQuery = rl.target[:i], rl.target[i+1:]
	}
	reqPath, err = normalizePath(reqPath)
	if err != nil {
		writeStatus(nc, http.StatusBadRequest, err.Error())
		return rl, "", "", false
	}
	return rl, reqPath, rawQuery, true
}

// handOffHTTP gives a request that is not ours (no route, or not a GET) to
// net/http on the same socket: static files, 404, 405. The handshake's
// deadline is lifted because net/http sets deadlines of its own; the
// socket and br are its to release from here on.
func (s *Server) handOffHTTP(nc net.Conn, br *bufio.Reader) {
	nc = netConnOf(nc) // net/http waits on it
	_ = nc.SetDeadline(time.Time{})
	s.http.serve(nc, br)
}

// newHandshakeState makes the state a handshaker goroutine fills in for
// each socket it serves (startHandshake), with the Upgrader's callbacks
// bound to it once: a handshake that no handler saw leaves nothing
// behind, and the next one reuses the state (see reusable).
func newHandshakeState() *handshake {
	hs := new(handshake)
	hs.upgrader = ws.Upgrader{
		OnHost:          hs.onHost,
		OnHeader:        hs.onHeader,
		ProtocolCustom:  hs.onProtocol,
		OnBeforeUpgrade: hs.decide,
		Header:          ws.HandshakeHeaderFunc(hs.closeUnlessDecided),
	}
	hs.negotiate = hs.onNegotiate
	hs.req.Header = make(Header, 0, 16)
	return hs
}

// startHandshake fills hs, fresh from newHandshakeState or readied by
// reusable, with what the upgrade's callbacks fill in and check: the
// request as the handler will see it, and a headReader that records the
// head (into a pooled buffer, which upgrade returns) and stops at its end.
func (s *Server) startHandshake(hs *handshake, nc net.Conn, br *bufio.Reader, rt *Route, deadline time.Time,
	rl requestLine, reqPath, rawQuery string, params map[string]string) {
	hs.srv, hs.nc, hs.rt, hs.deadline = s, nc, rt, deadline
	hs.absolute, hs.scheme = rl.authority, rl.scheme
	hs.head = headReader{br: br, rec: bufpool.Get(headRecordSize)[:0]}
	hs.req.Path, hs.req.RawQuery, hs.req.Params = reqPath, rawQuery, params
	hs.req.RemoteAddr = remoteAddrString(nc)
	hs.ip = hostOf(hs.req.RemoteAddr)
}

// reusable reports whether hs may serve the next socket, and readies it:
// not when a request's many headers grew it past 32 (a browser sends a
// dozen or so; a waiting handshaker keeps what it holds). A handler that
// was asked holds a copy of the request (see ask), which shares its
// headers' array and which it may keep: then the headers get a new one.
func (hs *handshake) reusable() bool {
	if cap(hs.req.Header) > 64 {
		return false
	}
	var header Header
	if hs.asked {
		header = make(Header, 0, 16)
	} else {
		clear(hs.req.Header) // the strings go with the request
		header = hs.req.Header[:0]
	}
	u, neg := hs.upgrader, hs.negotiate
	*hs = handshake{upgrader: u, negotiate: neg}
	hs.req.Header = header
	return true
}

// upgrade runs gobwas/ws's Upgrader over the rest of the request, with
// hs's callbacks capturing headers, checking them and asking the handler
// (decide). It returns the head's record buffer to its pool whatever the
// outcome. A head too large is a read error, for which the Upgrader wrote
// nothing, so the 431 is answered (and counted) here.
func (hs *handshake) upgrade() error {
	s, nc := hs.srv, hs.nc
	u := hs.upgrader
	if s.static.Compression {
		u.Negotiate = hs.negotiate
	}
	_, err := u.Upgrade(readWriter{&hs.head, nc})
	bufpool.Put(hs.head.rec)
	hs.head.rec = nil
	if errors.Is(err, errHeadTooLarge) {
		// A read error: the Upgrader wrote nothing. Answer it here.
		s.stats.refusedWith(http.StatusRequestHeaderFieldsTooLarge)
		writeStatus(nc, http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
		hs.refused = http.StatusRequestHeaderFieldsTooLarge
	}
	return err
}

// upgradeFailed ends a handshake whose upgrade failed: it gives back what
// decide took (a connection slot, a per-IP place), counts the refusal
// unless reject already did or the client merely went away, and recycles
// br and closes the socket.
func (s *Server) upgradeFailed(hs *handshake, br *bufio.Reader, err error) {
	hs.release()
	status := http.StatusBadRequest
	var rej *ws.ConnectionRejectedError
	if errors.As(err, &rej) {
		status = rej.StatusCode()
	}
	switch {
	case hs.refused != 0:
		status = 0 // counted by reject
	case isNetErr(err):
		// The client went away or timed out: nothing was refused.
		status = 0
	}
	if status != 0 {
		s.stats.refusedWith(status)
	}
	s.recycleReader(br)
	_ = hs.nc.Close()
}

// establish turns an upgraded socket into a running connection: it
// leaves the handshakes in progress and their deadline is lifted
// (heartbeats and write timeouts take over), the Conn is built and
// counted, frames the client sent right behind its request are kept, and
// br goes back to its pool.
func (s *Server) establish(hs *handshake, br *bufio.Reader) {
	nc := hs.nc
	// Out of the handshakes first: a shutdown ends those by setting their
	// deadline, and one that came between lifting the deadline and
	// leaving the set left this established socket unable to write its
	// 1001 close frame (the client saw EOF; TestReadinessFailsFirst beside
	// two busy loops, about 1 run in 40).
	s.handshakeDone(nc)
	_ = nc.SetDeadline(time.Time{})
	c := s.newConn(nc, hs)
	if c == nil {
		// The connection table is full (millions of connections): the
		// 101 is out, so end it as a server in trouble would.
		hs.release()
		_ = nc.Close()
		return
	}
	s.stats.handshakesOK.Add(1)
	hs.rt.handshakes.Add(1)
	keepEarlyFrames(c, br)
	s.recycleReader(br)
	s.startConn(c)
}

// keepEarlyFrames moves what br holds past the request head (frames the
// client sent without waiting for the 101) into c's read buffer, since br
// goes back to its pool and the connection reads from its own buffer.
func keepEarlyFrames(c *Conn, br *bufio.Reader) {
	if n := br.Buffered(); n > 0 {
		// The client sent frames right behind its request; keep them.
		c.rbuf = bufpool.Get(max(n, readBufferSize))
		c.rbuf = c.rbuf[:cap(c.rbuf)]
		b, _ := br.Peek(n)
		c.w = copy(c.rbuf, b)
	}
}

func (s *Server) handshakeDone(nc net.Conn) {
	s.mu.Lock()
	delete(s.handshakes, nc)
	s.mu.Unlock()
}

func (s *Server) recycleReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// readWriter joins the request reader and the socket for the Upgrader.
type readWriter struct {
	*headReader
	net.Conn
}

func (rw readWriter) Read(p []byte) (int, error)  { return rw.headReader.Read(p) }
func (rw readWriter) Write(p []byte) (int, error) { return rw.Conn.Write(p) }

// headReader yields the request head (through the blank line) and then
// EOF. The Upgrader reads through a buffer of its own that it discards
// afterwards, so without this bound it would swallow frames a client sends
// right behind its request; with it, they stay in br for the connection.
// It also caps the head's size.
//
// It records the head too (in rec), for checkHead: the upgrader's parsing
// is lenient, and the whole head is checked before the upgrade is
// answered.
type headReader struct {
	br    *bufio.Reader
	state uint8 // progress through "\r\n\r\n" (a bare "\n\n" also ends a head)
	n     int
	done  bool
	rec   []byte // the head so far (a pooled buffer, grown past its size by append)
}

// headRecordSize is the recording buffer's first size: a browser's head
// fits.
const headRecordSize = 2048

var errHeadTooLarge = errors.New("request head too large")

func (h *headReader) Read(p []byte) (int, error) {
	if h.done {
		return 0, io.EOF
	}
	if h.br.Buffered() == 0 {
		if _, err := h.br.Peek(1); err != nil {
			return 0, err
		}
	}
	b, _ := h.br.Peek(min(h.br.Buffered(), len(p)))
	n := 0
	for n < len(b) && !h.done {
		c := b[n]
		n++
		switch {
		case c == '\r' && h.state == 2:
			h.state = 3
		case c == '\r':
			h.state = 1
		case c == '\n' && (h.state == 1 || h.state == 0):
			h.state = 2
		case c == '\n' && (h.state == 2 || h.state == 3):
			h.done = true
		default:
			h.state = 0
		}
	}
	copy(p, b[:n])
	h.rec = append(h.rec, b[:n]...)
	_, _ = h.br.Discard(n)
	h.n += n
	if h.n > maxRequestLine+maxHeaderBytes {
		return n, errHeadTooLarge
	}
	return n, nil
}

// handshake is the state of one upgrade in progress.
type handshake struct {
	srv         *Server
	nc          net.Conn
	rt          *Route
	deadline    time.Time
	absolute    string // the authority of an absolute-form target ("" for origin-form)
	scheme      string // and its scheme
	head        headReader
	req         Request
	ip          string
	headerBytes int
	headerLines int
	lane        *lane
	verdict     Verdict
	deflate     wsconn.Deflate
	refused     int // the HTTP status we refused with
	holdsSlot   bool
	holdsIP     bool
	asked       bool // the route's handler was handed req
	decided     bool // decide ran: its answer carries its own headers

	// Bound to this handshake once, by newHandshakeState.
	upgrader  ws.Upgrader
	negotiate func(httphead.Option) (httphead.Option, error)
}

func (hs *handshake) onHost(host []byte) error {
	if err := hs.countHeader([]byte("host"), host); err != nil {
		return err
	}
	hs.req.Host = string(host)
	hs.req.Header.add("host", hs.req.Host)
	return nil
}

// countHeader charges one header line against the request's budget: its
// bytes plus a line's overhead, and a cap on the number of lines, so that
// thousands of empty repeated headers cost as much as their size says.
func (hs *handshake) countHeader(k, v []byte) error {
	hs.headerBytes += len(k) + len(v) + 4
	hs.headerLines++
	if hs.headerBytes > maxHeaderBytes || hs.headerLines > maxHeaderLines {
		return hs.reject(http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	}
	return nil
}

func (hs *handshake) onHeader(k, v []byte) error {
	if err := hs.countHeader(k, v); err != nil {
		return err
	}
	name := strings.ToLower(string(k))
	if name == "origin" {
		if hs.req.Header.index(name) >= 0 {
			// One Origin per request (RFC 6454 §7); two could slip a
			// disallowed one past the check.
			return hs.reject(http.StatusBadRequest, "more than one Origin header")
		}
		hs.req.Origin = string(v)
	}
	hs.req.Header.add(name, string(v))
	return nil
}

// onNegotiate accepts the first permessage-deflate offer we can honour.
func (hs *handshake) onNegotiate(offer httphead.Option) (httphead.Option, error) {
	hs.headerLines++
	if hs.headerLines > maxHeaderLines {
		return httphead.Option{}, hs.reject(http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	}
	if hs.deflate.Enabled {
		return httphead.Option{}, nil // one is enough
	}
	resp, d, ok := wsconn.NegotiateDeflate(offer)
	if !ok {
		return httphead.Option{}, nil
	}
	hs.deflate = d
	return resp, nil
}

// onProtocol records the offered subprotocols and selects none: the
// handler chooses later, in decide, and the choice is written as a header.
func (hs *handshake) onProtocol(v []byte) (string, bool) {
	hs.headerBytes += len(v) + 26
	hs.headerLines++
	if hs.headerBytes > maxHeaderBytes || hs.headerLines > maxHeaderLines {
		// Past the budget: stop recording. The head's own size cap (see
		// headReader) then answers 431.
		return "", true
	}
	for _, p := range strings.Split(string(v), ",") {
		if p = strings.TrimSpace(p); p != "" {
			hs.req.Subprotocols = append(hs.req.Subprotocols, p)
		}
	}
	hs.req.Header.add("sec-websocket-protocol", string(v))
	return "", true
}

func (hs *handshake) reject(status int, body string) error {
	if hs.refused == 0 {
		// Counted before the answer is written, so a client that reads
		// its refusal finds it in the metrics already.
		hs.srv.stats.refusedWith(status)
	}
	hs.refused = status
	// The socket's deadline is the handshake's; a refusal decided at the
	// deadline (a slow handler) still deserves a moment to be written.
	_ = hs.nc.SetWriteDeadline(time.Now().Add(min(time.Second, hs.srv.c().WriteTimeout)))
	return ws.RejectConnectionError(
		ws.RejectionStatus(status),
		ws.RejectionReason(body),
		ws.RejectionHeader(ws.HandshakeHeaderString(connectionClose)),
	)
}

// closeUnlessDecided is a header gobwas/ws writes into every answer of
// the handshake. Into a refusal gobwas/ws makes itself (the request is no
// valid upgrade: a plain GET on a route without on_http, a missing key,
// an old version) it writes Connection: close, since the socket is closed
// right after: told nothing, an HTTP/1.1 client keeps the connection for
// its next request, which then fails (EOF, or a reset that loses the
// answer; a plain GET then a POST on one keep-alive connection, about 1
// in 20 beside two busy loops). decide's answers carry their own: none in
// a 101, Connection: close in a refusal (reject).
func (hs *handshake) closeUnlessDecided(w io.Writer) (int64, error) {
	if hs.decided {
		return 0, nil
	}
	n, err := io.WriteString(w, connectionClose)
	return int64(n), err
}

// decide runs after the request is read and valid: the server's own limits
// first, then the route's handler.
func (hs *handshake) decide() (ws.HandshakeHeader, error) {
	hs.decided = true
	s, rt := hs.srv, hs.rt
	if err := checkHead(hs.head.rec); err != nil {
		return nil, hs.reject(http.StatusBadRequest, err.Error())
	}
	if hs.absolute != "" && !sameAuthority(hs.absolute, hs.req.Host, hs.scheme) {
		return nil, hs.reject(http.StatusBadRequest, errOtherHost.Error())
	}
	if s.isClosing() {
		return nil, hs.reject(http.StatusServiceUnavailable, "server shutting down")
	}
	if rt.retired.Load() {
		// Removed while this request was read. If a new route replaced it,
		// the client may simply retry.
		if s.routes.Load().byPattern(rt.Pattern()) != nil {
			return nil, hs.reject(http.StatusServiceUnavailable, "route reloading; retry")
		}
		return nil, hs.reject(http.StatusNotFound, "route removed")
	}
	if !s.originAllowed(hs.req.Origin) {
		return nil, hs.reject(http.StatusForbidden, "origin not allowed")
	}
	if max := s.c().MaxConnections; max > 0 {
		if s.active.Add(1)+s.httpConns.Load() > int64(max) {
			s.active.Add(-1)
			return nil, hs.reject(http.StatusServiceUnavailable, "too many connections")
		}
	} else {
		s.active.Add(1)
	}
	hs.holdsSlot = true
	ok, counted := rt.acquireIP(hs.ip)
	if !ok {
		return nil, hs.reject(http.StatusTooManyRequests, "too many connections from this address")
	}
	hs.holdsIP = counted

	hs.lane = rt.lanes[int(rt.next.Add(1)-1)%len(rt.lanes)]
	v, err := hs.ask()
	if err != nil {
		return nil, err
	}
	if v.Reject {
		status := v.Status
		if status < 400 || status > 599 {
			status = http.StatusForbidden
		}
		body := v.Body
		if body == "" {
			body = http.StatusText(status)
		}
		return nil, hs.reject(status, body)
	}
	hs.verdict = v
	if v.Subprotocol != "" {
		offered := false
		for _, p := range hs.req.Subprotocols {
			offered = offered || p == v.Subprotocol
		}
		if !offered {
			s.log.Error("handshake: handler chose a subprotocol the client did not offer",
				"route", rt.Pattern(), "subprotocol", v.Subprotocol)
			return nil, hs.reject(http.StatusInternalServerError, "internal error")
		}
		return ws.HandshakeHeaderString("Sec-WebSocket-Protocol: " + v.Subprotocol + "\r\n"), nil
	}
	return nil, nil
}

// ask runs the handler's Handshake on the chosen lane and waits for it
// within the handshake deadline. The handler gets a copy of the request,
// which it may keep (a script's deferred verdict does): hs serves the
// next socket (see reusable).
func (hs *handshake) ask() (Verdict, error) {
	if sk, ok := hs.rt.Handler().(HandshakeSkipper); ok && sk.SkipHandshake() {
		return Verdict{}, nil
	}
	hs.asked = true
	req := new(Request)
	*req = hs.req
	var v Verdict
	if hs.lane.tryInline(func() { v = hs.lane.handshake(req) }) {
		if req.deferred {
			return hs.await(req.answer)
		}
		if time.Now().After(hs.deadline) {
			// Decided too late to be honoured: the answer is the same as
			// when waiting for a busy lane.
			return Verdict{}, hs.reject(http.StatusServiceUnavailable, "handshake timed out")
		}
		return v, nil
	}
	// The lane answers on done, now or (Request.Defer) later.
	ph := &pendingHandshake{req: req, done: make(chan Verdict, 1)}
	req.answer = ph.done
	if !hs.lane.push(task{kind: taskHandshake, hs: ph}) {
		return Verdict{}, hs.reject(http.StatusServiceUnavailable, "route stopped")
	}
	return hs.await(ph.done)
}

// await waits for the handler's verdict until the handshake deadline.
func (hs *handshake) await(done <-chan Verdict) (Verdict, error) {
	t := time.NewTimer(time.Until(hs.deadline))
	defer t.Stop()
	select {
	case v := <-done:
		return v, nil
	case <-t.C:
		return Verdict{}, hs.reject(http.StatusServiceUnavailable, "handshake timed out")
	}
}

// release gives back what decide reserved, for a refused upgrade.
func (hs *handshake) release() {
	if hs.holdsSlot {
		hs.srv.active.Add(-1)
		hs.srv.connGone()
	}
	if hs.holdsIP {
		hs.rt.releaseIP(hs.ip)
	}
}

// pendingHandshake carries a request to a lane and the verdict back.
type pendingHandshake struct {
	req  *Request
	done chan Verdict
}

func (ph *pendingHandshake) finish(v Verdict) { ph.done <- v }

// newConn builds the connection for a completed handshake, or returns nil
// when the connection table is full.
func (s *Server) newConn(nc net.Conn, hs *handshake) *Conn {
	rt := hs.rt
	spec := rt.spec.Load()
	tok, ok := s.table.reserve()
	if !ok {
		return nil
	}
	c := &Conn{
		srv:       s,
		route:     rt,
		lane:      hs.lane,
		params:    hs.req.Params,
		created:   s.nowNs(),
		ipCounted: hs.holdsIP,
	}
	c.setStrings(formatID(s.nodeID, tok), hs.req.RemoteAddr, hs.req.Path, hs.req.Header)
	if spec.RateLimit != nil {
		c.rate = &rateState{limit: *spec.RateLimit}
	}
	if len(hs.verdict.Attrs) > 0 || hs.req.RawQuery != "" || hs.verdict.Subprotocol != "" {
		c.ext = &connExtras{rawQuery: hs.req.RawQuery, subprotocol: hs.verdict.Subprotocol}
		if len(hs.verdict.Attrs) > 0 {
			c.ext.attrs = hs.verdict.Attrs
		}
	}
	c.parser.MaxMessage = spec.MaxMessageSize
	c.deflate = hs.deflate
	c.parser.Deflate = hs.deflate.Enabled
	c.queue.Limit = s.c().WriteQueue
	c.lastSeen.Store(c.created)
	c.lastPing.Store(c.created)
	var rc syscall.RawConn // nil: read by a goroutine
	owned := false
	if s.poller != nil {
		nc, owned = ownAccepted(c, nc)
		owned = owned || c.sock.Own(nc)
	}
	if owned {
		// A plain TCP socket leaves net (see poll.FD), or never entered
		// it (see acceptedConn): the poller reads it and the flushers
		// write it without waiting, so net's objects and netpoller
		// registration would be kept for nothing.
		rc = &c.sock
	} else {
		x := c.extras() // not shared yet: no lock
		x.nc = nc
		if sc, ok := nc.(syscall.Conn); ok && s.poller != nil {
			if r, err := sc.SyscallConn(); err == nil {
				rc = r
			}
		}
		if rc == nil {
			x.resume = make(chan struct{}, 1)
		}
	}
	c.desc.Init(rc, tok)
	s.table.publish(c)
	rt.conns.Add(1)
	return c
}

// startConn queues the Open event and starts reading.
func (s *Server) startConn(c *Conn) {
	c.lane.push(task{kind: taskOpen, c: c})
	if s.isClosing() {
		c.closeWith(CloseGoingAway, "going away", false, false)
	} else if c.route.retired.Load() {
		c.closeWith(CloseGoingAway, "route removed", false, false)
	}
	if c.rc() == nil {
		s.wg.Add(1)
		go func() {
			if c.w > 0 {
				// Parse what arrived with the handshake before blocking.
				c.pending.Store(1)
				_ = c.consume(0, nil) // false: the turn comes back on resume
				<-c.ext.resume
			}
			c.readLoop()
		}()
		return
	}
	// Parse anything that arrived with the handshake, then register with
	// the poller, which reports what came meanwhile.
	c.pending.Store(1)
	if c.consume(0, nil) {
		s.ready <- c // cannot happen: the first release registers
	}
}

// peekLine returns the request line without consuming it.
func peekLine(br *bufio.Reader) ([]byte, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return bytes.TrimRight(b[:i], "\r"), nil
		}
		if br.Buffered() >= br.Size() {
			return nil, errLineTooLong
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

// requestLine is a parsed request line.
type requestLine struct {
	method, target string // target: path and query, whatever the form
	// authority and scheme of an absolute-form target
	// ("http://host/path"), "" for the usual origin-form ("/path").
	authority, scheme string
}

// parseRequestLine splits "GET /path?q HTTP/1.1". Absolute-form targets
// ("http://host/path") are reduced to their path, keeping the authority
// for the check against the Host header. A target holds no control
// characters, spaces or fragment (RFC 9112 §3.2).
func parseRequestLine(line []byte) (rl requestLine, ok bool) {
	m, rest, ok1 := bytes.Cut(line, []byte(" "))
	t, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(m) == 0 || len(t) == 0 || !validProto(proto) {
		return rl, false
	}
	for _, c := range t {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return rl, false
		}
	}
	rl.method, rl.target = string(m), string(t)
	if t[0] != '/' {
		u, err := url.ParseRequestURI(rl.target)
		if err != nil || u.Host == "" {
			return rl, false
		}
		rl.authority, rl.scheme = u.Host, strings.ToLower(u.Scheme)
		rl.target = u.EscapedPath()
		if rl.target == "" {
			rl.target = "/" // "http://host" asks for the root
		}
		if u.RawQuery != "" {
			rl.target += "?" + u.RawQuery
		}
	}
	return rl, true
}

// validProto accepts "HTTP/<digit>.<digit>" (RFC 9112 §2.3).
func validProto(p []byte) bool {
	return len(p) == 8 && string(p[:5]) == "HTTP/" && p[5] >= '0' && p[5] <= '9' && p[6] == '.' && p[7] >= '0' && p[7] <= '9'
}

// writeStatus answers a request we cannot even parse.
func writeStatus(nc net.Conn, status int, body string) {
	_, _ = nc.Write([]byte("HTTP/1.1 " + itoa(status) + " " + http.StatusText(status) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" + connectionClose +
		"Content-Length: " + itoa(len(body)) + "\r\n\r\n" + body))
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// originPattern is one allowed_origins entry.
type originPattern = origin.Pattern

// parseOrigin parses an allowed_origins entry; router/config has already
// refused and normalised a config's entries with the same parser.
func parseOrigin(s string) (originPattern, error) { return origin.Parse(s) }

// originAllowed applies AllowedOrigins. A request without Origin comes from
// a non-browser client, which the Origin check (a browser CSRF defence)
// does not concern.
func (s *Server) originAllowed(o string) bool {
	origins := s.c().origins
	if len(origins) == 0 || o == "" {
		return true
	}
	return origin.Match(origins, o)
}

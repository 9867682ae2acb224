package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpHandoff serves the requests that are not WebSocket upgrades to a
// route (static pages, health probes, 404s) with net/http, on sockets the
// router already accepted and peeked at.
//
// Plain HTTP is bounded like the rest: each request must arrive whole,
// body included, within HandshakeTimeout (else 408), its body is at most
// MaxRequestBody (else 413), and every plain-HTTP connection counts
// against MaxConnections. Without this, a request whose body trickled in
// held its socket forever, uncounted, and twenty thousand of them ran the
// process out of descriptors. HandshakeTimeout is read afresh for every
// request (see bufferedConn.SetReadDeadline), so a reconfiguration applies
// from the next request, keep-alive connections included.
type httpHandoff struct {
	s    *Server
	once sync.Once
	ln   *chanListener
	srv  *http.Server
}

// Plain-HTTP timing: a response may take httpWriteTimeout to write (a
// static file to a slow client), and a keep-alive connection may wait
// httpIdleTimeout for its next request.
const (
	httpWriteTimeout = 30 * time.Second
	httpIdleTimeout  = 30 * time.Second
)

// httpRequestMark is the ReadTimeout net/http is given: not a timeout but
// a mark. net/http reads its ReadTimeout field on every request, but the
// field cannot change while it serves (a data race), and HandshakeTimeout
// can (Reconfigure). So net/http computes its request deadlines as
// start+httpRequestMark, a time no other deadline comes near, and
// bufferedConn.SetReadDeadline recognises them and puts start plus the
// current HandshakeTimeout in their place. net/http keeps deciding when a
// request starts (its head, then the whole request) and when reading is
// unbounded (between requests it sets httpIdleTimeout; while a handler
// runs, no deadline at all).
const httpRequestMark = 100 * 365 * 24 * time.Hour

type connKey struct{}

func newHTTPHandoff(s *Server) *httpHandoff {
	h := &httpHandoff{s: s, ln: &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}}
	h.srv = &http.Server{
		Handler: http.HandlerFunc(h.serveHTTP),
		// The whole request, body included: net/http sets it afresh for
		// every request on a connection, and bufferedConn replaces it with
		// the current HandshakeTimeout (see httpRequestMark).
		ReadTimeout:    httpRequestMark,
		WriteTimeout:   httpWriteTimeout,
		IdleTimeout:    httpIdleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	return h
}

// serve hands a socket whose request line sits unread in br to net/http.
// It refuses the socket with 503 when the server is at MaxConnections.
func (h *httpHandoff) serve(nc net.Conn, br *bufio.Reader) {
	s := h.s
	// Counted first, checked after, as decide does for upgrades: checking
	// first let concurrent handshakes all see the last free place and all
	// take it.
	n := s.httpConns.Add(1)
	if max := s.c().MaxConnections; max > 0 && s.active.Load()+n > int64(max) {
		s.httpConns.Add(-1)
		writeStatus(nc, http.StatusServiceUnavailable, "too many connections")
		s.recycleReader(br)
		_ = nc.Close()
		return
	}
	if hk := s.hooks; hk != nil && hk.httpAdmitted != nil {
		hk.httpAdmitted()
	}
	h.once.Do(func() {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			_ = h.srv.Serve(h.ln)
		}()
	})
	bc := &bufferedConn{Conn: nc, r: br, s: s}
	select {
	case h.ln.ch <- bc:
	case <-h.ln.done:
		_ = bc.Close()
	}
}

func (h *httpHandoff) close() {
	h.ln.close()
	_ = h.srv.Close()
}

// maxRequestBody is the default for Config.MaxRequestBody.
const maxRequestBody = 64 << 10

func (h *httpHandoff) serveHTTP(w http.ResponseWriter, r *http.Request) {
	bc, _ := r.Context().Value(connKey{}).(*bufferedConn)
	if bc != nil {
		bc.inHandler.Store(true)
		defer func() { bc.handled(w.Header()) }()
	}
	reqPath, err := normalizePath(r.URL.EscapedPath())
	if err != nil {
		w.Header().Set("Connection", "close")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if rt, params := h.s.routes.Load().lookup(reqPath); rt != nil {
		// A route path requested without an upgrade (or not with GET):
		// the route's handler answers if it serves plain HTTP (a script's
		// on_http), else 426.
		// An upgrade asked for on a kept-alive plain connection cannot be
		// given (net/http owns it): 426 tells the client to ask anew.
		if hh, ok := rt.Handler().(HTTPHandler); ok && hh.ServesHTTP() && r.Header.Get("Upgrade") == "" {
			h.serveRoute(w, r, rt, reqPath, params)
			return
		}
		noUpgrade(w, r)
		return
	}
	if hh := h.s.c().HTTP; hh != nil {
		if h.readBody(w, r) {
			hh.ServeHTTP(w, r)
		}
		return
	}
	skipBody(w, r)
	http.NotFound(w, r)
}

// skipBody makes an answer that needs no request body end the connection
// when the request announced one, rather than keep it for a next request
// behind a body nobody wants. net/http still reads and discards up to 256
// KiB of it after the handler (whatever the answer, unless the request
// itself said Connection: close), until the request's deadline at the
// latest; bufferedConn then keeps quiet (see
// bufferedConn.closing).
func skipBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// readBody reads the request body whole, within the request's deadline
// and MaxRequestBody, and gives the handler a copy to read: the handler
// never waits on a slow client. It answers 413 or 408 itself, closing the
// connection, and reports false then.
func (h *httpHandoff) readBody(w http.ResponseWriter, r *http.Request) bool {
	body, ok := h.readBodyBytes(w, r)
	if ok && body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return ok
}

// readBodyBytes is readBody's reading: it returns the body, nil when the
// request has none.
func (h *httpHandoff) readBodyBytes(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	limit := h.s.c().MaxRequestBody
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	var ne net.Error
	switch {
	case int64(len(body)) > limit:
		w.Header().Set("Connection", "close")
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return nil, false
	case errors.As(err, &ne) && ne.Timeout():
		w.Header().Set("Connection", "close")
		http.Error(w, "request timeout: the request did not arrive in time", http.StatusRequestTimeout)
		return nil, false
	case err != nil:
		w.Header().Set("Connection", "close")
		http.Error(w, "bad request body", http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// chanListener is a net.Listener fed by the router's accept loop.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) close() { l.once.Do(func() { close(l.done) }) }

func (l *chanListener) Close() error { l.close(); return nil }

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// bufferedConn replays the peeked request before reading the socket. It
// counts as a connection until net/http closes it, and it answers 408 when
// a request's head does not arrive in time: net/http drops such a
// connection without a word, and the client deserves to know.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
	s *Server

	// Bytes read since the last response, and whether a handler is
	// running: a read that times out with a partial request and no
	// handler to answer it gets the 408 here.
	partial   atomic.Bool
	inHandler atomic.Bool
	// closing: an answer ending the connection (Connection: close) is
	// out. Whatever is read after it is net/http discarding the rest of
	// that request's body, not a new request: a timeout then must not put
	// a second, unrequested 408 behind the answer.
	closing   atomic.Bool
	closeOnce sync.Once
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.partial.Store(true)
	}
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && c.partial.Load() && !c.inHandler.Load() && !c.closing.Load() {
		c.partial.Store(false)
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		writeStatus(c.Conn, http.StatusRequestTimeout, "request timeout: the request did not arrive in time")
	}
	return n, err
}

// SetReadDeadline passes net/http's deadlines on, except its request
// deadlines (start+httpRequestMark), which become start plus the current
// HandshakeTimeout: the timeout a reconfiguration set applies from the
// next request on, not only on connections accepted after it.
func (c *bufferedConn) SetReadDeadline(t time.Time) error {
	if time.Until(t) > httpRequestMark/2 {
		t = t.Add(c.s.c().HandshakeTimeout - httpRequestMark)
	}
	return c.Conn.SetReadDeadline(t)
}

// handled ends a handler's turn: the next bytes read start a new request,
// unless the answer (its header h) ends the connection.
func (c *bufferedConn) handled(h http.Header) {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "close") {
				c.closing.Store(true)
			}
		}
	}
	c.partial.Store(false)
	c.inHandler.Store(false)
}

func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		c.s.httpConns.Add(-1)
		c.s.connGone()
	})
	return c.Conn.Close()
}

package router

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpHandoff serves the requests that are not WebSocket upgrades to a
// route (static pages, health probes, 404s) with net/http, on sockets the
// router already accepted and peeked at.
type httpHandoff struct {
	s    *Server
	once sync.Once
	ln   *chanListener
	srv  *http.Server
}

func newHTTPHandoff(s *Server) *httpHandoff {
	h := &httpHandoff{s: s, ln: &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}}
	h.srv = &http.Server{
		Handler:           http.HandlerFunc(h.serveHTTP),
		ReadHeaderTimeout: s.c().HandshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return h
}

// serve hands a socket whose request line sits unread in br to net/http.
func (h *httpHandoff) serve(nc net.Conn, br *bufio.Reader) {
	h.once.Do(func() {
		h.s.bg.Add(1)
		go func() {
			defer h.s.bg.Done()
			_ = h.srv.Serve(h.ln)
		}()
	})
	select {
	case h.ln.ch <- &bufferedConn{Conn: nc, r: br}:
	case <-h.ln.done:
		_ = nc.Close()
	}
}

func (h *httpHandoff) close() {
	h.ln.close()
	_ = h.srv.Close()
}

func (h *httpHandoff) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if rt, _ := h.s.routes.Load().lookup(r.URL.Path); rt != nil {
		// A route path requested without an upgrade (or not with GET).
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		if r.Method != http.MethodGet {
			http.Error(w, "WebSocket upgrades use GET", http.StatusMethodNotAllowed)
			return
		}
		http.Error(w, "this path serves WebSocket connections: upgrade required", http.StatusUpgradeRequired)
		return
	}
	if h.s.c().HTTP != nil {
		h.s.c().HTTP.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
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

// bufferedConn replays the peeked request before reading the socket.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

package router

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTPHandler is implemented by handlers that answer plain (non-upgrade)
// HTTP requests on their route's path, such as a script with on_http.
// Without it, or while ServesHTTP reports false, such a request gets 426
// Upgrade Required (405 for a method other than GET), as before.
//
// The router reads and bounds the request (its head within
// Config.HandshakeTimeout and maxHeaderBytes, its body within
// Config.MaxRequestBody, else 408 or 413) on net/http's goroutine, then
// runs HTTP on one of the route's lanes, round-robin, and has that
// goroutine wait for done: the handler's per-lane state (a Lua VM) is only
// ever touched by its lane.
type HTTPHandler interface {
	// ServesHTTP reports whether the handler answers plain requests. It is
	// called on net/http's goroutines, concurrently with the lanes: it
	// must be cheap and safe for concurrent use.
	ServesHTTP() bool
	// HTTP answers req on lane. It must call done exactly once: before it
	// returns, or later from the same lane (a callback suspended while it
	// waits on the network and resumed on a later turn). done may be
	// called after the router stopped waiting (the client left, the lane
	// stopped); it then does nothing. The handler owns req.
	HTTP(lane int, req *HTTPRequest, done func(HTTPResponse))
}

// HTTPRequest is a plain HTTP request on a route's path, read whole.
type HTTPRequest struct {
	// Request holds the path, its parameters, the query, the headers
	// (names lower-case, repeated headers joined with ", "), the host,
	// the origin and the remote address, as an upgrade request has them.
	Request
	// Method is the request method ("GET", "POST", ...).
	Method string
	// Body is the whole request body, at most Config.MaxRequestBody.
	Body []byte
	// MaxResponse bounds the response body: the route's MaxMessageSize. A
	// handler that builds its body (JSON) can stop when it passes it; the
	// router answers 500 for a response past it whatever the handler did.
	MaxResponse int64
}

// HTTPResponse is a handler's answer to an HTTPRequest.
type HTTPResponse struct {
	// Status is the status code, 200-599; 0 means 200. 1xx codes are
	// interim responses in HTTP, not answers, and are refused.
	Status int
	// Header holds the response headers. Names must be HTTP tokens,
	// values free of CR, LF and NUL, and the headers that frame the
	// message (Content-Length, Transfer-Encoding, Connection, ...) are the
	// router's own; at most maxHeaderLines fields, maxHeaderBytes in all.
	Header http.Header
	// Body is sent as it is, at most HTTPRequest.MaxResponse bytes (none
	// with 204 or 304, nor to HEAD). Without a Content-Type header, none
	// is sent: net/http does not guess one from the content (a script's
	// text is never served as text/html because it looks like it).
	Body []byte
}

// ValidateHTTPResponse reports what is wrong with resp as an answer to a
// request bounded by maxBody, or nil. The router refuses (500) whatever it
// rejects; a handler calls it to report a script's mistake in the script's
// terms before handing the answer over.
func ValidateHTTPResponse(resp *HTTPResponse, maxBody int64) error {
	if resp.Status != 0 && (resp.Status < 200 || resp.Status > 599) {
		return httpResponseError("bad status " + strconv.Itoa(resp.Status) + " (want 200-599)")
	}
	if maxBody > 0 && int64(len(resp.Body)) > maxBody {
		return httpResponseError("body of " + strconv.Itoa(len(resp.Body)) + " bytes is over the limit of " + strconv.FormatInt(maxBody, 10))
	}
	lines, size := 0, 0
	for name, values := range resp.Header {
		if !validHeaderName(name) {
			return httpResponseError("bad header name " + strconv.Quote(name))
		}
		if reservedHeader(name) {
			return httpResponseError("header " + strconv.Quote(name) + " is set by the server")
		}
		for _, v := range values {
			if strings.ContainsAny(v, "\r\n\x00") {
				return httpResponseError("header " + strconv.Quote(name) + " has a CR, LF or NUL in its value")
			}
			lines++
			size += len(name) + len(v) + 4 // ": " and CRLF
		}
	}
	if lines > maxHeaderLines || size > maxHeaderBytes {
		return httpResponseError("headers over the limit of " + strconv.Itoa(maxHeaderLines) + " fields and " + strconv.Itoa(maxHeaderBytes) + " bytes")
	}
	return nil
}

type httpResponseError string

func (e httpResponseError) Error() string { return string(e) }

// validHeaderName reports whether name is an HTTP token (RFC 9110 §5.6.2).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// reservedHeader reports whether a header frames the message or the
// connection: net/http writes those from the body it is given, and one
// from a handler would contradict it (a Content-Length that is not the
// body's length desynchronises a kept-alive connection).
func reservedHeader(name string) bool {
	switch strings.ToLower(name) {
	case "content-length", "transfer-encoding", "connection", "keep-alive",
		"proxy-connection", "upgrade", "te", "trailer":
		return true
	}
	return false
}

// plainRequest reports whether a GET on route rt's path goes to plain HTTP
// rather than the upgrade: the route serves plain HTTP (an HTTPHandler
// whose ServesHTTP holds) and the request's head has no WebSocket header.
// It only peeks at the head in br (reading more of it from the socket if
// need be, within the handshake's deadline); whichever way it goes, the
// request is read from br whole.
//
// br holds maxRequestLine bytes. A head longer than that is judged by its
// first maxRequestLine bytes: browsers send their WebSocket headers (or,
// Firefox, Sec-WebSocket-Version and Connection: Upgrade) before their
// cookies, so an upgrade whose first 4 KiB say nothing of WebSocket is
// not a client anyone runs. A read error leaves the request to the
// upgrade, which reports it as it always has.
func plainRequest(rt *Route, br *bufio.Reader) bool {
	hh, ok := rt.Handler().(HTTPHandler)
	if !ok || !hh.ServesHTTP() {
		return false
	}
	n := br.Buffered()
	for {
		b, _ := br.Peek(n)
		upgrade, complete := scanUpgrade(b)
		if upgrade {
			return false
		}
		if complete || n >= br.Size() {
			return true
		}
		if _, err := br.Peek(n + 1); err != nil {
			return false
		}
		n = br.Buffered()
	}
}

// scanUpgrade looks at the complete header lines of a request head's
// beginning, b: whether one is Upgrade or Sec-WebSocket-*, or Connection
// with an upgrade token, and whether the head ends within b.
func scanUpgrade(b []byte) (upgrade, complete bool) {
	first := true
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false, false
		}
		line := bytes.TrimSuffix(b[:i], []byte("\r"))
		b = b[i+1:]
		if first {
			first = false // the request line
			continue
		}
		if len(line) == 0 {
			return false, true
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		name = bytes.TrimSpace(name)
		switch {
		case bytes.EqualFold(name, []byte("upgrade")),
			len(name) >= 14 && bytes.EqualFold(name[:14], []byte("sec-websocket-")):
			return true, false
		case bytes.EqualFold(name, []byte("connection")):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				if bytes.EqualFold(bytes.TrimSpace(tok), []byte("upgrade")) {
					return true, false
				}
			}
		}
	}
}

// httpHandlerWait bounds how long net/http's goroutine waits for a
// handler's answer: the time net/http gives a response to be written
// (httpWriteTimeout, counted from the end of the request), past which an
// answer could not reach the client anyway. The handler timeout stops a
// script long before; this catches an answer that never comes (a
// suspended callback whose lane was stopped under it).
const httpHandlerWait = httpWriteTimeout

// serveRoute answers a plain request on route rt's path through the
// route's HTTPHandler: it reads the body, runs the handler on a lane
// (round-robin) and writes its answer.
func (h *httpHandoff) serveRoute(w http.ResponseWriter, r *http.Request, rt *Route, reqPath string, params map[string]string) {
	body, ok := h.readBodyBytes(w, r)
	if !ok {
		return
	}
	spec := rt.spec.Load()
	req := &HTTPRequest{
		Request: Request{
			Path:       reqPath,
			RawQuery:   r.URL.RawQuery,
			Params:     params,
			Header:     flatHeader(r.Header, r.Host),
			Host:       r.Host,
			Origin:     r.Header.Get("Origin"),
			RemoteAddr: r.RemoteAddr,
		},
		Method:      r.Method,
		Body:        body,
		MaxResponse: spec.MaxMessageSize,
	}
	// Round-robin, like connections: one client's requests are
	// independent of each other, and a busy client spreads over the lanes.
	i := int(rt.next.Add(1)-1) % len(rt.lanes)
	l := rt.lanes[i]
	// Buffered: whoever answers never blocks, even after this goroutine
	// stopped waiting.
	answer := make(chan *HTTPResponse, 1)
	var once sync.Once
	done := func(resp HTTPResponse) { once.Do(func() { answer <- &resp }) }
	posted := rt.Post(i, func() {
		defer func() {
			if p := recover(); p != nil {
				l.logPanic(p, nil)
				done(HTTPResponse{Status: http.StatusInternalServerError})
			}
		}()
		if r.Context().Err() != nil {
			// The client left while the request waited its turn: a
			// flood of abandoned requests costs no handler time.
			done(HTTPResponse{Status: http.StatusServiceUnavailable})
			return
		}
		// The lane's own handler, not rt.Handler(): a reload switches each
		// lane with a task, and only the handler the lane runs may touch
		// the lane's state.
		lh, ok := l.h.(HTTPHandler)
		if !ok || !lh.ServesHTTP() {
			// A reload took the HTTP side away since the request was
			// routed: answer as a route without one.
			once.Do(func() { answer <- nil })
			return
		}
		lh.HTTP(i, req, done)
	})
	if !posted {
		http.Error(w, "route stopped", http.StatusServiceUnavailable)
		return
	}
	timer := time.NewTimer(httpHandlerWait)
	defer timer.Stop()
	var resp *HTTPResponse
	select {
	case resp = <-answer:
	case <-l.done:
		// The lane exited with the answer owed (a suspended callback that
		// will never resume). A late done finds the channel buffered.
		select {
		case resp = <-answer:
		default:
			http.Error(w, "route stopped", http.StatusServiceUnavailable)
			return
		}
	case <-r.Context().Done():
		return // the client is gone: nobody to answer
	case <-timer.C:
		h.s.log.Error("plain HTTP handler gave no answer in time", "route", rt.Pattern(), "lane", i, "wait", httpHandlerWait)
		http.Error(w, "no answer in time", http.StatusServiceUnavailable)
		return
	}
	if resp == nil {
		noUpgrade(w, r)
		return
	}
	h.writeRouteResponse(w, rt, resp, spec.MaxMessageSize)
}

// writeRouteResponse writes a handler's answer, or 500 for one it should
// not have given.
func (h *httpHandoff) writeRouteResponse(w http.ResponseWriter, rt *Route, resp *HTTPResponse, maxBody int64) {
	if err := ValidateHTTPResponse(resp, maxBody); err != nil {
		h.s.log.Error("bad plain HTTP response", "route", rt.Pattern(), "error", err.Error())
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	for name, values := range resp.Header {
		hdr[http.CanonicalHeaderKey(name)] = values
	}
	if _, ok := hdr["Content-Type"]; !ok {
		// nil suppresses net/http's sniffing: a script's text must not be
		// served as text/html because it looks like it.
		hdr["Content-Type"] = nil
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status == http.StatusNoContent || status == http.StatusNotModified {
		// These answers have no body, and no Content-Length to say so.
		w.WriteHeader(status)
		return
	}
	hdr.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(status)
	if _, err := w.Write(resp.Body); err != nil {
		h.s.log.Debug("plain HTTP response not written", "route", rt.Pattern(), "error", err.Error())
	}
}

// noUpgrade answers a plain request on a route path that serves only
// WebSocket connections: 426, or 405 for a method other than GET (an
// upgrade uses GET).
func noUpgrade(w http.ResponseWriter, r *http.Request) {
	skipBody(w, r)
	w.Header().Set("Upgrade", "websocket")
	w.Header().Set("Sec-WebSocket-Version", "13")
	if r.Method != http.MethodGet {
		http.Error(w, "WebSocket upgrades use GET", http.StatusMethodNotAllowed)
		return
	}
	http.Error(w, "this path serves WebSocket connections: upgrade required", http.StatusUpgradeRequired)
}

// flatHeader turns net/http's header map into a Header: names lower-case,
// repeated headers joined with ", ", and host (which net/http keeps
// apart) included, as an upgrade request's are.
func flatHeader(h http.Header, host string) Header {
	out := make(Header, 0, 2*len(h)+2)
	out = append(out, "host", host)
	for name, values := range h {
		out = append(out, strings.ToLower(name), strings.Join(values, ", "))
	}
	return out
}

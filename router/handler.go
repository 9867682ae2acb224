package router

import (
	"net/url"
	"strings"

	"github.com/moonwire/moonwire/router/wsconn"
)

// Kind is the type of a data message: Text or Binary.
type Kind = wsconn.Kind

// Message kinds.
const (
	Text   = wsconn.Text
	Binary = wsconn.Binary
)

// Close codes the router sends (RFC 6455 §7.4.1).
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseNoStatus      = 1005 // reported, never sent: the peer's close frame had no code
	CloseAbnormal      = 1006 // reported, never sent: the TCP connection ended without a close frame
	CloseInvalidData   = 1007
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseInternalError = 1011
)

// Handler is what a route does with its connections. The router owns
// sockets, framing, queues and timing; the handler only decides.
//
// Every route has a fixed number of lanes: serial executors, one goroutine
// each. A connection is pinned to one lane for its life, and all of its
// events run on that lane in order, one at a time: Open, then each Message,
// then Close exactly once. Different lanes run in parallel. A handler may
// therefore keep per-lane state (a Lua VM) without locks.
//
// Handler methods other than Start and Stop run on lanes and must return in
// bounded time: while a Message call runs, the router reads nothing more from
// that connection. A handler that must wait (on the network) returns instead
// and finishes later in a task it posts to the lane: Conn.Hold keeps the
// connection's later events waiting meanwhile, Request.Defer the verdict.
type Handler interface {
	// Start is called once before the route serves, with the route's
	// runtime. The handler may Post work to lanes from then on.
	Start(rt *Route) error
	// Handshake decides on an upgrade request. It runs on lane before the
	// connection exists; the connection, if accepted, is pinned to the same
	// lane. It may answer later instead (Request.Defer). req is the
	// handler's to keep; the router reads nothing back from it but the
	// deferral: the connection keeps the request as it arrived, and what
	// the handler wants it to carry goes in the Verdict (Attrs).
	Handshake(lane int, req *Request) Verdict
	// Open is the first event of an accepted connection.
	Open(lane int, c *Conn)
	// Message delivers one complete data message. data is valid only until
	// Message returns.
	Message(lane int, c *Conn, kind Kind, data []byte)
	// Close is the last event of a connection, delivered exactly once for
	// every opened connection. code is the close status: the peer's, the one
	// the router or handler closed with, or CloseAbnormal (1006) when the
	// connection ended without a close frame.
	Close(lane int, c *Conn, code int, reason string)
	// Stop is called once after the route's last event; the handler
	// releases what Start acquired. Lanes are still running.
	Stop()
}

// HandshakeSkipper is implemented by handlers that can tell, per request,
// that they have no handshake logic; the router then accepts without the
// round trip to a lane.
type HandshakeSkipper interface {
	SkipHandshake() bool
}

// CloseSkipper is implemented by handlers that can tell they do nothing
// on Close; the router then ends a connection without a trip to its lane
// when the lane is idle.
type CloseSkipper interface {
	SkipClose() bool
}

// Resumer is implemented by handlers that want to hear of the open
// connections they take over from a handler a reconfiguration replaced
// (a script's new version re-arming its per-connection timers). Resume
// runs on each such connection's lane, after the switch to the new
// handler and before its next event.
type Resumer interface {
	Resume(lane int, c *Conn)
}

// Request is an upgrade request as a handler sees it.
type Request struct {
	Path         string
	RawQuery     string
	Params       map[string]string
	Header       Header
	Host         string
	Origin       string
	RemoteAddr   string
	Subprotocols []string

	query url.Values
	// deferred is set by Defer: the verdict comes later, on answer.
	deferred bool
	answer   chan Verdict
}

// Defer lets Handshake decide later (a script asking a backend): it
// returns the function that delivers the verdict, and the Verdict
// Handshake returns is then ignored. The function may be called from
// any goroutine; calls after the first are ignored. The router waits for
// the verdict until the handshake timeout and refuses the upgrade with
// 503 after it, so a verdict that comes too late is dropped. Only
// Handshake may call Defer, while it runs.
func (r *Request) Defer() func(Verdict) {
	r.deferred = true
	if r.answer == nil {
		r.answer = make(chan Verdict, 1)
	}
	ch := r.answer
	return func(v Verdict) {
		select {
		case ch <- v:
		default: // answered already
		}
	}
}

// Header holds request headers as name, value pairs, names lower-case and
// repeated headers joined with ", ". A connection keeps its request's
// headers for its life, so they are kept flat rather than in a map: a
// handful of strings instead of a hash table per connection.
type Header []string

// Get returns the value of a header by lower-case name, or "".
func (h Header) Get(name string) string {
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == name {
			return h[i+1]
		}
	}
	return ""
}

// index returns the position of name's value, or -1.
func (h Header) index(name string) int {
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == name {
			return i + 1
		}
	}
	return -1
}

// packedHeader is a Header as a connection keeps it for its life: one
// string of "name:value\n" lines. A browser's request has a dozen
// headers; as a Header that is two strings each plus the slice, each
// rounded up to its size class (about 600 bytes per connection for
// Chrome's), packed it is their length, at the end of the one string a
// connection keeps its id, address and path in (Conn.strs). A line break
// cannot occur in a name or a value (the request was split into lines
// before its headers were), nor a colon in a name.
type packedHeader string

// packedLen is the length of h packed.
func (h Header) packedLen() int {
	n := 0
	for _, s := range h {
		n += len(s) + 1
	}
	return n
}

// writePacked writes h packed to b.
func (h Header) writePacked(b *strings.Builder) {
	for i := 0; i+1 < len(h); i += 2 {
		b.WriteString(h[i])
		b.WriteByte(':')
		b.WriteString(h[i+1])
		b.WriteByte('\n')
	}
}

// Get returns the value of a header by lower-case name, or "".
func (p packedHeader) Get(name string) string {
	for rest := string(p); ; {
		colon := strings.IndexByte(rest, ':')
		if colon < 0 {
			return ""
		}
		nl := strings.IndexByte(rest[colon:], '\n')
		if nl < 0 {
			return "" // cannot happen: pack ends every line
		}
		end := colon + nl
		if rest[:colon] == name {
			return rest[colon+1 : end]
		}
		rest = rest[end+1:]
	}
}

// add appends a value, joining it to an earlier one of the same name.
func (h *Header) add(name, value string) {
	if i := h.index(name); i >= 0 {
		(*h)[i] += ", " + value
		return
	}
	*h = append(*h, name, value)
}

// Query returns the parsed query string (parsed once, on first use).
func (r *Request) Query() url.Values {
	if r.query == nil {
		r.query, _ = url.ParseQuery(r.RawQuery)
	}
	return r.query
}

// Verdict is a handler's answer to a Request.
type Verdict struct {
	// Reject refuses the upgrade with Status (default 403) and Body as the
	// plain-text response body.
	Reject bool
	Status int
	Body   string
	// Subprotocol, when set, must be one the client offered; it is echoed
	// in Sec-WebSocket-Protocol.
	Subprotocol string
	// Attrs are set on the connection before Open.
	Attrs map[string]any
}

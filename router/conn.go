package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/internal/bufpool"
	"github.com/moonwire/moonwire/router/internal/uring"
	"github.com/moonwire/moonwire/router/poll"
	"github.com/moonwire/moonwire/router/wsconn"
)

// Errors returned by Conn.Send and friends. Their texts are what scripts
// see.
var (
	ErrClosed       = errors.New("closed")
	ErrSlowConsumer = errors.New("slow consumer")
)

type connState uint8

const (
	stateOpen    connState = iota
	stateClosing           // a close frame is queued (ours or our reply)
	stateClosed            // torn down; the Close event is queued
)

// Conn is an accepted WebSocket connection.
//
// Its methods are safe for concurrent use. Fields are grouped by who may
// touch them:
//   - immutable after the handshake;
//   - the read turn: whoever holds it (a worker, a lane finishing a batch,
//     or the reader goroutine) owns the parser and the read buffer; the
//     turn is held while pending > 0;
//   - guarded by mu;
//   - atomics.
//
// Lock order: Conn.mu, then roomSet.mu, room.mu, then the leaves Queue.mu
// and lane.mu.
type Conn struct {
	// Immutable after the handshake.
	srv   *Server
	route *Route
	lane  *lane
	// strs holds the connection's id, the peer's address, the request
	// path and the request headers (packed, see packedHeader), in that
	// order, ending at idEnd, addrEnd, pathEnd and len(strs): one
	// allocation instead of four.
	strs                    string
	idEnd, addrEnd, pathEnd uint32
	// openedOn is the lane's handler generation (lane.gen) that ran
	// Open, 0 before it ran; touched only on the lane. (Here, beside
	// the offsets: the Conn stays within its size class.)
	openedOn  uint32
	params    map[string]string
	created   int64      // unix nanoseconds
	rate      *rateState // nil without a rate limit
	ipCounted bool       // counted against the route's per-IP limit
	deflate   wsconn.Deflate

	// Read turn.
	// desc holds the connection's table token, and the socket when the
	// poller reads it (see rc); sock holds the socket when the router
	// owns it (see owned), and when net keeps it, the net.Conn is in
	// ext.nc.
	desc   poll.Desc
	sock   poll.FD
	parser wsconn.Parser
	rbuf   []byte
	r, w   int
	need   int

	pending atomic.Int32 // the read turn (1) plus queued message tasks
	// turn hands the read turn to the poller and back (turnArmed) and
	// records a report that may have found it taken (turnReported); see
	// read.go.
	turn atomic.Uint32

	queue wsconn.Queue

	lastSeen atomic.Int64 // unix nanoseconds of the last byte received
	lastPing atomic.Int64

	msgsIn, bytesIn, bytesOut atomic.Int64 // messages out: queue.Pushed

	mu            sync.Mutex
	state         connState
	byServer      bool // the server side started the close
	peerClosed    bool // the peer's close frame arrived
	closeSent     bool // our close frame was written
	dropAfterSend bool // close TCP once our close frame is written
	// Two read-turn fields, here among the bools rather than each in
	// eight bytes of its own, so that room fits in the size class.
	registered bool // the read turn: the socket is on the poller
	stopRead   bool // the read turn: a close or a protocol failure ended reading
	inRoom1    bool // room holds a room (whose name may be "")

	// closing is set when the close starts (with the state leaving
	// stateOpen, or at a teardown without one): an open connection does
	// not carry it.
	closing *closeState
	// room is the first room the connection is in (if inRoom1), the
	// others are in ext.rooms: most connections are in one room, and
	// keeping it here spares an idle one its connExtras.
	room string
	ext  *connExtras // allocated on first use

	// handlerData belongs to the handler and is touched only on the lane.
	handlerData any
}

// connExtras holds what many connections never use; an idle connection
// that joined at most one room (kept in Conn.room), set no attribute and
// no Left message, came without a query string or a subprotocol and is
// read through the poller, does not pay for it. (The Conn struct itself
// stays within the allocator's 416-byte class.)
type connExtras struct {
	attrs       map[string]any
	presence    []byte            // JSON shown in the cluster's presence of its rooms
	rooms       []string          // after Conn.room, in the order joined
	left        map[string]string // room -> what its members hear when c leaves (JoinOptions.Left)
	rawQuery    string
	query       url.Values
	subprotocol string // immutable once the connection is shared
	// nc is the connection's net.Conn when net keeps the socket (TLS,
	// the portable path): such a connection gets its connExtras in
	// newConn, before it is shared, so c.ext is never replaced and nc
	// and resume never change, and the read turn, the lanes and the
	// flushers read them without c.mu. When the router owns the socket
	// (Conn.sock), nc is nil, or, guarded by c.mu, what a blocked flush
	// borrowed to wait on (see borrowConn).
	nc net.Conn
	// resume hands the read turn back to the reader goroutine of a
	// connection that is not on the poller (see readLoop).
	resume chan struct{}
}

// closeState is how a connection ends: the close code and reason logged
// and given to the handler (ours, or the peer's), and until when the
// peer's close frame is awaited.
type closeState struct {
	code     int
	reason   string
	deadline int64 // unix nanoseconds
}

// rc is the socket's raw connection when the poller reads it, nil when a
// goroutine does.
func (c *Conn) rc() syscall.RawConn { return c.desc.RawConn() }

// token is the connection's key in the server's table (see connTable).
func (c *Conn) token() uint64 { return c.desc.Token() }

// owned returns the socket when the router holds it itself (a poll.FD,
// which the poller reads through), nil when net holds it.
func (c *Conn) owned() *poll.FD {
	fd, _ := c.desc.RawConn().(*poll.FD)
	return fd
}

// extras returns c.ext, allocating it. c.mu must be held.
func (c *Conn) extras() *connExtras {
	if c.ext == nil {
		c.ext = new(connExtras)
	}
	return c.ext
}

// rateState is a connection's token bucket (read turn only).
type rateState struct {
	limit    RateLimit
	tokens   float64
	refilled int64
}

// ID returns the connection's cluster-unique id. Like Path and
// RemoteAddr, it shares one allocation with the connection's request
// headers: what keeps it long after the connection is gone should keep
// a copy (strings.Clone).
func (c *Conn) ID() string { return c.strs[:c.idEnd] }

// Path returns the request path.
func (c *Conn) Path() string { return c.strs[c.addrEnd:c.pathEnd] }

// Params returns the values of the route's {name} segments. The map must
// not be modified.
func (c *Conn) Params() map[string]string { return c.params }

// RemoteAddr returns the peer's address as ip:port.
func (c *Conn) RemoteAddr() string { return c.strs[c.idEnd:c.addrEnd] }

// header returns the request headers.
func (c *Conn) header() packedHeader { return packedHeader(c.strs[c.pathEnd:]) }

// setStrings sets what ID, RemoteAddr, Path and header return, in one
// allocation. Only newConn calls it, before the connection is shared.
func (c *Conn) setStrings(id, addr, path string, h Header) {
	var b strings.Builder
	b.Grow(len(id) + len(addr) + len(path) + h.packedLen())
	b.WriteString(id)
	b.WriteString(addr)
	b.WriteString(path)
	h.writePacked(&b)
	c.strs = b.String()
	c.idEnd = uint32(len(id))
	c.addrEnd = c.idEnd + uint32(len(addr))
	c.pathEnd = c.addrEnd + uint32(len(path))
}

// Subprotocol returns the negotiated subprotocol, or "".
func (c *Conn) Subprotocol() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ext == nil {
		return ""
	}
	return c.ext.subprotocol
}

// Route returns the route serving the connection.
func (c *Conn) Route() *Route { return c.route }

// Lane returns the index of the lane the connection is pinned to.
func (c *Conn) Lane() int { return c.lane.index }

// Header returns a request header by case-insensitive name.
func (c *Conn) Header(name string) string { return c.header().Get(lowerASCII(name)) }

// Query returns the first value of a query parameter.
func (c *Conn) Query(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	x := c.extras()
	if x.query == nil {
		x.query, _ = url.ParseQuery(x.rawQuery)
	}
	return x.query.Get(name)
}

// LastSeen returns when the last bytes arrived from the peer.
func (c *Conn) LastSeen() time.Time { return time.Unix(0, c.lastSeen.Load()) }

// Closed reports whether the connection is closing or closed: nothing more
// can be sent on it.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != stateOpen
}

// HandlerData returns the value the handler attached with SetHandlerData.
// Only the connection's lane may call it.
func (c *Conn) HandlerData() any { return c.handlerData }

// SetHandlerData attaches a handler value (a script's userdata) to the
// connection. Only the connection's lane may call it.
func (c *Conn) SetHandlerData(v any) { c.handlerData = v }

// Get returns an attribute.
func (c *Conn) Get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ext == nil {
		return nil, false
	}
	v, ok := c.ext.attrs[key]
	return v, ok
}

// Set sets an attribute; a nil value deletes it. Values should be strings,
// numbers or booleans: they are read from any lane.
func (c *Conn) Set(key string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v == nil {
		if c.ext != nil {
			delete(c.ext.attrs, key)
		}
		return
	}
	x := c.extras()
	if x.attrs == nil {
		x.attrs = make(map[string]any)
	}
	x.attrs[key] = v
}

// Rooms returns the rooms the connection is in (or was in, once closed).
func (c *Conn) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roomList()
}

// roomList returns a new slice of the rooms the connection is in, in the
// order joined (nil: none). c.mu is held.
func (c *Conn) roomList() []string {
	if !c.inRoom1 {
		return nil
	}
	rooms := []string{c.room}
	if c.ext != nil {
		rooms = append(rooms, c.ext.rooms...)
	}
	return rooms
}

// inRoom reports whether the connection is in room. c.mu is held.
func (c *Conn) inRoom(room string) bool {
	return c.inRoom1 && c.room == room || c.ext != nil && slices.Contains(c.ext.rooms, room)
}

// addRoom records that the connection joined room, which it is not in.
// c.mu is held.
func (c *Conn) addRoom(room string) {
	if !c.inRoom1 {
		c.room, c.inRoom1 = room, true
		return
	}
	x := c.extras()
	x.rooms = append(x.rooms, room)
}

// removeRoom records that the connection left room, reporting whether it
// was in it. c.mu is held.
func (c *Conn) removeRoom(room string) bool {
	var more []string
	if c.ext != nil {
		more = c.ext.rooms
	}
	switch i := slices.Index(more, room); {
	case !c.inRoom1 || c.room != room:
		if i < 0 {
			return false
		}
		c.ext.rooms = slices.Delete(more, i, i+1)
	case len(more) == 0:
		c.room, c.inRoom1 = "", false
	default:
		c.room = more[0] // before the Delete, which shifts more in place
		c.ext.rooms = slices.Delete(more, 0, 1)
	}
	return true
}

// Join adds the connection to room. It fails with ErrClosed on a closed
// connection.
func (c *Conn) Join(room string) error { return c.JoinWith(room, JoinOptions{}) }

// MaxAnnouncement bounds JoinOptions.Joined and Left: the Left message is
// kept for as long as the connection is in the room.
const MaxAnnouncement = 4096

// ErrAnnouncement is returned for a JoinOptions message over
// MaxAnnouncement.
var ErrAnnouncement = errors.New("join/leave announcement longer than 4096 bytes")

// JoinOptions are what a room's other members hear of a member coming and
// going: text messages broadcast to the room, on every node, through the
// same path as Broadcast (stamped with the offset where the room keeps
// history). "" announces nothing.
type JoinOptions struct {
	// Joined is broadcast to the room's other members once the
	// connection has joined.
	Joined string
	// Left is broadcast to the room's remaining members when the
	// connection leaves it, whatever the cause: Leave, its close, an
	// eviction, the server's shutdown. A node that dies outright sends
	// none; its members drop out of presence within the broker's TTL.
	Left string
}

func (o JoinOptions) check() error {
	if len(o.Joined) > MaxAnnouncement || len(o.Left) > MaxAnnouncement {
		return ErrAnnouncement
	}
	return nil
}

// JoinWith is Join with announcements. Joining a room the connection is
// already in announces nothing but replaces the Left message.
func (c *Conn) JoinWith(room string, o JoinOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	joined := !c.inRoom(room)
	if joined {
		c.srv.rooms.add(room, c)
		c.addRoom(room)
	}
	c.setLeft(room, o.Left)
	c.mu.Unlock()
	if joined && o.Joined != "" {
		c.srv.announce(room, o.Joined, c)
	}
	return nil
}

// setLeft records what the room hears when the connection leaves it
// ("": nothing). c.mu is held.
func (c *Conn) setLeft(room, left string) {
	switch {
	case left != "":
		x := c.extras()
		if x.left == nil {
			x.left = make(map[string]string)
		}
		x.left[room] = left
	case c.ext != nil && c.ext.left != nil:
		delete(c.ext.left, room)
	}
}

// announce broadcasts a join or leave message to room (except c), stamped
// where the room keeps history. It may wait for the broker's offset, so
// it runs with no lock held.
func (s *Server) announce(room, msg string, except *Conn) {
	s.BroadcastWith(room, Text, msg, BroadcastOptions{Except: except, Stamp: true})
}

// Leave removes the connection from room.
func (c *Conn) Leave(room string) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	left := ""
	if c.removeRoom(room) {
		c.srv.rooms.remove(room, c)
		if c.ext != nil {
			left = c.ext.left[room]
			delete(c.ext.left, room)
		}
	}
	c.mu.Unlock()
	if left != "" {
		c.srv.announce(room, left, nil)
	}
}

// announceLeft broadcasts the Left messages of the rooms the closed
// connection was in. It runs on the lane, ahead of the handler's Close.
func (c *Conn) announceLeft() {
	c.mu.Lock()
	var left map[string]string
	if c.ext != nil {
		left, c.ext.left = c.ext.left, nil
	}
	c.mu.Unlock()
	for room, msg := range left {
		c.srv.announce(room, msg, nil)
	}
}

// Send queues a message. It returns ErrClosed once the connection is
// closing, and ErrSlowConsumer when the write queue is full (the
// connection is then closed or the message dropped, per the slow-consumer
// policy).
func (c *Conn) Send(kind Kind, data []byte) error {
	m := newOutMsg(kind, data, "")
	err := c.sendFrame(m.frameFor(c))
	m.release()
	return err
}

// SendString is Send for a string payload.
func (c *Conn) SendString(kind Kind, data string) error {
	m := newOutMsg(kind, nil, data)
	err := c.sendFrame(m.frameFor(c))
	m.release()
	return err
}

// Ping sends a protocol ping with payload (at most 125 bytes).
func (c *Conn) Ping(payload []byte) error {
	if len(payload) > ws.MaxControlFramePayloadSize {
		return errors.New("ping payload longer than 125 bytes")
	}
	return c.sendControl(ws.OpPing, payload)
}

// Close starts the closing handshake with code and reason (truncated to
// fit a control frame). Closing a closed connection does nothing. Codes
// must be ones an endpoint may send: 1000-1003, 1007-1014, 3000-4999.
func (c *Conn) Close(code int, reason string) error {
	if !SendableCloseCode(code) {
		return errors.New("invalid close code " + itoa(code))
	}
	c.closeWith(code, reason, false, false)
	return nil
}

// SendableCloseCode reports whether an endpoint may put code in a close
// frame (RFC 6455 §7.4 and the IANA registry; see wsconn.ValidCloseCode).
func SendableCloseCode(code int) bool { return wsconn.ValidCloseCode(code) }

func opcode(k Kind) ws.OpCode {
	if k == Binary {
		return ws.OpBinary
	}
	return ws.OpText
}

// sendFrame queues an encoded data frame and applies the slow-consumer
// policy when the queue is full.
func (c *Conn) sendFrame(f *wsconn.Frame) error {
	start, err := c.queue.Push(f)
	switch err {
	case nil:
		c.route.msgsOut.Add(1)
		if start {
			c.startFlush()
		}
		return nil
	case wsconn.ErrFull:
		c.slowConsumer()
		return ErrSlowConsumer
	}
	return ErrClosed
}

// push queues f like sendFrame, but leaves a full queue to the caller
// (ok false, full true), who may hold locks that closing would take.
func (c *Conn) push(f *wsconn.Frame) (ok, full bool) {
	start, err := c.queue.Push(f)
	switch err {
	case nil:
		c.route.msgsOut.Add(1)
		if start {
			c.startFlush()
		}
		return true, false
	case wsconn.ErrFull:
		return false, true
	}
	return false, false
}

func (c *Conn) slowConsumer() {
	c.srv.stats.queueDrops.Add(1)
	if c.srv.c().SlowConsumer == SlowConsumerClose {
		c.srv.stats.slowCloses.Add(1)
		c.closeWith(ClosePolicy, "slow consumer", true, true)
	}
}

func (c *Conn) sendControl(op ws.OpCode, payload []byte) error {
	f := wsconn.NewFrame(op, payload)
	err := c.pushControl(f)
	f.Release()
	return err
}

// pushControl queues a control frame the caller keeps its own reference
// to, so one frame can go to many connections (a heartbeat round's ping).
func (c *Conn) pushControl(f *wsconn.Frame) error {
	start, err := c.queue.PushControl(f)
	if err != nil {
		return ErrClosed
	}
	if start {
		c.startFlush()
	}
	return nil
}

// closeWith starts a server-side close. With fail set the TCP connection is
// closed as soon as the close frame is written (the peer is broken or
// hostile; RFC 6455 §7.1.7 "Fail the WebSocket Connection"); otherwise the
// peer's close frame is awaited for CloseTimeout. With discard set, unsent
// messages are dropped so the close frame goes out first.
func (c *Conn) closeWith(code int, reason string, fail, discard bool) {
	c.mu.Lock()
	if c.state != stateOpen {
		c.mu.Unlock()
		return
	}
	c.state = stateClosing
	c.byServer = true
	c.closing = &closeState{code: code, reason: reason, deadline: time.Now().Add(c.srv.c().CloseTimeout).UnixNano()}
	c.dropAfterSend = fail
	c.mu.Unlock()

	f := wsconn.NewCloseFrame(ws.StatusCode(code), reason)
	start, ok := c.queue.Seal(f, discard, false)
	f.Release()
	switch {
	case !ok:
		c.teardown() // the write side is already dead
	case start:
		c.startFlush()
	}
}

// onPeerClose handles the peer's close frame (RFC 6455 §5.5.1): answer it
// if we did not close first, then end the TCP connection once our close
// frame is out.
func (c *Conn) onPeerClose(code int, reason string) {
	c.mu.Lock()
	switch c.state {
	case stateOpen:
		c.state = stateClosing
		c.peerClosed = true
		c.closing = &closeState{code: code, reason: reason, deadline: time.Now().Add(c.srv.c().CloseTimeout).UnixNano()}
		c.dropAfterSend = true
		c.mu.Unlock()
		var f *wsconn.Frame
		if code == CloseNoStatus {
			f = wsconn.NewFrame(ws.OpClose, nil)
		} else {
			f = wsconn.NewCloseFrame(ws.StatusCode(code), "")
		}
		// The socket closes once f is written (flushed), and the peer,
		// having closed, sends nothing more.
		start, ok := c.queue.Seal(f, false, true)
		f.Release()
		switch {
		case !ok:
			c.teardown()
		case start:
			// Nothing else is queued: write it here rather than wake a
			// flush worker for one small frame and the close after it.
			c.flushHere()
		}
	case stateClosing:
		c.peerClosed = true
		done := c.closeSent
		c.dropAfterSend = true
		c.mu.Unlock()
		if done {
			c.teardown()
		}
	default:
		c.mu.Unlock()
	}
}

// startFlush runs a flusher for the queue; Queue.Push guarantees at most
// one at a time. A socket the router reads itself (epoll) goes to the
// flush workers, which write without waiting; others (TLS, the portable
// path) get a goroutine that writes under a deadline.
func (c *Conn) startFlush() {
	if c.rc() != nil {
		select {
		case c.srv.flushq <- c:
			return
		default:
			// Every worker is busy: a goroutine of its own rather than wait.
		}
	}
	c.srv.wg.Add(1)
	go c.flush(nil)
}

// flushHere is startFlush on the calling goroutine, for a queue that
// holds little (the close frame answering the peer's): a socket the
// router reads itself takes it without waiting, as a flush worker would
// write it, and only a socket that cannot take it all goes to a goroutine
// of its own. Handing the frame to a worker instead cost the worker's
// wake-up for every connection that ends (moonbench ab, connect, upgrade
// and close: 1.02-1.04x the connects per CPU-second, ahead in each of 10
// pairs).
func (c *Conn) flushHere() {
	rc := c.rc()
	if rc == nil {
		c.startFlush()
		return
	}
	fl := flushers.Get().(*wsconn.Flusher)
	if !c.tryFlush(fl, rc) {
		flushers.Put(fl)
	}
}

// tryFlush drains c's queue into the socket behind rc with fl, without
// waiting, as a flush worker's plain path does. A socket that cannot take
// it all gets a goroutine of its own, which takes fl with what is left:
// tryFlush then reports true. Otherwise fl is reset, for the caller's
// next queue.
func (c *Conn) tryFlush(fl *wsconn.Flusher, rc syscall.RawConn) (handedOff bool) {
	sealed, n, blocked, err := fl.TryFlush(&c.queue, rc)
	c.bytesOut.Add(n)
	c.route.bytesOut.Add(n)
	if blocked {
		c.srv.wg.Add(1)
		go c.flush(fl)
		return true
	}
	fl.Reset()
	c.flushed(sealed, err)
	return false
}

var flushers = sync.Pool{New: func() any { return new(wsconn.Flusher) }}

// flushWorker is one of the server's flush workers: it writes queues
// without waiting, and hands a queue whose socket is full to a goroutine
// of its own, with what is left to write.
func (s *Server) flushWorker(ring *uring.Ring) {
	if ring != nil {
		s.flushBatched(ring)
		return
	}
	fl := flushers.Get().(*wsconn.Flusher)
	for c := range s.flushq {
		if c.tryFlush(fl, c.rc()) {
			fl = flushers.Get().(*wsconn.Flusher)
		}
	}
}

// flush drains the queue with blocking writes under the write timeout,
// continuing what fl holds (nil: a fresh flusher).
func (c *Conn) flush(fl *wsconn.Flusher) {
	defer c.srv.wg.Done()
	if fl == nil {
		fl = flushers.Get().(*wsconn.Flusher)
	}
	var sealed bool
	var n int64
	nc, err := c.borrowConn()
	if err != nil {
		fl.Abandon(&c.queue)
	} else {
		sealed, n, err = fl.Flush(&c.queue, nc, c.srv.c().WriteTimeout)
		c.returnConn(nc)
	}
	fl.Reset()
	flushers.Put(fl)
	c.bytesOut.Add(n)
	c.route.bytesOut.Add(n)
	c.flushed(sealed, err)
}

// borrowConn returns the net.Conn a blocked flush waits on: nc, or for a
// socket the router owns, a net.Conn on a duplicate of it, which the
// runtime's netpoller waits on (the router's poller only reads). It is
// kept in c.ext.nc meanwhile, so that end closes it with the connection.
func (c *Conn) borrowConn() (net.Conn, error) {
	fd := c.owned()
	if fd == nil {
		return c.ext.nc, nil
	}
	nc, err := fd.NetConn()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	closed := c.state == stateClosed
	if !closed {
		c.extras().nc = nc
	}
	c.mu.Unlock()
	if closed {
		_ = nc.Close()
		return nil, net.ErrClosed
	}
	return nc, nil
}

// returnConn gives back what borrowConn lent, closing it unless end
// already took it to close.
func (c *Conn) returnConn(nc net.Conn) {
	if c.owned() == nil {
		return
	}
	c.mu.Lock()
	mine := c.ext.nc == nc // borrowConn made ext
	if mine {
		c.ext.nc = nil
	}
	c.mu.Unlock()
	if mine {
		_ = nc.Close()
	}
}

// flushed acts on the end of a flush: a write error ends the connection,
// and a written close frame may end it too.
func (c *Conn) flushed(sealed bool, err error) {
	if err != nil {
		c.teardown()
		return
	}
	if sealed {
		c.mu.Lock()
		c.closeSent = true
		drop := c.dropAfterSend || c.peerClosed
		// We failed the connection (a protocol or policy violation, a
		// heartbeat timeout): the peer may be sending still.
		linger := c.byServer && c.dropAfterSend && !c.peerClosed
		c.mu.Unlock()
		if drop {
			c.end(linger)
		}
	}
}

// teardown ends the connection: the socket is closed, rooms are left, and
// the Close event runs behind the connection's pending events (see
// closeEvent). It is idempotent.
func (c *Conn) teardown() { c.end(false) }

// end is teardown; with linger set, the socket is not closed at once but
// handed to Server.linger, which closes it once the peer has stopped
// sending.
func (c *Conn) end(linger bool) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	switch {
	case c.closing == nil:
		// Neither side sent a close frame: RFC 6455 §7.1.5 calls that 1006.
		c.closing = &closeState{code: CloseAbnormal}
	case c.closing.code == 0:
		c.closing.code = CloseAbnormal
	}
	c.state = stateClosed
	code, reason := c.closing.code, c.closing.reason
	var nc net.Conn
	if c.ext != nil {
		nc = c.ext.nc
		if c.owned() != nil {
			c.ext.nc = nil // a blocked flush's: closed here (see returnConn)
		}
	}
	announce := false
	if c.inRoom1 {
		c.srv.rooms.remove(c.room, c)
	}
	if c.ext != nil {
		announce = len(c.ext.left) > 0
		for _, r := range c.ext.rooms {
			c.srv.rooms.remove(r, c)
		}
	}
	// From here no task for c is queued: those queued under mu check the
	// state first.
	c.mu.Unlock()

	c.queue.Kill()
	c.closeSocket(nc, linger)
	c.route.conns.Add(-1)
	if c.ipCounted {
		c.route.releaseIP(hostOf(c.RemoteAddr()))
	}
	c.srv.stats.closes(code)
	c.closeEvent(code, reason, announce)
}

// closeSocket closes the connection's socket, through Server.linger when
// linger is set; nc is c.ext.nc as end found it.
//
// No epoll_ctl(DEL) as a rule: closing the socket takes it out of the
// poller's set, and a report already on its way finds the connection
// closed, or gone from the table. But an owned socket whose descriptor
// has a duplicate (a blocked flush's, or one made to linger) stays in the
// set after the FD is closed, for as long as the duplicate lives: it
// leaves the set first.
func (c *Conn) closeSocket(nc net.Conn, linger bool) {
	fd := c.owned()
	if fd == nil {
		if !linger || !c.srv.linger(nc) {
			_ = nc.Close()
		}
		return
	}
	if linger && nc == nil {
		nc, _ = fd.NetConn() // nil on failure: closed at once, then
	}
	if nc != nil {
		_ = c.srv.poller.Remove(&c.desc)
	}
	_ = fd.Close()
	if nc != nil && (!linger || !c.srv.linger(nc)) {
		_ = nc.Close()
	}
}

// closeEvent runs the handler's Close, then finished, on the lane behind
// the connection's pending events. When the handler has nothing to do on
// close (CloseSkipper) and the lane is idle, finished runs here instead:
// no handler code, and a lane wake-up saved for every connection that
// ends. With announce, the connection's Left messages go out first.
func (c *Conn) closeEvent(code int, reason string, announce bool) {
	l := c.lane
	done := false
	if announce {
		// Announcing may wait for the broker: on the lane, not here.
		if !l.push(task{kind: taskClose, c: c, code: code, reason: reason}) {
			c.announceLeft()
			c.finished()
		}
		return
	}
	l.tryInline(func() {
		// The lane's handler, read while holding the lane: the one a
		// queued Close would have run on.
		// A held connection's Close waits behind its suspended event.
		if sk, ok := l.h.(CloseSkipper); ok && l.holdOf(c) == nil && sk.SkipClose() {
			c.finished()
			done = true
		}
	})
	if !done && !l.push(task{kind: taskClose, c: c, code: code, reason: reason}) {
		c.finished()
	}
}

// finished runs on the lane after the handler's Close: the connection is
// logged (the access log) and forgotten.
func (c *Conn) finished() {
	if log := c.srv.log; log.Enabled(context.Background(), slog.LevelInfo) {
		c.mu.Lock()
		code, reason := c.closing.code, c.closing.reason
		c.mu.Unlock()
		log.Info("connection closed",
			"route", c.route.Pattern(), "conn", c.ID(), "remote", c.RemoteAddr(),
			"duration", time.Duration(time.Now().UnixNano()-c.created).Round(time.Millisecond),
			"messages_in", c.msgsIn.Load(), "messages_out", c.queue.Pushed(),
			"bytes_in", c.bytesIn.Load(), "bytes_out", c.bytesOut.Load(),
			"code", code, "reason", reason)
	}
	c.handlerData = nil
	c.srv.table.remove(c)
	c.srv.active.Add(-1)
	c.srv.connGone()
}

// closeWritten reports whether our close frame is out or the connection
// is gone.
func (c *Conn) closeWritten() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeSent || c.state == stateClosed
}

// closedByServer reports whether the server side closed the connection, in
// which case messages still queued are not delivered to the handler.
func (c *Conn) closedByServer() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byServer
}

// wantRead reports whether the reader should keep reading: while open, and
// while waiting for the peer's answer to our close.
func (c *Conn) wantRead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateOpen:
		return true
	case stateClosing:
		return !c.peerClosed && !c.dropAfterSend
	}
	return false
}

func (c *Conn) countIn() {
	c.msgsIn.Add(1)
	c.route.msgsIn.Add(1)
}

// releaseOwned returns an assembled message buffer to the pool.
func releaseOwned(b []byte) { bufpool.Put(b) }

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

package router

import (
	"net"
	"time"

	"github.com/moonwire/moonwire/router/internal/bufpool"
)

// Lingering close. When the server fails a connection (a protocol or
// policy violation, a rate limit, a message too big, a heartbeat timeout),
// the peer is often still sending. Closing a socket with unread input makes
// the kernel answer with a reset, which discards what is still in the send
// queue (our close frame among it) and, at the peer, what it had not read
// yet: the client then sees 1006 instead of the code we sent, and loses the
// replies that preceded it. So the socket's write side is shut instead
// (the peer reads everything we sent, then end of stream), and its input is
// read and discarded until the peer closes, for at most lingerTimeout or
// lingerBytes, like nginx's lingering_close.
//
// A lingering socket no longer counts against MaxConnections (its Close
// event has run), yet holds a descriptor, a goroutine and a buffer. So
// there are at most lingerCap of them: past it, a failed connection's
// socket is closed at once, and its peer, if still sending, may see a
// reset instead of our close frame. Without the cap, clients that each
// broke the protocol and kept their socket open held one apiece, however
// low MaxConnections was.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
	// lingerMin and lingerNoLimit bound the lingering sockets: as many
	// as MaxConnections but at least lingerMin, or lingerNoLimit without
	// MaxConnections.
	lingerMin     = 64
	lingerNoLimit = 1024
)

// lingerCap is how many sockets may linger at once (see lingerMin).
func (s *Server) lingerCap() int {
	if m := s.c().MaxConnections; m > 0 {
		return max(lingerMin, m)
	}
	return lingerNoLimit
}

// linger drains and then closes nc, a failed connection's socket whose
// close frame is written. It reports false, doing nothing, when nc cannot
// shut its write side alone, lingerCap sockets linger already, or the
// server is closing (everything is closed at once then); the caller
// closes nc.
func (s *Server) linger(nc net.Conn) bool {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		return false
	}
	timeout := lingerTimeout
	if hk := s.hooks; hk != nil && hk.lingerFor > 0 {
		timeout = hk.lingerFor
	}
	s.mu.Lock()
	if s.closing || len(s.lingering) >= s.lingerCap() {
		s.mu.Unlock()
		return false
	}
	// The write side shut and the deadline set before the socket is
	// registered, under mu: beginClosing's deadline (now), set under mu
	// to the registered sockets, then always comes after this one and
	// wins. Set afterwards, by the draining goroutine, it could replace
	// beginClosing's, and Shutdown waited out the linger. Neither call
	// blocks.
	if cw.CloseWrite() != nil || nc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		s.mu.Unlock()
		return false
	}
	s.lingering[nc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if hk := s.hooks; hk != nil && hk.lingering != nil {
		hk.lingering()
	}
	go func() {
		defer s.wg.Done()
		buf := bufpool.Get(readBufferSize)
		for n := 0; n < lingerBytes; {
			m, err := nc.Read(buf)
			if n += m; err != nil {
				break
			}
		}
		bufpool.Put(buf)
		s.mu.Lock()
		delete(s.lingering, nc)
		s.mu.Unlock()
		_ = nc.Close()
	}()
	return true
}

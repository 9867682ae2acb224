package router

import "time"

// Test hooks for the external tests (package router_test). Each must be
// set before Serve.

// SetHTTPAdmittedHook makes f run once a plain-HTTP connection has its
// place under MaxConnections, before net/http serves it.
func SetHTTPAdmittedHook(s *Server, f func()) { s.testHooks().httpAdmitted = f }

// SetLingeringHook makes f run once a failed connection's socket is
// registered as lingering, before it is drained.
func SetLingeringHook(s *Server, f func()) { s.testHooks().lingering = f }

// SetLingerTimeout replaces lingerTimeout.
func SetLingerTimeout(s *Server, d time.Duration) { s.testHooks().lingerFor = d }

// BeginClosing is the first step of Shutdown and Close: nothing new is
// accepted, and handshakes and lingering closes end now.
func BeginClosing(s *Server) { s.beginClosing() }

// Lingering returns how many sockets are lingering.
func Lingering(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lingering)
}

// LingerCap is how many sockets may linger at once.
func LingerCap(s *Server) int { return s.lingerCap() }

func (s *Server) testHooks() *testHooks {
	if s.hooks == nil {
		s.hooks = new(testHooks)
	}
	return s.hooks
}

// ReadReported reports whether a readiness report came since c's read
// turn last read: the edge-triggered poller's record of data that
// arrived while the turn was held.
func ReadReported(c *Conn) bool { return c.turn.Load()&turnReported != 0 }

// ReadHungUp reports whether the poller reported c's peer hung up.
func ReadHungUp(c *Conn) bool { return c.turn.Load()&turnHangup != 0 }

// OwnsSocket reports whether the router holds c's socket itself (a
// poll.FD) rather than through net.
func OwnsSocket(c *Conn) bool { return c.owned() != nil }

// FlushWaiting reports whether a blocked flush holds a net.Conn borrowed
// from c's own socket (see Conn.borrowConn).
func FlushWaiting(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owned() != nil && c.ext != nil && c.ext.nc != nil
}

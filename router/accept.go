package router

import (
	"errors"
	"net"
	"net/http"
	"time"
)

// The accept loop (with its backoff when descriptors run out) and the
// goroutines that run handshakes.

// Serve accepts connections on ln until Shutdown or Close. It returns
// http.ErrServerClosed after a shutdown, like net/http.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	accept := s.rawAccept(ln)
	if accept == nil {
		accept = ln.Accept
	}
	var backoff time.Duration
	for {
		nc, err := accept()
		if err != nil {
			if s.isClosing() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors (EMFILE, ENFILE), out of buffers, or a
			// transient failure: back off and retry rather than spin or
			// give up. Connections end on their own deadlines and free
			// descriptors; the listener must still be there when they do.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.stopped:
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close()
			return http.ErrServerClosed
		}
		// Added under mu so that no handshake starts after Shutdown began
		// waiting for them.
		s.wg.Add(1)
		s.handshakes[nc] = struct{}{}
		s.mu.Unlock()
		select {
		case s.idleShakers <- nc:
		default:
			go s.handshaker(nc)
		}
	}
}

// handshakerIdle is how long a handshake goroutine waits for the next
// socket before it exits.
const handshakerIdle = 2 * time.Second

// handshaker serves nc's handshake, then the handshakes of later sockets
// for as long as they keep coming. A handshake runs deep (the upgrader, a
// Lua callback): on a fresh goroutine it pays for growing its stack every
// time, which under connection churn is a cost that shows. Handshakes that
// outnumber the waiting goroutines get new ones, so a slow client never
// holds up another.
func (s *Server) handshaker(nc net.Conn) {
	var idle *time.Timer
	var hs *handshake // reused from one socket to the next (see reusable)
	for {
		if hs == nil {
			hs = newHandshakeState()
		}
		s.serveConn(nc, hs)
		if !hs.reusable() {
			hs = nil
		}
		if idle == nil {
			idle = time.NewTimer(handshakerIdle)
		} else {
			idle.Reset(handshakerIdle)
		}
		select {
		case nc = <-s.idleShakers:
		case <-idle.C:
			return
		case <-s.stopped:
			idle.Stop()
			return
		}
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

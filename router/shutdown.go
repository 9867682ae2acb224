package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Shutdown, Close, and what they share: the drain, the wait for Close
// events, and the stop of the background goroutines.

// drainBatch bounds how many connections a drain closes at once: each close
// writes a frame from a goroutine of its own, and a hundred thousand at
// once would be a burst of memory for nothing.
const drainBatch = 1000

// Shutdown drains the server: it stops accepting, closes every connection
// with 1001 "going away" (drainBatch at a time), waits for their Close
// events to run, then stops the routes. When ctx ends first, the remaining
// connections are dropped (their Close events still run) and ctx's error
// is returned.
//
// Shutdown returns within AbandonGrace of ctx's end whatever the handlers
// do: a lane stuck in a callback cannot run the events a drain waits for,
// so past that grace the server gives up on it, logs the route and lane,
// and returns an error wrapping ErrAbandoned. Its goroutines are left
// behind; the process is expected to exit.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClosing()
	s.closeAll(ctx, CloseGoingAway, "going away", nil)
	err := s.waitIdle(ctx)
	if err == nil {
		return s.stopBackground(time.Now().Add(AbandonGrace))
	}
	return errors.Join(err, s.dropAll())
}

// dropAll tears every connection down and stops the server, giving lanes
// AbandonGrace in all to run the Close events and stop.
func (s *Server) dropAll() error {
	abandonAt := time.Now().Add(AbandonGrace)
	s.table.each(func(c *Conn) { c.teardown() })
	grace, cancel := context.WithDeadline(context.Background(), abandonAt)
	_ = s.waitIdle(grace)
	cancel()
	return s.stopBackground(abandonAt)
}

// AbandonGrace is how long Shutdown and Close wait, once their own
// deadline has passed, for lanes to finish before abandoning them.
const AbandonGrace = 2 * time.Second

// ErrAbandoned is wrapped by the error of a Shutdown or Close that left
// lanes stuck in a handler behind.
var ErrAbandoned = errors.New("abandoned lanes stuck in a handler")

// closeAll starts the closing handshake on every connection, a batch at a
// time: the next batch starts once this one's close frames are written (or
// a second has passed, for peers that do not read).
func (s *Server) closeAll(ctx context.Context, code int, reason string, which func(*Conn) bool) {
	var batch []*Conn
	flush := func() {
		for _, c := range batch {
			c.closeWith(code, reason, false, false)
		}
		deadline := time.Now().Add(time.Second)
		for _, c := range batch {
			for !c.closeWritten() && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
		batch = batch[:0]
	}
	s.table.each(func(c *Conn) {
		if ctx.Err() != nil || (which != nil && !which(c)) {
			return
		}
		if batch = append(batch, c); len(batch) == drainBatch {
			flush()
		}
	})
	flush()
}

// Close drops every connection at once (their Close events still run) and
// stops the server. Like Shutdown, it gives up on lanes stuck in a handler
// after AbandonGrace.
func (s *Server) Close() error {
	s.beginClosing()
	return s.dropAll()
}

func (s *Server) beginClosing() {
	// Waits for a reconfiguration in progress (see reMu).
	s.reMu.Lock()
	defer s.reMu.Unlock()
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.stopped)
		for ln := range s.listeners {
			_ = ln.Close()
		}
		// Handshakes in progress end now rather than at their deadline,
		// and so do lingering closes: linger sets its own deadline under
		// mu before it registers a socket, so this one comes last.
		for nc := range s.handshakes {
			_ = nc.SetDeadline(time.Now())
		}
		for nc := range s.lingering {
			_ = nc.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	s.http.close()
}

// waitIdle waits until every connection's Close event has run.
func (s *Server) waitIdle(ctx context.Context) error {
	for s.active.Load() > 0 {
		select {
		case <-s.activeChange:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
			// Connections still in their handshake become active without
			// signalling; look again.
		}
	}
	return nil
}

func (s *Server) connGone() {
	select {
	case s.activeChange <- struct{}{}:
	default:
	}
}

// stopBackground stops the routes and every goroutine of the server, once
// the connections are gone. It waits for them until abandonAt, and then
// reports what it abandoned (ErrAbandoned) instead of waiting on a stuck
// handler forever.
func (s *Server) stopBackground(abandonAt time.Time) error {
	s.stopAll.Do(func() {
		s.bgDone = make(chan struct{})
		go func() {
			defer close(s.bgDone)
			s.wg.Wait() // handshakes, flushers and reader goroutines
			// Every connection is gone, so nothing queues a flush any more.
			close(s.flushq)
			s.mu.Lock()
			routes := append(s.routes.Load().all, s.retired...)
			s.retired = nil
			s.mu.Unlock()
			for _, rt := range routes {
				s.stopRoute(rt)
			}
			if s.unsubscribe != nil {
				s.unsubscribe()
			}
			if s.ownBroker {
				_ = s.broker.Close()
			}
			s.closePoller()
			close(s.sweepStop)
			s.bg.Wait()
		}()
	})
	t := time.NewTimer(time.Until(abandonAt))
	defer t.Stop()
	select {
	case <-s.bgDone:
		return nil
	case <-t.C:
	}
	var stuck []string
	for _, rt := range s.allRoutes() {
		for _, l := range rt.lanes {
			if l.busy() {
				stuck = append(stuck, fmt.Sprintf("route %s lane %d", rt.Pattern(), l.index))
				s.log.Error("shutdown: a lane is stuck in a handler; abandoned", "route", rt.Pattern(), "lane", l.index)
			}
		}
	}
	if len(stuck) == 0 {
		stuck = append(stuck, "a handshake or a write that did not end")
		s.log.Error("shutdown: background work did not end; abandoned")
	}
	return fmt.Errorf("%w: %s", ErrAbandoned, strings.Join(stuck, ", "))
}

// allRoutes returns the current routes and the retired ones still
// draining.
func (s *Server) allRoutes() []*Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(append([]*Route(nil), s.routes.Load().all...), s.retired...)
}

func (s *Server) closePoller() {
	if s.poller != nil {
		_ = s.poller.Close()
	}
}

package router

import (
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/router/wsconn"
)

const pingOp = ws.OpPing

// sweep is the server's single timekeeper: instead of a timer per
// connection, one goroutine walks the connection table a few times per
// heartbeat interval and
//   - pings connections quiet for their route's interval,
//   - closes (1001 "heartbeat timeout") those silent for its timeout,
//   - drops connections whose closing handshake outlived CloseTimeout.
func (s *Server) sweep() {
	t := time.NewTimer(s.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case now := <-t.C:
			s.sweepOnce(now)
			// Recomputed each time: a reload may shorten a heartbeat.
			t.Reset(s.sweepInterval())
		}
	}
}

// startVirtualSweep is sweep on a virtual clock (Config.Clock): the
// rounds run from the clock's Advance, at the clock's time, so a test sees
// a heartbeat's ping or timeout as soon as it advances past it. A
// goroutine stops the rounds when the server stops.
func (s *Server) startVirtualSweep() {
	var mu sync.Mutex // orders the round's Reset before the Stop
	stopped := false
	var t *VirtualTimer
	t = s.clock.AfterFunc(s.sweepInterval(), func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		s.sweepOnce(s.clock.Now())
		t.Reset(s.sweepInterval())
	})
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		<-s.sweepStop
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}()
}

// sweepInterval is a quarter of the shortest interval or timeout in use,
// between 10ms and 1s: fine enough to keep heartbeat timing within a few
// percent, coarse enough to cost nothing.
func (s *Server) sweepInterval() time.Duration {
	d := min(s.c().Heartbeat.Interval, s.c().Heartbeat.Timeout, s.c().CloseTimeout)
	for _, rt := range s.routes.Load().all {
		hb := rt.spec.Load().Heartbeat
		d = min(d, hb.Interval, hb.Timeout)
	}
	return min(max(d/4, 10*time.Millisecond), time.Second)
}

func (s *Server) sweepOnce(now time.Time) {
	nowNs := now.UnixNano()
	// One ping frame for the whole round: a round over many idle
	// connections would otherwise build (and keep in the pools) a frame
	// and a buffer for each.
	var ping *wsconn.Frame
	defer func() {
		if ping != nil {
			ping.Release()
		}
	}()
	s.table.each(func(c *Conn) {
		c.mu.Lock()
		state, closing := c.state, c.closing
		c.mu.Unlock()
		switch state {
		case stateClosing:
			if nowNs > closing.deadline {
				c.teardown()
			}
			return
		case stateClosed:
			return
		}
		quiet := time.Duration(nowNs - c.lastSeen.Load())
		// Read through the route, so a reload's new heartbeat applies to
		// open connections too.
		hb := c.route.spec.Load().Heartbeat
		switch {
		case quiet >= hb.Timeout:
			c.closeWith(CloseGoingAway, "heartbeat timeout", true, true)
		case quiet >= hb.Interval && time.Duration(nowNs-c.lastPing.Load()) >= hb.Interval:
			c.lastPing.Store(nowNs)
			if ping == nil {
				ping = wsconn.NewFrame(pingOp, nil)
			}
			_ = c.pushControl(ping)
		}
	})
}

package router

import (
	"context"
	"fmt"
	"time"
)

// Reconfigure applies a new configuration to a running server, all at once
// or not at all:
//
//   - A route whose pattern is in both keeps its lanes, its connections and
//     its counters. Its spec is replaced (a new heartbeat applies to open
//     connections; size and rate limits to new ones). When its Handler
//     changes, the new one is started, then each lane switches over in
//     order: events queued before the switch run on the old handler, later
//     ones on the new, so no message is lost or handled twice. The old
//     handler is then stopped.
//   - A new route starts serving at once.
//   - A route whose Key changed is removed and added.
//   - A removed route stops accepting; its connections are closed with
//     1001 "route removed", and it stops once their Close events have run.
//   - Server-wide limits (origins, connection caps, timeouts, queue size,
//     slow-consumer policy, static files) apply from the next use.
//
// Settings fixed at New (Workers, NoPoller, NoRing, Compression, Broker,
// NodeID, Logger) are not changed. A route's lane count cannot change live: that is an error, as
// are the validation errors New reports; nothing is applied then.
func (s *Server) Reconfigure(cfg Config) error {
	s.reMu.Lock()
	defer s.reMu.Unlock()
	if s.isClosing() {
		return fmt.Errorf("server is shutting down")
	}
	cfg.Workers, cfg.NoPoller, cfg.NoRing, cfg.Compression = s.static.Workers, s.static.NoPoller, s.static.NoRing, s.static.Compression
	cfg.Broker, cfg.NodeID, cfg.Logger = s.static.Broker, s.static.NodeID, s.static.Logger
	cfg.setDefaults()
	lc, err := newLiveConfig(cfg)
	if err != nil {
		return err
	}

	// Build and validate everything aside.
	old := s.routes.Load()
	next := newRouteTable()
	type change struct {
		rt   *Route
		spec RouteSpec
	}
	var kept []change
	var added []*Route
	keep := map[*Route]bool{}
	for _, spec := range cfg.Routes {
		if rt := old.byPattern(spec.Pattern); rt != nil && rt.Spec().Key == spec.Key {
			ns, err := s.normalize(spec, &cfg)
			if err != nil {
				return err
			}
			if ns.Lanes != len(rt.lanes) {
				return fmt.Errorf("route %s: lanes cannot change live (%d -> %d)", spec.Pattern, len(rt.lanes), ns.Lanes)
			}
			kept = append(kept, change{rt, ns})
			keep[rt] = true
			if err := next.add(rt); err != nil {
				return err
			}
			continue
		}
		pt, err := parsePattern(spec.Pattern)
		if err != nil {
			return fmt.Errorf("route %s: %w", spec.Pattern, err)
		}
		ns, err := s.normalize(spec, &cfg)
		if err != nil {
			return err
		}
		rt := &Route{srv: s, pattern: pt}
		rt.spec.Store(&ns)
		rt.handler.Store(&handlerBox{ns.Handler})
		for i := range ns.Lanes {
			rt.lanes = append(rt.lanes, newLane(rt, i, ns.Handler))
		}
		if err := next.add(rt); err != nil {
			return err
		}
		added = append(added, rt)
	}
	var removed []*Route
	for _, rt := range old.all {
		if !keep[rt] {
			removed = append(removed, rt)
		}
	}

	// Apply.
	s.live.Store(lc)
	for _, rt := range added {
		s.startLanes(rt)
		if err := rt.Handler().Start(rt); err != nil {
			// Handlers validate in their constructors; a Start failure is a
			// bug, and the route serves nothing rather than half of it.
			s.log.Error("route start failed", "route", rt.Pattern(), "err", err)
		}
	}
	for _, ch := range kept {
		s.updateRoute(ch.rt, ch.spec)
	}
	s.routes.Store(next)
	for _, rt := range removed {
		s.retire(rt)
	}
	return nil
}

// updateRoute gives a kept route its new spec and, if the handler changed,
// switches its lanes to the new one.
func (s *Server) updateRoute(rt *Route, spec RouteSpec) {
	oldH := rt.Handler()
	rt.spec.Store(&spec)
	if spec.Handler == oldH {
		return
	}
	newH := spec.Handler
	// Start first: the new handler may post its own start-up work (on_start)
	// to a lane, which is safe to run beside the old handler's events.
	if err := newH.Start(rt); err != nil {
		s.log.Error("route start failed", "route", rt.Pattern(), "err", err)
	}
	rt.handler.Store(&handlerBox{newH})
	for _, l := range rt.lanes {
		l.push(task{kind: taskFunc, fn: func() { l.setHandler(newH) }})
	}
	// Posted after the switch on every lane, so the old handler stops once
	// its last event has run.
	oldH.Stop()
	if rs, ok := newH.(Resumer); ok {
		// Behind each lane's switch and the old handler's stop (so
		// nothing of the old one, a timer, runs after it): the
		// connections open now are the new handler's from their next
		// event on. Those whose Open has not run on the old handler are
		// the new one's from their Open: lane.resume skips them.
		s.table.each(func(c *Conn) {
			if c.route == rt {
				c.mu.Lock()
				if c.state != stateClosed {
					c.lane.push(task{kind: taskFunc, c: c, fn: func() { c.lane.resume(rs, c) }})
				}
				c.mu.Unlock()
			}
		})
	}
}

// retire closes a removed route's connections and stops it when they are
// gone.
func (s *Server) retire(rt *Route) {
	rt.retired.Store(true)
	s.mu.Lock()
	s.retired = append(s.retired, rt)
	s.mu.Unlock()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.stopped:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.closeAll(ctx, CloseGoingAway, "route removed", func(c *Conn) bool { return c.route == rt })
		cancel()
		for rt.conns.Load() > 0 || rt.pendingHandshakes.Load() > 0 {
			select {
			case <-s.stopped:
				return // stopBackground stops it with the rest
			case <-time.After(20 * time.Millisecond):
			}
		}
		s.mu.Lock()
		mine := false
		for i, r := range s.retired {
			if r == rt {
				s.retired = append(s.retired[:i], s.retired[i+1:]...)
				// Under mu with the removal: Stats never sees the route
				// in both places or in neither.
				s.stats.retire(rt.Stats())
				mine = true
				break
			}
		}
		s.mu.Unlock()
		if mine {
			s.stopRoute(rt)
		}
	}()
}

// stopRoute stops a route's handler, then its lanes once they have run
// what is queued.
func (s *Server) stopRoute(rt *Route) {
	rt.Handler().Stop()
	for _, l := range rt.lanes {
		l.stop()
	}
}

package router

import (
	"sync"
	"sync/atomic"
	"time"
)

// serverStats are the server's counters. Per-connection figures live on
// the Conn.
type serverStats struct {
	broadcasts, fanout     atomic.Int64
	queueDrops, slowCloses atomic.Int64
	protocolErrors         atomic.Int64
	brokerErrors           atomic.Int64
	handshakesOK           atomic.Int64

	mu       sync.Mutex
	refused  map[int]int64 // handshakes refused, by HTTP status
	closedBy map[int]int64 // connections closed, by close code
	gone     RouteStats    // totals of routes removed by reconfiguration
}

// retire folds a removed route's totals into the server's, so that
// server-wide counters never go down.
func (st *serverStats) retire(r RouteStats) {
	st.mu.Lock()
	st.gone.MessagesIn += r.MessagesIn
	st.gone.MessagesOut += r.MessagesOut
	st.gone.BytesIn += r.BytesIn
	st.gone.BytesOut += r.BytesOut
	st.mu.Unlock()
}

func (st *serverStats) refusedWith(status int) {
	st.mu.Lock()
	if st.refused == nil {
		st.refused = make(map[int]int64)
	}
	st.refused[status]++
	st.mu.Unlock()
}

func (st *serverStats) closes(code int) {
	st.mu.Lock()
	if st.closedBy == nil {
		st.closedBy = make(map[int]int64)
	}
	st.closedBy[code]++
	st.mu.Unlock()
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	Connections       int64
	MessagesIn        int64
	MessagesOut       int64
	BytesIn           int64
	BytesOut          int64
	Broadcasts        int64
	Fanout            int64 // local deliveries made by broadcasts
	QueueDrops        int64 // messages refused by a full write queue
	SlowCloses        int64 // connections closed as slow consumers
	ProtocolErrors    int64
	BrokerErrors      int64
	HandshakesOK      int64
	HandshakesRefused map[int]int64 // by HTTP status
	Closes            map[int]int64 // by close code
	Uptime            time.Duration
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	out := Stats{
		Connections:    s.table.len(),
		Broadcasts:     st.broadcasts.Load(),
		Fanout:         st.fanout.Load(),
		QueueDrops:     st.queueDrops.Load(),
		SlowCloses:     st.slowCloses.Load(),
		ProtocolErrors: st.protocolErrors.Load(),
		BrokerErrors:   st.brokerErrors.Load(),
		HandshakesOK:   st.handshakesOK.Load(),
		Uptime:         time.Since(s.started),
	}
	routes, gone := s.statRoutes()
	out.MessagesIn, out.MessagesOut = gone.MessagesIn, gone.MessagesOut
	out.BytesIn, out.BytesOut = gone.BytesIn, gone.BytesOut
	for _, rt := range routes {
		r := rt.Stats()
		out.MessagesIn += r.MessagesIn
		out.MessagesOut += r.MessagesOut
		out.BytesIn += r.BytesIn
		out.BytesOut += r.BytesOut
	}
	st.mu.Lock()
	out.HandshakesRefused = make(map[int]int64, len(st.refused))
	for k, v := range st.refused {
		out.HandshakesRefused[k] = v
	}
	out.Closes = make(map[int]int64, len(st.closedBy))
	for k, v := range st.closedBy {
		out.Closes[k] = v
	}
	st.mu.Unlock()
	return out
}

// RouteStats returns the counters of every route, current ones in
// declaration order, then removed ones still draining.
func (s *Server) RouteStats() []RouteStats {
	routes, _ := s.statRoutes()
	out := make([]RouteStats, len(routes))
	for i, rt := range routes {
		out[i] = rt.Stats()
	}
	return out
}

// statRoutes returns the routes that hold counters and the totals of
// routes gone for good, taken together so that a route moving from one to
// the other is counted exactly once.
func (s *Server) statRoutes() ([]*Route, RouteStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	current := s.routes.Load().all
	routes := make([]*Route, 0, len(current)+len(s.retired))
	routes = append(append(routes, current...), s.retired...)
	s.stats.mu.Lock()
	gone := s.stats.gone
	s.stats.mu.Unlock()
	return routes, gone
}

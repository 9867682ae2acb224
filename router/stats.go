package router

import (
	"sync"
	"sync/atomic"
	"time"
)

// serverStats are the server's counters. Per-connection figures live on
// the Conn.
type serverStats struct {
	messagesIn, messagesOut atomic.Int64
	bytesIn, bytesOut       atomic.Int64
	broadcasts, fanout      atomic.Int64
	queueDrops, slowCloses  atomic.Int64
	protocolErrors          atomic.Int64
	brokerErrors            atomic.Int64
	handshakesOK            atomic.Int64

	mu       sync.Mutex
	refused  map[int]int64 // handshakes refused, by HTTP status
	closedBy map[int]int64 // connections closed, by close code
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
		MessagesIn:     st.messagesIn.Load(),
		MessagesOut:    st.messagesOut.Load(),
		BytesIn:        st.bytesIn.Load(),
		BytesOut:       st.bytesOut.Load(),
		Broadcasts:     st.broadcasts.Load(),
		Fanout:         st.fanout.Load(),
		QueueDrops:     st.queueDrops.Load(),
		SlowCloses:     st.slowCloses.Load(),
		ProtocolErrors: st.protocolErrors.Load(),
		BrokerErrors:   st.brokerErrors.Load(),
		HandshakesOK:   st.handshakesOK.Load(),
		Uptime:         time.Since(s.started),
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

package admin

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/router"
)

// collector reads a Source at scrape time and emits constant metrics, so
// that the router pays nothing per message for them.
type collector struct {
	src Source

	connections    *prometheus.Desc
	handshakes     *prometheus.Desc
	refused        *prometheus.Desc
	msgsIn         *prometheus.Desc
	msgsOut        *prometheus.Desc
	bytesIn        *prometheus.Desc
	bytesOut       *prometheus.Desc
	broadcasts     *prometheus.Desc
	fanout         *prometheus.Desc
	queueDrops     *prometheus.Desc
	slowCloses     *prometheus.Desc
	protocolErrors *prometheus.Desc
	brokerErrors   *prometheus.Desc
	closes         *prometheus.Desc
	uptime         *prometheus.Desc
	reloads        *prometheus.Desc
	reloadOK       *prometheus.Desc
	reloadTime     *prometheus.Desc

	brokerUp         *prometheus.Desc
	brokerPublishes  *prometheus.Desc
	brokerReceives   *prometheus.Desc
	brokerFailures   *prometheus.Desc
	brokerReconnects *prometheus.Desc
	brokerDropped    *prometheus.Desc
	brokerQueued     *prometheus.Desc
	brokerRooms      *prometheus.Desc
}

func newCollector(src Source) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("moonwire_"+name, help, labels, nil)
	}
	return &collector{
		src:            src,
		connections:    d("connections", "Open WebSocket connections, by route.", "route"),
		handshakes:     d("handshakes_accepted_total", "WebSocket upgrades accepted, by route.", "route"),
		refused:        d("handshakes_refused_total", "Handshakes refused, by HTTP status.", "status"),
		msgsIn:         d("messages_received_total", "Data messages received from clients, by route.", "route"),
		msgsOut:        d("messages_sent_total", "Data messages sent to clients, by route.", "route"),
		bytesIn:        d("received_bytes_total", "Bytes received on the wire, frame headers included, by route.", "route"),
		bytesOut:       d("sent_bytes_total", "Bytes sent on the wire, frame headers included, by route.", "route"),
		broadcasts:     d("broadcasts_total", "Broadcasts made."),
		fanout:         d("broadcast_deliveries_total", "Local deliveries made by broadcasts."),
		queueDrops:     d("queue_drops_total", "Messages refused by a full write queue."),
		slowCloses:     d("slow_consumer_closes_total", "Connections closed as slow consumers."),
		protocolErrors: d("protocol_errors_total", "WebSocket protocol errors from clients."),
		brokerErrors:   d("broker_errors_total", "Broker errors."),
		closes:         d("closes_total", "Connections closed, by close code.", "code"),
		uptime:         d("uptime_seconds", "Seconds since the router started."),
		reloads:        d("reloads_total", "Configuration reloads, by result.", "result"),
		reloadOK:       d("reload_last_success", "Whether the last configuration reload succeeded (1 before any)."),
		reloadTime:     d("reload_last_timestamp_seconds", "Unix time of the last configuration reload attempt (0 before any)."),

		brokerUp:         d("broker_connected", "Whether the network broker is connected (1) or lost (0).", "broker"),
		brokerPublishes:  d("broker_publishes_total", "Messages published to the broker.", "broker"),
		brokerReceives:   d("broker_receives_total", "Messages received from other nodes through the broker.", "broker"),
		brokerFailures:   d("broker_failures_total", "Failed publishes, subscribes and undecodable messages in the broker adapter.", "broker"),
		brokerReconnects: d("broker_reconnects_total", "Broker connections re-established after a loss.", "broker"),
		brokerDropped:    d("broker_outbox_drops_total", "Messages dropped because the broker outbox was full.", "broker"),
		brokerQueued:     d("broker_outbox_queued", "Messages waiting in the broker outbox: the publish lag.", "broker"),
		brokerRooms:      d("broker_rooms", "Rooms this node is subscribed to at the broker.", "broker"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.connections, c.handshakes, c.refused, c.msgsIn, c.msgsOut,
		c.bytesIn, c.bytesOut, c.broadcasts, c.fanout, c.queueDrops,
		c.slowCloses, c.protocolErrors, c.brokerErrors, c.closes, c.uptime,
		c.reloads, c.reloadOK, c.reloadTime,
		c.brokerUp, c.brokerPublishes, c.brokerReceives, c.brokerFailures,
		c.brokerReconnects, c.brokerDropped, c.brokerQueued, c.brokerRooms,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	const (
		counter = prometheus.CounterValue
		gauge   = prometheus.GaugeValue
	)
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v int64, labels ...string) {
		emitFloat(ch, d, t, float64(v), labels...)
	}

	for _, r := range sumByPattern(c.src.RouteStats()) {
		emit(c.connections, gauge, r.Connections, r.Pattern)
		emit(c.handshakes, counter, r.Handshakes, r.Pattern)
		emit(c.msgsIn, counter, r.MessagesIn, r.Pattern)
		emit(c.msgsOut, counter, r.MessagesOut, r.Pattern)
		emit(c.bytesIn, counter, r.BytesIn, r.Pattern)
		emit(c.bytesOut, counter, r.BytesOut, r.Pattern)
	}

	st := c.src.Stats()
	for status, n := range st.HandshakesRefused {
		emit(c.refused, counter, n, strconv.Itoa(status))
	}
	for code, n := range st.Closes {
		emit(c.closes, counter, n, strconv.Itoa(code))
	}
	emit(c.broadcasts, counter, st.Broadcasts)
	emit(c.fanout, counter, st.Fanout)
	emit(c.queueDrops, counter, st.QueueDrops)
	emit(c.slowCloses, counter, st.SlowCloses)
	emit(c.protocolErrors, counter, st.ProtocolErrors)
	emit(c.brokerErrors, counter, st.BrokerErrors)
	emitFloat(ch, c.uptime, gauge, st.Uptime.Seconds())

	rs := c.src.Reload()
	emit(c.reloads, counter, rs.Reloads, "ok")
	emit(c.reloads, counter, rs.Failures, "failed")
	ok := 0.0
	if rs.lastOK() {
		ok = 1
	}
	emitFloat(ch, c.reloadOK, gauge, ok)
	at := 0.0
	if !rs.At.IsZero() {
		at = float64(rs.At.UnixNano()) / 1e9
	}
	emitFloat(ch, c.reloadTime, gauge, at)

	if bs, ok := c.src.(BrokerSource); ok {
		if kind, b, ok := bs.Broker(); ok {
			up := 0.0
			if b.Connected {
				up = 1
			}
			emitFloat(ch, c.brokerUp, gauge, up, kind)
			emitFloat(ch, c.brokerPublishes, counter, float64(b.Publishes), kind)
			emitFloat(ch, c.brokerReceives, counter, float64(b.Receives), kind)
			emitFloat(ch, c.brokerFailures, counter, float64(b.Errors), kind)
			emitFloat(ch, c.brokerReconnects, counter, float64(b.Reconnects), kind)
			emitFloat(ch, c.brokerDropped, counter, float64(b.Dropped), kind)
			emitFloat(ch, c.brokerQueued, gauge, float64(b.Queued), kind)
			emitFloat(ch, c.brokerRooms, gauge, float64(b.Rooms), kind)
		}
	}
}

// emitFloat sends one constant metric; a bad one (a label value that is not
// UTF-8) is sent as an invalid metric, which promhttp reports while serving
// the rest.
func emitFloat(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

// sumByPattern merges entries that share a pattern (a route replaced by one
// with the same path while the old one drains) into one, in order of first
// appearance: Prometheus forbids duplicate series. See the package doc for
// what this does to counters when the old entry goes.
func sumByPattern(rs []router.RouteStats) []router.RouteStats {
	out := make([]router.RouteStats, 0, len(rs))
	at := make(map[string]int, len(rs))
	for _, r := range rs {
		i, seen := at[r.Pattern]
		if !seen {
			at[r.Pattern] = len(out)
			out = append(out, r)
			continue
		}
		s := &out[i]
		s.Connections += r.Connections
		s.Handshakes += r.Handshakes
		s.MessagesIn += r.MessagesIn
		s.MessagesOut += r.MessagesOut
		s.BytesIn += r.BytesIn
		s.BytesOut += r.BytesOut
	}
	return out
}

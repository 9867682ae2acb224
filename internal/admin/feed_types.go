package admin

// The dashboard's JSON: what GET /dashboard/feed streams (as Server-Sent
// Events) and the other /dashboard/ endpoints answer. The page in ui/
// reads exactly these names.

// Snapshot is the node's state at one moment: the feed's "snapshot" event,
// sent once a second.
type Snapshot struct {
	At       int64  `json:"at"` // Unix milliseconds
	Node     string `json:"node"`
	Version  string `json:"version"`
	Uptime   int64  `json:"uptime_s"`
	Draining bool   `json:"draining"`
	// Totals are counters since the process started, read from the same
	// sources as /metrics (router.Stats), so they equal the metrics'
	// values at the same moment.
	Totals  Totals         `json:"totals"`
	Rates   Rates          `json:"rates"` // per second, over the last sample interval
	Routes  []RouteSummary `json:"routes"`
	Runtime Runtime        `json:"runtime"`
	// Reloads, newest first (at most MaxReloads).
	Reloads []ReloadEntry `json:"reloads"`
	// Errors are recent script errors, newest first (at most MaxErrors).
	Errors []ScriptErrorEntry `json:"errors"`
	Broker *BrokerSummary     `json:"broker"` // null: no network broker
	// Nodes of the cluster with this one first; null without a broker
	// that keeps presence.
	Nodes []NodeSummary `json:"nodes"`
	// Actions says whether the close and reload actions are allowed (a
	// node run on the embedded config cannot reload).
	Actions ActionsAllowed `json:"actions"`
	// Point is this moment's sample for the charts.
	Point Point `json:"point"`
}

// Totals are the node's counters since start.
type Totals struct {
	Connections    int64            `json:"connections"` // open now (a gauge)
	Accepted       uint64           `json:"handshakes_accepted"`
	Refused        map[string]int64 `json:"handshakes_refused"` // by HTTP status, "401"
	MessagesIn     uint64           `json:"messages_in"`
	MessagesOut    uint64           `json:"messages_out"`
	BytesIn        uint64           `json:"bytes_in"`
	BytesOut       uint64           `json:"bytes_out"`
	Broadcasts     uint64           `json:"broadcasts"`
	Deliveries     uint64           `json:"deliveries"`
	SlowCloses     uint64           `json:"slow_consumer_closes"`
	QueueDrops     uint64           `json:"queue_drops"`
	ProtocolErrors uint64           `json:"protocol_errors"`
	ScriptErrors   uint64           `json:"script_errors"`
	ScriptTimeouts uint64           `json:"script_timeouts"`
	ReloadsOK      int64            `json:"reloads_ok"`
	ReloadsFailed  int64            `json:"reloads_failed"`
}

// Rates are per-second rates over the last sample interval.
type Rates struct {
	MessagesIn  float64            `json:"messages_in"`
	MessagesOut float64            `json:"messages_out"`
	BytesIn     float64            `json:"bytes_in"`
	BytesOut    float64            `json:"bytes_out"`
	Deliveries  float64            `json:"deliveries"`
	SlowCloses  float64            `json:"slow_consumer_closes"`
	Refused     map[string]float64 `json:"handshakes_refused"`
}

// RouteSummary is one served route.
type RouteSummary struct {
	Path        string  `json:"path"`
	Script      string  `json:"script"`
	Version     string  `json:"version"`
	LoadedAt    int64   `json:"loaded_at"` // Unix ms when this version was loaded
	Connections int64   `json:"connections"`
	MessagesIn  uint64  `json:"messages_in"`
	MessagesOut uint64  `json:"messages_out"`
	BytesIn     uint64  `json:"bytes_in"`
	BytesOut    uint64  `json:"bytes_out"`
	InPerSec    float64 `json:"in_per_s"`
	OutPerSec   float64 `json:"out_per_s"`
	// P50 and P99 are the handler latency in milliseconds over the last
	// minute, estimated from the moonwire_handler_duration_seconds
	// buckets; -1 when no callback ran in that minute.
	P50      float64 `json:"p50_ms"`
	P99      float64 `json:"p99_ms"`
	Errors   uint64  `json:"errors"`   // moonwire_handler_errors_total{kind="error"}, summed over callbacks
	Timeouts uint64  `json:"timeouts"` // kind="timeout"
}

// Runtime is the Go runtime's state.
type Runtime struct {
	HeapBytes  uint64 `json:"heap_bytes"`
	Goroutines int    `json:"goroutines"`
}

// ReloadEntry is one reload attempt.
type ReloadEntry struct {
	At      int64    `json:"at"` // Unix ms
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"` // "file:line: message" for a script
	Changed []string `json:"changed"`         // routes added or changed
	Removed []string `json:"removed"`
	Server  []string `json:"server"` // other settings, "server.max_connections"
	By      string   `json:"by"`     // "signal", "watch", "dashboard", "api" (who asked)
}

// ScriptErrorEntry is one failed callback.
type ScriptErrorEntry struct {
	At        int64  `json:"at"` // Unix ms
	Route     string `json:"route"`
	Callback  string `json:"callback"`
	Conn      string `json:"conn,omitempty"`
	Error     string `json:"error"`
	Traceback string `json:"traceback,omitempty"`
}

// BrokerSummary is the broker's state.
type BrokerSummary struct {
	Kind       string `json:"kind"`
	Connected  bool   `json:"connected"`
	Error      string `json:"error,omitempty"`
	Publishes  uint64 `json:"publishes"`
	Receives   uint64 `json:"receives"`
	Errors     uint64 `json:"errors"`
	Reconnects uint64 `json:"reconnects"`
	Dropped    uint64 `json:"dropped"`
	Queued     int    `json:"queued"` // the outbox: the publish lag, in messages
	Rooms      int    `json:"rooms"`
}

// NodeSummary is one node of the cluster as it last reported itself.
type NodeSummary struct {
	ID          string `json:"id"`
	Self        bool   `json:"self"`
	Connections int64  `json:"connections"`
	Rooms       int    `json:"rooms"`
	Connected   bool   `json:"broker_connected"`
	Queued      int    `json:"broker_queued"`
	At          int64  `json:"at"`     // Unix ms of its report
	AgeMs       int64  `json:"age_ms"` // how old the report was when read
}

// ActionsAllowed says which actions the page offers.
type ActionsAllowed struct {
	Close  bool `json:"close"`
	Reload bool `json:"reload"`
}

// Series is the last 15 minutes at one point a second, oldest first: the
// feed's "series" event, sent once on connect; each later "snapshot" adds
// its Point.
type Series struct {
	Interval int     `json:"interval_s"`
	Points   []Point `json:"points"`
}

// Point is one sample of the charts: a snapshot also carries its own as
// "point".
type Point struct {
	At          int64              `json:"at"` // Unix ms
	Connections int64              `json:"connections"`
	MessagesIn  float64            `json:"messages_in"`  // per second
	MessagesOut float64            `json:"messages_out"` // per second
	Deliveries  float64            `json:"deliveries"`   // per second
	SlowCloses  float64            `json:"slow_consumer_closes"`
	Refused     map[string]float64 `json:"handshakes_refused"` // per second, by status
	HeapBytes   uint64             `json:"heap_bytes"`
	Goroutines  int                `json:"goroutines"`
}

// RoomsAnswer is GET /dashboard/rooms?q=TEXT&limit=N: the node's largest
// rooms whose name contains q, largest first.
type RoomsAnswer struct {
	Total int        `json:"total"` // rooms matching q, of which Rooms are the first
	Rooms []RoomSize `json:"rooms"`
}

// RoomSize is a room and its local members.
type RoomSize struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
}

// MembersAnswer is GET /dashboard/members?room=NAME: the room's members,
// across the cluster when the broker keeps presence (Presence true), else
// this node's.
type MembersAnswer struct {
	Room     string   `json:"room"`
	Presence bool     `json:"presence"`
	Members  []Member `json:"members"`
	Error    string   `json:"error,omitempty"`
}

// Member is one member of a room.
type Member struct {
	Conn string `json:"conn"`
	Info any    `json:"info"` // what conn:presence published, or null
}

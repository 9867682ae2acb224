package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the dashboard's sampler and feed.
const (
	// MaxReloads is how many reload attempts a Snapshot carries.
	MaxReloads = 20
	// MaxErrors is how many script errors a Snapshot carries.
	MaxErrors = 20

	// seriesPoints is the length of the chart history: 15 minutes at the
	// default interval of a second, and still 900 points at another.
	seriesPoints = 900
	// maxFeeds bounds the open feeds: each holds a goroutine and a
	// connection, and the sampler fans out to all of them.
	maxFeeds = 16
	// latencyWindow is the span p50 and p99 are computed over.
	latencyWindow = time.Minute
	// checkpointEvery spaces the cumulative bucket counts kept for the
	// latency window, so that a short interval does not grow the history.
	checkpointEvery = time.Second
	// maxCheckpoints bounds the history: a minute at one a second.
	maxCheckpoints = int(latencyWindow/checkpointEvery) + 2
	// nodesEvery and nodesTimeout pace the question to the broker about
	// the cluster's nodes, which is a network round trip.
	nodesEvery   = 2 * time.Second
	nodesTimeout = time.Second
	// feedWriteTimeout is how long one write to a feed may take before its
	// reader counts as stuck and is dropped.
	feedWriteTimeout = 10 * time.Second
	// keepaliveEvery is the pace of the feed's comment lines, which keep
	// idle proxies from closing it.
	keepaliveEvery = 15 * time.Second
)

// runtimeMetrics are read with runtime/metrics, which does not stop the
// world (runtime.ReadMemStats does).
var runtimeMetrics = [...]string{
	"/memory/classes/heap/objects:bytes",
	"/sched/goroutines:goroutines",
}

// sampler builds a Snapshot every interval and hands it to the hub. All
// its fields but the nodes cache belong to its goroutine.
type sampler struct {
	src      DashboardSource
	obs      *Observer
	interval time.Duration
	log      *slog.Logger
	hub      *hub
	ctx      context.Context
	done     chan struct{} // closed when run returns

	// The previous sample, for rates.
	havePrev   bool
	prevAt     time.Time
	prevTotals Totals
	prevRoutes map[string][2]uint64 // path: messages in, out

	handler     map[string]*handlerTotals // reused every tick
	checkpoints []checkpoint              // oldest first
	rt          []metrics.Sample

	// The cluster's nodes, asked for in the background (askNodes).
	nodesMu    sync.Mutex
	nodes      []NodeSummary
	nodesOK    bool
	nodesAsked time.Time // sampler goroutine only
	nodesBusy  atomic.Bool
	nodesWG    sync.WaitGroup

	// reloadable turns false once ReloadNow says ErrNotReloadable (or the
	// source says so, see ReloadCapable).
	reloadable atomic.Bool
}

// checkpoint is the cumulative handler bucket counts per route at a moment.
type checkpoint struct {
	at     time.Time
	routes map[string][len(handlerBucketBounds) + 1]uint64
}

func newSampler(ctx context.Context, src DashboardSource, obs *Observer, interval time.Duration, log *slog.Logger) *sampler {
	s := &sampler{
		src:        src,
		obs:        obs,
		interval:   interval,
		log:        log,
		hub:        newHub(interval),
		ctx:        ctx,
		done:       make(chan struct{}),
		prevRoutes: make(map[string][2]uint64),
		handler:    make(map[string]*handlerTotals),
		rt:         make([]metrics.Sample, len(runtimeMetrics)),
	}
	for i, name := range runtimeMetrics {
		s.rt[i].Name = name
	}
	s.reloadable.Store(true)
	if rc, ok := src.(ReloadCapable); ok {
		s.reloadable.Store(rc.CanReload())
	}
	return s
}

// run samples at once and then every interval until ctx is done; then it
// ends the feeds.
func (s *sampler) run() {
	defer close(s.done)
	defer s.nodesWG.Wait()
	defer s.hub.close()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	s.tick(time.Now())
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.tick(now)
		}
	}
}

// tick takes one sample and publishes it.
func (s *sampler) tick(now time.Time) {
	snap := s.sample(now)
	body, err := json.Marshal(snap)
	if err != nil {
		s.log.Error("admin: encoding the dashboard snapshot", "error", err)
		return
	}
	// One encoding for every feed: the event's bytes are shared.
	ev := make([]byte, 0, len(body)+32)
	ev = append(ev, "event: snapshot\ndata: "...)
	ev = append(ev, body...)
	ev = append(ev, "\n\n"...)
	s.hub.publish(snap.Point, ev)
}

// sample builds the Snapshot of now.
func (s *sampler) sample(now time.Time) *Snapshot {
	st := s.src.Stats()
	rstats := sumByPattern(s.src.RouteStats())
	infos := s.src.RouteInfo()
	rl := s.src.Reload()
	s.obs.handlerTotals(s.handler)
	id, version := s.src.Node()

	snap := &Snapshot{
		At:       now.UnixMilli(),
		Node:     id,
		Version:  version,
		Uptime:   int64(st.Uptime / time.Second),
		Draining: s.src.Draining(),
		Actions:  ActionsAllowed{Close: true, Reload: s.reloadable.Load()},
	}

	// Totals come from the same figures the collector emits: per-route
	// counters summed over sumByPattern's series, the rest from Stats.
	tot := &snap.Totals
	byPath := make(map[string]int, len(rstats))
	for i, r := range rstats {
		byPath[r.Pattern] = i
		tot.Connections += r.Connections
		tot.Accepted += nonNeg(r.Handshakes)
		tot.MessagesIn += nonNeg(r.MessagesIn)
		tot.MessagesOut += nonNeg(r.MessagesOut)
		tot.BytesIn += nonNeg(r.BytesIn)
		tot.BytesOut += nonNeg(r.BytesOut)
	}
	tot.Refused = make(map[string]int64, len(st.HandshakesRefused))
	for status, n := range st.HandshakesRefused {
		tot.Refused[strconv.Itoa(status)] = n
	}
	tot.Broadcasts = nonNeg(st.Broadcasts)
	tot.Deliveries = nonNeg(st.Fanout)
	tot.SlowCloses = nonNeg(st.SlowCloses)
	tot.QueueDrops = nonNeg(st.QueueDrops)
	tot.ProtocolErrors = nonNeg(st.ProtocolErrors)
	for _, h := range s.handler {
		tot.ScriptErrors += h.errors
		tot.ScriptTimeouts += h.timeouts
	}
	tot.ReloadsOK, tot.ReloadsFailed = rl.Reloads, rl.Failures

	// Rates over the time since the previous sample; none on the first.
	dt := 0.0
	if s.havePrev {
		dt = now.Sub(s.prevAt).Seconds()
	}
	rate := func(cur, prev uint64) float64 {
		if dt <= 0 || cur < prev { // a counter that went down: no rate
			return 0
		}
		return float64(cur-prev) / dt
	}
	p := &s.prevTotals
	snap.Rates = Rates{
		MessagesIn:  rate(tot.MessagesIn, p.MessagesIn),
		MessagesOut: rate(tot.MessagesOut, p.MessagesOut),
		BytesIn:     rate(tot.BytesIn, p.BytesIn),
		BytesOut:    rate(tot.BytesOut, p.BytesOut),
		Deliveries:  rate(tot.Deliveries, p.Deliveries),
		SlowCloses:  rate(tot.SlowCloses, p.SlowCloses),
		Refused:     make(map[string]float64, len(tot.Refused)),
	}
	for status, n := range tot.Refused {
		snap.Rates.Refused[status] = rate(uint64(max(n, 0)), uint64(max(p.Refused[status], 0)))
	}

	// Routes, in config order, with latency over the last minute.
	base := s.latencyBase(now)
	snap.Routes = make([]RouteSummary, 0, len(infos))
	for _, info := range infos {
		rs := RouteSummary{
			Path:     info.Path,
			Script:   info.Script,
			Version:  info.Version,
			LoadedAt: unixMilli(info.LoadedAt),
			P50:      -1,
			P99:      -1,
		}
		if i, ok := byPath[info.Path]; ok {
			r := rstats[i]
			rs.Connections = r.Connections
			rs.MessagesIn, rs.MessagesOut = nonNeg(r.MessagesIn), nonNeg(r.MessagesOut)
			rs.BytesIn, rs.BytesOut = nonNeg(r.BytesIn), nonNeg(r.BytesOut)
			prev := s.prevRoutes[info.Path]
			rs.InPerSec = rate(rs.MessagesIn, prev[0])
			rs.OutPerSec = rate(rs.MessagesOut, prev[1])
		}
		if h := s.handler[info.Path]; h != nil {
			rs.Errors, rs.Timeouts = h.errors, h.timeouts
			if base != nil {
				b := base.routes[info.Path]
				rs.P50 = windowQuantile(0.5, &h.buckets, &b)
				rs.P99 = windowQuantile(0.99, &h.buckets, &b)
			}
		}
		snap.Routes = append(snap.Routes, rs)
	}
	s.checkpoint(now)

	metrics.Read(s.rt)
	if v := s.rt[0].Value; v.Kind() == metrics.KindUint64 {
		snap.Runtime.HeapBytes = v.Uint64()
	}
	if v := s.rt[1].Value; v.Kind() == metrics.KindUint64 {
		snap.Runtime.Goroutines = int(v.Uint64())
	}

	snap.Reloads = s.src.Reloads()
	if len(snap.Reloads) > MaxReloads {
		snap.Reloads = snap.Reloads[:MaxReloads]
	}
	snap.Reloads = normalizeReloads(snap.Reloads)
	snap.Errors = s.obs.RecentErrors(MaxErrors)
	if snap.Errors == nil {
		snap.Errors = []ScriptErrorEntry{}
	}

	if bs, ok := s.src.(BrokerSource); ok {
		if kind, b, ok := bs.Broker(); ok {
			snap.Broker = &BrokerSummary{
				Kind: kind, Connected: b.Connected, Error: b.LastError,
				Publishes: b.Publishes, Receives: b.Receives, Errors: b.Errors,
				Reconnects: b.Reconnects, Dropped: b.Dropped, Queued: b.Queued, Rooms: b.Rooms,
			}
		}
	}
	s.askNodes(now)
	s.nodesMu.Lock()
	if s.nodesOK {
		snap.Nodes = slices.Clone(s.nodes)
	}
	s.nodesMu.Unlock()

	snap.Point = Point{
		At:          snap.At,
		Connections: tot.Connections,
		MessagesIn:  snap.Rates.MessagesIn,
		MessagesOut: snap.Rates.MessagesOut,
		Deliveries:  snap.Rates.Deliveries,
		SlowCloses:  snap.Rates.SlowCloses,
		Refused:     snap.Rates.Refused,
		HeapBytes:   snap.Runtime.HeapBytes,
		Goroutines:  snap.Runtime.Goroutines,
	}

	// Remember this sample for the next rates.
	s.havePrev, s.prevAt, s.prevTotals = true, now, *tot
	clear(s.prevRoutes)
	for _, r := range rstats {
		s.prevRoutes[r.Pattern] = [2]uint64{nonNeg(r.MessagesIn), nonNeg(r.MessagesOut)}
	}
	return snap
}

// latencyBase returns the checkpoint the latency window starts at: the
// oldest one at most latencyWindow old; nil when there is none.
func (s *sampler) latencyBase(now time.Time) *checkpoint {
	cut := now.Add(-latencyWindow)
	i := 0
	for i < len(s.checkpoints) && s.checkpoints[i].at.Before(cut) {
		i++
	}
	s.checkpoints = s.checkpoints[:copy(s.checkpoints, s.checkpoints[i:])]
	if len(s.checkpoints) == 0 {
		return nil
	}
	return &s.checkpoints[0]
}

// checkpoint keeps the current bucket counts when the last checkpoint is
// checkpointEvery old.
func (s *sampler) checkpoint(now time.Time) {
	if n := len(s.checkpoints); n > 0 && now.Sub(s.checkpoints[n-1].at) < checkpointEvery {
		return
	}
	c := checkpoint{at: now, routes: make(map[string][len(handlerBucketBounds) + 1]uint64, len(s.handler))}
	for route, h := range s.handler {
		c.routes[route] = h.buckets
	}
	if len(s.checkpoints) >= maxCheckpoints {
		s.checkpoints = s.checkpoints[:copy(s.checkpoints, s.checkpoints[1:])]
	}
	s.checkpoints = append(s.checkpoints, c)
}

// askNodes asks the source for the cluster's nodes in the background, at
// most every nodesEvery and one question at a time: a slow broker must not
// hold up the tick, which shows the last answer meanwhile.
func (s *sampler) askNodes(now time.Time) {
	if now.Sub(s.nodesAsked) < nodesEvery || !s.nodesBusy.CompareAndSwap(false, true) {
		return
	}
	s.nodesAsked = now
	s.nodesWG.Add(1)
	go func() {
		defer s.nodesWG.Done()
		defer s.nodesBusy.Store(false)
		ctx, cancel := context.WithTimeout(s.ctx, nodesTimeout)
		defer cancel()
		nodes, ok := s.src.Nodes(ctx)
		if ctx.Err() != nil && s.ctx.Err() == nil {
			s.log.Debug("admin: asking for the cluster's nodes timed out", "error", ctx.Err())
		}
		nodes = slices.Clone(nodes)
		s.nodesMu.Lock()
		s.nodes, s.nodesOK = nodes, ok
		s.nodesMu.Unlock()
	}()
}

// windowQuantile estimates the q-quantile, in milliseconds, of the
// observations between two cumulative bucket counts (base then now) the
// way Prometheus' histogram_quantile does: linear interpolation inside the
// bucket the rank falls in, the first bucket starting at 0, and the upper
// bound of the last finite bucket for a rank in +Inf. It returns -1 when
// there are no observations in between. Counts that went down (a reset)
// count from zero.
func windowQuantile(q float64, now, base *[len(handlerBucketBounds) + 1]uint64) float64 {
	var c [len(handlerBucketBounds) + 1]uint64
	reset := false
	for i := range c {
		if now[i] < base[i] {
			reset = true
			break
		}
		c[i] = now[i] - base[i]
	}
	if reset {
		c = *now
	}
	total := c[len(c)-1]
	if total == 0 {
		return -1
	}
	rank := q * float64(total)
	i := 0
	for i < len(handlerBucketBounds) && float64(c[i]) < rank {
		i++
	}
	if i == len(handlerBucketBounds) { // in +Inf
		return handlerBucketBounds[len(handlerBucketBounds)-1] * 1000
	}
	lower, below := 0.0, uint64(0)
	if i > 0 {
		lower, below = handlerBucketBounds[i-1], c[i-1]
	}
	upper := handlerBucketBounds[i]
	in := float64(c[i] - below)
	if in <= 0 {
		return upper * 1000
	}
	return (lower + (upper-lower)*(rank-float64(below))/in) * 1000
}

func nonNeg(v int64) uint64 { return uint64(max(v, 0)) }

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// normalizeReloads returns entries whose lists are [] rather than null, so
// the page can iterate them.
func normalizeReloads(rs []ReloadEntry) []ReloadEntry {
	out := make([]ReloadEntry, len(rs))
	for i, r := range rs {
		out[i] = normalizeReload(r)
	}
	return out
}

func normalizeReload(r ReloadEntry) ReloadEntry {
	if r.Changed == nil {
		r.Changed = []string{}
	}
	if r.Removed == nil {
		r.Removed = []string{}
	}
	if r.Server == nil {
		r.Server = []string{}
	}
	return r
}

// hub keeps the chart history and the latest snapshot and fans snapshots
// out to the feeds.
type hub struct {
	interval int // seconds, for Series

	mu          sync.Mutex
	points      [seriesPoints]Point
	next, n     int
	latest      []byte // the latest "snapshot" event
	seriesCache []byte // the "series" event, built at most once a tick
	feeds       map[*feed]struct{}
	closed      bool
}

// feed is one open GET /dashboard/feed. ch holds at most the newest
// snapshot event not yet written: a slow reader skips snapshots rather than
// queueing them. The hub closes ch when it stops.
type feed struct {
	ch chan []byte
}

func newHub(interval time.Duration) *hub {
	return &hub{
		interval: max(1, int(math.Round(interval.Seconds()))),
		feeds:    make(map[*feed]struct{}),
	}
}

// publish adds a point to the history and hands the event to every feed
// without blocking on any.
func (h *hub) publish(p Point, ev []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.points[h.next] = p
	h.next = (h.next + 1) % seriesPoints
	h.n = min(h.n+1, seriesPoints)
	h.latest = ev
	h.seriesCache = nil
	for f := range h.feeds {
		select {
		case f.ch <- ev:
		default:
			// The reader has not taken the previous one: replace it.
			select {
			case <-f.ch:
			default:
			}
			select {
			case f.ch <- ev:
			default:
			}
		}
	}
}

// errTooManyFeeds and errHubClosed are subscribe's refusals.
var (
	errTooManyFeeds = fmt.Errorf("too many dashboard feeds (at most %d)", maxFeeds)
	errHubClosed    = fmt.Errorf("the dashboard sampler has stopped")
)

// subscribe registers a feed and returns, consistently with what the feed
// will receive next, the "series" event and the latest "snapshot" event
// (nil before the first sample).
func (h *hub) subscribe() (f *feed, series, latest []byte, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, nil, errHubClosed
	}
	if len(h.feeds) >= maxFeeds {
		return nil, nil, nil, errTooManyFeeds
	}
	if h.seriesCache == nil {
		// The newest point comes with the latest snapshot, which the feed
		// sends next: the series stops short of it, so that the page,
		// which appends every snapshot's point, has each point once.
		n := h.n
		if h.latest != nil {
			n--
		}
		s := Series{Interval: h.interval, Points: make([]Point, 0, n)}
		for i := range n {
			s.Points = append(s.Points, h.points[(h.next-h.n+i+seriesPoints)%seriesPoints])
		}
		body, err := json.Marshal(s)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("encoding the series: %w", err)
		}
		var b bytes.Buffer
		b.Grow(len(body) + 32)
		b.WriteString("event: series\ndata: ")
		b.Write(body)
		b.WriteString("\n\n")
		h.seriesCache = b.Bytes()
	}
	f = &feed{ch: make(chan []byte, 1)}
	h.feeds[f] = struct{}{}
	return f, h.seriesCache, h.latest, nil
}

func (h *hub) unsubscribe(f *feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.feeds, f)
}

// close ends every feed and refuses new ones.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for f := range h.feeds {
		close(f.ch)
		delete(h.feeds, f)
	}
}

// feedCount returns the number of open feeds.
func (h *hub) feedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.feeds)
}

// serveFeed is GET /dashboard/feed: Server-Sent Events, "series" then
// "snapshot" at once, then each new snapshot; ": keepalive" comments in
// between. A write that takes longer than writeTimeout ends the feed, so a
// reader that stopped reading costs a goroutine for that long at most.
func (h *hub) serveFeed(w http.ResponseWriter, r *http.Request, writeTimeout time.Duration) {
	if r.Method == http.MethodHead {
		// GET patterns also match HEAD: answer the headers, not a stream
		// nobody will read.
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		return
	}
	f, series, latest, err := h.subscribe()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer h.unsubscribe(f)

	rc := http.NewResponseController(w)
	write := func(b []byte) error {
		// Extend (or set) the deadline for this write only: the admin
		// server's WriteTimeout, if any, would otherwise end the feed.
		if err := rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil && err != http.ErrNotSupported {
			return fmt.Errorf("setting the write deadline: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("writing: %w", err)
		}
		if err := rc.Flush(); err != nil {
			return fmt.Errorf("flushing: %w", err)
		}
		return nil
	}

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if err := write(series); err != nil {
		return
	}
	if latest != nil {
		if err := write(latest); err != nil {
			return
		}
	}
	keep := time.NewTicker(keepaliveEvery)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-f.ch:
			if !ok {
				return // the sampler stopped
			}
			if err := write(ev); err != nil {
				return
			}
		case <-keep.C:
			if err := write([]byte(": keepalive\n\n")); err != nil {
				return
			}
		}
	}
}

// pointCount returns the number of points in the history.
func (h *hub) pointCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

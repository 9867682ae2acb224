package admin

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/plugins/lua"
)

// HandlerBuckets are the upper bounds, in seconds, of
// moonwire_handler_duration_seconds: 50µs to about 1.2s, by factors of 2.5,
// which spans a cheap callback to one stopped at the default 1s
// handler_timeout.
var HandlerBuckets = prometheus.ExponentialBuckets(0.00005, 2.5, 12)

// Observer turns Lua callbacks into metrics; it implements
// plugins/lua.Observer. It records moonwire_handler_duration_seconds
// {route,callback} and moonwire_handler_errors_total{route,callback,kind},
// kind "timeout" for a callback stopped by the handler timeout
// (errors.Is(err, lua.ErrTimeout)) and "error" for any other error.
//
// Callback is safe for concurrent use and does not allocate once a
// (route, callback) pair has been seen: the pair's series are resolved once
// and cached. Both error series of a pair start at zero with its first
// callback, so that rate() works from the first error. A nil *Observer
// records nothing.
type Observer struct {
	// duration describes moonwire_handler_duration_seconds, which the
	// Observer exposes from its own counts (see durationCollector).
	duration *prometheus.Desc
	errors   *prometheus.CounterVec
	http     *prometheus.CounterVec // see HTTPResponse

	// cache maps (route, callback) to its resolved series. It is copied on
	// write under mu (new pairs are rare: routes times callback kinds) and
	// read without a lock.
	mu    sync.Mutex
	cache atomic.Pointer[map[callbackKey]*callbackSeries]

	// scriptErrs is a ring of the latest script errors for the dashboard
	// (ScriptError); next is where the next one goes, n how many it holds.
	errMu      sync.Mutex
	scriptErrs [maxKeptErrors]ScriptErrorEntry
	errNext    int
	errCount   int
}

var (
	_ lua.Observer         = (*Observer)(nil)
	_ lua.ErrorObserver    = (*Observer)(nil)
	_ lua.RecorderObserver = (*Observer)(nil)
)

type callbackKey struct{ route, callback string }

type callbackSeries struct {
	route, callback string
	timeouts        prometheus.Counter
	failures        prometheus.Counter

	// The histogram, counted here rather than in a prometheus.Histogram:
	// an atomic add to a bucket and one to the sum, where a Histogram also
	// keeps a hot and a cold copy and a count, and the dashboard needed
	// these counts anyway (BenchmarkObserverCallback: 43 ns a callback
	// with both, 25 ns now). /metrics reads them through
	// durationCollector, the dashboard's sampler directly (bucket, sum).
	//
	// The counts are kept in shards, one per Recorder in turn: a route's
	// VMs run on as many lanes at once, and adding to one shared
	// cache line from every processor made each of them wait for it
	// (BenchmarkRecorderParallel, two processors: 105 ns a record with
	// one shared set of counts, 5.7 with a shard each).
	shards   [seriesShards]seriesShard
	next     atomic.Uint32 // the shard the next Recorder gets
	nTimeout atomic.Uint64
	nError   atomic.Uint64
}

// seriesShards is how many shards a series' histogram is kept in: a
// route has a lane per processor, so on a larger machine some lanes
// share one, as all of them did before.
const seriesShards = 4

// seriesShard is one share of a series' histogram, on cache lines of its
// own (the leading pad keeps it off its neighbour's). buckets are per
// bucket (not cumulative), the last one +Inf; sumNs is in nanoseconds.
type seriesShard struct {
	_       [64]byte
	s       *callbackSeries
	buckets [len(handlerBucketBounds) + 1]atomic.Uint64
	sumNs   atomic.Uint64
}

// bucket returns bucket i's count, over the shards.
func (s *callbackSeries) bucket(i int) uint64 {
	var n uint64
	for j := range s.shards {
		n += s.shards[j].buckets[i].Load()
	}
	return n
}

// sum returns the sum of the durations recorded, in nanoseconds.
func (s *callbackSeries) sum() uint64 {
	var n uint64
	for j := range s.shards {
		n += s.shards[j].sumNs.Load()
	}
	return n
}

// NewObserver returns an Observer whose metrics are registered on reg.
func NewObserver(reg prometheus.Registerer) (*Observer, error) {
	if reg == nil {
		return nil, errors.New("admin: nil registerer")
	}
	o := &Observer{
		duration: prometheus.NewDesc("moonwire_handler_duration_seconds",
			"Time Lua callbacks took, by route and callback.",
			[]string{"route", "callback"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moonwire_handler_errors_total",
			Help: `Lua callbacks that failed, by route, callback and kind ("timeout": stopped by the handler timeout; "error": any other error).`,
		}, []string{"route", "callback", "kind"}),
	}
	durations := durationCollector{o}
	if err := reg.Register(durations); err != nil {
		return nil, err
	}
	if err := reg.Register(o.errors); err != nil {
		reg.Unregister(durations)
		return nil, err
	}
	o.http = newHTTPResponses()
	if err := reg.Register(o.http); err != nil {
		reg.Unregister(durations)
		reg.Unregister(o.errors)
		return nil, err
	}
	empty := map[callbackKey]*callbackSeries{}
	o.cache.Store(&empty)
	return o, nil
}

// Callback records one callback run: how long it took and, when err is not
// nil, an error of kind "timeout" or "error".
func (o *Observer) Callback(route, callback string, d time.Duration, err error) {
	o.series(route, callback).Record(d, err)
}

// Recorder returns the recorder of one (route, callback) pair's runs,
// which records what Callback would without looking the pair up: the Lua
// engine keeps one per VM and callback. It implements
// plugins/lua.RecorderObserver.
func (o *Observer) Recorder(route, callback string) lua.CallbackRecorder {
	s := o.series(route, callback)
	if s == nil {
		return (*seriesShard)(nil)
	}
	return &s.shards[s.next.Add(1)%seriesShards]
}

// series returns the pair's series, resolving it on first use; nil for a
// nil Observer and for labels Prometheus refuses (Record then records
// nothing).
func (o *Observer) series(route, callback string) *callbackSeries {
	if o == nil {
		return nil
	}
	if s := (*o.cache.Load())[callbackKey{route, callback}]; s != nil {
		return s
	}
	return o.resolve(route, callback)
}

// Record records one run of s's pair. A nil *callbackSeries (a pair whose
// labels Prometheus refuses) records nothing.
func (s *callbackSeries) Record(d time.Duration, err error) {
	if s == nil {
		return
	}
	s.shards[0].Record(d, err)
}

// Record records one run of its series' pair. A nil *seriesShard (a pair
// whose labels Prometheus refuses) records nothing.
func (sh *seriesShard) Record(d time.Duration, err error) {
	if sh == nil {
		return
	}
	// The bucket Prometheus would count it in: the first whose upper
	// bound is at least sec.
	sec := d.Seconds()
	i := 0
	for i < len(handlerBucketBounds) && sec > handlerBucketBounds[i] {
		i++
	}
	sh.buckets[i].Add(1)
	sh.sumNs.Add(uint64(max(d, 0)))
	if err != nil {
		s := sh.s
		if errors.Is(err, lua.ErrTimeout) {
			s.timeouts.Inc()
			s.nTimeout.Add(1)
		} else {
			s.failures.Inc()
			s.nError.Add(1)
		}
	}
}

// resolve creates and caches the series of a new (route, callback) pair.
// It returns nil for label values Prometheus refuses (not UTF-8), which are
// then not recorded.
func (o *Observer) resolve(route, callback string) *callbackSeries {
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.cache.Load()
	if s := old[callbackKey{route, callback}]; s != nil {
		return s // another goroutine got here first
	}
	// The key outlives the call: do not pin the caller's backing arrays.
	route, callback = strings.Clone(route), strings.Clone(callback)
	t, err := o.errors.GetMetricWithLabelValues(route, callback, "timeout")
	if err != nil {
		return nil
	}
	f, err := o.errors.GetMetricWithLabelValues(route, callback, "error")
	if err != nil {
		return nil
	}
	s := &callbackSeries{route: route, callback: callback, timeouts: t, failures: f}
	for i := range s.shards {
		s.shards[i].s = s
	}
	next := make(map[callbackKey]*callbackSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[callbackKey{route, callback}] = s
	o.cache.Store(&next)
	return s
}

// Bounds of the script error ring: an error storm (a script failing on
// every message) costs at most maxKeptErrors entries of bounded size.
const (
	maxKeptErrors    = 100
	maxErrorText     = 1 << 10 // bytes of an error message kept
	maxTracebackText = 4 << 10 // bytes of a traceback kept
	maxLabelText     = 256     // bytes of a route, callback or connection id kept
)

// ScriptError keeps one script error for the dashboard; it implements
// plugins/lua.ErrorObserver. The latest maxKeptErrors are kept, with the
// error truncated to 1 KiB and the traceback to 4 KiB. The strings are
// copied: the entry outlives the call.
func (o *Observer) ScriptError(route, callback, conn string, err error, traceback string) {
	if o == nil {
		return
	}
	msg := "<nil>"
	if err != nil {
		msg = err.Error()
	}
	e := ScriptErrorEntry{
		At:        time.Now().UnixMilli(),
		Route:     truncate(route, maxLabelText),
		Callback:  truncate(callback, maxLabelText),
		Conn:      truncate(conn, maxLabelText),
		Error:     truncate(msg, maxErrorText),
		Traceback: truncate(traceback, maxTracebackText),
	}
	o.errMu.Lock()
	o.scriptErrs[o.errNext] = e
	o.errNext = (o.errNext + 1) % maxKeptErrors
	if o.errCount < maxKeptErrors {
		o.errCount++
	}
	o.errMu.Unlock()
}

// RecentErrors returns up to n of the latest script errors, newest first.
func (o *Observer) RecentErrors(n int) []ScriptErrorEntry {
	if o == nil || n <= 0 {
		return nil
	}
	o.errMu.Lock()
	defer o.errMu.Unlock()
	n = min(n, o.errCount)
	out := make([]ScriptErrorEntry, n)
	for i := range n {
		out[i] = o.scriptErrs[(o.errNext-1-i+2*maxKeptErrors)%maxKeptErrors]
	}
	return out
}

// truncate returns a copy of s cut to at most max bytes, at a rune
// boundary so that the JSON stays valid UTF-8.
func truncate(s string, max int) string {
	if len(s) > max {
		cut := max
		// Back off to the start of the rune the cut would split.
		for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
			cut--
		}
		s = s[:cut]
	}
	return strings.Clone(s)
}

// handlerTotals are one route's handler figures, summed over its
// callbacks: the cumulative counts of moonwire_handler_duration_seconds'
// buckets (the last one is +Inf, the number of observations) and of
// moonwire_handler_errors_total by kind.
type handlerTotals struct {
	buckets  [len(handlerBucketBounds) + 1]uint64
	errors   uint64
	timeouts uint64
}

// handlerBucketBounds is HandlerBuckets as an array, so that handlerTotals
// has a fixed size.
var handlerBucketBounds = [12]float64(HandlerBuckets)

// durationCollector exposes moonwire_handler_duration_seconds from the
// Observer's counts: a histogram per (route, callback) seen.
type durationCollector struct{ o *Observer }

// Describe implements prometheus.Collector.
func (c durationCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.o.duration }

// Collect implements prometheus.Collector.
func (c durationCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range *c.o.cache.Load() {
		cumulative := make(map[float64]uint64, len(handlerBucketBounds))
		var run uint64
		for i, b := range handlerBucketBounds {
			run += s.bucket(i)
			cumulative[b] = run
		}
		run += s.bucket(len(handlerBucketBounds))
		sum := float64(s.sum()) / 1e9
		m, err := prometheus.NewConstHistogram(c.o.duration, run, sum, cumulative, s.route, s.callback)
		if err != nil {
			continue // resolve only keeps label values Prometheus takes
		}
		ch <- m
	}
}

// handlerTotals reads the Observer's counts, summed per route, into into
// (which it clears first). They are counted with the series /metrics
// exposes, so they agree with them.
func (o *Observer) handlerTotals(into map[string]*handlerTotals) {
	for _, t := range into {
		*t = handlerTotals{}
	}
	if o == nil {
		return
	}
	for k, s := range *o.cache.Load() {
		t := into[k.route]
		if t == nil {
			t = new(handlerTotals)
			into[k.route] = t
		}
		var run uint64
		for i := range t.buckets {
			run += s.bucket(i)
			t.buckets[i] += run
		}
		t.errors += s.nError.Load()
		t.timeouts += s.nTimeout.Load()
	}
}

package admin

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	http     *prometheus.CounterVec // see HTTPResponse

	// cache maps (route, callback) to its resolved series. It is copied on
	// write under mu (new pairs are rare: routes times callback kinds) and
	// read without a lock.
	mu    sync.Mutex
	cache atomic.Pointer[map[callbackKey]*callbackSeries]
}

var _ lua.Observer = (*Observer)(nil)

type callbackKey struct{ route, callback string }

type callbackSeries struct {
	duration prometheus.Observer
	timeouts prometheus.Counter
	failures prometheus.Counter
}

// NewObserver returns an Observer whose metrics are registered on reg.
func NewObserver(reg prometheus.Registerer) (*Observer, error) {
	if reg == nil {
		return nil, errors.New("admin: nil registerer")
	}
	o := &Observer{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moonwire_handler_duration_seconds",
			Help:    "Time Lua callbacks took, by route and callback.",
			Buckets: HandlerBuckets,
		}, []string{"route", "callback"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moonwire_handler_errors_total",
			Help: `Lua callbacks that failed, by route, callback and kind ("timeout": stopped by the handler timeout; "error": any other error).`,
		}, []string{"route", "callback", "kind"}),
	}
	if err := reg.Register(o.duration); err != nil {
		return nil, err
	}
	if err := reg.Register(o.errors); err != nil {
		reg.Unregister(o.duration)
		return nil, err
	}
	o.http = newHTTPResponses()
	if err := reg.Register(o.http); err != nil {
		reg.Unregister(o.duration)
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
	if o == nil {
		return
	}
	s := (*o.cache.Load())[callbackKey{route, callback}]
	if s == nil {
		if s = o.resolve(route, callback); s == nil {
			return
		}
	}
	s.duration.Observe(d.Seconds())
	if err != nil {
		if errors.Is(err, lua.ErrTimeout) {
			s.timeouts.Inc()
		} else {
			s.failures.Inc()
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
	h, err := o.duration.GetMetricWithLabelValues(route, callback)
	if err != nil {
		return nil
	}
	t, err := o.errors.GetMetricWithLabelValues(route, callback, "timeout")
	if err != nil {
		return nil
	}
	f, err := o.errors.GetMetricWithLabelValues(route, callback, "error")
	if err != nil {
		return nil
	}
	s := &callbackSeries{duration: h, timeouts: t, failures: f}
	next := make(map[callbackKey]*callbackSeries, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[callbackKey{route, callback}] = s
	o.cache.Store(&next)
	return s
}

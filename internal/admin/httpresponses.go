package admin

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/plugins/lua"
)

// newHTTPResponses makes moonwire_http_responses_total{route,status}: the
// answers scripts gave plain HTTP requests (on_http), 500 and 503 for
// those that failed included. The status label takes at most the 400
// values 200-599, so the series stay bounded per route.
func newHTTPResponses() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "moonwire_http_responses_total",
		Help: "Answers of on_http callbacks to plain HTTP requests, by route and status.",
	}, []string{"route", "status"})
}

// HTTPResponse counts one answer of a route's on_http; it implements
// plugins/lua.HTTPObserver. Plain HTTP is not the hot path: the series is
// looked up on every call.
func (o *Observer) HTTPResponse(route string, status int) {
	if o == nil || o.http == nil {
		return
	}
	c, err := o.http.GetMetricWithLabelValues(route, strconv.Itoa(status))
	if err != nil {
		return // a label Prometheus refuses (not UTF-8): not recorded
	}
	c.Inc()
}

var _ lua.HTTPObserver = (*Observer)(nil)

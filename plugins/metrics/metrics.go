package metrics

import (
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// DefaultMaxMetrics is the bound on distinct metric names when
	// Options.MaxMetrics is 0 or negative.
	DefaultMaxMetrics = 1000
	// DefaultHelp is the help text of a metric defined without one.
	DefaultHelp = "Defined by a moonwire script."
	// RouteLabel is the one label of every script metric: the route
	// pattern of the script that touched the series.
	RouteLabel = "route"
)

// reservedPrefixes belong to the server's own metrics and the Go client's
// standard collectors; scripts cannot define names that start with them.
var reservedPrefixes = [...]string{"moonwire_", "go_", "process_", "promhttp_"}

// Options configure a Module. Zero fields take the defaults.
type Options struct {
	// MaxMetrics bounds the distinct metric names all scripts together may
	// define (counters and gauges alike); 0: DefaultMaxMetrics. Defining
	// one more raises "metrics: too many metrics (limit N)" in the script.
	MaxMetrics int
}

// Module is the state behind the metrics module: the metric families
// scripts have defined, by name. One Module serves every VM of every route
// and is safe for concurrent use; its families live as long as it does, so
// values survive script reloads.
//
// Lock order: mu is held across Registerer.Register and nothing else; no
// Lua runs under it.
type Module struct {
	reg prometheus.Registerer
	max int

	mu       sync.Mutex
	families map[string]*family
}

// New returns a module that registers the metrics scripts define on reg.
// A nil reg is allowed: metrics then count but are exported nowhere, which
// suits tools that run scripts without serving them.
func New(reg prometheus.Registerer, opts Options) *Module {
	if opts.MaxMetrics <= 0 {
		opts.MaxMetrics = DefaultMaxMetrics
	}
	return &Module{
		reg:      reg,
		max:      opts.MaxMetrics,
		families: make(map[string]*family),
	}
}

type kind uint8

const (
	kindCounter kind = iota + 1
	kindGauge
)

func (k kind) String() string {
	if k == kindCounter {
		return "counter"
	}
	return "gauge"
}

// family is one metric name: exactly one of the vectors is set, per kind.
// It never changes after it is stored in Module.families.
type family struct {
	kind     kind
	counters *prometheus.CounterVec
	gauges   *prometheus.GaugeVec
}

// family returns the family called name, defining and registering it as k
// with help (DefaultHelp when empty) if it is new. name must be valid (see
// checkName). The error texts are what scripts see.
func (m *Module) family(name, help string, k kind) (*family, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.families[name]; ok {
		if f.kind != k {
			return nil, fmt.Errorf("metrics: %s is already a %s", name, f.kind)
		}
		return f, nil
	}
	if len(m.families) >= m.max {
		return nil, fmt.Errorf("metrics: too many metrics (limit %d)", m.max)
	}
	if help == "" {
		help = DefaultHelp
	}
	f := &family{kind: k}
	var c prometheus.Collector
	switch k {
	case kindCounter:
		f.counters = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{RouteLabel})
		c = f.counters
	default:
		f.gauges = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{RouteLabel})
		c = f.gauges
	}
	if m.reg != nil {
		if err := m.reg.Register(c); err != nil {
			// Not recorded: a later call tries again and reports again.
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	m.families[name] = f
	return f, nil
}

// counter returns the series of the counter name for route. The vector
// hands out the same child for the same route every time.
func (f *family) counter(route string) (prometheus.Counter, error) {
	return f.counters.GetMetricWithLabelValues(route)
}

// gauge returns the series of the gauge name for route.
func (f *family) gauge(route string) (prometheus.Gauge, error) {
	return f.gauges.GetMetricWithLabelValues(route)
}

// checkName validates a metric name a script asked for and returns the rule
// it breaks, or "".
func checkName(name string) string {
	if !validName(name) {
		return fmt.Sprintf("metrics: invalid name %q (must match [a-zA-Z_:][a-zA-Z0-9_:]*)", name)
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Sprintf("metrics: name %q uses the reserved prefix %q", name, p)
		}
	}
	return ""
}

// validName reports whether name matches the classic Prometheus metric name
// syntax [a-zA-Z_:][a-zA-Z0-9_:]*. client_golang also accepts any UTF-8
// name nowadays; scripts get the syntax every scraper and query can use
// unquoted.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == ':':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Package metrics is the `metrics` Lua module: it lets route scripts define
// Prometheus counters and gauges and update them from their callbacks.
//
// Every metric a script touches is one metric family named by the script and
// labelled with a single label, route, holding the path pattern of the route
// whose script touched it (the engine opens the module per route with
// OpenRoute). The same name used by two routes is one family with two series.
// Scripts cannot add labels of their own, so the number of series is bounded
// by names × routes, and names are bounded by Options.MaxMetrics.
//
// The values live in Go, in collectors registered once on the Registerer the
// process hands to New: registration is idempotent, and a VM that is thrown
// away by a reload loses nothing. A Lua counter or gauge object keeps the
// resolved prometheus child, so updating it is an atomic operation with no
// lookup and no lock.
//
// The package knows nothing of the engine, the router, connections, the
// config or the HTTP side of Prometheus: it registers collectors on a
// prometheus.Registerer and never serves or gathers them. Serving /metrics,
// and the moonwire_* metrics of the server itself, belong to the admin
// listener; the reserved name prefixes keep scripts out of that namespace.
package metrics

// Package admin is moonwire's operator HTTP surface, served on
// [admin] listen: Prometheus metrics on /metrics, a health check on
// /healthz and the served routes on /routes. Every endpoint answers GET and
// HEAD only (other methods get 405 with an Allow header); other paths get
// 404. With Options.Pprof ([admin] pprof = true) the Go profiler is served
// under /debug/pprof/ as well.
//
// The router keeps its own counters (router.Stats, router.RouteStats) and
// pays nothing per message for metrics: the collector registered by New
// reads a Source at scrape time and emits constant metrics. Lua callback
// timings and errors come through Observer, which implements
// plugins/lua.Observer and records into a histogram and a counter.
//
// The package imports the router only for its stats types and plugins/lua
// only for ErrTimeout; the server (package moonwire) implements Source and
// wires the handler to its listener.
//
// # Metrics
//
// Read from the Source at scrape time:
//
//	moonwire_connections{route}                   gauge
//	moonwire_handshakes_accepted_total{route}     counter
//	moonwire_handshakes_refused_total{status}     counter (HTTP status, "401")
//	moonwire_messages_received_total{route}       counter
//	moonwire_messages_sent_total{route}           counter
//	moonwire_received_bytes_total{route}          counter (frame headers included)
//	moonwire_sent_bytes_total{route}              counter
//	moonwire_broadcasts_total                     counter
//	moonwire_broadcast_deliveries_total           counter
//	moonwire_queue_drops_total                    counter
//	moonwire_slow_consumer_closes_total           counter
//	moonwire_protocol_errors_total                counter
//	moonwire_broker_errors_total                  counter
//	moonwire_closes_total{code}                   counter (close code, "1001")
//	moonwire_uptime_seconds                       gauge
//	moonwire_reloads_total{result="ok"|"failed"}  counter
//	moonwire_reload_last_success                  gauge (1 before any reload)
//	moonwire_reload_last_timestamp_seconds        gauge (0 before any reload)
//
// Recorded by Observer:
//
//	moonwire_handler_duration_seconds{route,callback}    histogram
//	moonwire_handler_errors_total{route,callback,kind}   counter (kind "timeout" or "error")
//	moonwire_http_responses_total{route,status}          counter (on_http's answers, HTTPResponse)
//
// New also registers the standard Go runtime (go_*) and process
// (process_*) collectors.
//
// # Per-route counters across reloads
//
// The route label is the route's path pattern. While a route removed or
// replaced by a reload drains, the router lists it next to its successor;
// when two entries share a path their figures are summed into one series,
// since Prometheus forbids duplicates. When the old entry finally goes, its
// share leaves the sum and a per-route counter can go down. Prometheus
// reads any decrease as a counter reset (a restart from zero), so rate()
// and increase() over that scrape over-count: they add the whole remaining
// value instead of the small true increase. Expect a one-off spike on the
// route's series when a replaced route finishes draining. The router's
// server-wide figures (router.Stats) fold removed routes in and never go
// down; the per-route series are for breakdowns.
//
// Handler series (Observer) are created on a route's first callback and
// kept for the life of the process, also for routes later removed.
package admin

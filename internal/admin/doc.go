// Package admin is moonwire's operator HTTP surface, served on
// [admin] listen: Prometheus metrics on /metrics, a health check on
// /healthz and the served routes on /routes. These answer GET and HEAD only
// (other methods get 405 with an Allow header); other paths get 404. With
// Options.Pprof ([admin] pprof = true) the Go profiler is served under
// /debug/pprof/ as well. When the Source implements DashboardSource, the
// operator dashboard is served too (see Dashboard below).
//
// The router keeps its own counters (router.Stats, router.RouteStats) and
// pays nothing per message for metrics: the collector registered by New
// reads a Source at scrape time and emits constant metrics. Lua callback
// timings and errors come through Observer, which implements
// plugins/lua.Observer and records into a histogram and a counter; it
// also implements plugins/lua.ErrorObserver and keeps the latest 100
// script errors (error text cut to 1 KiB, traceback to 4 KiB) for the
// dashboard.
//
// The package imports the router only for its stats types and plugins/lua
// only for ErrTimeout and its observer interfaces; the server (package moonwire) implements Source and
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
//
// # Dashboard
//
// With a DashboardSource, New serves a live operator dashboard (the page in
// package ui) and starts a sampler goroutine that runs until
// Options.Context is done. Endpoints:
//
//	GET  /, /ui/dashboard.js, /ui/dashboard.css   the page; no credentials needed, strict CSP
//	GET  /dashboard/session                       {"auth_required","logged_in","node","version","error"?}; open
//	POST /dashboard/login   {"token":"..."}       204 + cookie moonwire_admin; 401 wrong token; 429 + Retry-After
//	POST /dashboard/logout                        204; the session ends on the server
//	GET  /dashboard/feed                          Server-Sent Events: "series", then "snapshot" every interval
//	GET  /dashboard/rooms?q=TEXT&limit=N          RoomsAnswer, largest first; limit 1..500 (default 50)
//	GET  /dashboard/members?room=NAME             MembersAnswer, at most 500, by connection id
//	POST /dashboard/close  {"conn","code"?,"reason"?}  closes a connection (default 1008 "closed by an operator")
//	POST /dashboard/reload {}                     reloads as SIGHUP does: 200 ReloadEntry; 409 on an embedded config
//
// The JSON types are in feed_types.go; errors are {"error":"..."}.
//
// Auth. Without Options.Token, a loopback listener serves the dashboard
// to anyone who can connect; with Options.Public (the listener is not
// loopback) and no token, every /dashboard/ endpoint but session answers
// 403. With a token, every endpoint except the page, session, login and
// logout needs the Bearer token or a live session cookie (and 401
// {"error":"login required"} otherwise) — /metrics, /healthz and /routes
// included. A login compares SHA-256 digests in constant time; after 10
// failures in a minute an address (an IPv6 /64) gets 429 until the minute
// ends (at most 1024 addresses tracked). A session is 32 random bytes held
// as their SHA-256 digest, lasts 12 hours, and at most 64 are live (the
// oldest goes first). The cookie is HttpOnly, SameSite=Strict, Path=/.
//
// Actions. Every POST needs the header X-Moonwire-Action: 1, which a
// cross-site form cannot send, and an Origin, when present, of
// http(s)://Host (403 otherwise). Bodies are application/json (415
// otherwise), at most 4 KiB (413), decoded strictly (unknown fields and
// trailing data: 400). Every action, and every refused login, is logged
// as "admin action" with action, conn, code, reason, remote and result.
//
// Sampler. Every Options.SampleInterval (a second by default) one
// goroutine reads the Source, the Go runtime (runtime/metrics, without
// stopping the world) and the Observer, computes per-second rates from the
// previous sample (0 when a counter went down), and builds one Snapshot,
// encoded once and shared by every feed. Totals are the figures /metrics
// exposes: per-route counters summed over RouteStats, the rest from
// Stats. p50_ms and p99_ms interpolate inside the handler histogram's
// buckets as histogram_quantile does, over the observations of about the
// last minute (-1 when there are none). The cluster's nodes are asked for
// in the background, at most every 2 s with a 1 s timeout; a snapshot
// shows the last answer. The chart history is 900 points.
//
// Feed. At most 16 feeds at once (503 beyond). A feed gets the history
// ("series", without the newest point) and the latest snapshot at once,
// then every new snapshot; a reader that falls behind skips snapshots, and
// one whose write stalls for 10 s is dropped, whatever the server's
// WriteTimeout (the deadline is set per write). A ": keepalive" comment
// goes out every 15 s.
package admin

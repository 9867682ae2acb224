package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moonwire/moonwire/router"
	"github.com/moonwire/moonwire/router/broker"
)

// Route describes a served route for /routes.
type Route struct {
	Path        string `json:"path"`
	Script      string `json:"script"`
	Version     string `json:"version"`
	Connections int64  `json:"connections"`
}

// ReloadState is the outcome of the last configuration reload.
//
// Reloads and Failures are disjoint: Reloads counts successful reloads,
// Failures failed ones (attempts = Reloads + Failures). At is the time of
// the last attempt, zero before any; OK and Err describe that attempt.
// Before any reload (At zero) the admin surface reports OK as true, whatever
// the field holds: nothing has failed.
type ReloadState struct {
	Reloads  int64     `json:"reloads"`
	Failures int64     `json:"failures"`
	At       time.Time `json:"at,omitzero"`
	OK       bool      `json:"ok"`
	Err      string    `json:"error,omitempty"`
}

// lastOK reports whether the last reload succeeded; true before any.
func (r ReloadState) lastOK() bool { return r.OK || r.At.IsZero() }

// Source is what the admin surface reads; the node implements it. Every
// method is called at request (scrape) time, possibly from several
// goroutines at once.
type Source interface {
	Stats() router.Stats
	RouteStats() []router.RouteStats
	Routes() []Route
	Reload() ReloadState
	Draining() bool
}

// BrokerSource is a Source whose node talks to a network broker; the
// admin surface then reports the broker in /healthz and as
// moonwire_broker_* metrics.
type BrokerSource interface {
	// Broker returns the broker's kind and its Stats; ok is false when
	// the broker reports none (the in-process one).
	Broker() (kind string, st broker.Stats, ok bool)
}

// Options are the optional parts of the admin surface.
type Options struct {
	// Pprof also serves the Go profiler (net/http/pprof) under
	// /debug/pprof/: heap, CPU, goroutine and the other runtime profiles
	// of the running server, for go tool pprof.
	Pprof bool
	// Token, when set, must come with every request as
	// "Authorization: Bearer TOKEN" (the scheme in any case) or, with the
	// dashboard, as the session cookie POST /dashboard/login sets for it;
	// others get 401 (the dashboard's page and its session, login and
	// logout endpoints excepted). The admin listener serves plain HTTP, so the token crosses the
	// network in the clear: an admin address other hosts can reach belongs
	// on a private network or behind a TLS-terminating proxy.
	Token string

	// Observer, when set, gives the dashboard the script errors and the
	// handler latency it shows; nil: the dashboard shows none.
	Observer *Observer
	// Public says the admin listener is not loopback: without a Token the
	// dashboard then refuses to serve anything but its page and
	// /dashboard/session, since anyone could act on the node.
	Public bool
	// Context stops the dashboard's sampler when done; nil: it runs for
	// the life of the process.
	Context context.Context
	// SampleInterval is the dashboard's sampling period; 0: a second.
	SampleInterval time.Duration
	// Logger receives the dashboard's action log; nil: slog.Default().
	Logger *slog.Logger

	// feedWriteTimeout replaces feedWriteTimeout in tests.
	feedWriteTimeout time.Duration
}

// New returns the admin HTTP handler: /metrics, /healthz, /routes (and 404
// elsewhere). reg is the registry to expose; New registers the moonwire
// collector (which reads src at scrape time) plus the Go runtime and
// process collectors on it. A registry that already holds the Go runtime
// or process collector is fine; one that already holds a moonwire
// collector is an error.
//
// When src implements DashboardSource, New also serves the operator
// dashboard (see the package doc) and starts its sampler, which runs until
// opts.Context is done.
func New(src Source, reg *prometheus.Registry, opts Options) (http.Handler, error) {
	h, _, err := newAdmin(src, reg, opts)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// newAdmin is New, also returning the dashboard (nil without one) for
// tests.
func newAdmin(src Source, reg *prometheus.Registry, opts Options) (http.Handler, *dashboard, error) {
	if src == nil {
		return nil, nil, errors.New("admin: nil Source")
	}
	if reg == nil {
		return nil, nil, errors.New("admin: nil registry")
	}
	mc := newCollector(src)
	if err := reg.Register(mc); err != nil {
		return nil, nil, fmt.Errorf("admin: registering the moonwire collector: %w", err)
	}
	std := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	for i, c := range std {
		if err := reg.Register(c); err != nil {
			if _, dup := errors.AsType[prometheus.AlreadyRegisteredError](err); dup {
				std[i] = nil // someone else's; not ours to unregister
				continue
			}
			reg.Unregister(mc)
			for _, c := range std[:i] {
				if c != nil {
					reg.Unregister(c)
				}
			}
			return nil, nil, fmt.Errorf("admin: registering the runtime collectors: %w", err)
		}
	}

	h := &handler{src: src}
	mux := http.NewServeMux()
	// "GET /x" also matches HEAD; the mux answers other methods with 405
	// and an Allow header, and unknown paths with 404.
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// One bad series must not blank the whole scrape.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slogErrorLog{},
	}))
	mux.HandleFunc("GET /healthz", h.healthz)
	mux.HandleFunc("GET /routes", h.routes)
	if opts.Pprof {
		// The handlers of net/http/pprof, on this mux rather than on
		// http.DefaultServeMux where importing the package puts them.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	ds, isDash := src.(DashboardSource)
	if !isDash {
		if opts.Token != "" {
			return requireToken(opts.Token, mux), nil, nil
		}
		return mux, nil, nil
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	d, err := newDashboard(ds, opts, log)
	if err != nil {
		reg.Unregister(mc)
		for _, c := range std {
			if c != nil {
				reg.Unregister(c)
			}
		}
		return nil, nil, err
	}
	d.register(mux)
	go d.sampler.run()
	return &guard{next: mux, token: opts.Token, want: d.want, dash: d}, d, nil
}

// requireToken answers 401 to requests without "Authorization: Bearer
// token". The scheme is matched case-insensitively (RFC 9110 section 11.1);
// the credentials are compared as SHA-256 digests in constant time, so
// neither the token's bytes nor its length show in the response time
// (subtle.ConstantTimeCompare returns at once on a length mismatch).
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !bearerMatches(r.Header.Get("Authorization"), want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="moonwire admin"`)
			http.Error(w, "admin: a bearer token is required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// constantTimeCompare is subtle.ConstantTimeCompare; tests replace it to
// see what is compared.
var constantTimeCompare = subtle.ConstantTimeCompare

// bearerMatches reports whether an Authorization header value is
// "Bearer <credentials>" (any case, one or more spaces) whose credentials
// hash to want.
func bearerMatches(header string, want [sha256.Size]byte) bool {
	scheme, cred, _ := strings.Cut(header, " ")
	got := sha256.Sum256([]byte(strings.TrimLeft(cred, " ")))
	match := constantTimeCompare(got[:], want[:]) == 1
	return match && strings.EqualFold(scheme, "Bearer")
}

type handler struct {
	src Source
}

// health is the /healthz body.
type health struct {
	Status string        `json:"status"`
	Reload *ReloadState  `json:"reload,omitempty"`
	Broker *brokerHealth `json:"broker,omitempty"`
}

// brokerHealth is the broker's part of /healthz.
type brokerHealth struct {
	Kind      string `json:"kind"`
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
	Queued    int    `json:"queued"`
	Dropped   uint64 `json:"dropped"`
}

// healthz answers 200 {"status":"ok","reload":{...}} while serving; 200
// {"status":"degraded",...} after a failed reload (the previous version
// keeps serving, so the node stays in rotation; "reload" has "ok":false
// and the error); also "degraded", with "broker":{"connected":false,...},
// while a network broker is lost (local traffic still flows, so the node
// stays in rotation); and 503 {"status":"draining"} once the node drains,
// so that load balancers stop sending new clients.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	if h.src.Draining() {
		writeJSON(w, http.StatusServiceUnavailable, health{Status: "draining"})
		return
	}
	rs := h.src.Reload()
	rs.OK = rs.lastOK()
	status := "ok"
	if !rs.OK {
		status = "degraded"
	}
	var bh *brokerHealth
	if bs, ok := h.src.(BrokerSource); ok {
		if kind, st, ok := bs.Broker(); ok {
			bh = &brokerHealth{Kind: kind, Connected: st.Connected, Error: st.LastError, Queued: st.Queued, Dropped: st.Dropped}
			if !st.Connected {
				status = "degraded"
			}
		}
	}
	writeJSON(w, http.StatusOK, health{Status: status, Reload: &rs, Broker: bh})
}

// routes answers the served routes as a JSON array ([] when none).
func (h *handler) routes(w http.ResponseWriter, r *http.Request) {
	routes := h.src.Routes()
	if routes == nil {
		routes = []Route{}
	}
	writeJSON(w, http.StatusOK, routes)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "admin: encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body) // discarded for HEAD by net/http
}

// slogErrorLog sends promhttp's gathering errors to the default logger.
type slogErrorLog struct{}

func (slogErrorLog) Println(v ...any) {
	slog.Default().Error("admin: /metrics: " + fmt.Sprint(v...))
}

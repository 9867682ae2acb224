// Package api is the server HTTP API: how an application's backend
// publishes into rooms, sends to and closes connections, and reads room
// sizes, presence, history, rooms and connections, with the meaning the
// Lua calls (ws.broadcast, ws.send, ws.close, ws.room_size, ws.presence,
// ws.history) have, on one node or across the cluster (the router goes
// through the broker).
//
// One path per command, POST with a JSON object: POST /api/publish,
// /api/send, /api/close, /api/room_size, /api/presence, /api/history,
// /api/rooms, /api/conn, and /api/batch, which applies several commands
// in order. Every request needs an API key (Authorization: apikey KEY or
// Bearer KEY). The moonwire package serves it on [api] listen.
package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/router"
)

// Settings are the parts of [api] that may change while the API serves
// (a reload's new keys apply from the next request).
type Settings struct {
	Keys    []string // accepted API keys; none: every request is refused
	MaxBody int64    // bytes of a request body; 0: DefaultMaxBody
}

// Defaults of Options and Settings.
const (
	DefaultMaxBody     = 1 << 20
	DefaultMaxInFlight = 64
	DefaultQueueWait   = time.Second
	// DefaultBatchTime bounds the time a batch applies commands, under
	// NewServer's WriteTimeout: commands that wait for the broker wait up
	// to half a second each.
	DefaultBatchTime = 45 * time.Second
	// MaxBatch bounds the commands of one batch.
	MaxBatch = 1000
)

// Options configure a Handler.
type Options struct {
	// Router is the node the commands act on. Required.
	Router *router.Server
	// Settings returns the current keys and body limit; it is called on
	// every request, so it must be cheap (the moonwire package reads the
	// live config). Required.
	Settings func() Settings
	// Logger receives one line per request; nil: slog.Default().
	Logger *slog.Logger
	// Metrics is where moonwire_api_* are registered; nil: nowhere.
	Metrics prometheus.Registerer
	// MaxInFlight bounds the requests handled at once (body read
	// included, so it also bounds the memory bodies take: MaxInFlight ×
	// MaxBody); 0: DefaultMaxInFlight.
	MaxInFlight int
	// QueueWait is how long a request waits for a slot when MaxInFlight
	// are in flight before it is answered 503; 0: DefaultQueueWait.
	QueueWait time.Duration
	// BatchTime bounds the time one batch applies commands; the commands
	// left when it runs out (or when the client leaves) are not applied
	// and answered 503 each. 0: DefaultBatchTime.
	BatchTime time.Duration
}

// Handler serves the API. It is an http.Handler; Close unregisters its
// metrics.
type Handler struct {
	rt        *router.Server
	settings  func() Settings
	log       *slog.Logger
	reg       prometheus.Registerer
	slots     chan struct{}
	queueWait time.Duration
	batchTime time.Duration
	keys      atomic.Pointer[keyring]

	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	batchCmds *prometheus.CounterVec
}

// New returns the API handler and registers its metrics on o.Metrics:
// moonwire_api_requests_total{command,code},
// moonwire_api_request_duration_seconds{command} and
// moonwire_api_batch_commands_total{command,code}.
func New(o Options) (*Handler, error) {
	if o.Router == nil || o.Settings == nil {
		return nil, errors.New("api: Options.Router and Options.Settings are required")
	}
	h := &Handler{
		rt:        o.Router,
		settings:  o.Settings,
		log:       o.Logger,
		reg:       o.Metrics,
		slots:     make(chan struct{}, cmp.Or(o.MaxInFlight, DefaultMaxInFlight)),
		queueWait: cmp.Or(o.QueueWait, DefaultQueueWait),
		batchTime: cmp.Or(o.BatchTime, DefaultBatchTime),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moonwire_api_requests_total",
			Help: `Server API requests, by command ("unknown" for a path that names none) and HTTP status code.`,
		}, []string{"command", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moonwire_api_request_duration_seconds",
			Help:    "Time server API requests took, from the request's headers to its answer, by command.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"command"}),
		batchCmds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moonwire_api_batch_commands_total",
			Help: "Commands applied inside server API batches, by command and status code.",
		}, []string{"command", "code"}),
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.reg != nil {
		var done []prometheus.Collector
		for _, c := range []prometheus.Collector{h.requests, h.duration, h.batchCmds} {
			if err := h.reg.Register(c); err != nil {
				for _, d := range done {
					h.reg.Unregister(d)
				}
				return nil, fmt.Errorf("api: registering metrics: %w", err)
			}
			done = append(done, c)
		}
	}
	return h, nil
}

// Close unregisters the handler's metrics, so that a later handler can
// register them on the same registry.
func (h *Handler) Close() {
	if h.reg != nil {
		h.reg.Unregister(h.requests)
		h.reg.Unregister(h.duration)
		h.reg.Unregister(h.batchCmds)
	}
}

// DefaultMaxConns bounds the API listener's open connections (NewServer).
const DefaultMaxConns = 1024

// NewServer returns the http.Server that serves h: bounded header size,
// time for the headers, the body and the answer, idle keep-alives, and at
// most maxConns open connections (0: DefaultMaxConns; past it a new
// connection is closed at once), so that clients without a key cannot
// hold goroutines and buffers without bound. The commands that wait for
// the broker wait at most half a second each, so WriteTimeout leaves room
// for a batch of them (see Options.BatchTime).
func NewServer(h http.Handler, log *slog.Logger, maxConns int) *http.Server {
	maxConns = cmp.Or(maxConns, DefaultMaxConns)
	var open atomic.Int64
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				if open.Add(1) > int64(maxConns) {
					// Debug: a flood of them must not flood the log too.
					log.Debug("api: too many connections; closing a new one", "limit", maxConns, "remote", c.RemoteAddr().String())
					_ = c.Close() // it ends in StateClosed, which counts it out
				}
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
}

// keyring is the SHA-256 digests of the accepted keys, computed once per
// key list (a reload's config brings a new list).
type keyring struct {
	src  *string // the list's first element: identifies the list
	n    int
	sums [][sha256.Size]byte
}

func (h *Handler) keyring(keys []string) *keyring {
	src := unsafe.SliceData(keys)
	if kr := h.keys.Load(); kr != nil && kr.src == src && kr.n == len(keys) {
		return kr
	}
	kr := &keyring{src: src, n: len(keys), sums: make([][sha256.Size]byte, len(keys))}
	for i, k := range keys {
		kr.sums[i] = sha256.Sum256([]byte(k))
	}
	h.keys.Store(kr)
	return kr
}

// authorized reports whether the request carries an accepted key as
// "apikey KEY" or "Bearer KEY" (the scheme in any case). Digests are
// compared in constant time, every key whatever the outcome, so neither
// a key's bytes nor its length nor which key matched shows in the time.
func (h *Handler) authorized(r *http.Request, keys []string) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !(strings.EqualFold(scheme, "apikey") || strings.EqualFold(scheme, "bearer")) {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimLeft(cred, " ")))
	match := 0
	for _, want := range h.keyring(keys).sums {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// apiError is a command's failure: the HTTP status and the message the
// client gets as {"error": message}.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

// fieldError is a 400 naming the field: `"room": required`.
func fieldError(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: strconv.Quote(clip(field)) + ": " + fmt.Sprintf(format, args...)}
}

// call is one command being applied; what it touched goes to the log.
type call struct {
	room, conn string
}

// command applies one command's params and returns its result.
type command func(h *Handler, c *call, params []byte) (any, *apiError)

// commands by name; batch is handled apart (it is not allowed inside
// itself).
var commands = map[string]command{
	"publish":   (*Handler).publish,
	"send":      (*Handler).send,
	"close":     (*Handler).close,
	"room_size": (*Handler).roomSize,
	"presence":  (*Handler).presence,
	"history":   (*Handler).history,
	"rooms":     (*Handler).rooms,
	"conn":      (*Handler).connInfo,
}

// ServeHTTP implements http.Handler: authenticate, find the command,
// bound the work, read the body, apply, answer JSON, count and log.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	name, known := strings.CutPrefix(r.URL.Path, "/api/")
	if _, ok := commands[name]; !known || (!ok && name != "batch") {
		name = "unknown"
	}
	c := &call{}
	status, body, detail := h.serve(r, name, c)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="moonwire api"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case http.StatusRequestEntityTooLarge:
		w.Header().Set("Connection", "close") // the rest of the body is not read
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)

	took := time.Since(start)
	h.requests.WithLabelValues(name, strconv.Itoa(status)).Inc()
	h.duration.WithLabelValues(name).Observe(took.Seconds())
	attrs := []slog.Attr{slog.String("command", name), slog.Int("status", status),
		slog.Duration("duration", took), slog.String("remote", r.RemoteAddr)}
	if c.room != "" {
		attrs = append(attrs, slog.String("room", clip(c.room)))
	}
	if c.conn != "" {
		attrs = append(attrs, slog.String("conn", clip(c.conn)))
	}
	if detail != "" {
		attrs = append(attrs, slog.String("detail", detail))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "api request", attrs...)
}

// clip bounds what a client-chosen name adds to a log line.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// serve does the request's work and returns the status, the JSON body and
// a detail for the log (the error, or a batch's tally).
func (h *Handler) serve(r *http.Request, name string, c *call) (int, []byte, string) {
	st := h.settings()
	if !h.authorized(r, st.Keys) {
		return fail(errorf(http.StatusUnauthorized, "unauthorized: send an API key as \"Authorization: apikey KEY\" or \"Authorization: Bearer KEY\""))
	}
	if name == "unknown" {
		return fail(errorf(http.StatusNotFound, "unknown command %q: POST /api/publish, send, close, room_size, presence, history, rooms, conn or batch", clip(strings.TrimPrefix(r.URL.Path, "/api/"))))
	}
	if r.Method != http.MethodPost {
		return fail(errorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST with a JSON body", clip(r.Method)))
	}
	maxBody := st.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if r.ContentLength > maxBody {
		return fail(errorf(http.StatusRequestEntityTooLarge, "body of %d bytes is over api.max_body (%d bytes)", r.ContentLength, maxBody))
	}
	if !h.acquire(r.Context()) {
		return fail(errorf(http.StatusServiceUnavailable, "busy: %d requests in flight; retry", cap(h.slots)))
	}
	defer func() { <-h.slots }()
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return fail(errorf(http.StatusRequestEntityTooLarge, "body over api.max_body (%d bytes)", maxBody))
		}
		return fail(errorf(http.StatusBadRequest, "body: %v", err))
	}
	var (
		res  any
		aerr *apiError
	)
	if name == "batch" {
		var detail string
		ctx, cancel := context.WithTimeout(r.Context(), h.batchTime)
		defer cancel()
		res, detail, aerr = h.batch(ctx, body)
		if aerr == nil {
			return ok(res, detail)
		}
	} else {
		res, aerr = commands[name](h, c, body)
	}
	if aerr != nil {
		return fail(aerr)
	}
	return ok(res, "")
}

// acquire takes a slot, waiting at most QueueWait.
func (h *Handler) acquire(ctx context.Context) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.queueWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func fail(e *apiError) (int, []byte, string) {
	b, _ := json.Marshal(map[string]string{"error": e.msg})
	return e.status, append(b, '\n'), e.msg
}

func ok(res any, detail string) (int, []byte, string) {
	b, err := json.Marshal(res)
	if err != nil {
		return fail(errorf(http.StatusInternalServerError, "encoding the result: %v", err))
	}
	return http.StatusOK, append(b, '\n'), detail
}

// batchItem is one command of a batch.
type batchItem struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

// batchResult is one command's outcome: its status, and its result or
// its error.
type batchResult struct {
	Status int    `json:"status"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// batch applies {"commands": [{"method": ..., "params": {...}}, ...]} in
// order; a command that fails does not stop the others. Commands left
// when ctx ends are not applied.
func (h *Handler) batch(ctx context.Context, body []byte) (any, string, *apiError) {
	var p struct {
		Commands *[]json.RawMessage `json:"commands"`
	}
	if e := decode(body, &p, false); e != nil {
		return nil, "", e
	}
	if p.Commands == nil {
		return nil, "", fieldError("commands", "required: an array of {\"method\": ..., \"params\": {...}}")
	}
	if n := len(*p.Commands); n > MaxBatch {
		return nil, "", fieldError("commands", "at most %d commands in a batch, got %d", MaxBatch, n)
	}
	results := make([]batchResult, len(*p.Commands))
	failed := 0
	for i, raw := range *p.Commands {
		name, res, e := "unknown", any(nil), errorf(http.StatusServiceUnavailable, "not applied: the batch ran out of time, or its client left")
		if ctx.Err() == nil {
			name, res, e = h.batchOne(raw)
		}
		if e != nil {
			failed++
			results[i] = batchResult{Status: e.status, Error: e.msg}
		} else {
			results[i] = batchResult{Status: http.StatusOK, Result: res}
		}
		h.batchCmds.WithLabelValues(name, strconv.Itoa(results[i].Status)).Inc()
	}
	detail := fmt.Sprintf("%d commands, %d failed", len(results), failed)
	return map[string]any{"results": results}, detail, nil
}

func (h *Handler) batchOne(raw []byte) (string, any, *apiError) {
	var it batchItem
	if e := decode(raw, &it, false); e != nil {
		return "unknown", nil, e
	}
	if it.Method == "" {
		return "unknown", nil, fieldError("method", "required")
	}
	cmd, ok := commands[it.Method]
	if !ok {
		if it.Method == "batch" {
			return "unknown", nil, fieldError("method", "a batch cannot hold a batch")
		}
		return "unknown", nil, errorf(http.StatusNotFound, "unknown command %q", clip(it.Method))
	}
	res, e := cmd(h, &call{}, it.Params)
	return it.Method, res, e
}

// decode reads one JSON object into dst strictly: no unknown fields, no
// trailing data, and errors that name the field. An empty body (or
// params left out of a batch command) is {} when emptyOK.
func decode(body []byte, dst any, emptyOK bool) *apiError {
	if len(bytes.TrimSpace(body)) == 0 || string(bytes.TrimSpace(body)) == "null" {
		if emptyOK {
			return nil
		}
		return errorf(http.StatusBadRequest, "body: want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "body: data after the JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a 400 naming the field.
func jsonError(err error) *apiError {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return errorf(http.StatusBadRequest, "body: invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return errorf(http.StatusBadRequest, "body: must be a JSON object, not %s", te.Value)
		}
		return fieldError(te.Field, "must be %s, not %s", want(te), te.Value)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf(http.StatusBadRequest, "body: the JSON ends early")
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, err := strconv.Unquote(f); err == nil {
			return fieldError(name, "unknown field")
		}
	}
	return errorf(http.StatusBadRequest, "body: %v", err)
}

// want names the JSON type a Go field takes.
func want(te *json.UnmarshalTypeError) string {
	switch te.Type.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64":
		return "an integer"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a non-negative integer"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "of type " + te.Type.String()
}

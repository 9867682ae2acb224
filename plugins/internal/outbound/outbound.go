// Package outbound is the HTTP client scripts reach the network with: one
// shared http.Client whose every request, redirect and dial is checked
// against an allow list of host patterns, with bounded bodies, a timeout,
// a process-wide limit of requests in flight (past it a request fails at
// once rather than queueing) and Prometheus metrics. It knows nothing of
// Lua: the http module uses Do, and another module (a JWKS fetcher) can
// take HTTPClient, which enforces the same allow list and response bound.
package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moonwire/moonwire/internal/hostpat"
)

// Options configure a Client; zero fields take the defaults.
type Options struct {
	// Allow are the host patterns requests may reach (hostpat); none:
	// nothing is reachable.
	Allow []string
	// Timeout is a request's default and longest duration, from dialling
	// to the end of the body. Default 10s.
	Timeout time.Duration
	// MaxResponse bounds a response body. Default 1 MiB.
	MaxResponse int64
	// MaxRequestBody bounds a request body. Default 1 MiB.
	MaxRequestBody int64
	// Concurrency bounds the requests in flight. Default 256.
	Concurrency int
	// PerHost bounds the connections to one host. Default 32.
	PerHost int
	// MaxRedirects bounds the redirects a request follows, each checked
	// against Allow. Default 3.
	MaxRedirects int
	// Metrics, when set, gets the client's collectors.
	Metrics prometheus.Registerer
	// TLS, when set, configures https (tests trust their own CA here).
	TLS *tls.Config
}

// Errors a caller can tell apart with errors.Is.
var (
	ErrNotAllowed = errors.New("host not allowed")
	ErrBusy       = errors.New("too many requests in flight")
	ErrTooLarge   = errors.New("response body too large")
	ErrTimeout    = errors.New("timed out")
)

// Request is an outbound request.
type Request struct {
	Method string // "" is GET
	URL    string
	Header http.Header
	Body   []byte
	// Timeout lowers the client's Timeout for this request; 0 or more
	// than it: the client's.
	Timeout time.Duration
}

// Response is a complete response: its body was read whole, within
// MaxResponse.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Client is the shared outbound client. Its policy can change live
// (Reconfigure); requests under way finish under the one they began with.
type Client struct {
	st      atomic.Pointer[state]
	flight  atomic.Int64
	metrics *metrics
}

// state is one configuration: the policy and the transport built for it.
type state struct {
	opts   Options
	allow  []hostpat.Pattern
	tr     *http.Transport
	client *http.Client
}

// New makes a client. It fails on a bad allow pattern.
func New(opts Options) (*Client, error) {
	c := &Client{metrics: newMetrics(opts.Metrics)}
	st, err := c.build(opts)
	if err != nil {
		return nil, err
	}
	c.st.Store(st)
	return c, nil
}

// Reconfigure checks opts and returns the function that applies them (as
// a reload wants: prepare, then swap). Connections of the old transport
// are closed once idle.
func (c *Client) Reconfigure(opts Options) (apply func(), err error) {
	st, err := c.build(opts)
	if err != nil {
		return nil, err
	}
	return func() {
		old := c.st.Swap(st)
		old.tr.CloseIdleConnections()
	}, nil
}

// Close closes idle connections.
func (c *Client) Close() error {
	c.st.Load().tr.CloseIdleConnections()
	return nil
}

// InFlight returns the requests under way.
func (c *Client) InFlight() int64 { return c.flight.Load() }

func (c *Client) build(opts Options) (*state, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.MaxResponse <= 0 {
		opts.MaxResponse = 1 << 20
	}
	if opts.MaxRequestBody <= 0 {
		opts.MaxRequestBody = 1 << 20
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 256
	}
	if opts.PerHost <= 0 {
		opts.PerHost = 32
	}
	if opts.MaxRedirects <= 0 {
		opts.MaxRedirects = 3
	}
	st := &state{opts: opts}
	for _, a := range opts.Allow {
		p, err := hostpat.Parse(a)
		if err != nil {
			return nil, err
		}
		st.allow = append(st.allow, p)
	}
	dialer := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 30 * time.Second}
	st.tr = &http.Transport{
		// No proxy, whatever the environment says: a proxy is a host the
		// allow list did not name, and the dial check would refuse it.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Dial only what was checked: the transport dials the URL's
			// host, which checkURL matched; this makes sure of it.
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			n, _ := strconv.Atoi(port)
			if _, ok := matchAny(st.allow, host, n); !ok {
				return nil, fmt.Errorf("%w: %s", ErrNotAllowed, addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:        opts.TLS,
		ForceAttemptHTTP2:      true,
		MaxConnsPerHost:        opts.PerHost,
		MaxIdleConnsPerHost:    opts.PerHost,
		MaxIdleConns:           4 * opts.PerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    opts.Timeout,
		ResponseHeaderTimeout:  opts.Timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	st.client = &http.Client{
		Transport: st.tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > opts.MaxRedirects {
				return fmt.Errorf("more than %d redirects", opts.MaxRedirects)
			}
			if _, err := st.check(req.URL); err != nil {
				return fmt.Errorf("redirect to %s: %w", req.URL.Redacted(), err)
			}
			return nil
		},
	}
	return st, nil
}

// matchAny matches a dialled host and port against any scheme's rule: the
// scheme was checked on the URL already.
func matchAny(pats []hostpat.Pattern, host string, port int) (hostpat.Pattern, bool) {
	if p, ok := hostpat.Match(pats, "https", host, port); ok {
		return p, true
	}
	return hostpat.Match(pats, "http", host, port)
}

// check allows u: http or https, to a host the allow list names. It
// returns the pattern that allowed it (the metrics' host label).
func (st *state) check(u *url.URL) (string, error) {
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%w: scheme %q (only http and https)", ErrNotAllowed, u.Scheme)
	}
	if u.User != nil {
		return "", errors.New("credentials in the URL are not allowed: use an Authorization header")
	}
	host := u.Hostname()
	if host == "" {
		return "", errors.New("URL has no host")
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("bad port %q", p)
		}
		port = n
	}
	p, ok := hostpat.Match(st.allow, u.Scheme, host, port)
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNotAllowed, u.Host)
	}
	return p.Text, nil
}

// Do runs req and reads its whole response within the limits. A status
// that is not 2xx is a response, not an error.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	st := c.st.Load()
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	label, err := st.check(u)
	if err != nil {
		c.metrics.count("refused", "refused")
		return nil, err
	}
	if int64(len(req.Body)) > st.opts.MaxRequestBody {
		return nil, fmt.Errorf("request body of %d bytes exceeds max_request_body (%d)", len(req.Body), st.opts.MaxRequestBody)
	}
	if c.flight.Add(1) > int64(st.opts.Concurrency) {
		c.flight.Add(-1)
		c.metrics.count(label, "busy")
		return nil, fmt.Errorf("%w (limit %d)", ErrBusy, st.opts.Concurrency)
	}
	defer c.flight.Add(-1)
	c.metrics.inflight.Inc()
	defer c.metrics.inflight.Dec()

	timeout := st.opts.Timeout
	if req.Timeout > 0 && req.Timeout < timeout {
		timeout = req.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	start := time.Now()
	resp, err := st.client.Do(hr)
	if err != nil {
		c.metrics.observe(label, "error", start)
		return nil, describe(ctx, err, timeout)
	}
	defer resp.Body.Close()
	data, err := readBounded(resp.Body, resp.ContentLength, st.opts.MaxResponse)
	if err != nil {
		c.metrics.observe(label, "error", start)
		if errors.Is(err, ErrTooLarge) {
			return nil, err
		}
		return nil, describe(ctx, err, timeout)
	}
	c.metrics.observe(label, statusClass(resp.StatusCode), start)
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// readBounded reads a body of at most max bytes: a declared length past
// it fails before reading, and a body that keeps coming fails at max+1,
// so a huge response never sits in memory.
func readBounded(r io.Reader, declared, max int64) ([]byte, error) {
	if declared > max {
		return nil, fmt.Errorf("%w: %d bytes declared, max_response is %d", ErrTooLarge, declared, max)
	}
	size := int64(512)
	if declared > 0 {
		size = declared
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, fmt.Errorf("%w: more than max_response (%d bytes)", ErrTooLarge, max)
	}
	return buf.Bytes(), nil
}

// describe turns a transport error into what a script should read: the
// cause, without Go's "Get \"url\":" wrapping.
func describe(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %s", ErrTimeout, timeout)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return errors.New("cancelled: the route stopped")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return fmt.Errorf("%s %s: %w", oe.Op, oe.Addr, oe.Err)
	}
	return err
}

func statusClass(code int) string {
	switch {
	case code >= 100 && code < 600:
		return strconv.Itoa(code/100) + "xx"
	}
	return "other"
}

// HTTPClient returns an *http.Client for other modules (a JWKS fetcher):
// its requests, redirects and dials are checked against the allow list
// and its response bodies fail past MaxResponse. Concurrency and the
// timeout are the caller's to bound (with its request's context); it
// follows the client's configuration live.
func (c *Client) HTTPClient() *http.Client {
	return &http.Client{
		Transport: (*guarded)(c),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			st := c.st.Load()
			if len(via) > st.opts.MaxRedirects {
				return fmt.Errorf("more than %d redirects", st.opts.MaxRedirects)
			}
			_, err := st.check(req.URL)
			return err
		},
	}
}

// guarded is the RoundTripper behind HTTPClient.
type guarded Client

// RoundTrip implements http.RoundTripper.
func (g *guarded) RoundTrip(req *http.Request) (*http.Response, error) {
	c := (*Client)(g)
	st := c.st.Load()
	label, err := st.check(req.URL)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		c.metrics.count("refused", "refused")
		return nil, err
	}
	start := time.Now()
	resp, err := st.tr.RoundTrip(req)
	if err != nil {
		c.metrics.observe(label, "error", start)
		return nil, err
	}
	c.metrics.observe(label, statusClass(resp.StatusCode), start)
	if resp.ContentLength > st.opts.MaxResponse {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w: %d bytes declared, max_response is %d", ErrTooLarge, resp.ContentLength, st.opts.MaxResponse)
	}
	resp.Body = &boundedBody{rc: resp.Body, left: st.opts.MaxResponse}
	return resp, nil
}

// boundedBody fails a body that runs past its bound.
type boundedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n - 1, ErrTooLarge
	}
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }

// metrics are the client's collectors. Hosts are labelled with the allow
// pattern that matched (or "refused"): a bounded set.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moonwire_http_requests_total",
			Help: "Outbound HTTP requests from scripts, by allow pattern and status class (2xx..5xx, error, busy, refused).",
		}, []string{"host", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moonwire_http_request_duration_seconds",
			Help:    "Outbound HTTP request durations, through the end of the body, by allow pattern.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"host"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moonwire_http_requests_in_flight",
			Help: "Outbound HTTP requests under way.",
		}),
	}
	if reg != nil {
		m.requests = register(reg, m.requests)
		m.duration = register(reg, m.duration)
		m.inflight = register(reg, m.inflight)
	}
	return m
}

// register registers col, or returns the one registered already (a
// second client on the same registry shares the series).
func register[T prometheus.Collector](reg prometheus.Registerer, col T) T {
	if err := reg.Register(col); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
	}
	return col
}

func (m *metrics) count(host, code string) { m.requests.WithLabelValues(host, code).Inc() }

func (m *metrics) observe(host, code string, start time.Time) {
	m.requests.WithLabelValues(host, code).Inc()
	m.duration.WithLabelValues(host).Observe(time.Since(start).Seconds())
}

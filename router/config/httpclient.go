package config

import (
	"strconv"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/moonwire/moonwire/internal/hostpat"
)

// HTTPClient is the [http] table: what scripts may reach with the http
// module's outbound requests, and the limits on them.
type HTTPClient struct {
	// Allow are the host patterns scripts may reach (see
	// internal/hostpat); empty: none.
	Allow []string
	// Timeout is a request's default and longest time, connecting through
	// reading the body; a request may ask for less. Default 10s.
	Timeout time.Duration
	// MaxResponse bounds a response body; larger ones fail. Default 1 MiB.
	MaxResponse int64
	// MaxRequestBody bounds a request body. Default 1 MiB.
	MaxRequestBody int64
	// Concurrency bounds the requests in flight in the process; past it a
	// request fails at once. Default 256.
	Concurrency int
	// PerHost bounds the connections to one host. Default 32.
	PerHost int
}

// DefaultHTTPClient is [http] when the file has none.
var DefaultHTTPClient = HTTPClient{Timeout: 10 * time.Second, MaxResponse: 1 << 20, MaxRequestBody: 1 << 20, Concurrency: 256, PerHost: 32}

// httpClient reads [http].
func (l *loader) httpClient(tree map[string]any, c *Config, p toml.Primitive) {
	c.HTTP = DefaultHTTPClient
	var r struct {
		Allow          value `toml:"allow"`
		Timeout        value `toml:"timeout"`
		MaxResponse    value `toml:"max_response"`
		MaxRequestBody value `toml:"max_request_body"`
		Concurrency    value `toml:"concurrency"`
		PerHost        value `toml:"per_host"`
	}
	if !l.table(tree, "http", p, &r) {
		return
	}
	h := &c.HTTP
	if r.Allow.set {
		list, ok := r.Allow.v.([]any)
		if !ok {
			l.errorf("http.allow", "must be an array of host patterns, not %s", typeName(r.Allow.v))
		}
		for i, e := range list {
			key := "http.allow[" + strconv.Itoa(i) + "]"
			s, ok := e.(string)
			if !ok {
				l.errorf(key, "must be a string, not %s", typeName(e))
				continue
			}
			pat, err := hostpat.Parse(s)
			if err != nil {
				l.fail(key, err)
				continue
			}
			h.Allow = append(h.Allow, pat.Text)
		}
	}
	l.positiveDuration("http.timeout", r.Timeout, &h.Timeout)
	l.positiveSize("http.max_response", r.MaxResponse, &h.MaxResponse)
	l.positiveSize("http.max_request_body", r.MaxRequestBody, &h.MaxRequestBody)
	if l.count("http.concurrency", r.Concurrency, &h.Concurrency) && h.Concurrency == 0 {
		l.errorf("http.concurrency", "must be greater than 0")
	}
	if l.count("http.per_host", r.PerHost, &h.PerHost) && h.PerHost == 0 {
		l.errorf("http.per_host", "must be greater than 0")
	}
}

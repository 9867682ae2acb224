package crypto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

// Limits on what a JWKS URL may send. Identity providers publish a few keys
// in a few KiB; the bounds keep a hostile or broken endpoint from making the
// server read, parse or try without end.
const (
	// MaxJWKSBytes bounds a JWKS document; a longer one fails the fetch
	// (the keys already held are kept).
	MaxJWKSBytes = 1 << 20
	// MaxJWKSKeys bounds the keys of one document; more fail the fetch.
	// A token without kid is tried against each key of its family, so the
	// bound is also the most signature checks one token can cost.
	MaxJWKSKeys = 64
	// MaxKeySets bounds the JWKS URLs of one Module (one per URL, kept
	// until the Module is closed).
	MaxKeySets = 16
)

// Key set defaults.
const (
	DefaultJWKSRefresh    = 10 * time.Minute
	DefaultJWKSMinRefresh = 10 * time.Second
	DefaultJWKSTimeout    = 10 * time.Second
)

// KeySetOptions configure a KeySet. The zero value is ready for production.
type KeySetOptions struct {
	// Client fetches the document; nil: DefaultHTTPClient(). Whatever the
	// client, the response is cut at MaxJWKSBytes.
	Client *http.Client
	// Refresh is how often the document is fetched again; 0:
	// DefaultJWKSRefresh.
	Refresh time.Duration
	// MinRefresh rate-limits the fetches that verification asks for (a
	// token naming an unknown kid, or no keys yet): at most one per
	// MinRefresh, so that tokens with made-up kids cannot make the server
	// hammer the identity provider. 0: DefaultJWKSMinRefresh; negative: no
	// limit (tests).
	MinRefresh time.Duration
	// Timeout bounds each fetch; 0: DefaultJWKSTimeout.
	Timeout time.Duration
	// Logger hears about failed fetches; nil: slog.Default().
	Logger *slog.Logger
}

// KeySet is a JSON Web Key Set fetched from a URL and kept fresh in the
// background with jwkset's HTTP storage: the first fetch starts at once,
// the document is fetched again every Refresh, and a token that names a kid
// the set lacks starts a fetch (rate-limited by MinRefresh) without waiting
// for it: that verification fails with ErrUnknownKeyID, and the ones after
// the fetch lands find the key. Verification never waits on the network.
//
// A fetch that fails (network, status other than 200, not a JWKS, over
// MaxJWKSBytes or MaxJWKSKeys) keeps the keys already held; until one
// succeeds the set has none and verification fails with
// ErrKeySetUnavailable, and asks for a fetch as an unknown kid does.
//
// Keys of type "oct" (secrets have no place in a published document) and
// keys whose "use" is "enc" are dropped; a key's "alg", when present, is
// the only alg it verifies.
type KeySet struct {
	url     string
	display string // url without credentials, for logs and messages
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	timeout time.Duration
	limiter *rate.Limiter

	ready chan struct{} // closed when the first fetch has ended, well or not
	// store is the jwkset storage, nil until the first fetch has ended;
	// refresher is a jwkset client over it whose KeyRead of an unknown kid
	// fetches again.
	store     atomic.Pointer[storeRef]
	loaded    atomic.Bool // a fetch has succeeded
	nkeys     atomic.Int64
	lastErr   atomic.Pointer[string]
	fetching  atomic.Bool // an on-demand fetch is running
	mu        sync.Mutex  // guards closed against wg.Add
	closed    bool
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type storeRef struct {
	store, refresher jwkset.Storage
}

// NewKeySet starts fetching the JWKS at rawURL and returns at once; Wait
// waits for the first fetch. The URL must be http or https with a host;
// with the default client, DefaultHTTPClient's policy applies too (https,
// or http to loopback). Close stops the refreshes.
func NewKeySet(rawURL string, opts KeySetOptions) (*KeySet, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("jwks: bad URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("jwks: %s: want an http or https URL with a host", u.Redacted())
	}
	client := opts.Client
	if client == nil {
		if err := checkURL(u); err != nil {
			return nil, err
		}
		client = DefaultHTTPClient()
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultJWKSRefresh
	}
	if opts.MinRefresh == 0 {
		opts.MinRefresh = DefaultJWKSMinRefresh
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultJWKSTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	limit := rate.Inf
	if opts.MinRefresh > 0 {
		limit = rate.Every(opts.MinRefresh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &KeySet{
		url:     rawURL,
		display: u.Redacted(),
		ctx:     ctx,
		cancel:  cancel,
		timeout: opts.Timeout,
		limiter: rate.NewLimiter(limit, 1),
		ready:   make(chan struct{}),
	}
	k.log = opts.Logger.With("jwks", k.display)
	k.wg.Add(1)
	go k.start(limitBody(client, MaxJWKSBytes), opts.Refresh)
	return k, nil
}

// start makes the jwkset storage, which fetches once before returning and
// then every refresh until k.ctx ends (that goroutine is jwkset's; it ends
// with the context, between fetches or by cancelling the one in flight).
func (k *KeySet) start(client *http.Client, refresh time.Duration) {
	defer k.wg.Done()
	defer close(k.ready)
	st, err := jwkset.NewStorageFromHTTP(k.url, jwkset.HTTPClientStorageOptions{
		Client:                    client,
		Ctx:                       k.ctx,
		HTTPTimeout:               k.timeout,
		NoErrorReturnFirstHTTPReq: true, // the set retries; Wait reports
		RefreshErrorHandler:       k.fetchFailed,
		RefreshInterval:           refresh,
		Storage:                   &boundedStore{MemoryJWKSet: jwkset.NewMemoryStorage(), k: k},
	})
	if err != nil { // only a URL jwkset cannot parse; NewKeySet parsed it
		k.fetchFailed(k.ctx, err)
		return
	}
	refresher, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{k.url: st},
		// The rate limit is k.limiter, checked before a fetch is started
		// rather than waited on: nothing may wait here.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		k.fetchFailed(k.ctx, err)
		return
	}
	k.store.Store(&storeRef{store: st, refresher: refresher})
}

// fetchFailed is jwkset's RefreshErrorHandler: the error is logged, and kept
// for Wait; the keys held are kept.
func (k *KeySet) fetchFailed(_ context.Context, err error) {
	if k.ctx.Err() != nil {
		return // closing: the cancelled fetch is no news
	}
	msg := err.Error()
	k.lastErr.Store(&msg)
	k.log.Warn("jwks fetch failed; keeping the keys held", "keys", k.nkeys.Load(), "err", err)
}

// replaced is called by boundedStore with the keys of a fetch that worked.
func (k *KeySet) replaced(n int) {
	k.nkeys.Store(int64(n))
	k.lastErr.Store(nil)
	if !k.loaded.Swap(true) {
		k.log.Info("jwks loaded", "keys", n)
	} else {
		k.log.Debug("jwks refreshed", "keys", n)
	}
}

// URL is the URL the set is fetched from.
func (k *KeySet) URL() string { return k.url }

// Len is the number of keys held.
func (k *KeySet) Len() int { return int(k.nkeys.Load()) }

// Wait waits until the first fetch has ended or ctx is done, and reports
// whether the set holds keys: nil once a fetch has succeeded, otherwise why
// not (the first fetch failed, and the set keeps trying; or it has not
// ended yet).
func (k *KeySet) Wait(ctx context.Context) error {
	select {
	case <-k.ready:
	case <-ctx.Done():
	}
	return k.Err()
}

// Err is nil once a fetch has succeeded, otherwise why the set has no keys.
func (k *KeySet) Err() error {
	if k.loaded.Load() {
		return nil
	}
	if p := k.lastErr.Load(); p != nil {
		return fmt.Errorf("jwks %s: %s", k.display, *p)
	}
	return fmt.Errorf("jwks %s: first fetch still running", k.display)
}

// Close stops the refreshes and waits for the fetches it started; jwkset's
// periodic one ends on its own as its context is cancelled. It is
// idempotent.
func (k *KeySet) Close() error {
	k.closeOnce.Do(func() {
		k.mu.Lock()
		k.closed = true
		k.mu.Unlock()
		k.cancel()
		k.wg.Wait()
	})
	return nil
}

// keysFor implements Keys. It reads the keys held and, when they lack what
// the token needs, starts a fetch without waiting for it.
func (k *KeySet) keysFor(kid string, hasKID bool) ([]verificationKey, error) {
	ref := k.store.Load()
	if ref == nil {
		return nil, ErrKeySetUnavailable // the first fetch is running
	}
	if !k.loaded.Load() {
		k.fetchSoon(ref, kid)
		return nil, ErrKeySetUnavailable
	}
	if hasKID {
		j, err := ref.store.KeyRead(k.ctx, kid)
		if err == nil && usable(j) {
			return []verificationKey{fromJWK(j)}, nil
		}
		k.fetchSoon(ref, kid)
		return nil, ErrUnknownKeyID
	}
	all, err := ref.store.KeyReadAll(k.ctx)
	if err != nil {
		return nil, ErrKeySetUnavailable // not reached: memory storage
	}
	out := make([]verificationKey, 0, len(all))
	for _, j := range all {
		if usable(j) {
			out = append(out, fromJWK(j))
		}
	}
	if len(out) == 0 {
		k.fetchSoon(ref, kid)
		return nil, ErrUnknownKeyID
	}
	return out, nil
}

func usable(j jwkset.JWK) bool {
	m := j.Marshal()
	return m.KTY != jwkset.KtyOct && m.USE != jwkset.UseEnc
}

func fromJWK(j jwkset.JWK) verificationKey {
	return verificationKey{key: publicOf(j.Key()), alg: j.Marshal().ALG.String()}
}

// fetchSoon starts one fetch in the background unless one is running, the
// rate limit says not yet, or the set is closing.
func (k *KeySet) fetchSoon(ref *storeRef, kid string) {
	if !k.fetching.CompareAndSwap(false, true) {
		return
	}
	k.mu.Lock()
	if k.closed || !k.limiter.Allow() {
		k.mu.Unlock()
		k.fetching.Store(false)
		return
	}
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		defer k.fetching.Store(false)
		ctx, cancel := context.WithTimeout(k.ctx, k.timeout)
		defer cancel()
		// jwkset's client fetches when the kid is not held (errors go to
		// fetchFailed), then reads it; the answer is for later tokens.
		_, _ = ref.refresher.KeyRead(ctx, kid)
	}()
}

// boundedStore is the memory storage jwkset fills, bounded: a document
// with more than MaxJWKSKeys keys fails its fetch (jwkset then keeps the
// keys held).
type boundedStore struct {
	*jwkset.MemoryJWKSet
	k *KeySet
}

// KeyReplaceAll implements jwkset.Storage; jwkset calls it with every key
// of a fetched document.
func (s *boundedStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	if len(given) > MaxJWKSKeys {
		return fmt.Errorf("%d keys, more than the limit of %d", len(given), MaxJWKSKeys)
	}
	if err := s.MemoryJWKSet.KeyReplaceAll(ctx, given); err != nil {
		return err
	}
	s.k.replaced(len(given))
	return nil
}

// DefaultHTTPClient is the client a KeySet uses when none is given: every
// URL but https is refused, except http to a loopback address (tests, a
// sidecar); redirects stay on the same host, three at most; each request
// has DefaultJWKSTimeout. Key sets cut every response at MaxJWKSBytes
// whatever their client.
func DefaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = DefaultJWKSTimeout
	tr.MaxResponseHeaderBytes = 64 << 10
	return &http.Client{
		Transport: urlPolicy{tr},
		Timeout:   DefaultJWKSTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > 3 { // via holds the requests made: the original and 3 redirects
				return errors.New("jwks: too many redirects")
			}
			if req.URL.Host != via[0].URL.Host {
				return fmt.Errorf("jwks: redirect to another host (%s) refused", req.URL.Host)
			}
			return nil
		},
	}
}

// urlPolicy refuses what checkURL refuses, on every request: redirects too.
type urlPolicy struct{ base http.RoundTripper }

func (p urlPolicy) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkURL(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return p.base.RoundTrip(req)
}

// checkURL is the default client's policy: https, or http to loopback.
func checkURL(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); h == "localhost" || (ip != nil && ip.IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("jwks: %s refused: only https URLs, or http to a loopback address, are allowed", u.Redacted())
}

// limitBody returns a copy of c whose responses fail past max bytes.
func limitBody(c *http.Client, max int64) *http.Client {
	cc := *c
	base := cc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = bodyLimit{base: base, max: max}
	return &cc
}

type bodyLimit struct {
	base http.RoundTripper
	max  int64
}

func (b bodyLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > b.max {
		resp.Body.Close()
		return nil, fmt.Errorf("jwks: response of %d bytes exceeds the limit of %d", resp.ContentLength, b.max)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, max: b.max}
	return resp, nil
}

// limitedBody fails once more than max bytes have come.
type limitedBody struct {
	io.ReadCloser
	n, max int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.n > l.max {
		return 0, l.tooLarge()
	}
	if rem := l.max + 1 - l.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := l.ReadCloser.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return 0, l.tooLarge()
	}
	return n, err
}

func (l *limitedBody) tooLarge() error {
	return fmt.Errorf("jwks: response exceeds the limit of %d bytes", l.max)
}

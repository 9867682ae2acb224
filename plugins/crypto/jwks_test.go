package crypto

import (
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

// jwksServer is a JWKS endpoint whose answer the test changes.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	body   []byte
	hits   atomic.Int64
	// handler, when set, answers instead.
	handler http.HandlerFunc
}

func newJWKSServer(t *testing.T, keys ...testKey) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		status, body, h := s.status, s.body, s.handler
		s.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// jwksDoc is keys as a JWKS document, made with jwkset.
func jwksDoc(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	var doc jwkset.JWKSMarshal
	for _, k := range keys {
		j, err := jwkset.NewJWKFromKey(k.pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		doc.Keys = append(doc.Keys, j.Marshal())
	}
	if doc.Keys == nil {
		doc.Keys = []jwkset.JWKMarshal{}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *jwksServer) set(t testing.TB, keys ...testKey) { s.setRaw(200, jwksDoc(t, keys...)) }

func (s *jwksServer) setRaw(status int, body []byte) {
	s.mu.Lock()
	s.status, s.body, s.handler = status, body, nil
	s.mu.Unlock()
}

func (s *jwksServer) setHandler(h http.HandlerFunc) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

// waitFor polls cond until it holds, or fails the test after 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d := time.Millisecond; !cond(); d = min(2*d, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(d)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newTestKeySet makes a set and waits for its first fetch.
func newTestKeySet(t *testing.T, url string, opts KeySetOptions) *KeySet {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLog()
	}
	ks, err := NewKeySet(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ks.Wait(ctx)
	return ks
}

func verifyWith(ks Keys, tok string) error {
	_, err := Verify(tok, ks, fixedNow, VerifyOptions{Issuer: "https://idp.test/", Audience: "moonwire"})
	return err
}

// TestJWKSInLua: the documented use. A script loads the set at its top
// level and verifies tokens of every family with iss and aud; two VMs
// share one set, fetched once.
func TestJWKSInLua(t *testing.T) {
	t.Parallel()
	keys := allAlgKeys()
	srv := newJWKSServer(t, keys...)
	m := New(Options{Now: func() time.Time { return fixedNow }, Logger: quietLog()})
	t.Cleanup(func() { m.Close() })
	globals := map[string]string{"URL": srv.URL + "/.well-known/jwks.json"}
	var algs []string
	for _, k := range keys {
		globals["T_"+k.kid] = k.sign(t, "", claimsOK)
		algs = append(algs, k.kid)
	}
	globals["HS"] = testKey{kid: "rs256", priv: []byte("guess")}.sign(t, "HS256", claimsOK)
	globals["NOKID"] = ecKey("", elliptic.P256()).sign(t, "", claimsOK)
	globals["UNKNOWN"] = rsaKey2("nope", "RS256").sign(t, "", claimsOK)
	globals["WRONGAUD"] = ed25519Key("eddsa").sign(t, "", jwt.MapClaims{"iss": "https://idp.test/", "aud": "other"})
	for vm := range 2 {
		runLua(t, m, globals, `
			local idp, err = crypto.jwks(URL, {wait = 10})
			eq(err, nil)
			eq(tostring(idp), "crypto.jwks(" .. URL .. ")")
			local opts = {iss = "https://idp.test/", aud = "moonwire"}
			for _, kid in ipairs({"`+strings.Join(algs, `", "`)+`"}) do
				local c, err = crypto.jwt_verify(_G["T_" .. kid], idp, opts)
				if not c then error(kid .. ": " .. err) end
				eq(c.sub, "ann")
			end
			eq(assert(crypto.jwt_verify(NOKID, idp, opts)).sub, "ann", "no kid: the keys of its family are tried")
			fails("jwt: unsupported alg HS256", crypto.jwt_verify(HS, idp, opts))
			fails("jwt: unknown key id", crypto.jwt_verify(UNKNOWN, idp, opts))
			fails("jwt: bad audience", crypto.jwt_verify(WRONGAUD, idp, opts))
			raises("refresh must be a number of seconds from 1 to 86400", crypto.jwks, URL, {refresh = 0.5})
			raises("wait must be a number of seconds from 0 to 60", crypto.jwks, URL, {wait = -1})
			raises("wait must be a number of seconds from 0 to 60", crypto.jwks, URL, {wait = 61})
			raises("wait must be a number of seconds from 0 to 60", crypto.jwks, URL, {wait = 0/0})
			raises("refresh must be a number of seconds from 1 to 86400", crypto.jwks, URL, {refresh = 86401})
			raises("refresh must be a number of seconds from 1 to 86400", crypto.jwks, URL, {refresh = "60"})
			raises('unknown option "refesh"', crypto.jwks, URL, {refesh = 5})
		`)
		_ = vm
	}
	// One fetch at load; the unknown kid starts one more, and the default
	// rate limit (one per 10s) no other, in either VM.
	waitFor(t, "the unknown kid's fetch", func() bool { return srv.hits.Load() >= 2 })
	m.Close() // cancels and waits for the fetches: none can start after

	if n := srv.hits.Load(); n != 2 {
		t.Fatalf("the JWKS was fetched %d times, want 2 (once at load, once for the unknown kid)", n)
	}
}

// TestJWKSRotation: the identity provider swaps k1 for k2. A token naming
// k2 fails with "unknown key id" and starts a fetch; once it lands, k2
// tokens verify and k1 tokens no longer do.
func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	k1, k2 := rsaKey("k1", "RS256"), ecKey("k2", elliptic.P256())
	srv := newJWKSServer(t, k1)
	ks := newTestKeySet(t, srv.URL, KeySetOptions{MinRefresh: -1})
	t1, t2 := k1.sign(t, "", claimsOK), k2.sign(t, "", claimsOK)
	if err := verifyWith(ks, t1); err != nil {
		t.Fatalf("k1 before the rotation: %v", err)
	}
	srv.set(t, k2)
	if err := verifyWith(ks, t2); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("k2 before the refresh: %v, want %v", err, ErrUnknownKeyID)
	}
	waitFor(t, "k2 to verify", func() bool { return verifyWith(ks, t2) == nil })
	if err := verifyWith(ks, t1); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("k1 after the rotation: %v, want %v", err, ErrUnknownKeyID)
	}
	if ks.Len() != 1 {
		t.Fatalf("%d keys held, want 1", ks.Len())
	}
}

// TestJWKSPeriodicRefresh: without any token asking, the set is fetched
// again every refresh period (a script's {refresh = 1}).
func TestJWKSPeriodicRefresh(t *testing.T) {
	t.Parallel()
	k1, k2 := rsaKey("k1", "RS256"), ed25519Key("k2")
	srv := newJWKSServer(t, k1)
	m := New(Options{Now: func() time.Time { return fixedNow }, Logger: quietLog(), JWKSMinRefresh: time.Hour})
	t.Cleanup(func() { m.Close() })
	L := luatest.NewState(t, m)
	L.SetGlobal("URL", lua.LString(srv.URL))
	luatest.Run(t, L, prelude, `idp = assert(crypto.jwks(URL, {refresh = 1}))`)
	srv.set(t, k1, k2)
	waitFor(t, "a periodic fetch", func() bool { return srv.hits.Load() >= 2 })
	ks := L.GetGlobal("idp").(*lua.LUserData).Value.(*KeySet)
	waitFor(t, "k2 from the periodic fetch", func() bool { return ks.Len() == 2 })
	if err := verifyWith(ks, k2.sign(t, "", claimsOK)); err != nil {
		t.Fatal(err)
	}
}

// TestJWKSRateLimit: tokens with made-up kids start one fetch per
// MinRefresh, not one each.
func TestJWKSRateLimit(t *testing.T) {
	t.Parallel()
	srv := newJWKSServer(t, rsaKey("k1", "RS256"))
	ks := newTestKeySet(t, srv.URL, KeySetOptions{MinRefresh: time.Hour})
	for i := range 200 {
		tok := ecKey(fmt.Sprintf("made-up-%d", i), elliptic.P256()).sign(t, "", claimsOK)
		if err := verifyWith(ks, tok); !errors.Is(err, ErrUnknownKeyID) {
			t.Fatal(err)
		}
	}
	waitFor(t, "the unknown kids' fetch", func() bool { return srv.hits.Load() >= 2 })
	ks.Close() // cancels and waits for the fetches: none can start after
	if n := srv.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the first, and one for the unknown kids)", n)
	}
}

// TestJWKSBadAnswers: at start, an endpoint that is down, answers 500,
// garbage, a 100 MiB body or too many keys leaves the set without keys:
// crypto.jwks says why (its second result) and jwt_verify fails with "key
// set unavailable". The set keeps trying; once the endpoint recovers, a
// verification's fetch loads it.
func TestJWKSBadAnswers(t *testing.T) {
	t.Parallel()
	k := rsaKey("k1", "RS256")
	many := make([]testKey, MaxJWKSKeys+1)
	for i := range many {
		many[i] = ecKey(fmt.Sprintf("k%d", i), elliptic.P256())
	}
	var written atomic.Int64
	huge := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"keys":[{"kty":"RSA","kid":"`)
		chunk := []byte(strings.Repeat("A", 64<<10))
		for range (100 << 20) / len(chunk) {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}
	declared := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(100<<20))
		io.WriteString(w, `{"keys":[]}`)
	}
	hangup := func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}
	tests := []struct {
		name    string
		status  int
		body    []byte
		handler http.HandlerFunc
		why     string
	}{
		{"500", 500, []byte(`{"keys":[]}`), nil, "invalid HTTP status code: 500"},
		{"garbage", 200, []byte("<html>nope</html>"), nil, "failed to decode JWK Set response"},
		{"not a JWK", 200, []byte(`{"keys":[{"kty":"RSA","n":"AQAB"}]}`), nil, "failed to create JWK"},
		{"100 MiB", 0, nil, huge, "jwks: response exceeds the limit of 1048576 bytes"},
		{"100 MiB declared", 0, nil, declared, "jwks: response of 104857600 bytes exceeds the limit of 1048576"},
		{"too many keys", 200, jwksDoc(t, many...), nil, "65 keys, more than the limit of 64"},
		{"connection dropped", 0, nil, hangup, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newJWKSServer(t)
			if tt.handler != nil {
				srv.setHandler(tt.handler)
			} else {
				srv.setRaw(tt.status, tt.body)
			}
			m := New(Options{Now: func() time.Time { return fixedNow }, Logger: quietLog(), JWKSMinRefresh: -1})
			t.Cleanup(func() { m.Close() })
			L := luatest.NewState(t, m)
			L.SetGlobal("URL", lua.LString(srv.URL))
			L.SetGlobal("TOK", lua.LString(k.sign(t, "", claimsOK)))
			luatest.Run(t, L, prelude, `
				idp, why = crypto.jwks(URL, {wait = 10})
				assert(idp, "a key set, whatever the first fetch did")
				assert(why and why:find("(retrying in the background)", 1, true), why)
				fails("jwt: key set unavailable", crypto.jwt_verify(TOK, idp))`)
			if why := L.GetGlobal("why").String(); !strings.Contains(why, tt.why) {
				t.Fatalf("crypto.jwks says %q, want it to mention %q", why, tt.why)
			}
			// The endpoint recovers; a verification's fetch loads the set.
			srv.set(t, k)
			ks := L.GetGlobal("idp").(*lua.LUserData).Value.(*KeySet)
			waitFor(t, "the set to load", func() bool { return verifyWith(ks, k.sign(t, "", claimsOK)) == nil })
		})
	}
	if n := written.Load(); n >= 100<<20 {
		t.Errorf("the 100 MiB body was read to the end (%d bytes written)", n)
	}
}

// TestJWKSFailedRefreshKeepsKeys: a fetch that fails after one worked
// keeps the keys held.
func TestJWKSFailedRefreshKeepsKeys(t *testing.T) {
	t.Parallel()
	k := rsaKey("k1", "RS256")
	srv := newJWKSServer(t, k)
	ks := newTestKeySet(t, srv.URL, KeySetOptions{MinRefresh: -1})
	for _, bad := range [][]byte{[]byte("garbage"), jwksDoc(t, make([]testKey, 0)...)[:5]} {
		srv.setRaw(200, bad)
		hits := srv.hits.Load()
		// An unknown kid starts a fetch, which fails.
		if err := verifyWith(ks, ecKey("other", elliptic.P256()).sign(t, "", claimsOK)); !errors.Is(err, ErrUnknownKeyID) {
			t.Fatal(err)
		}
		waitFor(t, "the failed fetch", func() bool { return srv.hits.Load() > hits && !ks.fetching.Load() })
		if err := verifyWith(ks, k.sign(t, "", claimsOK)); err != nil {
			t.Fatalf("after a failed fetch: %v", err)
		}
	}
}

// TestJWKSWait: the first fetch holds crypto.jwks at most `wait` seconds
// after the set was made; later calls do not wait, and verifications
// meanwhile fail without waiting.
func TestJWKSWait(t *testing.T) {
	t.Parallel()
	k := rsaKey("k1", "RS256")
	release := make(chan struct{})
	srv := newJWKSServer(t, k)
	srv.setHandler(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write(jwksDoc(t, k))
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the server's Close, which waits for handlers
	m := New(Options{Now: func() time.Time { return fixedNow }, Logger: quietLog()})
	t.Cleanup(func() { m.Close() })
	L := luatest.NewState(t, m)
	L.SetGlobal("URL", lua.LString(srv.URL))
	L.SetGlobal("TOK", lua.LString(k.sign(t, "", claimsOK)))
	luatest.Run(t, L, prelude, `
		idp, why = crypto.jwks(URL, {wait = 0.05})
		eq(why, "jwks `+srv.URL+`: first fetch still running (retrying in the background)")
		local again, why2 = crypto.jwks(URL, {wait = 60}) -- the set's deadline has passed: no wait
		eq(again ~= nil, true)
		eq(why2, why)
		fails("jwt: key set unavailable", crypto.jwt_verify(TOK, idp))`)
	unblock()
	ks := L.GetGlobal("idp").(*lua.LUserData).Value.(*KeySet)
	waitFor(t, "the first fetch", func() bool { return ks.Err() == nil })
	if err := verifyWith(ks, k.sign(t, "", claimsOK)); err != nil {
		t.Fatal(err)
	}
}

// TestJWKSWaitEndsWithTheCallback: the wait also ends when the VM's
// context does (the watchdog's handler timeout).
func TestJWKSWaitEndsWithTheCallback(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := newJWKSServer(t)
	srv.setHandler(func(w http.ResponseWriter, r *http.Request) { <-release })
	t.Cleanup(func() { close(release) })
	m := New(Options{Logger: quietLog()})
	t.Cleanup(func() { m.Close() })
	L := luatest.NewState(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	L.SetContext(ctx)
	L.SetGlobal("URL", lua.LString(srv.URL))
	time.AfterFunc(50*time.Millisecond, cancel)
	err := L.DoString(`crypto.jwks(URL, {wait = 60})`)
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("crypto.jwks under a cancelled context: %v", err)
	}
}

// TestJWKSSecretsAndEncryptionKeysDropped: an "oct" key (a secret, which
// has no place in a published set) or a "use":"enc" key never verifies;
// a key's "alg" binds it to that alg.
func TestJWKSSecretsAndEncryptionKeysDropped(t *testing.T) {
	t.Parallel()
	rs := rsaKey("sig", "RS256")
	rsEnc := rsaKey2("enc", "RS256")
	doc := fmt.Sprintf(`{"keys":[
		{"kty":"oct","kid":"oct","k":"c2VjcmV0"},
		%s, %s, %s]}`,
		jwkJSON(t, rs, jwkset.UseSig, ""), jwkJSON(t, rsEnc, jwkset.UseEnc, ""), jwkJSON(t, rsaKey2("ps", "PS256"), "", jwkset.AlgPS256))
	srv := newJWKSServer(t)
	srv.setRaw(200, []byte(doc))
	ks := newTestKeySet(t, srv.URL, KeySetOptions{MinRefresh: -1})
	if err := verifyWith(ks, rs.sign(t, "", claimsOK)); err != nil {
		t.Fatal(err)
	}
	oct := testKey{kid: "oct", priv: []byte("secret")}.sign(t, "HS256", claimsOK)
	if err := verifyWith(ks, oct); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("a token signed with the oct key: %v", err)
	}
	if err := verifyWith(ks, rsEnc.sign(t, "", claimsOK)); !errors.Is(err, ErrUnknownKeyID) {
		t.Fatalf("a token signed with the enc key: %v", err)
	}
	ps := rsaKey2("ps", "")
	if err := verifyWith(ks, ps.sign(t, "PS256", claimsOK)); err != nil {
		t.Fatalf("PS256 with the PS256 key: %v", err)
	}
	if err := verifyWith(ks, ps.sign(t, "RS256", claimsOK)); !errors.Is(err, ErrUnsupportedAlg) {
		t.Fatalf("RS256 with the PS256 key: %v", err)
	}
}

func jwkJSON(t *testing.T, k testKey, use jwkset.USE, alg jwkset.ALG) string {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(k.pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: k.kid, USE: use, ALG: alg}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(j.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestJWKSURLPolicy: the default client fetches https, and http from
// loopback only; it follows redirects on the same host only. A client
// given in Options is used instead, still with the size limit.
func TestJWKSURLPolicy(t *testing.T) {
	t.Parallel()
	m := New(Options{Logger: quietLog()})
	t.Cleanup(func() { m.Close() })
	runLua(t, m, nil, `
		raises("jwks: http://example.com/jwks refused: only https URLs, or http to a loopback address", crypto.jwks, "http://example.com/jwks")
		raises("jwks: http://10.0.0.1/jwks refused", crypto.jwks, "http://10.0.0.1/jwks")
		raises("want an http or https URL with a host", crypto.jwks, "file:///etc/passwd")
		raises("want an http or https URL with a host", crypto.jwks, "ftp://example.com/jwks")
		raises("want an http or https URL with a host", crypto.jwks, "https:///jwks")
		raises("jwks: bad URL", crypto.jwks, "https://exa mple.com/%zz")
		raises("string expected, got nil", crypto.jwks)
	`)

	k := rsaKey("k1", "RS256")
	target := newJWKSServer(t, k)
	// Another port is another host: the redirect is refused.
	other := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(other.Close)
	ks := newTestKeySet(t, other.URL, KeySetOptions{})
	if err := ks.Err(); err == nil || !strings.Contains(err.Error(), "redirect to another host") {
		t.Fatalf("redirect to another host: %v", err)
	}
	// The same host: followed.
	same := newJWKSServer(t)
	same.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			w.Write(jwksDoc(t, k))
			return
		}
		http.Redirect(w, r, "/jwks", http.StatusMovedPermanently)
	})
	if err := newTestKeySet(t, same.URL+"/old", KeySetOptions{}).Err(); err != nil {
		t.Fatalf("redirect on the same host: %v", err)
	}
	// Redirects end after three.
	loop := newJWKSServer(t)
	loop.setHandler(func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, r.URL.Path+"x", http.StatusFound) })
	if err := newTestKeySet(t, loop.URL+"/x", KeySetOptions{}).Err(); err == nil || !strings.Contains(err.Error(), "too many redirects") {
		t.Fatalf("a redirect loop: %v", err)
	}
	if n := loop.hits.Load(); n != 4 {
		t.Fatalf("%d requests for a redirect loop, want 4", n)
	}
	// A redirect from loopback http to a public http URL is refused too.
	out := httptest.NewServer(http.RedirectHandler("http://example.com/jwks", http.StatusFound))
	t.Cleanup(out.Close)
	if err := newTestKeySet(t, out.URL, KeySetOptions{}).Err(); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("redirect to a public http URL: %v", err)
	}

	// A given client is used, and decides which URLs it reaches (the
	// default policy is not applied on top: here it answers for any host,
	// without a network); the size limit still applies.
	var used atomic.Int64
	body := jwksDoc(t, k)
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used.Add(1)
		b := body
		if r.URL.Path == "/big" {
			b = append([]byte(`{"keys":[`), strings.Repeat(" ", MaxJWKSBytes)...)
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(string(b))), ContentLength: -1, Request: r}, nil
	})}
	if err := newTestKeySet(t, "http://example.com/jwks", KeySetOptions{Client: client}).Err(); err != nil || used.Load() != 1 {
		t.Fatalf("given client: used %d times, err %v", used.Load(), err)
	}
	if err := newTestKeySet(t, "https://example.com/big", KeySetOptions{Client: client}).Err(); err == nil || !strings.Contains(err.Error(), "exceeds the limit of 1048576 bytes") {
		t.Fatalf("given client, big body: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestJWKSServerDown: nothing listens at the URL. crypto.jwks returns the
// set and says so; it keeps trying.
func TestJWKSServerDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/jwks"
	ln.Close()
	m := New(Options{Logger: quietLog(), Now: func() time.Time { return fixedNow }})
	t.Cleanup(func() { m.Close() })
	runLua(t, m, map[string]string{"URL": url, "TOK": rsaKey("k", "RS256").sign(t, "", claimsOK)}, `
		local idp, why = crypto.jwks(URL, {wait = 10})
		assert(why:find("connection refused", 1, true), why)
		fails("jwt: key set unavailable", crypto.jwt_verify(TOK, idp))
	`)
}

// TestJWKSLimits: at most MaxKeySets URLs per module; one set per URL;
// nothing after Close.
func TestJWKSLimits(t *testing.T) {
	t.Parallel()
	srv := newJWKSServer(t, rsaKey("k1", "RS256"))
	m := New(Options{Logger: quietLog()})
	runLua(t, m, map[string]string{"URL": srv.URL}, fmt.Sprintf(`
		local first = crypto.jwks(URL .. "/1")
		for i = 2, %d do crypto.jwks(URL .. "/" .. i) end
		raises("more than %d key set URLs", crypto.jwks, URL .. "/x")
		local again = crypto.jwks(URL .. "/1")
		eq(again ~= nil, true)
	`, MaxKeySets, MaxKeySets))
	if n := srv.hits.Load(); n != MaxKeySets {
		t.Fatalf("%d fetches, want %d: one per URL", n, MaxKeySets)
	}
	m.Close()
	m.Close() // idempotent
	runLua(t, m, map[string]string{"URL": srv.URL}, `raises("the module is closed", crypto.jwks, URL)`)
}

// TestJWKSHeaderKeysIgnored: a token cannot bring its own key: jku, x5u
// and jwk headers are never fetched or used.
func TestJWKSHeaderKeysIgnored(t *testing.T) {
	t.Parallel()
	srv := newJWKSServer(t, rsaKey("k1", "RS256"))
	evil := newJWKSServer(t, rsaKey2("k1", "RS256"), rsaKey2("evil", "RS256"))
	ks := newTestKeySet(t, srv.URL, KeySetOptions{MinRefresh: -1})
	attacker := rsaKey2("", "RS256")
	j, err := jwkset.NewJWKFromKey(attacker.pub, jwkset.JWKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, kid := range []string{"k1", "evil"} {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claimsOK)
		tok.Header["kid"] = kid
		tok.Header["jku"] = evil.URL
		tok.Header["x5u"] = evil.URL
		tok.Header["jwk"] = j.Marshal()
		s, err := tok.SignedString(attacker.priv)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]error{"k1": ErrBadSignature, "evil": ErrUnknownKeyID}[kid]
		if err := verifyWith(ks, s); !errors.Is(err, want) {
			t.Fatalf("kid %s: %v, want %v", kid, err, want)
		}
	}
	ks.Close()
	if n := evil.hits.Load(); n != 0 {
		t.Fatalf("the token's jku was fetched %d times", n)
	}
}

// TestKeyCacheBounded: the parsed-key cache starts over when full.
func TestKeyCacheBounded(t *testing.T) {
	t.Parallel()
	var c keyCache
	parses := 0
	parse := func(s string) (any, error) { parses++; return s, nil }
	for i := range 3 * keyCacheSize {
		if _, err := c.get(fmt.Sprint(i), parse); err != nil {
			t.Fatal(err)
		}
		if len(c.m) > keyCacheSize {
			t.Fatalf("%d keys cached, more than %d", len(c.m), keyCacheSize)
		}
	}
	c.get(fmt.Sprint(3*keyCacheSize-1), parse)
	if parses != 3*keyCacheSize {
		t.Fatalf("%d parses: a cached key was parsed again", parses)
	}
	if _, err := c.get("bad", func(string) (any, error) { return nil, errors.New("bad") }); err == nil {
		t.Fatal("a parse error was not returned")
	}
}

package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeDash is a DashboardSource whose answers the test sets.
type fakeDash struct {
	*fakeSource

	dmu         sync.Mutex
	infos       []RouteInfo
	reloads     []ReloadEntry
	rooms       []RoomSize
	members     map[string][]byte
	presence    bool
	membersErr  error
	nodes       []NodeSummary
	nodesOK     bool
	nodesGate   chan struct{} // non-nil: Nodes waits for it (or its context)
	nodesCalls  atomic.Int32
	closes      []closeCall
	closeErr    error
	reloadEntry ReloadEntry
	reloadErr   error
}

type closeCall struct {
	id     string
	code   int
	reason string
}

func newFakeDash() *fakeDash {
	return &fakeDash{
		fakeSource: busySource(),
		infos: []RouteInfo{
			{Path: "/echo", Script: "echo.lua", Version: "v2", LoadedAt: reloadAt},
			{Path: "/chat/{room}", Script: "chat.lua", Version: "v1", LoadedAt: reloadAt},
		},
	}
}

func (f *fakeDash) Node() (string, string) { return "node-1", "v9.9" }
func (f *fakeDash) Started() time.Time     { return reloadAt }

func (f *fakeDash) RouteInfo() []RouteInfo {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return slices.Clone(f.infos)
}

func (f *fakeDash) Reloads() []ReloadEntry {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return slices.Clone(f.reloads)
}

func (f *fakeDash) Rooms() []RoomSize {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return slices.Clone(f.rooms)
}

func (f *fakeDash) Members(ctx context.Context, room string) (map[string][]byte, bool, error) {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return maps.Clone(f.members), f.presence, f.membersErr
}

func (f *fakeDash) Nodes(ctx context.Context) ([]NodeSummary, bool) {
	f.nodesCalls.Add(1)
	f.dmu.Lock()
	gate := f.nodesGate
	f.dmu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, false
		}
	}
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return slices.Clone(f.nodes), f.nodesOK
}

func (f *fakeDash) CloseConn(id string, code int, reason string) error {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	if f.closeErr != nil {
		return f.closeErr
	}
	f.closes = append(f.closes, closeCall{id, code, reason})
	return nil
}

func (f *fakeDash) ReloadNow() (ReloadEntry, error) {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	return f.reloadEntry, f.reloadErr
}

var _ DashboardSource = (*fakeDash)(nil)

// dashEnv is a running admin server with a dashboard.
type dashEnv struct {
	srv    *httptest.Server
	d      *dashboard
	src    *fakeDash
	obs    *Observer
	reg    *prometheus.Registry
	cancel context.CancelFunc
}

// newDash serves src's admin surface with a dashboard sampling every 50 ms.
func newDash(t testing.TB, src *fakeDash, opts Options) *dashEnv {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	obs, err := NewObserver(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Observer == nil {
		opts.Observer = obs
	}
	opts.Context = ctx
	if opts.SampleInterval == 0 {
		opts.SampleInterval = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h, d, err := newAdmin(src, reg, opts)
	if err != nil {
		cancel()
		t.Fatalf("newAdmin: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		cancel()
		srv.Close()
		<-d.sampler.done
	})
	return &dashEnv{srv: srv, d: d, src: src, obs: opts.Observer, reg: reg, cancel: cancel}
}

// call makes a request; hdr are header name, value pairs (a value of ""
// deletes the header).
func doReq(t testing.TB, method, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// action POSTs like the page: with X-Moonwire-Action and a JSON body.
func action(t testing.TB, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	base := []string{"X-Moonwire-Action", "1", "Content-Type", "application/json"}
	return doReq(t, http.MethodPost, url, body, append(base, hdr...)...)
}

func errorOf(t testing.TB, body []byte) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error
}

// login logs in and returns the session cookie header value.
func login(t testing.TB, base, token string) string {
	t.Helper()
	resp, body := action(t, base+"/dashboard/login", `{"token":`+strconv.Quote(token)+`}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			return c.Name + "=" + c.Value
		}
	}
	t.Fatal("login: no session cookie")
	return ""
}

func TestDashboardAbsentWithoutDashboardSource(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t, busySource())
	for _, p := range []string{"/", "/ui/dashboard.js", "/dashboard/session", "/dashboard/feed"} {
		if resp, _ := doReq(t, http.MethodGet, srv.URL+p, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without a DashboardSource: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestDashboardStatic(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Token: "s3cret"})
	for path, ct := range map[string]string{
		"/":                 "text/html; charset=utf-8",
		"/ui/dashboard.js":  "text/javascript; charset=utf-8",
		"/ui/dashboard.css": "text/css; charset=utf-8",
	} {
		resp, body := doReq(t, http.MethodGet, env.srv.URL+path, "") // no credentials
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != ct {
			t.Errorf("%s: Content-Type %q, want %q", path, got, ct)
		}
		for k, v := range staticHeaders {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", path, k, got, v)
			}
		}
		if len(body) == 0 {
			t.Errorf("%s: empty body", path)
		}
	}
	if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/ui/other.js", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /ui/other.js without credentials: %d, want 401", resp.StatusCode)
	}
	if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/ui/other.js", "", "Authorization", "Bearer s3cret"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/other.js: %d, want 404", resp.StatusCode)
	}
}

func sessionOf(t testing.TB, base string, hdr ...string) sessionAnswer {
	t.Helper()
	resp, body := doReq(t, http.MethodGet, base+"/dashboard/session", "", hdr...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("session: %d %s", resp.StatusCode, body)
	}
	var a sessionAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDashboardAuth is the auth matrix with a token: Bearer or session
// cookie for every protected path, dashboard or not.
func TestDashboardAuth(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Token: "s3cret", Pprof: true})
	base := env.srv.URL
	protected := []string{"/dashboard/rooms", "/dashboard/members?room=x", "/metrics", "/healthz", "/routes", "/debug/pprof/"}

	if a := sessionOf(t, base); !a.AuthRequired || a.LoggedIn || a.Node != "node-1" || a.Version != "v9.9" {
		t.Errorf("session without credentials: %+v", a)
	}
	for _, p := range protected {
		resp, body := doReq(t, http.MethodGet, base+p, "")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", p, resp.StatusCode)
		}
		if strings.HasPrefix(p, "/dashboard/") {
			if e := errorOf(t, body); e != "login required" {
				t.Errorf("GET %s: error %q", p, e)
			}
		}
		for _, hdr := range [][]string{
			{"Authorization", "Bearer wrong"},
			{"Cookie", sessionCookie + "=forged"},
			{"Cookie", sessionCookie + "=" + strings.Repeat("A", 43)},
		} {
			if resp, _ := doReq(t, http.MethodGet, base+p, "", hdr...); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %v: %d, want 401", p, hdr, resp.StatusCode)
			}
		}
		if resp, body := doReq(t, http.MethodGet, base+p, "", "Authorization", "Bearer s3cret"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the Bearer token: %d %s", p, resp.StatusCode, body)
		}
	}

	// A wrong token: 401 and no cookie.
	resp, body := action(t, base+"/dashboard/login", `{"token":"nope"}`)
	if resp.StatusCode != http.StatusUnauthorized || errorOf(t, body) != "wrong token" || len(resp.Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d %s %v", resp.StatusCode, body, resp.Cookies())
	}

	// The right one: a cookie with the contract's attributes.
	resp, _ = action(t, base+"/dashboard/login", `{"token":"s3cret"}`)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var c *http.Cookie
	for _, x := range resp.Cookies() {
		if x.Name == sessionCookie {
			c = x
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 12*3600 || len(c.Value) < 43 {
		t.Fatalf("session cookie: %+v", c)
	}
	if c.Secure {
		t.Errorf("a cookie set over plain HTTP is Secure: the browser would never send it back")
	}
	cookie := c.Name + "=" + c.Value
	// Behind a TLS-terminating proxy (X-Forwarded-Proto: https) it is.
	resp, _ = action(t, base+"/dashboard/login", `{"token":"s3cret"}`, "X-Forwarded-Proto", "https")
	if cs := resp.Cookies(); resp.StatusCode != http.StatusNoContent || len(cs) != 1 || !cs[0].Secure {
		t.Errorf("login through an HTTPS proxy: %d %v, want a Secure cookie", resp.StatusCode, cs)
	}
	for _, p := range protected {
		if resp, body := doReq(t, http.MethodGet, base+p, "", "Cookie", cookie); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the session cookie: %d %s", p, resp.StatusCode, body)
		}
	}
	// The feed, as EventSource opens it: with the cookie.
	feedCtx, cancelFeed := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelFeed()
	if ev, _, err := openFeed(t, feedCtx, base, "Cookie", cookie).next(); err != nil || ev != "series" {
		t.Errorf("feed with the cookie: %q %v", ev, err)
	}
	if a := sessionOf(t, base, "Cookie", cookie); !a.AuthRequired || !a.LoggedIn {
		t.Errorf("session with the cookie: %+v", a)
	}
	if a := sessionOf(t, base, "Authorization", "Bearer s3cret"); !a.LoggedIn {
		t.Errorf("session with the Bearer token: %+v", a)
	}

	// Logout ends the session on the server, not just in the browser.
	resp, _ = action(t, base+"/dashboard/logout", "", "Cookie", cookie, "Content-Type", "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Errorf("logout cookies: %v, want one that expires", cs)
	}
	if resp, _ := doReq(t, http.MethodGet, base+"/dashboard/rooms", "", "Cookie", cookie); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("rooms after logout: %d, want 401", resp.StatusCode)
	}
	if a := sessionOf(t, base, "Cookie", cookie); a.LoggedIn {
		t.Errorf("session after logout: %+v", a)
	}
}

func TestDashboardWithoutToken(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{})
	base := env.srv.URL
	if a := sessionOf(t, base); a.AuthRequired || !a.LoggedIn || a.Error != "" {
		t.Errorf("session on loopback without token: %+v", a)
	}
	resp, _ := action(t, base+"/dashboard/login", `{"token":""}`)
	if resp.StatusCode != http.StatusNoContent || len(resp.Cookies()) != 0 {
		t.Errorf("login without a token configured: %d %v", resp.StatusCode, resp.Cookies())
	}
	for _, p := range []string{"/dashboard/rooms", "/metrics", "/"} {
		if resp, _ := doReq(t, http.MethodGet, base+p, ""); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}
}

// TestDashboardPublicWithoutToken: on a listener other hosts reach,
// without a token, the dashboard refuses all but its page and session.
func TestDashboardPublicWithoutToken(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Public: true})
	base := env.srv.URL
	a := sessionOf(t, base)
	if !a.AuthRequired || a.LoggedIn || a.Error != notLoopbackNoToken {
		t.Errorf("session: %+v", a)
	}
	for _, p := range []string{"/dashboard/rooms", "/dashboard/members?room=x", "/dashboard/feed", "/dashboard/nope"} {
		resp, body := doReq(t, http.MethodGet, base+p, "")
		if resp.StatusCode != http.StatusForbidden || errorOf(t, body) != notLoopbackNoToken {
			t.Errorf("GET %s: %d %s, want 403", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/dashboard/login", "/dashboard/logout", "/dashboard/close", "/dashboard/reload"} {
		resp, body := action(t, base+p, `{}`)
		if resp.StatusCode != http.StatusForbidden || errorOf(t, body) != notLoopbackNoToken {
			t.Errorf("POST %s: %d %s, want 403", p, resp.StatusCode, body)
		}
	}
	if resp, _ := doReq(t, http.MethodGet, base+"/", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /: %d", resp.StatusCode)
	}
	if len(env.src.closes) != 0 {
		t.Error("a connection was closed")
	}
}

// TestLoginThrottle: after loginFailures wrong tokens an address gets 429
// with Retry-After, even with the right token.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Token: "s3cret"})
	url := env.srv.URL + "/dashboard/login"
	for i := range loginFailures {
		if resp, _ := action(t, url, `{"token":"guess`+strconv.Itoa(i)+`"}`); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i, resp.StatusCode)
		}
	}
	for _, tok := range []string{"guess", "s3cret"} {
		resp, body := action(t, url, `{"token":"`+tok+`"}`)
		if resp.StatusCode != http.StatusTooManyRequests || errorOf(t, body) != "too many attempts, retry later" {
			t.Errorf("throttled attempt with %q: %d %s", tok, resp.StatusCode, body)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	}
	// The Bearer token still works: the throttle guards logins only.
	if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/rooms", "", "Authorization", "Bearer s3cret"); resp.StatusCode != http.StatusOK {
		t.Errorf("rooms with Bearer while throttled: %d", resp.StatusCode)
	}
}

// TestSessionCap: at most maxSessions live; the oldest goes first.
func TestSessionCap(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Token: "s3cret"})
	first := login(t, env.srv.URL, "s3cret")
	second := login(t, env.srv.URL, "s3cret")
	for range maxSessions - 1 {
		login(t, env.srv.URL, "s3cret")
	}
	if n := env.d.sessions.count(); n != maxSessions {
		t.Errorf("%d sessions, want %d", n, maxSessions)
	}
	if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/rooms", "", "Cookie", first); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the oldest session after %d more logins: %d, want 401", maxSessions, resp.StatusCode)
	}
	if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/rooms", "", "Cookie", second); resp.StatusCode != http.StatusOK {
		t.Errorf("the second session: %d, want 200", resp.StatusCode)
	}
}

// TestActionGuards: every POST needs X-Moonwire-Action, a same-origin
// Origin when there is one, and a small strict JSON body.
func TestActionGuards(t *testing.T) {
	t.Parallel()
	env := newDash(t, newFakeDash(), Options{Token: "s3cret"})
	base := env.srv.URL
	host := strings.TrimPrefix(base, "http://")
	auth := []string{"Authorization", "Bearer s3cret"}
	for _, p := range []string{"/dashboard/login", "/dashboard/logout", "/dashboard/close", "/dashboard/reload"} {
		resp, _ := doReq(t, http.MethodPost, base+p, `{}`, append(auth, "Content-Type", "application/json")...)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST %s without X-Moonwire-Action: %d, want 403", p, resp.StatusCode)
		}
		for _, o := range []string{"http://evil.example", "https://" + host + ".evil.example", "null", "http://" + host + ":1"} {
			resp, _ := action(t, base+p, `{}`, append(auth, "Origin", o)...)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s from Origin %s: %d, want 403", p, o, resp.StatusCode)
			}
		}
	}
	if got := len(env.src.closes); got != 0 {
		t.Fatalf("%d closes through refused requests", got)
	}
	closeURL := base + "/dashboard/close"
	for _, tc := range []struct {
		name   string
		body   string
		hdr    []string
		status int
	}{
		{"same origin", `{"conn":"c1"}`, []string{"Origin", "http://" + host}, http.StatusOK},
		{"text/plain", `{"conn":"c1"}`, []string{"Content-Type", "text/plain"}, http.StatusUnsupportedMediaType},
		{"form", `conn=c1`, []string{"Content-Type", "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"no content type", `{"conn":"c1"}`, []string{"Content-Type", ""}, http.StatusUnsupportedMediaType},
		{"charset", `{"conn":"c1"}`, []string{"Content-Type", "application/json; charset=utf-8"}, http.StatusOK},
		{"unknown field", `{"conn":"c1","x":1}`, nil, http.StatusBadRequest},
		{"trailing data", `{"conn":"c1"}{}`, nil, http.StatusBadRequest},
		{"not an object", `["c1"]`, nil, http.StatusBadRequest},
		{"empty", ``, nil, http.StatusBadRequest},
		{"too big", `{"conn":"` + strings.Repeat("x", maxBodyBytes) + `"}`, nil, http.StatusRequestEntityTooLarge},
	} {
		resp, body := action(t, closeURL, tc.body, append(slices.Clone(auth), tc.hdr...)...)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
		}
	}
}

func TestRooms(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	for i := range 600 {
		src.rooms = append(src.rooms, RoomSize{Name: fmt.Sprintf("room-%03d", i), Members: i % 7})
	}
	src.rooms = append(src.rooms, RoomSize{Name: "lobby", Members: 100}, RoomSize{Name: "lobby-b", Members: 100})
	env := newDash(t, src, Options{})
	rooms := func(query string) (int, RoomsAnswer) {
		resp, body := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/rooms"+query, "")
		var a RoomsAnswer
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, a
	}

	st, a := rooms("")
	if st != http.StatusOK || a.Total != 602 || len(a.Rooms) != defaultRooms {
		t.Fatalf("default: %d total %d, %d rooms", st, a.Total, len(a.Rooms))
	}
	// Largest first, names ascending among equals.
	if a.Rooms[0].Name != "lobby" || a.Rooms[1].Name != "lobby-b" || a.Rooms[2] != (RoomSize{"room-006", 6}) {
		t.Errorf("order: %v", a.Rooms[:3])
	}
	if !slices.IsSortedFunc(a.Rooms, func(x, y RoomSize) int { return y.Members - x.Members }) {
		t.Error("not largest first")
	}
	st, a = rooms("?q=lob&limit=1")
	if st != http.StatusOK || a.Total != 2 || len(a.Rooms) != 1 || a.Rooms[0].Name != "lobby" {
		t.Errorf("q=lob limit=1: %d %+v", st, a)
	}
	st, a = rooms("?q=room-59")
	if st != http.StatusOK || a.Total != 10 || len(a.Rooms) != 10 {
		t.Errorf("q=room-59: %d %+v", st, a)
	}
	if st, a = rooms("?limit=500"); st != http.StatusOK || len(a.Rooms) != 500 {
		t.Errorf("limit=500: %d, %d rooms", st, len(a.Rooms))
	}
	if st, a = rooms("?q=nothing"); st != http.StatusOK || a.Total != 0 || a.Rooms == nil {
		t.Errorf("no match: %d %+v (rooms must be [], not null)", st, a)
	}
	for _, q := range []string{"?limit=0", "?limit=501", "?limit=-1", "?limit=x", "?limit=99999999999999999999", "?q=" + strings.Repeat("a", maxQueryBytes+1)} {
		if st, _ := rooms(q); st != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, st)
		}
	}
}

func TestMembers(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	src.presence = true
	src.members = map[string][]byte{
		"n1-2": []byte(`{"user":"ann"}`),
		"n1-1": nil,
		"n2-9": []byte(`not json`),
	}
	for i := range 600 {
		src.members[fmt.Sprintf("z-%03d", i)] = nil
	}
	env := newDash(t, src, Options{})
	resp, body := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/members?room=lobby", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var raw struct {
		Room     string `json:"room"`
		Presence bool   `json:"presence"`
		Members  []struct {
			Conn string          `json:"conn"`
			Info json.RawMessage `json:"info"`
		} `json:"members"`
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Room != "lobby" || !raw.Presence || len(raw.Members) != maxMembers || raw.Error != nil {
		t.Fatalf("answer: room %q presence %v %d members error %v", raw.Room, raw.Presence, len(raw.Members), raw.Error)
	}
	want := []struct{ conn, info string }{{"n1-1", "null"}, {"n1-2", `{"user":"ann"}`}, {"n2-9", "null"}, {"z-000", "null"}}
	for i, w := range want {
		if m := raw.Members[i]; m.Conn != w.conn || string(m.Info) != w.info {
			t.Errorf("member %d: %s %s, want %s %s", i, m.Conn, m.Info, w.conn, w.info)
		}
	}

	src.dmu.Lock()
	src.members, src.membersErr, src.presence = nil, errors.New("broker unreachable"), false
	src.dmu.Unlock()
	resp, body = doReq(t, http.MethodGet, env.srv.URL+"/dashboard/members?room=lobby", "")
	var a MembersAnswer
	if err := json.Unmarshal(body, &a); err != nil || resp.StatusCode != http.StatusOK || a.Error != "broker unreachable" || a.Members == nil {
		t.Errorf("with an error: %d %s", resp.StatusCode, body)
	}
	for _, q := range []string{"", "?room=", "?room=" + strings.Repeat("r", maxQueryBytes+1)} {
		if resp, _ := doReq(t, http.MethodGet, env.srv.URL+"/dashboard/members"+q, ""); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("members%s: %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestCloseConn(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	var logs bytes.Buffer
	var logMu sync.Mutex
	env := newDash(t, src, Options{Logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))})
	url := env.srv.URL + "/dashboard/close"

	resp, body := action(t, url, `{"conn":"n1-7"}`)
	var ok struct {
		OK      bool   `json:"ok"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || resp.StatusCode != http.StatusOK || !ok.OK || ok.Message != "connection n1-7 closed with 1008" {
		t.Fatalf("close with defaults: %d %s", resp.StatusCode, body)
	}
	reason123 := strings.Repeat("é", 61) + "x" // 123 bytes
	for _, b := range []string{`{"conn":"n1-8","code":4000,"reason":"bye"}`, `{"conn":"n1-9","code":1000,"reason":"` + reason123 + `"}`} {
		if resp, body := action(t, url, b); resp.StatusCode != http.StatusOK {
			t.Errorf("close %s: %d %s", b, resp.StatusCode, body)
		}
	}
	src.dmu.Lock()
	got := slices.Clone(src.closes)
	src.dmu.Unlock()
	want := []closeCall{{"n1-7", 1008, "closed by an operator"}, {"n1-8", 4000, "bye"}, {"n1-9", 1000, reason123}}
	if !slices.Equal(got, want) {
		t.Errorf("closes %v, want %v", got, want)
	}

	for _, b := range []string{
		`{"conn":""}`, `{}`, `{"conn":"` + strings.Repeat("c", maxConnIDBytes+1) + `"}`,
		`{"conn":"c","code":999}`, `{"conn":"c","code":1004}`, `{"conn":"c","code":1005}`, `{"conn":"c","code":1006}`,
		`{"conn":"c","code":1015}`, `{"conn":"c","code":2999}`, `{"conn":"c","code":5000}`, `{"conn":"c","code":0}`,
		`{"conn":"c","code":"1000"}`, `{"conn":"c","code":1000.5}`,
		`{"conn":"c","reason":"` + reason123 + `x"}`,
	} {
		resp, body := action(t, url, b)
		if resp.StatusCode != http.StatusBadRequest || errorOf(t, body) == "" {
			t.Errorf("close %.80s: %d %s, want 400", b, resp.StatusCode, body)
		}
	}

	src.dmu.Lock()
	src.closeErr = fmt.Errorf("closing: %w", ErrNoConn)
	src.dmu.Unlock()
	resp, body = action(t, url, `{"conn":"gone"}`)
	if resp.StatusCode != http.StatusNotFound || errorOf(t, body) != "no such connection" {
		t.Errorf("close of a gone connection: %d %s", resp.StatusCode, body)
	}

	logMu.Lock()
	defer logMu.Unlock()
	var first map[string]any
	line, _, _ := bytes.Cut(logs.Bytes(), []byte("\n"))
	if err := json.Unmarshal(line, &first); err != nil {
		t.Fatalf("action log %q: %v", line, err)
	}
	if first["msg"] != "admin action" || first["action"] != "close" || first["conn"] != "n1-7" || first["code"] != 1008.0 ||
		first["reason"] != "closed by an operator" || first["result"] != "ok" || !strings.HasPrefix(first["remote"].(string), "127.0.0.1:") {
		t.Errorf("action log: %v", first)
	}
	if !strings.Contains(logs.String(), `"result":"no such connection"`) {
		t.Error("the failed close is not logged")
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestReload(t *testing.T) {
	t.Parallel()
	src := newFakeDash()
	src.reloadEntry = ReloadEntry{At: 1234, OK: false, Error: "chat.lua:3: syntax error", By: "dashboard"}
	env := newDash(t, src, Options{})
	url := env.srv.URL + "/dashboard/reload"
	for _, body := range []string{`{}`, ``} {
		resp, b := action(t, url, body)
		var e ReloadEntry
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != http.StatusOK || e.OK || e.Error != "chat.lua:3: syntax error" || e.By != "dashboard" || e.At != 1234 {
			t.Errorf("reload with body %q: %d %s", body, resp.StatusCode, b)
		}
		if !bytes.Contains(b, []byte(`"changed":[]`)) {
			t.Errorf("reload entry %s: lists must be [] rather than null", b)
		}
	}
	if resp, _ := action(t, url, `{"x":1}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("reload with an unknown field: %d, want 400", resp.StatusCode)
	}

	// A node on the embedded config: 409, and the page stops offering it.
	src.dmu.Lock()
	src.reloadErr = ErrNotReloadable
	src.dmu.Unlock()
	resp, b := action(t, url, `{}`)
	if resp.StatusCode != http.StatusConflict || errorOf(t, b) != ErrNotReloadable.Error() {
		t.Errorf("reload of an embedded config: %d %s", resp.StatusCode, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	feed := openFeed(t, ctx, env.srv.URL)
	feed.waitSnapshot(t, func(s *Snapshot) bool { return !s.Actions.Reload && s.Actions.Close })
}

// sseStream reads Server-Sent Events.
type sseStream struct {
	resp *http.Response
	br   *bufio.Reader
}

func openFeed(t testing.TB, ctx context.Context, base string, hdr ...string) *sseStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/dashboard/feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("feed: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("feed: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("feed Content-Type %q", ct)
	}
	return &sseStream{resp: resp, br: bufio.NewReader(resp.Body)}
}

// next returns the next event, skipping comments.
func (s *sseStream) next() (event string, data []byte, err error) {
	for {
		line, err := s.br.ReadBytes('\n')
		if err != nil {
			return "", nil, err
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		switch {
		case len(line) == 0:
			if event != "" || data != nil {
				return event, data, nil
			}
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[len("data: "):]...)
		default:
			return "", nil, fmt.Errorf("unexpected line %q", line)
		}
	}
}

func (s *sseStream) snapshot(t testing.TB) *Snapshot {
	t.Helper()
	ev, data, err := s.next()
	if err != nil {
		t.Fatalf("reading the feed: %v", err)
	}
	if ev != "snapshot" {
		t.Fatalf("event %q, want snapshot", ev)
	}
	var snap Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		t.Fatalf("snapshot %s: %v", data, err)
	}
	return &snap
}

// waitSnapshot reads snapshots until ok says yes (the request's context
// bounds the wait), after the initial series.
func (s *sseStream) waitSnapshot(t testing.TB, ok func(*Snapshot) bool) *Snapshot {
	t.Helper()
	for {
		ev, data, err := s.next()
		if err != nil {
			t.Fatalf("waiting for a snapshot: %v", err)
		}
		if ev != "snapshot" {
			continue
		}
		var snap Snapshot
		if err := json.Unmarshal(data, &snap); err != nil {
			t.Fatalf("snapshot %s: %v", data, err)
		}
		if ok(&snap) {
			return &snap
		}
	}
}

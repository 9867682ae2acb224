package admin

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/moonwire/moonwire/internal/admin/ui"
)

// ReloadCapable is optionally implemented by a DashboardSource to say up
// front whether ReloadNow can work (false on the embedded configuration),
// so that the page does not offer the action. Without it the dashboard
// offers reload until ReloadNow returns ErrNotReloadable.
type ReloadCapable interface {
	CanReload() bool
}

// Request limits of the dashboard's endpoints: a client controls these
// inputs, so every one is bounded.
const (
	maxBodyBytes   = 4 << 10 // POST bodies
	maxQueryBytes  = 256     // rooms' q, members' room
	maxConnIDBytes = 256
	maxReasonBytes = 123 // a close frame's reason: 125 bytes minus the code
	defaultRooms   = 50
	maxRooms       = 500
	maxMembers     = 500
	membersTimeout = 2 * time.Second

	defaultCloseCode   = 1008
	defaultCloseReason = "closed by an operator"

	// notLoopbackNoToken is the refusal when the admin listener is
	// reachable from other hosts and anyone could act on the node.
	notLoopbackNoToken = "the dashboard needs [admin] token when the admin listener is not loopback"
)

// staticHeaders go with the page's files: a strict Content-Security-Policy
// (no inline script or style, nothing from elsewhere), no framing.
var staticHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":         "DENY",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"Cache-Control":           "no-cache",
}

// dashboard serves the /dashboard/ endpoints and the page.
type dashboard struct {
	src      DashboardSource
	sampler  *sampler
	sessions *sessions
	throttle *throttle
	token    string
	want     [sha256.Size]byte // the token's digest
	public   bool
	log      *slog.Logger

	feedWriteTimeout time.Duration

	reloadMu sync.Mutex // one dashboard reload at a time

	index, js, css []byte
}

func newDashboard(src DashboardSource, opts Options, log *slog.Logger) (*dashboard, error) {
	d := &dashboard{
		src:              src,
		sessions:         newSessions(),
		throttle:         newThrottle(),
		token:            opts.Token,
		want:             sha256.Sum256([]byte(opts.Token)),
		public:           opts.Public,
		log:              log,
		feedWriteTimeout: cmp.Or(opts.feedWriteTimeout, feedWriteTimeout),
	}
	var err error
	for name, dst := range map[string]*[]byte{"index.html": &d.index, "dashboard.js": &d.js, "dashboard.css": &d.css} {
		if *dst, err = fs.ReadFile(ui.FS, name); err != nil {
			return nil, fmt.Errorf("admin: reading the dashboard's %s: %w", name, err)
		}
	}
	interval := opts.SampleInterval
	if interval <= 0 {
		interval = time.Second
	}
	ctx := opts.Context
	if ctx == nil {
		ctx = context.Background()
	}
	d.sampler = newSampler(ctx, src, opts.Observer, interval, log)
	return d, nil
}

// register adds the dashboard's routes to mux.
func (d *dashboard) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", d.static(d.index, "text/html; charset=utf-8"))
	mux.HandleFunc("GET /ui/dashboard.js", d.static(d.js, "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /ui/dashboard.css", d.static(d.css, "text/css; charset=utf-8"))
	mux.HandleFunc("GET /dashboard/session", d.session)
	mux.HandleFunc("POST /dashboard/login", d.login)
	mux.HandleFunc("POST /dashboard/logout", d.logout)
	mux.HandleFunc("GET /dashboard/feed", func(w http.ResponseWriter, r *http.Request) {
		d.sampler.hub.serveFeed(w, r, d.feedWriteTimeout)
	})
	mux.HandleFunc("GET /dashboard/rooms", d.rooms)
	mux.HandleFunc("GET /dashboard/members", d.members)
	mux.HandleFunc("POST /dashboard/close", d.closeConn)
	mux.HandleFunc("POST /dashboard/reload", d.reload)
}

// openPaths need no credentials: the page itself (no data in it; the
// login form must show) and the endpoints that log in and out.
var openPaths = map[string]bool{
	"/":                  true,
	"/ui/dashboard.js":   true,
	"/ui/dashboard.css":  true,
	"/dashboard/session": true,
	"/dashboard/login":   true,
	"/dashboard/logout":  true,
}

// guard is the admin surface's access check: with a token configured every
// path but openPaths needs the Bearer token or (with the dashboard) a
// session cookie; with the dashboard on a non-loopback listener and no
// token, the dashboard's endpoints are refused outright.
type guard struct {
	next  http.Handler
	token string
	want  [sha256.Size]byte
	dash  *dashboard // nil: no dashboard
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	isDash := g.dash != nil && strings.HasPrefix(p, "/dashboard/")
	if g.dash != nil {
		// Exact matches only: an unclean path ("/dashboard/../metrics")
		// is not open; the mux redirects it and the client comes back
		// through here with the clean one.
		if openPaths[p] {
			g.next.ServeHTTP(w, r)
			return
		}
		if isDash && g.dash.public && g.token == "" {
			writeError(w, http.StatusForbidden, notLoopbackNoToken)
			return
		}
	}
	if g.token == "" || g.authorized(r) {
		g.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="moonwire admin"`)
	if isDash {
		writeError(w, http.StatusUnauthorized, "login required")
		return
	}
	http.Error(w, "admin: a bearer token is required", http.StatusUnauthorized)
}

// authorized reports whether r carries the token or a live session.
func (g *guard) authorized(r *http.Request) bool {
	if bearerMatches(r.Header.Get("Authorization"), g.want) {
		return true
	}
	return g.dash != nil && g.dash.sessions.fromRequest(r)
}

func (d *dashboard) static(body []byte, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		for k, v := range staticHeaders {
			hd.Set(k, v)
		}
		hd.Set("Content-Type", contentType)
		hd.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body) // discarded for HEAD by net/http
	}
}

// sessionAnswer is GET /dashboard/session.
type sessionAnswer struct {
	AuthRequired bool   `json:"auth_required"`
	LoggedIn     bool   `json:"logged_in"`
	Node         string `json:"node"`
	Version      string `json:"version"`
	Error        string `json:"error,omitempty"`
}

// session tells the page whether it must show the login form.
func (d *dashboard) session(w http.ResponseWriter, r *http.Request) {
	id, version := d.src.Node()
	a := sessionAnswer{Node: id, Version: version}
	switch {
	case d.token == "" && d.public:
		a.AuthRequired, a.Error = true, notLoopbackNoToken
	case d.token == "":
		a.LoggedIn = true // nothing to log in to: the listener is loopback
	default:
		a.AuthRequired = true
		a.LoggedIn = bearerMatches(r.Header.Get("Authorization"), d.want) || d.sessions.fromRequest(r)
	}
	writeJSON(w, http.StatusOK, a)
}

// login is POST /dashboard/login {"token":"..."}: 204 and a session cookie
// for the right token; 401 for a wrong one; 429 once an address failed
// too often.
func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	if !d.checkAction(w, r) {
		return
	}
	if d.token == "" && d.public {
		writeError(w, http.StatusForbidden, notLoopbackNoToken)
		return
	}
	key := clientKey(r)
	// Throttled before the body is read or the token compared: a
	// guesser learns nothing more until the window ends.
	if wait := d.throttle.blocked(key); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		writeError(w, http.StatusTooManyRequests, "too many attempts, retry later")
		d.logAction(r, "login", "", 0, "", "throttled")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if !decodeBody(w, r, &body, false) {
		return
	}
	if d.token == "" {
		w.WriteHeader(http.StatusNoContent) // no token: nothing to log in to
		return
	}
	got := sha256.Sum256([]byte(body.Token))
	if constantTimeCompare(got[:], d.want[:]) != 1 {
		d.throttle.fail(key)
		d.logAction(r, "login", "", 0, "", "wrong token")
		writeError(w, http.StatusUnauthorized, "wrong token")
		return
	}
	d.throttle.succeed(key)
	value, err := d.sessions.create()
	if err != nil {
		d.log.Error("admin: creating a dashboard session", "error", err)
		writeError(w, http.StatusInternalServerError, "creating a session failed")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   int(sessionLifetime / time.Second),
		HttpOnly: true,
		Secure:   overHTTPS(r),
		SameSite: http.SameSiteStrictMode,
	})
	d.logAction(r, "login", "", 0, "", "ok")
	w.WriteHeader(http.StatusNoContent)
}

// overHTTPS reports whether the browser reached the dashboard over HTTPS:
// the admin listener speaks plain HTTP, so that is a TLS-terminating proxy
// in front saying so (X-Forwarded-Proto), and the cookie is then marked
// Secure. The header is the client's to forge, but a forged one only
// costs the forger its own session: its browser keeps the cookie off
// plain HTTP.
func overHTTPS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// logout is POST /dashboard/logout: the session ends and the cookie is
// cleared.
func (d *dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if !d.checkAction(w, r) {
		return
	}
	if d.token == "" && d.public {
		writeError(w, http.StatusForbidden, notLoopbackNoToken)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		d.sessions.remove(c.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: overHTTPS(r), SameSite: http.SameSiteStrictMode,
	})
	d.logAction(r, "logout", "", 0, "", "ok")
	w.WriteHeader(http.StatusNoContent)
}

// rooms is GET /dashboard/rooms?q=TEXT&limit=N.
func (d *dashboard) rooms(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	q := qv.Get("q")
	if len(q) > maxQueryBytes {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("q is longer than %d bytes", maxQueryBytes))
		return
	}
	limit := defaultRooms
	if s := qv.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxRooms {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", maxRooms))
			return
		}
		limit = n
	}
	all := d.src.Rooms()
	match := make([]RoomSize, 0, min(len(all), 1024))
	for _, rs := range all {
		if strings.Contains(rs.Name, q) {
			match = append(match, rs)
		}
	}
	slices.SortFunc(match, func(a, b RoomSize) int {
		return cmp.Or(cmp.Compare(b.Members, a.Members), strings.Compare(a.Name, b.Name))
	})
	writeJSON(w, http.StatusOK, RoomsAnswer{Total: len(match), Rooms: match[:min(limit, len(match))]})
}

// members is GET /dashboard/members?room=NAME.
func (d *dashboard) members(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	if room == "" || len(room) > maxQueryBytes {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("room must be 1 to %d bytes", maxQueryBytes))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membersTimeout)
	defer cancel()
	ms, presence, err := d.src.Members(ctx, room)
	a := MembersAnswer{Room: room, Presence: presence, Members: []Member{}}
	if err != nil {
		a.Error = err.Error()
	}
	ids := make([]string, 0, len(ms))
	for id := range ms {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids[:min(len(ids), maxMembers)] {
		m := Member{Conn: id}
		if info := ms[id]; len(info) > 0 && json.Valid(info) {
			m.Info = json.RawMessage(info)
		}
		a.Members = append(a.Members, m)
	}
	writeJSON(w, http.StatusOK, a)
}

// closeRequest is POST /dashboard/close's body.
type closeRequest struct {
	Conn   string  `json:"conn"`
	Code   *int    `json:"code"`
	Reason *string `json:"reason"`
}

// closeConn is POST /dashboard/close: closes a connection of any node.
func (d *dashboard) closeConn(w http.ResponseWriter, r *http.Request) {
	if !d.checkAction(w, r) {
		return
	}
	var req closeRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	code, reason := defaultCloseCode, defaultCloseReason
	if req.Code != nil {
		code = *req.Code
	}
	if req.Reason != nil {
		reason = *req.Reason
	}
	switch {
	case req.Conn == "" || len(req.Conn) > maxConnIDBytes:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("conn must be 1 to %d bytes", maxConnIDBytes))
		return
	case !validCloseCode(code):
		writeError(w, http.StatusBadRequest, "code must be 1000-1003, 1007-1014 or 3000-4999")
		return
	case len(reason) > maxReasonBytes:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("reason is longer than %d bytes", maxReasonBytes))
		return
	case !utf8.ValidString(reason):
		writeError(w, http.StatusBadRequest, "reason is not UTF-8")
		return
	}
	err := d.src.CloseConn(req.Conn, code, reason)
	switch {
	case errors.Is(err, ErrNoConn):
		d.logAction(r, "close", req.Conn, code, reason, "no such connection")
		writeError(w, http.StatusNotFound, "no such connection")
	case err != nil:
		d.logAction(r, "close", req.Conn, code, reason, "error: "+err.Error())
		writeError(w, http.StatusInternalServerError, "closing the connection: "+err.Error())
	default:
		d.logAction(r, "close", req.Conn, code, reason, "ok")
		writeJSON(w, http.StatusOK, struct {
			OK      bool   `json:"ok"`
			Message string `json:"message"`
		}{true, fmt.Sprintf("connection %s closed with %d", req.Conn, code)})
	}
}

// validCloseCode reports whether an operator may send code: the RFC 6455
// codes an endpoint may send (not 1004-1006 or 1015, which are reserved or
// local-only) and the registered and private ranges.
func validCloseCode(code int) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

// reload is POST /dashboard/reload: reloads as SIGHUP does.
func (d *dashboard) reload(w http.ResponseWriter, r *http.Request) {
	if !d.checkAction(w, r) {
		return
	}
	var body struct{}
	if !decodeBody(w, r, &body, true) {
		return
	}
	d.reloadMu.Lock()
	entry, err := d.src.ReloadNow()
	d.reloadMu.Unlock()
	switch {
	case errors.Is(err, ErrNotReloadable):
		d.sampler.reloadable.Store(false)
		d.logAction(r, "reload", "", 0, "", "not reloadable")
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		d.logAction(r, "reload", "", 0, "", "error: "+err.Error())
		writeError(w, http.StatusInternalServerError, "reloading: "+err.Error())
	default:
		result := "ok"
		if !entry.OK {
			result = "failed: " + entry.Error
		}
		d.logAction(r, "reload", "", 0, "", result)
		writeJSON(w, http.StatusOK, normalizeReload(entry))
	}
}

// checkAction guards every POST against cross-site requests: it needs
// "X-Moonwire-Action: 1", which a cross-site form cannot set (and a
// cross-origin fetch cannot without a preflight this server never
// grants), and an Origin, when present, of this very host.
func (d *dashboard) checkAction(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("X-Moonwire-Action") != "1" {
		writeError(w, http.StatusForbidden, "the X-Moonwire-Action: 1 header is required")
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) && !strings.EqualFold(o, "https://"+r.Host) {
		d.logAction(r, "refused", "", 0, "", "cross-origin request from "+truncate(o, maxQueryBytes))
		writeError(w, http.StatusForbidden, "cross-origin requests are refused")
		return false
	}
	return true
}

// decodeBody reads a JSON object of at most maxBodyBytes into v, strictly:
// the content type must be JSON, unknown fields and trailing data are
// errors. allowEmpty accepts an empty body (and then any content type).
// It answers the error itself and returns false on one.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) bool {
	if allowEmpty && r.ContentLength == 0 {
		return true
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == io.EOF && allowEmpty {
		return true
	}
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("data after the JSON object")
	}
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxBodyBytes))
			return false
		}
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

// logAction logs what an operator did (or tried) from the dashboard.
func (d *dashboard) logAction(r *http.Request, action, conn string, code int, reason, result string) {
	d.log.Info("admin action", "action", action, "conn", conn, "code", code, "reason", reason,
		"remote", r.RemoteAddr, "result", result)
}

// errorBody is every endpoint's error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{msg})
}

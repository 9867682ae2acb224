package lua

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"sync"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/router"
)

// RouteConfig describes one scripted route.
type RouteConfig struct {
	// Pattern is the route's path pattern, exposed to scripts as ws.route.
	Pattern string
	// FS is the scripts folder; the route script and every require
	// resolve inside it.
	FS fs.FS
	// Script is the route script's path inside FS.
	Script string
	// Source is how FS is shown in messages and tracebacks (an OS path
	// such as /etc/moonwire/scripts); "" shows paths inside FS as they are.
	Source string
	// VMs is the number of Lua states, one per router lane; 0 means 1.
	VMs int
	// HandlerTimeout stops a callback running longer (its connection is
	// closed 1011); 0 means 1s.
	HandlerTimeout time.Duration
	// Settings is the route's free-form table, ws.settings in scripts.
	Settings map[string]any
	// Modules are the route's own modules, opened after the engine's
	// (Options.Modules) and ws, timer, log and time; a name already taken
	// is an error. A module absent from both lists is absent from the
	// route's sandbox.
	Modules []Module
}

// Route is a scripted route: it implements router.Handler.
type Route struct {
	eng   *Engine
	cfg   RouteConfig
	proto *glua.FunctionProto
	vms   []*vm

	rt  *router.Route
	srv *router.Server

	modMu     sync.Mutex
	modProtos map[string]*glua.FunctionProto
	sums      map[string][32]byte // source hash of every file loaded, by path
	version   string
}

// NewRoute compiles the route's script and builds its VMs, running the
// script's top level in each. Errors are *ScriptError values naming the
// file and line.
func (e *Engine) NewRoute(cfg RouteConfig) (*Route, error) {
	if cfg.VMs <= 0 {
		cfg.VMs = 1
	}
	if cfg.HandlerTimeout <= 0 {
		cfg.HandlerTimeout = time.Second
	}
	if cfg.FS == nil {
		return nil, errors.New("route " + cfg.Pattern + ": no scripts folder")
	}
	if e.loadStop.Load() {
		return nil, fmt.Errorf("route %s: %w", cfg.Pattern, ErrStopping)
	}
	taken := map[string]bool{}
	for _, m := range e.modules {
		taken[m.Name()] = true
	}
	for _, m := range cfg.Modules {
		if taken[m.Name()] || ReservedName(m.Name()) {
			return nil, fmt.Errorf("route %s: module %q: the name is taken", cfg.Pattern, m.Name())
		}
		taken[m.Name()] = true
	}
	r := &Route{eng: e, cfg: cfg, modProtos: make(map[string]*glua.FunctionProto), sums: make(map[string][32]byte)}
	proto, sum, err := loadScript(cfg.FS, cfg.Script, r.display(cfg.Script))
	if err != nil {
		return nil, err
	}
	r.proto = proto
	r.sums[cfg.Script] = sum
	for i := range cfg.VMs {
		v, err := newVM(r, i)
		if err != nil {
			r.closeVMs()
			return nil, err
		}
		r.vms = append(r.vms, v)
	}
	r.version = r.computeVersion()
	return r, nil
}

// Version identifies what the route runs: its script and every module its
// top level required, its settings, VM count and timeout. Two routes with
// the same version behave the same, so a reload that finds the version
// unchanged keeps the running one (and its timers).
func (r *Route) Version() string { return r.version }

// Files returns the files the route loaded, inside the scripts folder.
func (r *Route) Files() []string {
	r.modMu.Lock()
	defer r.modMu.Unlock()
	files := make([]string, 0, len(r.sums))
	for f := range r.sums {
		files = append(files, f)
	}
	sort.Strings(files)
	return files
}

func (r *Route) computeVersion() string {
	// Keyed with the engine's random salt: the version is public (/routes)
	// and the settings it covers may hold secrets (a jwt_secret), which an
	// unsalted hash would let anyone recover by trying a dictionary.
	h := hmac.New(sha256.New, r.eng.versionKey[:])
	for _, f := range r.Files() {
		r.modMu.Lock()
		sum := r.sums[f]
		r.modMu.Unlock()
		fmt.Fprintf(h, "%s\x00%x\n", f, sum)
	}
	settings, _ := json.Marshal(r.cfg.Settings) // map keys sort: deterministic
	fmt.Fprintf(h, "settings %s\nvms %d\ntimeout %s\n", settings, r.cfg.VMs, r.cfg.HandlerTimeout)
	// A module is its instance: a reload that rebuilt one (its config
	// changed) runs the route anew.
	for _, m := range r.cfg.Modules {
		fmt.Fprintf(h, "module %s %p\n", m.Name(), m)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Lanes is the number of router lanes the route runs on, one per VM: the
// router asks (router.Laner), and lane i is VM i.
func (r *Route) Lanes() int { return len(r.vms) }

// Release frees the VMs of a route that never started (moonwire check).
// A started route is released by Stop.
func (r *Route) Release() { r.closeVMs() }

func (r *Route) closeVMs() {
	for _, v := range r.vms {
		v.close()
	}
}

// display shows a path inside the scripts folder the way users know it.
func (r *Route) display(p string) string {
	if r.cfg.Source == "" {
		return p
	}
	return path.Join(r.cfg.Source, p)
}

// moduleProto compiles a required file once per route.
func (r *Route) moduleProto(file string) (*glua.FunctionProto, error) {
	r.modMu.Lock()
	defer r.modMu.Unlock()
	if p, ok := r.modProtos[file]; ok {
		return p, nil
	}
	p, sum, err := loadScript(r.cfg.FS, file, r.display(file))
	if err != nil {
		return nil, err
	}
	r.modProtos[file] = p
	r.sums[file] = sum
	return p, nil
}

// Start implements router.Handler.
func (r *Route) Start(rt *router.Route) error {
	r.rt, r.srv = rt, rt.Server()
	// on_start runs once per route load, on the first VM; the others only
	// learn the node id.
	for _, w := range r.vms[1:] {
		w.onStart = nil
	}
	for i, v := range r.vms {
		rt.Post(i, func() {
			// Before the route's first event on this lane: from here on
			// its callbacks may suspend on a network broker.
			v.enableBrokerWaits(r.srv)
			v.ws.RawSetString("node_id", glua.LString(r.srv.NodeID()))
			if v.onStart != nil {
				v.L.Push(v.onStart)
				if err := v.call("on_start", 0, 0); err != nil {
					v.fail("on_start", err)
				}
			}
		})
	}
	return nil
}

// Stop implements router.Handler: timers stop and VMs close, each on its
// own lane.
func (r *Route) Stop() {
	for i, v := range r.vms {
		if !r.rt.Post(i, v.close) {
			v.close()
		}
	}
}

// suspends reports whether one of the route's modules may suspend a
// callback (SuspendingModule): its callbacks then run resumably.
func (r *Route) suspends() bool {
	for _, ms := range [][]Module{r.eng.modules, r.cfg.Modules} {
		for _, m := range ms {
			if sm, ok := m.(SuspendingModule); ok && sm.Suspends() {
				return true
			}
		}
	}
	return false
}

// SkipHandshake implements router.HandshakeSkipper.
func (r *Route) SkipHandshake() bool { return r.vms[0].onHandshake == nil }

// SkipClose implements router.CloseSkipper.
func (r *Route) SkipClose() bool { return r.vms[0].onClose == nil }

// Handshake implements router.Handler.
func (r *Route) Handshake(lane int, req *router.Request) router.Verdict {
	v := r.vms[lane]
	if v.onHandshake == nil || v.closed {
		return router.Verdict{}
	}
	L := v.L
	if v.resumable {
		return r.handshakeResumable(v, req)
	}
	L.Push(v.onHandshake)
	L.Push(v.requestTable(req))
	if err := v.call("on_handshake", 1, 3); err != nil {
		v.fail("on_handshake", err)
		return router.Verdict{Reject: true, Status: http.StatusInternalServerError, Body: "internal error"}
	}
	r1, r2, r3 := L.Get(-3), L.Get(-2), L.Get(-1)
	L.Pop(3)
	return r.verdict(v, r1, r2, r3)
}

// handshakeResumable runs on_handshake as a resumable callback: when it
// waits (asking a backend), the verdict is deferred to when it ends.
func (r *Route) handshakeResumable(v *vm, req *router.Request) router.Verdict {
	var (
		verdict router.Verdict
		answer  func(router.Verdict)
	)
	p := v.start("on_handshake", nil, v.onHandshake, func(rets []glua.LValue, err error) {
		var vd router.Verdict
		switch {
		case errors.Is(err, errDropped):
			vd = router.Verdict{Reject: true, Status: http.StatusServiceUnavailable, Body: "route reloading; retry"}
		case err != nil:
			v.fail("on_handshake", err)
			vd = router.Verdict{Reject: true, Status: http.StatusInternalServerError, Body: "internal error"}
		default:
			get := func(i int) glua.LValue {
				if i < len(rets) {
					return rets[i]
				}
				return glua.LNil
			}
			vd = r.verdict(v, get(0), get(1), get(2))
		}
		if answer != nil {
			answer(vd)
		} else {
			verdict = vd
		}
	}, v.requestTable(req))
	if p.waiting {
		answer = req.Defer()
	}
	return verdict
}

// verdict reads on_handshake's results.
func (r *Route) verdict(v *vm, r1, r2, r3 glua.LValue) router.Verdict {
	switch r1 := r1.(type) {
	case *glua.LNilType:
		return router.Verdict{}
	case glua.LBool:
		if r1 {
			return router.Verdict{}
		}
		verdict := router.Verdict{Reject: true, Status: http.StatusForbidden}
		if n, ok := r2.(glua.LNumber); ok {
			verdict.Status = int(n)
		}
		if s, ok := r3.(glua.LString); ok {
			verdict.Body = string(s)
		}
		return verdict
	case *glua.LTable:
		verdict := router.Verdict{Attrs: map[string]any{}}
		var bad string
		r1.ForEach(func(k, val glua.LValue) {
			key, ok := k.(glua.LString)
			if !ok {
				bad = "attribute keys must be strings"
				return
			}
			if key == "subprotocol" {
				verdict.Subprotocol = val.String()
				return
			}
			a, ok := attrValue(val)
			if !ok {
				bad = "attribute " + string(key) + " must be a string, number or boolean"
				return
			}
			verdict.Attrs[string(key)] = a
		})
		if bad != "" {
			v.fail("on_handshake", &ScriptError{File: r.display(r.cfg.Script), Msg: "on_handshake returned a bad table: " + bad})
			return router.Verdict{Reject: true, Status: http.StatusInternalServerError, Body: "internal error"}
		}
		return verdict
	}
	v.fail("on_handshake", &ScriptError{File: r.display(r.cfg.Script), Msg: "on_handshake must return nothing, true, false[, status[, body]] or a table (got " + r1.Type().String() + ")"})
	return router.Verdict{Reject: true, Status: http.StatusInternalServerError, Body: "internal error"}
}

// Open implements router.Handler.
func (r *Route) Open(lane int, c *router.Conn) {
	v := r.vms[lane]
	// The handle is made on first use: an idle connection costs none.
	v.connCallback(c, v.onOpen, "on_open")
}

// connCallback runs fn(conn), a callback of one connection (on_open,
// on_reload); an error closes the connection with 1011.
func (v *vm) connCallback(c *router.Conn, fn *glua.LFunction, name string) {
	if fn == nil || v.closed {
		return
	}
	ud := v.connUD(c)
	if v.resumable {
		v.start(name, c, fn, v.finishConnFn, ud)
		return
	}
	v.cur = c
	v.L.Push(fn)
	v.L.Push(ud)
	if err := v.call(name, 1, 0); err != nil {
		v.fail(name, err)
		_ = c.Close(router.CloseInternalError, "internal error")
	}
	v.cur = nil
}

// Message implements router.Handler. The payload becomes a Lua string: the
// one allocation per message the dispatch makes.
func (r *Route) Message(lane int, c *router.Conn, kind router.Kind, data []byte) {
	v := r.vms[lane]
	if v.onMessage == nil || v.closed {
		return
	}
	ud := v.connUD(c)
	if v.resumable {
		kindV := v.kindText
		if kind == router.Binary {
			kindV = v.kindBinary
		}
		v.start("on_message", c, v.onMessage, v.finishConnFn, ud, glua.LString(data), kindV)
		return
	}
	L := v.L
	v.cur = c
	L.Push(v.onMessage)
	L.Push(ud)
	L.Push(glua.LString(data))
	if kind == router.Binary {
		L.Push(v.kindBinary)
	} else {
		L.Push(v.kindText)
	}
	if err := v.call("on_message", 3, 0); err != nil {
		v.fail("on_message", err)
		_ = c.Close(router.CloseInternalError, "internal error")
	}
	v.cur = nil
}

// Resume implements router.Resumer: on_reload(conn) runs for every
// connection this version took over from the one a reload replaced, so a
// script can re-arm what the old version's timers did for it.
func (r *Route) Resume(lane int, c *router.Conn) {
	v := r.vms[lane]
	v.connCallback(c, v.onReload, "on_reload")
}

// Close implements router.Handler.
func (r *Route) Close(lane int, c *router.Conn, code int, reason string) {
	v := r.vms[lane]
	if v.onClose == nil || v.closed {
		return
	}
	ud := v.connUD(c)
	if v.resumable {
		v.start("on_close", c, v.onClose, func(_ []glua.LValue, err error) {
			if err != nil && !errors.Is(err, errDropped) {
				v.fail("on_close", err)
			}
		}, ud, glua.LNumber(code), glua.LString(reason))
		return
	}
	v.cur = c
	v.L.Push(v.onClose)
	v.L.Push(ud)
	v.L.Push(glua.LNumber(code))
	v.L.Push(glua.LString(reason))
	if err := v.call("on_close", 3, 0); err != nil {
		v.fail("on_close", err)
	}
	v.cur = nil
}

// requestTable builds on_handshake's req argument.
func (v *vm) requestTable(req *router.Request) *glua.LTable {
	L := v.L
	t := L.CreateTable(0, 8)
	t.RawSetString("path", glua.LString(req.Path))
	params := L.CreateTable(0, len(req.Params))
	for k, val := range req.Params {
		params.RawSetString(k, glua.LString(val))
	}
	t.RawSetString("params", params)
	var query *glua.LTable
	if req.RawQuery == "" {
		query = L.CreateTable(0, 0) // the usual case: no map to make
	} else {
		q := req.Query()
		query = L.CreateTable(0, len(q))
		for k, vals := range q {
			if len(vals) > 0 {
				query.RawSetString(k, glua.LString(vals[0]))
			}
		}
	}
	t.RawSetString("query", query)
	headers := L.CreateTable(0, len(req.Header)/2)
	for i := 0; i+1 < len(req.Header); i += 2 {
		headers.RawSetString(req.Header[i], glua.LString(req.Header[i+1]))
	}
	t.RawSetString("headers", headers)
	t.RawSetString("remote_addr", glua.LString(req.RemoteAddr))
	t.RawSetString("origin", glua.LString(req.Origin))
	subs := L.CreateTable(len(req.Subprotocols), 0)
	for _, s := range req.Subprotocols {
		subs.Append(glua.LString(s))
	}
	t.RawSetString("subprotocols", subs)
	return t
}

var _ router.Handler = (*Route)(nil)
var _ router.HandshakeSkipper = (*Route)(nil)
var _ router.Resumer = (*Route)(nil)

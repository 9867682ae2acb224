package scripttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

const (
	testType   = "moonwire.test"
	clientType = "moonwire.test.client"
	// maxHTTPBody bounds a t:http response body and request body.
	maxHTTPBody = 16 << 20
)

func (f *fileRun) registerTypes() {
	L := f.L
	mt := L.NewTypeMetatable(testType)
	L.SetField(mt, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"connect": tConnect,
		"advance": tAdvance,
		"http":    tHTTP,
		"eq":      tEq,
		"ok":      tOk,
		"match":   tMatch,
		"fails":   tFails,
		"log":     tLog,
		"run":     tRun,
		"skip":    tSkip,
		"name":    func(L *lua.LState) int { L.Push(lua.LString(checkT(L).name)); return 1 },
	}))
	cm := L.NewTypeMetatable(clientType)
	L.SetField(cm, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"send":        cSend,
		"recv":        cRecv,
		"expect":      cExpect,
		"close":       cClose,
		"closed":      cClosed,
		"subprotocol": func(L *lua.LState) int { L.Push(lua.LString(checkClient(L).c.subprotocol)); return 1 },
	}))
}

func (t *tstate) userdata() *lua.LUserData {
	ud := t.f.L.NewUserData()
	ud.Value = t
	t.f.L.SetMetatable(ud, t.f.L.GetTypeMetatable(testType))
	return ud
}

func checkT(L *lua.LState) *tstate {
	ud := L.CheckUserData(1)
	t, ok := ud.Value.(*tstate)
	if !ok {
		L.ArgError(1, "test expected (call t:method, not t.method)")
	}
	return t
}

// luaClient is a client as a test sees it.
type luaClient struct {
	c *client
	t *tstate
}

func checkClient(L *lua.LState) *luaClient {
	ud := L.CheckUserData(1)
	c, ok := ud.Value.(*luaClient)
	if !ok {
		L.ArgError(1, "client expected (call c:method, not c.method)")
	}
	return c
}

// waitArg reads an optional timeout at n: seconds, or a duration string
// ("250ms").
func waitArg(L *lua.LState, n int) time.Duration {
	switch v := L.Get(n).(type) {
	case *lua.LNilType:
		return defaultWait
	case lua.LNumber:
		if v < 0 || v > 3600 {
			L.ArgError(n, "timeout must be between 0 and 3600 seconds")
		}
		return time.Duration(float64(v) * float64(time.Second))
	case lua.LString:
		d, err := time.ParseDuration(string(v))
		if err != nil || d < 0 || d > time.Hour {
			L.ArgError(n, fmt.Sprintf("bad timeout %q: want a duration such as \"250ms\", up to 1h", string(v)))
		}
		return d
	}
	L.ArgError(n, "timeout must be a number of seconds or a duration string")
	return 0
}

// maxAdvance bounds one t:advance: the heartbeat rounds alone cost a
// firing per second advanced, and a day of them is enough for any test.
const maxAdvance = 24 * time.Hour

// t:advance(duration): moves the test server's virtual clock forward
// (seconds, or a duration string such as "30s"), firing every script
// timer and heartbeat due on the way, in deadline order; when it returns
// their effects (messages sent, connections closed) are queued for the
// clients to read.
func tAdvance(L *lua.LState) int {
	t := checkT(L)
	var d time.Duration
	switch v := L.Get(2).(type) {
	case lua.LNumber:
		if math.IsNaN(float64(v)) || v < 0 || float64(v) > maxAdvance.Seconds() {
			L.ArgError(2, fmt.Sprintf("duration must be between 0 and %d seconds", int(maxAdvance.Seconds())))
		}
		d = time.Duration(float64(v) * float64(time.Second))
	case lua.LString:
		var err error
		d, err = time.ParseDuration(string(v))
		if err != nil || d < 0 || d > maxAdvance {
			L.ArgError(2, fmt.Sprintf("bad duration %q: want a duration such as \"30s\", up to %s", string(v), maxAdvance))
		}
	default:
		L.ArgError(2, "duration must be a number of seconds or a duration string")
	}
	if err := t.shared.clock.Advance(t.ctx, d); err != nil {
		t.ctxErr(L, err)
		L.RaiseError("%v", err)
	}
	return 0
}

// ctxErr raises the test's deadline as an error.
func (t *tstate) ctxErr(L *lua.LState, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		L.RaiseError("test timed out after %s", t.f.opts.Timeout)
	}
}

// t:connect(path [, {headers=, query=, subprotocols=}]) -> client | nil, status, body
func tConnect(L *lua.LState) int {
	t := checkT(L)
	p := L.CheckString(2)
	if !strings.HasPrefix(p, "/") {
		L.ArgError(2, "path must start with /")
	}
	header := http.Header{}
	var protocols []string
	if o, ok := L.Get(3).(*lua.LTable); ok {
		if h, ok := o.RawGetString("headers").(*lua.LTable); ok {
			h.ForEach(func(k, v lua.LValue) { header.Add(k.String(), v.String()) })
		}
		if q, ok := o.RawGetString("query").(*lua.LTable); ok {
			vals := url.Values{}
			q.ForEach(func(k, v lua.LValue) { vals.Add(k.String(), v.String()) })
			sep := "?"
			if strings.Contains(p, "?") {
				sep = "&"
			}
			p += sep + vals.Encode()
		}
		if s, ok := o.RawGetString("subprotocols").(*lua.LTable); ok {
			s.ForEach(func(_, v lua.LValue) { protocols = append(protocols, v.String()) })
		}
	} else if L.Get(3) != lua.LNil {
		L.ArgError(3, "options must be a table")
	}
	if len(t.shared.clients) >= maxClients {
		return t.fail(L, fmt.Sprintf("too many connections in one test (limit %d)", maxClients))
	}
	c, err := dial(t.ctx, t.srv.URL(p), header, protocols)
	var ref *refusal
	switch {
	case errors.As(err, &ref):
		L.Push(lua.LNil)
		L.Push(lua.LNumber(ref.status))
		L.Push(lua.LString(ref.body))
		return 3
	case err != nil:
		t.ctxErr(L, t.ctx.Err())
		L.RaiseError("connect %s: %v", p, err)
	}
	if !t.shared.add(c) {
		c.shutdown()
		return t.fail(L, fmt.Sprintf("too many connections in one test (limit %d)", maxClients))
	}
	ud := L.NewUserData()
	ud.Value = &luaClient{c: c, t: t}
	L.SetMetatable(ud, L.GetTypeMetatable(clientType))
	L.Push(ud)
	return 1
}

// kindArg reads "text" (default) or "binary" at n.
func kindArg(L *lua.LState, n int) bool {
	switch k := L.OptString(n, "text"); k {
	case "text":
		return false
	case "binary":
		return true
	default:
		L.ArgError(n, fmt.Sprintf("kind must be \"text\" or \"binary\", not %q", k))
		return false
	}
}

// c:send(data [, "binary"]) -> true | nil, err
func cSend(L *lua.LState) int {
	c := checkClient(L)
	data := L.CheckString(2)
	if err := c.c.send([]byte(data), kindArg(L, 3)); err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("send: " + err.Error()))
		return 2
	}
	L.Push(lua.LTrue)
	return 1
}

func kindName(m message) lua.LString {
	if m.binary {
		return "binary"
	}
	return "text"
}

// c:recv([timeout]) -> data, kind | nil, "timeout" | nil, "closed", code, reason
func cRecv(L *lua.LState) int {
	c := checkClient(L)
	m, ok, err := c.c.recv(c.t.ctx, waitArg(L, 2))
	switch {
	case errors.Is(err, errTimeout):
		L.Push(lua.LNil)
		L.Push(lua.LString("timeout"))
		return 2
	case err != nil:
		c.t.ctxErr(L, err)
	case !ok:
		L.Push(lua.LNil)
		L.Push(lua.LString("closed"))
		L.Push(lua.LNumber(c.c.code))
		L.Push(lua.LString(c.c.reason))
		return 4
	}
	L.Push(lua.LString(m.data))
	L.Push(kindName(m))
	return 2
}

// c:expect(want [, timeout]) -> data, kind [, decoded]: want is a string
// (the message equals it), a function(data, kind) returning true for a
// match, or a table (the message is JSON holding these fields).
func cExpect(L *lua.LState) int {
	c := checkClient(L)
	want := L.CheckAny(2)
	switch want.(type) {
	case lua.LString, *lua.LFunction, *lua.LTable:
	default:
		L.ArgError(2, "want a string, a function(data, kind) or a table")
	}
	d := waitArg(L, 3)
	m, ok, err := c.c.recv(c.t.ctx, d)
	switch {
	case errors.Is(err, errTimeout):
		return c.t.fail(L, fmt.Sprintf("expected %s\ngot nothing within %s", show(want), d))
	case err != nil:
		c.t.ctxErr(L, err)
	case !ok:
		return c.t.fail(L, fmt.Sprintf("expected %s\ngot the close: %d %q", show(want), c.c.code, c.c.reason))
	}
	data := lua.LString(m.data)
	switch w := want.(type) {
	case lua.LString:
		if w != data {
			return c.t.fail(L, fmt.Sprintf("message differs\ngot:  %s\nwant: %s", show(data), show(w)))
		}
	case *lua.LFunction:
		if err := L.CallByParam(lua.P{Fn: w, NRet: 1, Protect: true}, data, kindName(m)); err != nil {
			c.t.ctxErr(L, c.t.ctx.Err())
			L.RaiseError("expect's matcher failed: %s", errorText(err))
		}
		ok := lua.LVAsBool(L.Get(-1))
		L.Pop(1)
		if !ok {
			return c.t.fail(L, fmt.Sprintf("message does not match\ngot: %s", show(data)))
		}
	case *lua.LTable:
		decode := L.GetField(L.GetGlobal("json"), "decode")
		if err := L.CallByParam(lua.P{Fn: decode, NRet: 2, Protect: true}, data); err != nil {
			return c.t.fail(L, fmt.Sprintf("message is not JSON (%s)\ngot: %s", errorText(err), show(data)))
		}
		got, jerr := L.Get(-2), L.Get(-1)
		L.Pop(2)
		if got == lua.LNil {
			return c.t.fail(L, fmt.Sprintf("message is not JSON (%s)\ngot: %s", jerr, show(data)))
		}
		if !contains(got, w, 0) {
			return c.t.fail(L, fmt.Sprintf("message does not hold the fields\ngot:  %s\nwant: %s", show(data), show(w)))
		}
		L.Push(data)
		L.Push(kindName(m))
		L.Push(got)
		return 3
	}
	L.Push(data)
	L.Push(kindName(m))
	return 2
}

// c:close([code [, reason]]) -> code, reason (the server's reply) | nil, err
func cClose(L *lua.LState) int {
	c := checkClient(L)
	code := L.OptInt(2, 1000)
	reason := L.OptString(3, "")
	if code != 1000 && (code < 3000 || code > 4999) {
		L.ArgError(2, "a client may close with 1000 or 3000-4999")
	}
	if len(reason) > 123 {
		L.ArgError(3, "a close reason is at most 123 bytes")
	}
	if err := c.c.closeWith(code, reason); err != nil {
		L.Push(lua.LNil)
		L.Push(lua.LString("close: " + err.Error()))
		return 2
	}
	return closedResult(L, c, defaultWait)
}

// c:closed([timeout]) -> code, reason | nil, "timeout"
func cClosed(L *lua.LState) int {
	c := checkClient(L)
	return closedResult(L, c, waitArg(L, 2))
}

func closedResult(L *lua.LState, c *luaClient, d time.Duration) int {
	code, reason, err := c.c.wait(c.t.ctx, d)
	switch {
	case errors.Is(err, errTimeout):
		L.Push(lua.LNil)
		L.Push(lua.LString("timeout"))
		return 2
	case err != nil:
		c.t.ctxErr(L, err)
	}
	L.Push(lua.LNumber(code))
	L.Push(lua.LString(reason))
	return 2
}

// t:http(method, path [, {headers=, body=}]) -> status, headers, body | nil, err
func tHTTP(L *lua.LState) int {
	t := checkT(L)
	method := strings.ToUpper(L.CheckString(2))
	p := L.CheckString(3)
	if !strings.HasPrefix(p, "/") {
		L.ArgError(3, "path must start with /")
	}
	var body io.Reader
	header := http.Header{}
	if o, ok := L.Get(4).(*lua.LTable); ok {
		if h, ok := o.RawGetString("headers").(*lua.LTable); ok {
			h.ForEach(func(k, v lua.LValue) { header.Add(k.String(), v.String()) })
		}
		if b, ok := o.RawGetString("body").(lua.LString); ok {
			if len(b) > maxHTTPBody {
				L.ArgError(4, fmt.Sprintf("body larger than %d bytes", maxHTTPBody))
			}
			body = strings.NewReader(string(b))
		}
	}
	req, err := http.NewRequestWithContext(t.ctx, method, t.srv.HTTPURL(p), body)
	if err != nil {
		L.ArgError(2, err.Error())
	}
	req.Header = header
	resp, err := httpClient.Do(req)
	if err != nil {
		t.ctxErr(L, t.ctx.Err())
		L.Push(lua.LNil)
		L.Push(lua.LString("http: " + err.Error()))
		return 2
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err == nil && len(b) > maxHTTPBody {
		err = fmt.Errorf("response body larger than %d bytes", maxHTTPBody)
	}
	if err != nil {
		t.ctxErr(L, t.ctx.Err())
		L.Push(lua.LNil)
		L.Push(lua.LString("http: " + err.Error()))
		return 2
	}
	h := L.NewTable()
	for k, v := range resp.Header {
		h.RawSetString(strings.ToLower(k), lua.LString(strings.Join(v, ", ")))
	}
	L.Push(lua.LNumber(resp.StatusCode))
	L.Push(h)
	L.Push(lua.LString(b))
	return 3
}

// httpClient is t:http's client: no redirects followed (a test sees the
// route's own answer), TLS to the runner's own server trusted.
var httpClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{TLSClientConfig: insecureTLS(), DisableKeepAlives: true},
}

// t:eq(got, want [, msg]): deep equality for tables.
func tEq(L *lua.LState) int {
	t := checkT(L)
	got, want := L.CheckAny(2), L.CheckAny(3)
	if !equal(got, want, 0) {
		return t.fail(L, prefixed(L, 4, fmt.Sprintf("got:  %s\nwant: %s", show(got), show(want))))
	}
	return 0
}

// t:ok(v [, msg])
func tOk(L *lua.LState) int {
	t := checkT(L)
	v := L.Get(2)
	if !lua.LVAsBool(v) {
		return t.fail(L, prefixed(L, 3, fmt.Sprintf("not ok: %s", show(v))))
	}
	return 0
}

// t:match(s, pattern [, msg]): s matches the Lua pattern.
func tMatch(L *lua.LState) int {
	t := checkT(L)
	s := L.Get(2)
	pat := L.CheckString(3)
	str, ok := s.(lua.LString)
	if !ok || !find(L, str, pat) {
		return t.fail(L, prefixed(L, 4, fmt.Sprintf("%s does not match %q", show(s), pat)))
	}
	return 0
}

// find is string.find(s, pattern) ~= nil.
func find(L *lua.LState, s lua.LString, pattern string) bool {
	fn := L.GetField(L.GetGlobal("string"), "find")
	if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, s, lua.LString(pattern)); err != nil {
		L.RaiseError("bad pattern %q: %s", pattern, errorText(err))
	}
	found := L.Get(-1) != lua.LNil
	L.Pop(1)
	return found
}

// t:fails(fn [, pattern]) -> message: fn raises an error (matching pattern).
func tFails(L *lua.LState) int {
	t := checkT(L)
	fn := L.CheckFunction(2)
	pat := L.OptString(3, "")
	err := L.CallByParam(lua.P{Fn: fn, NRet: 0, Protect: true})
	if t.ctx.Err() != nil {
		t.ctxErr(L, t.ctx.Err())
	}
	if err == nil {
		return t.fail(L, "expected an error, got none")
	}
	msg := errorText(err)
	if pat != "" && !find(L, lua.LString(msg), pat) {
		return t.fail(L, fmt.Sprintf("error %q does not match %q", msg, pat))
	}
	L.Push(lua.LString(msg))
	return 1
}

// prefixed puts the optional message at n before text.
func prefixed(L *lua.LState, n int, text string) string {
	if m, ok := L.Get(n).(lua.LString); ok && m != "" {
		return string(m) + "\n" + text
	}
	return text
}

// t:log(...)
func tLog(L *lua.LState) int {
	t := checkT(L)
	parts := make([]string, 0, L.GetTop()-1)
	for i := 2; i <= L.GetTop(); i++ {
		parts = append(parts, L.ToStringMeta(L.Get(i)).String())
	}
	line := strings.Join(parts, " ")
	if em := t.f.em; em.verbose || em.json {
		em.output(t.name, where(L), line)
	} else {
		t.text = append(t.text, where(L)+": "+line)
	}
	return 0
}

// t:skip([reason]) ends the test, skipped.
func tSkip(L *lua.LState) int {
	t := checkT(L)
	t.skipped = true
	t.where = where(L)
	t.text = append(t.text, "skipped: "+L.OptString(2, "no reason given"))
	L.Error(stop, 0)
	return 0
}

// t:run(name, fn) -> passed: a subtest on the same server.
func tRun(L *lua.LState) int {
	t := checkT(L)
	name := t.name + "/" + L.CheckString(2)
	fn := L.CheckFunction(3)
	start := time.Now()
	sub := &tstate{f: t.f, name: name, ctx: t.ctx, srv: t.srv, shared: t.shared, where: where(L)}
	t.f.em.testRun(name)
	sub.call(fn)
	L.SetContext(t.ctx) // call removed it
	sub.finish(start)
	if t.ctx.Err() != nil {
		t.ctxErr(L, t.ctx.Err())
	}
	if sub.failed {
		t.failed = true
		if t.where == "" {
			t.where = sub.where
		}
	}
	L.Push(lua.LBool(!sub.failed))
	return 1
}

// maxCompare bounds the values one equal or contains visits: tables that
// share or contain themselves would otherwise cost exponential time in Go
// code, where the test's deadline does not reach.
const maxCompare = 1 << 20

// equal is deep equality: tables by content, other values by ==.
func equal(a, b lua.LValue, depth int) bool {
	budget := maxCompare
	return equalIn(a, b, depth, &budget)
}

func equalIn(a, b lua.LValue, depth int, budget *int) bool {
	*budget--
	ta, ok1 := a.(*lua.LTable)
	tb, ok2 := b.(*lua.LTable)
	if !ok1 || !ok2 || depth > maxValueDepth || *budget < 0 {
		return a == b
	}
	if ta == tb {
		return true
	}
	same, n := true, 0
	ta.ForEach(func(k, v lua.LValue) {
		n++
		same = same && equalIn(v, tb.RawGet(k), depth+1, budget)
	})
	if !same {
		return false
	}
	tb.ForEach(func(lua.LValue, lua.LValue) { n-- })
	return n == 0
}

// contains reports whether got holds every field of want, at any depth.
func contains(got, want lua.LValue, depth int) bool {
	budget := maxCompare
	return containsIn(got, want, depth, &budget)
}

func containsIn(got, want lua.LValue, depth int, budget *int) bool {
	*budget--
	tw, ok1 := want.(*lua.LTable)
	tg, ok2 := got.(*lua.LTable)
	if !ok1 || depth > maxValueDepth || *budget < 0 {
		return equalIn(got, want, depth, budget)
	}
	if !ok2 {
		return false
	}
	ok := true
	tw.ForEach(func(k, v lua.LValue) { ok = ok && containsIn(tg.RawGet(k), v, depth+1, budget) })
	return ok
}

// show formats a Lua value for a failure message: strings quoted, tables
// with sorted keys, long values cut.
func show(v lua.LValue) string {
	var b strings.Builder
	showTo(&b, v, 0)
	s := b.String()
	if len(s) > maxShownLength {
		s = s[:maxShownLength] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

func showTo(b *strings.Builder, v lua.LValue, depth int) {
	switch v := v.(type) {
	case lua.LString:
		fmt.Fprintf(b, "%q", string(v))
	case *lua.LTable:
		if depth > 8 || b.Len() > maxShownLength {
			b.WriteString("{...}")
			return
		}
		type kv struct {
			k string
			v lua.LValue
		}
		var items []kv
		n := v.Len()
		v.ForEach(func(k, x lua.LValue) {
			if num, ok := k.(lua.LNumber); ok && float64(num) >= 1 && float64(num) <= float64(n) && float64(num) == float64(int(num)) {
				return
			}
			var ks string
			if s, ok := k.(lua.LString); ok && isIdent(string(s)) {
				ks = string(s)
			} else {
				var kb strings.Builder
				showTo(&kb, k, depth+1)
				ks = "[" + kb.String() + "]"
			}
			items = append(items, kv{ks, x})
		})
		sort.Slice(items, func(i, j int) bool { return items[i].k < items[j].k })
		b.WriteString("{")
		sep := ""
		for i := 1; i <= n; i++ {
			if b.Len() > maxShownLength {
				break // show cuts it anyway
			}
			b.WriteString(sep)
			showTo(b, v.RawGetInt(i), depth+1)
			sep = ", "
		}
		for _, it := range items {
			if b.Len() > maxShownLength {
				break
			}
			b.WriteString(sep + it.k + " = ")
			showTo(b, it.v, depth+1)
			sep = ", "
		}
		b.WriteString("}")
	case *lua.LNilType:
		b.WriteString("nil")
	default:
		b.WriteString(v.String())
	}
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

package lua

import (
	"errors"
	"net/http"
	"strconv"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luavalue"
	"github.com/moonwire/moonwire/router"
)

// on_http(req) answers the plain (non-upgrade) HTTP requests on the
// route's path: a webhook that broadcasts to a room, a status page. The
// router reads and bounds the request and runs HTTP on one of the route's
// lanes, so the callback has the route's sandbox, settings, modules, rooms
// and store, and the handler timeout, exactly as the others.
//
// The script returns status, headers, body: each may be nil (200, no
// headers, no body). A string body goes out as it is (text/plain;
// charset=utf-8 unless the headers say otherwise); a table is encoded as
// JSON (application/json). A script error is a 500 with a generic body (the
// traceback goes to the log only); a callback stopped by the handler
// timeout, the memory limit or a shutdown is a 503.

// HTTPObserver is an Observer that also counts on_http's answers, by
// route and status. The admin listener implements it.
type HTTPObserver interface {
	HTTPResponse(route string, status int)
}

// Bodies of the answers moonwire gives for a failed on_http: generic, so
// that nothing of the script (a path, a traceback) reaches the client.
const (
	httpErrorBody       = "internal error\n"
	httpUnavailableBody = "service unavailable\n"
)

// ServesHTTP implements router.HTTPHandler: the script has on_http.
func (r *Route) ServesHTTP() bool { return r.vms[0].onHTTP != nil }

// HTTP implements router.HTTPHandler: on_http(req) on lane's VM.
//
// Suspension hook: the answer goes out through complete, never through
// HTTP's return. On a route whose callbacks are resumable (it lists a
// module that waits, such as http: see resume.go), on_http runs through
// v.start, and complete is its finish: it runs when the callback ends,
// at once or on a later turn of this lane after it waited in
// http.request, while the lane serves other work; a callback dropped
// because its VM closed meanwhile (errDropped) answers 503. Until
// complete runs, the router's net/http goroutine waits (bounded: see
// router.HTTPHandler). Other routes call on_http plainly (v.call).
func (r *Route) HTTP(lane int, req *router.HTTPRequest, done func(router.HTTPResponse)) {
	v := r.vms[lane]
	if v.onHTTP == nil || v.closed {
		// The VM closed under a queued request: its route was reloaded
		// away or is stopping.
		done(router.HTTPResponse{Status: http.StatusServiceUnavailable, Header: textHeader(), Body: []byte(httpUnavailableBody)})
		return
	}
	complete := func(err error, status, headers, body glua.LValue) {
		resp := v.httpResponse(req, err, status, headers, body)
		if ho, ok := v.eng.obs.(HTTPObserver); ok {
			ho.HTTPResponse(r.cfg.Pattern, resp.Status)
		}
		done(resp)
	}
	if v.resumable {
		v.start("on_http", nil, v.onHTTP, func(rets []glua.LValue, err error) {
			get := func(i int) glua.LValue {
				if i < len(rets) {
					return rets[i]
				}
				return glua.LNil
			}
			complete(err, get(0), get(1), get(2))
		}, v.httpRequestTable(req))
		return
	}
	L := v.L
	L.Push(v.onHTTP)
	L.Push(v.httpRequestTable(req))
	if err := v.call("on_http", 1, 3); err != nil {
		complete(err, glua.LNil, glua.LNil, glua.LNil)
		return
	}
	status, headers, body := L.Get(-3), L.Get(-2), L.Get(-1)
	L.Pop(3)
	complete(nil, status, headers, body)
}

// httpRequestTable builds on_http's req: on_handshake's fields plus
// method, body and query_all.
func (v *vm) httpRequestTable(req *router.HTTPRequest) *glua.LTable {
	L := v.L
	t := v.requestTable(&req.Request)
	t.RawSetString("method", glua.LString(req.Method))
	t.RawSetString("body", glua.LString(req.Body))
	t.RawSetString("host", glua.LString(req.Host))
	// req.query keeps the first value of a repeated key, as on_handshake's
	// does; req:query_all(name) has them all, in order.
	t.RawSetString("query_all", L.NewFunction(func(L *glua.LState) int {
		L.CheckTable(1)
		vals := req.Query()[L.CheckString(2)]
		list := L.CreateTable(len(vals), 0)
		for _, s := range vals {
			list.Append(glua.LString(s))
		}
		L.Push(list)
		return 1
	}))
	return t
}

// httpResponse turns on_http's outcome into the router's response: the
// callback's error, or its results checked and converted. A mistake in
// the results is logged as a script error, at the line on_http starts on,
// and answered 500.
func (v *vm) httpResponse(req *router.HTTPRequest, err error, status, headers, body glua.LValue) router.HTTPResponse {
	if err != nil {
		if errors.Is(err, errDropped) {
			v.logger().Warn("callback dropped while waiting", "callback", "on_http", "reason", err.Error())
		} else {
			v.fail("on_http", err)
		}
		if errors.Is(err, ErrTimeout) || errors.Is(err, ErrMemory) || errors.Is(err, ErrStopping) {
			return router.HTTPResponse{Status: http.StatusServiceUnavailable, Header: textHeader(), Body: []byte(httpUnavailableBody)}
		}
		return httpInternalError()
	}
	resp, msg := convertHTTPResponse(status, headers, body, req.MaxResponse)
	if msg == "" {
		if verr := router.ValidateHTTPResponse(&resp, req.MaxResponse); verr != nil {
			msg = verr.Error()
		}
	}
	if msg != "" {
		p := v.onHTTP.Proto
		v.fail("on_http", &ScriptError{File: p.SourceName, Line: p.LineDefined, Msg: "on_http returned a bad response: " + msg})
		return httpInternalError()
	}
	return resp
}

// convertHTTPResponse converts on_http's three results, reporting what is
// wrong with them as a message ("" when nothing is).
func convertHTTPResponse(status, headers, body glua.LValue, maxBody int64) (router.HTTPResponse, string) {
	resp := router.HTTPResponse{Status: http.StatusOK, Header: http.Header{}}
	switch s := status.(type) {
	case *glua.LNilType:
	case glua.LNumber:
		// The range first, in floating point: converting a huge number
		// to int is not defined to land outside it.
		n := float64(s)
		if !(n >= 200 && n <= 599) || n != float64(int(n)) {
			return resp, "bad status " + s.String() + " (want a whole number, 200-599)"
		}
		resp.Status = int(n)
	default:
		return resp, "status must be a number or nil (got " + status.Type().String() + ")"
	}
	switch h := headers.(type) {
	case *glua.LNilType:
	case *glua.LTable:
		var bad string
		lines := 0
		h.ForEach(func(k, val glua.LValue) {
			if bad != "" {
				return
			}
			name, ok := k.(glua.LString)
			if !ok {
				bad = "header names must be strings"
				return
			}
			add := func(x glua.LValue) {
				switch x := x.(type) {
				case glua.LString, glua.LNumber:
					lines++
					if lines > 100 {
						bad = "too many headers"
						return
					}
					resp.Header[http.CanonicalHeaderKey(string(name))] = append(resp.Header[http.CanonicalHeaderKey(string(name))], x.String())
				default:
					bad = "header " + strconv.Quote(string(name)) + " must be a string, a number or a list of them"
				}
			}
			if list, ok := val.(*glua.LTable); ok {
				for i := 1; i <= list.Len() && bad == ""; i++ {
					add(list.RawGetInt(i))
				}
				return
			}
			add(val)
		})
		if bad != "" {
			return resp, bad
		}
	default:
		return resp, "headers must be a table or nil (got " + headers.Type().String() + ")"
	}
	contentType := ""
	switch b := body.(type) {
	case *glua.LNilType:
	case glua.LString:
		resp.Body = []byte(b)
		contentType = "text/plain; charset=utf-8"
	case *glua.LTable:
		// Bounded as it grows: a table that encodes past the limit costs
		// about the limit, not what it would have grown to.
		limit := maxBody
		if limit <= 0 || limit > maxJSONResponse {
			limit = maxJSONResponse
		}
		out, err := luavalue.AppendJSONWith(nil, b, luavalue.Options{MaxSize: int(limit)})
		if err != nil {
			if errors.Is(err, luavalue.ErrTooLarge) {
				return resp, "body encodes to more than the limit of " + strconv.FormatInt(maxBody, 10) + " bytes"
			}
			return resp, "body cannot be encoded as JSON: " + err.Error()
		}
		resp.Body = out
		contentType = "application/json"
	default:
		return resp, "body must be a string, a table or nil (got " + body.Type().String() + ")"
	}
	// No type for no content: an empty body, a 204 or 304 (which have
	// none).
	noBody := len(resp.Body) == 0 || resp.Status == http.StatusNoContent || resp.Status == http.StatusNotModified
	if _, set := resp.Header["Content-Type"]; !set && !noBody {
		resp.Header["Content-Type"] = []string{contentType}
	}
	return resp, ""
}

// maxJSONResponse bounds on_http's JSON body when the router gives no
// limit or a larger one (it gives the route's max_message_size): the
// json module's own output bound.
const maxJSONResponse = 16 << 20

func httpInternalError() router.HTTPResponse {
	return router.HTTPResponse{Status: http.StatusInternalServerError, Header: textHeader(), Body: []byte(httpErrorBody)}
}

func textHeader() http.Header {
	return http.Header{"Content-Type": {"text/plain; charset=utf-8"}, "X-Content-Type-Options": {"nosniff"}}
}

var _ router.HTTPHandler = (*Route)(nil)

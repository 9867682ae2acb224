package http

import (
	"context"
	"math"
	nethttp "net/http"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/outbound"
	"github.com/moonwire/moonwire/plugins/internal/suspend"
)

// Module is the http module over an outbound client. It is a
// lua.SuspendingModule (by its Suspends method): a route that has it runs
// its callbacks resumably.
type Module struct {
	c *outbound.Client
}

// New returns the module over c; the module owns c from then on (Close).
func New(c *outbound.Client) *Module { return &Module{c: c} }

// Name is the name scripts require: "http".
func (m *Module) Name() string { return "http" }

// Suspends reports that the module's functions may suspend a callback.
func (m *Module) Suspends() bool { return true }

// Client returns the outbound client.
func (m *Module) Client() *outbound.Client { return m.c }

// Close closes the client's idle connections.
func (m *Module) Close() error { return m.c.Close() }

// Open pushes the module table.
func (m *Module) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 1)
	mod.RawSetString("request", L.NewFunction(m.request))
	L.Push(mod)
	return 1
}

// maxHeaders bounds the request headers a script passes.
const maxHeaders = 100

// request is http.request(opts | url) -> status, headers, body | nil, err.
// Arguments of the wrong type raise (a bug in the script); everything the
// network or the limits decide is nil plus "http: ...".
func (m *Module) request(L *lua.LState) int {
	req := outbound.Request{}
	switch a := L.Get(1).(type) {
	case lua.LString:
		req.URL = string(a)
	case *lua.LTable:
		req.URL = optString(L, a, "url")
		req.Method = strings.ToUpper(optString(L, a, "method"))
		if b := a.RawGetString("body"); b != lua.LNil {
			s, ok := b.(lua.LString)
			if !ok {
				L.ArgError(1, "body must be a string")
			}
			req.Body = []byte(s)
		}
		if t := a.RawGetString("timeout"); t != lua.LNil {
			n, ok := t.(lua.LNumber)
			if !ok || math.IsNaN(float64(n)) || n <= 0 || n > 3600 {
				L.ArgError(1, "timeout must be a number of seconds, more than 0")
			}
			req.Timeout = time.Duration(float64(n) * float64(time.Second))
		}
		if h := a.RawGetString("headers"); h != lua.LNil {
			ht, ok := h.(*lua.LTable)
			if !ok {
				L.ArgError(1, "headers must be a table")
			}
			req.Header = nethttp.Header{}
			count := 0
			ht.ForEach(func(k, v lua.LValue) {
				ks, ok1 := k.(lua.LString)
				vs, ok2 := v.(lua.LString)
				if n, isNum := v.(lua.LNumber); isNum {
					vs, ok2 = lua.LString(n.String()), true
				}
				if !ok1 || !ok2 {
					L.ArgError(1, "headers must map names to strings")
				}
				if count++; count > maxHeaders {
					L.ArgError(1, "too many headers")
				}
				req.Header.Set(string(ks), string(vs))
			})
		}
	default:
		L.ArgError(1, "table or URL expected")
	}
	if req.URL == "" {
		L.ArgError(1, "url is required")
	}
	if req.Method != "" && !validMethod(req.Method) {
		L.ArgError(1, "bad method "+req.Method)
	}
	for k, vs := range req.Header {
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n\x00") {
				L.ArgError(1, "header "+k+" holds a line break")
			}
		}
	}
	c := m.c
	return suspend.Do(L, "http", func(ctx context.Context) suspend.Resume {
		resp, err := c.Do(ctx, req)
		if err != nil {
			msg := "http: " + err.Error()
			return func(L *lua.LState) int {
				L.Push(lua.LNil)
				L.Push(lua.LString(msg))
				return 2
			}
		}
		return func(L *lua.LState) int {
			L.Push(lua.LNumber(resp.Status))
			h := L.CreateTable(0, len(resp.Header))
			for k, vs := range resp.Header {
				h.RawSetString(strings.ToLower(k), lua.LString(strings.Join(vs, ", ")))
			}
			L.Push(h)
			L.Push(lua.LString(resp.Body))
			return 3
		}
	})
}

func optString(L *lua.LState, t *lua.LTable, key string) string {
	switch v := t.RawGetString(key).(type) {
	case lua.LString:
		return string(v)
	case *lua.LNilType:
		return ""
	default:
		L.ArgError(1, key+" must be a string")
		return ""
	}
}

// validMethod accepts an HTTP token (RFC 9110 §5.6.2) of letters.
func validMethod(m string) bool {
	if len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

// ErrNotAllowed is outbound.ErrNotAllowed, for callers of the package.
var ErrNotAllowed = outbound.ErrNotAllowed

// Client is the outbound client (plugins/internal/outbound), named here
// for the packages outside plugins/ that wire it.
type Client = outbound.Client

// Options configure a Client.
type Options = outbound.Options

// NewClient makes an outbound client (outbound.New).
func NewClient(opts Options) (*Client, error) { return outbound.New(opts) }

package json

import (
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/budget"
	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// Defaults for the zero Limits. 128 levels is far beyond any sane message and
// far below anything that strains a goroutine stack; 8 MiB is above the
// router's default message limit, so decode is never the narrower gate; 16
// MiB of output is sixteen of the largest default messages, and little
// enough to encode well within a handler timeout.
const (
	DefaultMaxDepth  = 128
	DefaultMaxInput  = 8 << 20
	DefaultMaxOutput = 16 << 20
)

// maxDepthCeiling caps MaxDepth because decode and encode recurse once per
// level; it matches encoding/json's own nesting limit.
const maxDepthCeiling = 10000

// Limits bound the work one call can cause, so that a hostile message cannot
// make a script burn memory or stack. Zero fields take the defaults.
type Limits struct {
	// MaxDepth is the deepest nesting of arrays and objects that encode and
	// decode accept; values above 10000 are lowered to 10000.
	MaxDepth int
	// MaxInput is the longest string, in bytes, that decode will parse.
	MaxInput int
	// MaxOutput is the longest string encode will make; past it encode
	// returns nil and "json: encoding too large". It is checked as the
	// output grows, so a failing encode costs about MaxOutput, however many
	// times the value reaches the same table.
	MaxOutput int
}

// Module is the json Lua module. It holds only its limits, so one Module can
// be opened into any number of LStates concurrently.
type Module struct {
	limits Limits
}

// New returns the json module with the given limits.
func New(limits Limits) *Module {
	if limits.MaxDepth <= 0 {
		limits.MaxDepth = DefaultMaxDepth
	}
	limits.MaxDepth = min(limits.MaxDepth, maxDepthCeiling)
	if limits.MaxInput <= 0 {
		limits.MaxInput = DefaultMaxInput
	}
	if limits.MaxOutput <= 0 {
		limits.MaxOutput = DefaultMaxOutput
	}
	return &Module{limits: limits}
}

// Name is the name scripts require: "json".
func (m *Module) Name() string { return "json" }

// Open pushes a fresh module table. It is an lua.LGFunction meant for
// L.PreloadModule(m.Name(), m.Open), so the table is built only when a script
// first requires it.
func (m *Module) Open(L *lua.LState) int {
	mod := L.CreateTable(0, 4)
	mod.RawSetString("encode", L.NewFunction(m.encode))
	mod.RawSetString("decode", L.NewFunction(m.decode))
	mod.RawSetString("array", L.NewFunction(m.array))
	mod.RawSetString("null", luavalue.Null(L))
	L.Push(mod)
	return 1
}

// bufs recycles encode buffers: the result is copied into a Lua string
// anyway, so the buffer never escapes a call.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBuf keeps one huge message from pinning its buffer forever.
const maxPooledBuf = 64 << 10

// encode(v) -> string | nil, err
func (m *Module) encode(L *lua.LState) int {
	v := L.CheckAny(1)
	bp := bufs.Get().(*[]byte)
	// The context, like decode's: a table shared by many paths can take
	// long to encode even within MaxOutput, and the VM cannot stop a Go
	// builtin, so a handler timeout must be noticed here.
	b, err := luavalue.AppendJSONWith((*bp)[:0], v, luavalue.Options{
		MaxDepth: m.limits.MaxDepth,
		MaxSize:  m.limits.MaxOutput,
		Context:  L.Context(),
	})
	if err == nil {
		budget.Charge(L, "json.encode", int64(len(b)))
		L.Push(lua.LString(b))
	}
	if cap(b) <= maxPooledBuf {
		*bp = b[:0]
		bufs.Put(bp)
	}
	if err != nil {
		if errors.Is(err, luavalue.ErrTooDeep) {
			return fail(L, m.tooDeep())
		}
		if errors.Is(err, luavalue.ErrTooLarge) {
			return fail(L, "json: encoding too large") // where it passed the limit says nothing
		}
		return fail(L, "json: "+err.Error())
	}
	return 1
}

// decode(s) -> value | nil, err
func (m *Module) decode(L *lua.LState) int {
	s := L.CheckString(1)
	v, err := m.decodeString(L, s)
	if err != nil {
		return fail(L, err.Error())
	}
	L.Push(v)
	return 1
}

// array([t]) -> t
func (m *Module) array(L *lua.LState) int {
	switch v := L.Get(1).(type) {
	case *lua.LNilType:
		L.Push(luavalue.NewArray(L, 0))
	case *lua.LTable:
		// Replacing a script's own metatable would silently strip its
		// methods; refuse instead.
		if v.Metatable != lua.LNil && !luavalue.IsArray(v) {
			L.ArgError(1, "table already has a metatable")
		}
		if !luavalue.IsArray(v) {
			luavalue.MarkArray(L, v)
		}
		L.Push(v)
	default:
		L.TypeError(1, lua.LTTable)
	}
	return 1
}

func fail(L *lua.LState, msg string) int {
	L.Push(lua.LNil)
	L.Push(lua.LString(msg))
	return 2
}

func (m *Module) tooDeep() string {
	return fmt.Sprintf("json: nesting deeper than %d", m.limits.MaxDepth)
}

// decodeString parses s with encoding/json and converts the result. Parsing
// into any first and converting after is about twice as fast as building Lua
// values from Decoder.Token, whose per-token boxing dominates small
// messages; the price, an intermediate tree, is bounded by MaxInput.
func (m *Module) decodeString(L *lua.LState, s string) (lua.LValue, error) {
	if len(s) > m.limits.MaxInput {
		return nil, fmt.Errorf("json: input too large (%d bytes, limit %d)", len(s), m.limits.MaxInput)
	}
	dec := stdjson.NewDecoder(strings.NewReader(s))
	dec.UseNumber() // so that out-of-range numbers are ours to report
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, m.syntax(err)
	}
	end := int(dec.InputOffset())
	if _, err := dec.Token(); err != io.EOF {
		// Count like the parser's offsets: the 1-based position of the
		// first byte that should not be there.
		rest := strings.TrimLeft(s[end:], " \t\r\n")
		return nil, fmt.Errorf("json: trailing data after value near byte %d", len(s)-len(rest)+1)
	}
	budget.Charge(L, "json.decode", int64(len(s)))
	c := converter{
		L:        L,
		maxDepth: m.limits.MaxDepth,
		null:     luavalue.Null(L),
		arrayMT:  luavalue.ArrayMetatable(L),
	}
	return c.convert(v, 0)
}

// checkEvery is how many values the converter builds between looks at the
// Lua state's context: a large input takes long enough to build that a
// handler timeout must be able to end it midway.
const checkEvery = 1 << 14

func (m *Module) syntax(err error) error {
	var se *stdjson.SyntaxError
	switch {
	case errors.As(err, &se):
		if strings.Contains(se.Error(), "exceeded max depth") {
			return errors.New(m.tooDeep()) // encoding/json's own 10000 levels
		}
		// encoding/json's offsets are off by one in some paths, hence
		// "near" rather than "at".
		return fmt.Errorf("json: %s near byte %d", se.Error(), se.Offset)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return errors.New("json: unexpected end of input")
	}
	return fmt.Errorf("json: %w", err)
}

// converter turns encoding/json's tree into Lua values. It differs from
// luavalue.ToLua in what decode promises: a top-level null is json.null, an
// out-of-range number is an error, and depth is enforced.
type converter struct {
	L        *lua.LState
	maxDepth int
	null     lua.LValue
	arrayMT  *lua.LTable
	built    int
}

func (c *converter) convert(v any, depth int) (lua.LValue, error) {
	if c.built++; c.built%checkEvery == 0 {
		if ctx := c.L.Context(); ctx != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("json: %w", ctx.Err())
		}
	}
	switch x := v.(type) {
	case nil:
		return c.null, nil
	case bool:
		return lua.LBool(x), nil
	case string:
		return lua.LString(x), nil
	case stdjson.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			// The parser has checked the syntax; only range is left.
			return nil, fmt.Errorf("json: number out of range: %.40s", x)
		}
		return lua.LNumber(f), nil
	case []any:
		if depth >= c.maxDepth {
			return nil, fmt.Errorf("json: nesting deeper than %d", c.maxDepth)
		}
		t := c.L.CreateTable(len(x), 0)
		t.Metatable = c.arrayMT
		for _, e := range x {
			lv, err := c.convert(e, depth+1)
			if err != nil {
				return nil, err
			}
			t.Append(lv) // null arrives as c.null, so positions are kept
		}
		return t, nil
	case map[string]any:
		if depth >= c.maxDepth {
			return nil, fmt.Errorf("json: nesting deeper than %d", c.maxDepth)
		}
		t := c.L.CreateTable(0, len(x))
		for k, e := range x {
			if e == nil {
				// A null member is an absent key, the way scripts test
				// for it (if msg.name then).
				continue
			}
			lv, err := c.convert(e, depth+1)
			if err != nil {
				return nil, err
			}
			t.RawSetString(k, lv)
		}
		return t, nil
	}
	return nil, fmt.Errorf("json: unexpected %T", v) // unreachable with encoding/json
}

var _ interface {
	Name() string
	Open(*lua.LState) int
} = (*Module)(nil)

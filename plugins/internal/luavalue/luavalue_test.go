package luavalue_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
	"github.com/moonwire/moonwire/plugins/internal/luavalue"
)

// newState returns a sandbox state with the package's helpers as globals.
func newState(t testing.TB) *lua.LState {
	t.Helper()
	L := luatest.NewState(t)
	// Scripts under test reach the helpers as globals.
	L.SetGlobal("null", luavalue.Null(L))
	L.SetGlobal("array", L.NewFunction(func(L *lua.LState) int {
		t := L.OptTable(1, L.NewTable())
		luavalue.MarkArray(L, t)
		L.Push(t)
		return 1
	}))
	return L
}

func eval(t testing.TB, L *lua.LState, expr string) lua.LValue {
	t.Helper()
	if err := L.DoString("return " + expr); err != nil {
		t.Fatalf("eval %q: %v", expr, err)
	}
	v := L.Get(-1)
	L.Pop(1)
	return v
}

type stringer struct{}

func (stringer) String() string { return "stringer!" }

type level int

func TestToLua(t *testing.T) {
	t.Parallel()
	ts := time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)
	n := 7
	tests := []struct {
		name  string
		in    any
		check string // Lua chunk; the converted value is the global v
	}{
		{"nil", nil, `assert(v == nil)`},
		{"bool", true, `assert(v == true)`},
		{"int", 3, `assert(v == 3)`},
		{"int64 negative", int64(-42), `assert(v == -42)`},
		{"uint64", uint64(1 << 40), `assert(v == 2^40)`},
		{"float32", float32(0.5), `assert(v == 0.5)`},
		{"uint8", uint8(255), `assert(v == 255)`},
		{"string", "héllo", `assert(v == "héllo")`},
		{"bytes", []byte{0, 1, 255}, `assert(v == "\0\1\255")`},
		{"json number", json.Number("12.5"), `assert(v == 12.5)`},
		{"json number huge", json.Number("1e400"), `assert(v == 1/0)`},
		{"json number invalid", json.Number("abc"), `assert(v == "abc")`},
		{"duration", 1500 * time.Millisecond, `assert(v == 1.5)`},
		{"time", ts, `assert(v == "2024-05-06T07:08:09.0000005Z", v)`},
		{"empty slice is a marked array", []any{}, `assert(type(v) == "table" and next(v) == nil and getmetatable(v).__jsontype == "array")`},
		{"slice keeps null positions", []any{1, nil, "x"}, `assert(#v == 3 and v[1] == 1 and v[2] == null and v[3] == "x")`},
		{"map drops nil values", map[string]any{"a": 1.0, "b": nil, "c": map[string]any{"d": true}},
			`assert(v.a == 1 and v.b == nil and v.c.d == true and getmetatable(v) == nil)`},
		{"string slice", []string{"a", "b"}, `assert(#v == 2 and v[2] == "b" and getmetatable(v).__jsontype == "array")`},
		{"toml array of tables", []map[string]any{{"x": 1}, {"x": 2}}, `assert(#v == 2 and v[2].x == 2)`},
		{"string map", map[string]string{"k": "v"}, `assert(v.k == "v")`},
		{"stringer", stringer{}, `assert(v == "stringer!")`},
		{"named int", level(4), `assert(v == 4)`},
		{"pointer", &n, `assert(v == 7)`},
		{"nil pointer", (*int)(nil), `assert(v == nil)`},
		{"int slice by reflection", []int{1, 2}, `assert(#v == 2 and v[2] == 2)`},
		{"int map by reflection", map[string]int{"a": 1}, `assert(v.a == 1)`},
		{"struct falls back to fmt", struct{ A int }{1}, `assert(v == "{1}")`},
		{"lua value passes through", lua.LString("raw"), `assert(v == "raw")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			L := newState(t)
			L.SetGlobal("v", luavalue.ToLua(L, tt.in))
			if err := L.DoString(tt.check); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFromLua(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		expr    string
		want    any
		wantErr error                          // errors.Is target
		errText string                         // substring of the message
		mk      func(L *lua.LState) lua.LValue // instead of expr, for values Lua cannot spell
	}{
		{name: "nil", expr: `nil`, want: nil},
		{name: "null", expr: `null`, want: nil},
		{name: "bool", expr: `false`, want: false},
		{name: "number", expr: `1.5`, want: 1.5},
		{name: "nan is data here", expr: `0/0`, want: math.NaN()},
		{name: "string", expr: `"a\0b"`, want: "a\x00b"},
		{name: "empty table is an object", expr: `{}`, want: map[string]any{}},
		{name: "marked empty table is an array", expr: `array({})`, want: []any{}},
		{name: "dkjson marker", expr: `setmetatable({}, {__jsontype = "array"})`, want: []any{}},
		{name: "sequence", expr: `{1, "two", true}`, want: []any{1.0, "two", true}},
		{name: "sequence with null", expr: `{1, null, 3}`, want: []any{1.0, nil, 3.0}},
		{name: "sequence out of order", expr: `{[2] = "b", [1] = "a"}`, want: []any{"a", "b"}},
		{name: "object", expr: `{a = 1, b = {c = "d"}}`, want: map[string]any{"a": 1.0, "b": map[string]any{"c": "d"}}},
		{name: "numeric string keys stay strings", expr: `{["1"] = true}`, want: map[string]any{"1": true}},
		{name: "shared table is not a cycle", expr: `(function() local s = {1} return {a = s, b = s} end)()`,
			want: map[string]any{"a": []any{1.0}, "b": []any{1.0}}},
		{name: "sequence built backwards", expr: `(function() local t = {} t[3] = 3 t[2] = 2 t[1] = 1 return t end)()`, want: []any{1.0, 2.0, 3.0}},
		{name: "trailing nil ignored", expr: `{1, 2, nil}`, want: []any{1.0, 2.0}},
		{name: "emptied array part", expr: `(function() local t = {1, 2} t[1] = nil t[2] = nil t.x = 1 return t end)()`, want: map[string]any{"x": 1.0}},
		{name: "sequence plus huge index", expr: `{1, 2, [2^40] = 3}`, wantErr: luavalue.ErrKey},
		{name: "sequence plus fraction", expr: `{1, 2, [2.5] = 3}`, wantErr: luavalue.ErrKey, errText: "number 2.5"},
		{name: "function", expr: `print`, wantErr: luavalue.ErrType, errText: "unsupported value type: function"},
		{name: "nested function names path", expr: `{a = {1, {f = print}}}`, wantErr: luavalue.ErrType, errText: "function at $.a[2].f"},
		{name: "odd key quoted in path", expr: `{["a b"] = print}`, wantErr: luavalue.ErrType, errText: `at $["a b"]`},
		{name: "userdata", mk: func(L *lua.LState) lua.LValue { return L.NewUserData() }, wantErr: luavalue.ErrType, errText: "unsupported value type: userdata"},
		{name: "thread", mk: func(L *lua.LState) lua.LValue { co, _ := L.NewThread(); return co }, wantErr: luavalue.ErrType, errText: "thread"},
		{name: "cycle", expr: `(function() local t = {} t.self = t return t end)()`, wantErr: luavalue.ErrCycle, errText: "cycle at $.self"},
		{name: "deep cycle", expr: `(function() local a, b = {}, {} a.b = b b.list = {a} return a end)()`, wantErr: luavalue.ErrCycle, errText: "at $.b.list[1]"},
		{name: "too deep", expr: `(function() local t = {} for i = 1, 100 do t = {t} end return t end)()`, wantErr: luavalue.ErrTooDeep},
		{name: "mixed table", expr: `{1, 2, x = 3}`, wantErr: luavalue.ErrKey, errText: "mixes"},
		{name: "number key in object", expr: `{[1.5] = 1, x = 2}`, wantErr: luavalue.ErrKey, errText: "number 1.5"},
		{name: "zero key", expr: `{[0] = 1}`, wantErr: luavalue.ErrKey, errText: "number 0"},
		{name: "boolean key", expr: `{[true] = 1}`, wantErr: luavalue.ErrKey, errText: "boolean"},
		{name: "sparse sequence", expr: `{[1] = 1, [3] = 3}`, wantErr: luavalue.ErrKey, errText: "array has holes (index 3 with 2 elements)"},
		{name: "hole in the array part", expr: `{1, nil, 3}`, wantErr: luavalue.ErrKey, errText: "holes"},
		{name: "marked array with hole", expr: `array({[1] = 1, [3] = 3})`, wantErr: luavalue.ErrKey, errText: "holes"},
		{name: "marked array with string key", expr: `array({1, x = 2})`, wantErr: luavalue.ErrKey, errText: `array has key "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			L := newState(t)
			var in lua.LValue
			if tt.mk != nil {
				in = tt.mk(L)
			} else {
				in = eval(t, L, tt.expr)
			}
			got, err := luavalue.FromLua(in)
			if tt.wantErr != nil || tt.errText != "" {
				if err == nil {
					t.Fatalf("FromLua(%s) = %#v, want error", tt.expr, got)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("error %q is not %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("error %q does not contain %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromLua(%s): %v", tt.expr, err)
			}
			if f, ok := tt.want.(float64); ok && math.IsNaN(f) {
				if g, ok := got.(float64); !ok || !math.IsNaN(g) {
					t.Fatalf("got %#v, want NaN", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("FromLua(%s) = %#v, want %#v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestFromLuaDepth(t *testing.T) {
	t.Parallel()
	L := newState(t)
	nest := func(n int) lua.LValue {
		var v lua.LValue = lua.LNumber(1)
		for range n {
			tb := L.NewTable()
			tb.Append(v)
			v = tb
		}
		return v
	}
	if _, err := luavalue.FromLuaDepth(nest(5), 5); err != nil {
		t.Fatalf("depth 5 with limit 5: %v", err)
	}
	_, err := luavalue.FromLuaDepth(nest(6), 5)
	if !errors.Is(err, luavalue.ErrTooDeep) || err.Error() != "table nesting too deep" {
		t.Fatalf("depth 6 with limit 5: %v", err)
	}
	if _, err := luavalue.FromLua(nest(luavalue.DefaultMaxDepth)); err != nil {
		t.Fatalf("default depth: %v", err)
	}
}

func TestAppendJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr    string
		want    string
		wantErr error
	}{
		{`nil`, `null`, nil},
		{`null`, `null`, nil},
		{`true`, `true`, nil},
		{`3`, `3`, nil},
		{`-0.5`, `-0.5`, nil},
		{`2^53`, `9007199254740992`, nil},
		{`-2^53`, `-9007199254740992`, nil},
		{`1e20`, `100000000000000000000`, nil},
		{`1e21`, `1e+21`, nil},
		{`1e-7`, `1e-7`, nil},
		{`0.1`, `0.1`, nil},
		{`0/0`, ``, luavalue.ErrNumber},
		{`1/0`, ``, luavalue.ErrNumber},
		{`{x = -1/0}`, ``, luavalue.ErrNumber},
		{`"plain"`, `"plain"`, nil},
		{`"q\"b\\s/ <>&"`, `"q\"b\\s/ <>&"`, nil},
		{`"\n\r\t\b\f\1\31"`, `"\n\r\t\b\f\u0001\u001f"`, nil},
		{`"héllo ✓ 😀"`, `"héllo ✓ 😀"`, nil},
		{`"bad \255 byte"`, `"bad \ufffd byte"`, nil},
		{`"\226\128\168"`, `"\u2028"`, nil},
		{`{}`, `{}`, nil},
		{`array()`, `[]`, nil},
		{`{1, 2, 3}`, `[1,2,3]`, nil},
		{`{b = 1, a = {1, null, "x"}, c = {}}`, `{"a":[1,null,"x"],"b":1,"c":{}}`, nil},
		{`{["z"] = 1, ["a b"] = 2, ["é"] = 3, ["10"] = 4, ["9"] = 5}`, `{"10":4,"9":5,"a b":2,"z":1,"é":3}`, nil},
		{`{f = print}`, ``, luavalue.ErrType},
		{`(function() local t = {} t[1] = t return t end)()`, ``, luavalue.ErrCycle},
		{`{1, x = 2}`, ``, luavalue.ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			L := newState(t)
			got, err := luavalue.AppendJSON([]byte("prefix:"), eval(t, L, tt.expr), 8, 0)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("AppendJSON(%s) = %q, %v; want %v", tt.expr, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("AppendJSON(%s): %v", tt.expr, err)
			}
			if string(got) != "prefix:"+tt.want {
				t.Fatalf("AppendJSON(%s) = %s, want %s", tt.expr, got, tt.want)
			}
			if !json.Valid(got[len("prefix:"):]) {
				t.Fatalf("invalid JSON %s", got)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	values := []any{
		nil, true, 2.5, "s",
		[]any{}, map[string]any{},
		[]any{1.0, nil, []any{}, map[string]any{"k": "v"}},
		map[string]any{"a": []any{map[string]any{}}, "b": false},
	}
	for _, v := range values {
		L := newState(t)
		got, err := luavalue.FromLua(luavalue.ToLua(L, v))
		if err != nil {
			t.Fatalf("FromLua(ToLua(%#v)): %v", v, err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("round trip of %#v gave %#v", v, got)
		}
	}
}

func TestNullAndMarker(t *testing.T) {
	t.Parallel()
	L := newState(t)
	if a, b := luavalue.Null(L), luavalue.Null(L); a != b {
		t.Fatal("Null is not stable per state")
	}
	other := newState(t)
	if !luavalue.IsNull(luavalue.Null(other)) || luavalue.IsNull(L.NewUserData()) || luavalue.IsNull(lua.LNil) {
		t.Fatal("IsNull mismatch")
	}
	if a, b := luavalue.ArrayMetatable(L), luavalue.ArrayMetatable(L); a != b {
		t.Fatal("array metatable is not shared")
	}
	err := L.DoString(`
		assert(tostring(null) == "null")
		assert(getmetatable(null) == "json.null")
		assert(not pcall(setmetatable, null, {}))
		local a = array()
		assert(getmetatable(a).__jsontype == "array")
	`)
	if err != nil {
		t.Fatal(err)
	}
	tb := L.NewTable()
	if luavalue.IsArray(tb) {
		t.Fatal("plain table is an array")
	}
	tb.Metatable = eval(t, L, `{__jsontype = "object"}`)
	if luavalue.IsArray(tb) {
		t.Fatal("object-marked table is an array")
	}
	if a := luavalue.NewArray(L, 4); !luavalue.IsArray(a) || a.Len() != 0 {
		t.Fatal("NewArray is not an empty marked array")
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	L := newState(b)
	v := eval(b, L, `{id = "c-42", kind = "text", n = 3, ok = true, tags = {"a", "b"}}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = luavalue.AppendJSON(buf[:0], v, luavalue.DefaultMaxDepth, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromLua(b *testing.B) {
	L := newState(b)
	v := eval(b, L, `{id = "c-42", kind = "text", n = 3, ok = true, tags = {"a", "b"}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := luavalue.FromLua(v); err != nil {
			b.Fatal(err)
		}
	}
}

// doubling returns a table of n levels of t = {t, t}: n+1 tables, but 2^n
// paths from the root, which a walk that converts shared sub-tables once
// per path must be stopped from taking.
func doubling(t testing.TB, L *lua.LState, n int) lua.LValue {
	t.Helper()
	if err := L.DoString(`local t = {} for i = 1, ` + strconv.Itoa(n) + ` do t = {t, t} end return t`); err != nil {
		t.Fatal(err)
	}
	v := L.Get(-1)
	L.Pop(1)
	return v
}

// TestAppendJSONLimitAsItGrows: MaxSize is checked as the output grows, not
// only at string values, so numbers, booleans, keys and punctuation cannot
// build past it (200 references to an array of 100k numbers built 240 MB
// before failing).
func TestAppendJSONLimitAsItGrows(t *testing.T) {
	t.Parallel()
	L := newState(t)
	const limit = 1000
	// One element past the limit at most: a number or key, and its
	// punctuation.
	const slack = 40
	longKey := strings.Repeat("k", 2*limit)
	tests := []struct{ name, code string }{
		{"numbers", `local a = {} for i = 1, 100000 do a[i] = i end
			local t = {} for i = 1, 200 do t[i] = a end return t`},
		{"booleans", `local a = {} for i = 1, 10000 do a[i] = true end return a`},
		{"nulls", `local a = {} for i = 1, 10000 do a[i] = null end return a`},
		{"empty tables", `local a = {} for i = 1, 10000 do a[i] = {} end return a`},
		{"nested punctuation", `local a = {} for i = 1, 10000 do a[i] = {{array()}} end return a`},
		{"keys", `local o = {} for i = 1, 10000 do o["key" .. i] = 0 end return o`},
		{"one long key", `return {{["` + longKey + `"] = 1}}`},
		{"doubling", `local t = {} for i = 1, 16 do t = {t, t} end return t`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := L.DoString(tt.code); err != nil {
				t.Fatal(err)
			}
			v := L.Get(-1)
			L.Pop(1)
			got, err := luavalue.AppendJSONWith([]byte("prefix:"), v, luavalue.Options{MaxSize: limit})
			if !errors.Is(err, luavalue.ErrTooLarge) || err.Error() != "encoding too large" {
				t.Fatalf("err = %v, want %v without a path", err, luavalue.ErrTooLarge)
			}
			if n := len(got) - len("prefix:"); n > limit+slack {
				t.Fatalf("appended %d bytes with limit %d", n, limit)
			}
		})
	}
	// The bound is inclusive, closing brackets included.
	v := eval(t, L, `{1, {2, {3}}}`) // [1,[2,[3]]]: 11 bytes
	if got, err := luavalue.AppendJSONWith(nil, v, luavalue.Options{MaxSize: 11}); err != nil || string(got) != "[1,[2,[3]]]" {
		t.Fatalf("11 bytes with limit 11: %q, %v", got, err)
	}
	if _, err := luavalue.AppendJSONWith(nil, v, luavalue.Options{MaxSize: 10}); !errors.Is(err, luavalue.ErrTooLarge) {
		t.Fatalf("11 bytes with limit 10: %v", err)
	}
}

// TestFromLuaSize: FromLuaWith's MaxSize is the store's measure, exactly, so
// that store.set can stop converting what Set would refuse without refusing
// anything Set would take.
func TestFromLuaSize(t *testing.T) {
	t.Parallel()
	L := newState(t)
	tests := []struct {
		expr string
		size int
	}{
		{`"abc"`, 3},
		{`""`, 0},
		{`1`, 8},
		{`true`, 1},
		{`null`, 1},
		{`{}`, 2},
		{`{"ab", "cd"}`, 2 + 3 + 3},
		{`{1, null, false}`, 2 + 9 + 2 + 2},
		{`{ab = "x", c = {1}}`, 2 + (1 + 2 + 1) + (1 + 1 + 2 + 9)},
	}
	for _, tt := range tests {
		v := eval(t, L, tt.expr)
		if _, err := luavalue.FromLuaWith(v, luavalue.Options{MaxSize: max(tt.size, 1)}); err != nil {
			t.Errorf("%s with MaxSize %d: %v", tt.expr, tt.size, err)
		}
		if tt.size <= 1 {
			continue
		}
		_, err := luavalue.FromLuaWith(v, luavalue.Options{MaxSize: tt.size - 1})
		if !errors.Is(err, luavalue.ErrTooLarge) {
			t.Errorf("%s with MaxSize %d: %v, want %v", tt.expr, tt.size-1, err, luavalue.ErrTooLarge)
		}
	}
}

// TestSharedTablesBounded: a table reached by many paths is walked once per
// path, so the walk is bounded by size and by values visited, and the
// error names no path.
func TestSharedTablesBounded(t *testing.T) {
	t.Parallel()
	L := newState(t)
	small := doubling(t, L, 16) // 2^17-1 values on the walk
	if _, err := luavalue.FromLuaWith(small, luavalue.Options{MaxSize: 1000}); err != luavalue.ErrTooLarge {
		t.Errorf("FromLuaWith MaxSize 1000: %v, want %v", err, luavalue.ErrTooLarge)
	}
	if _, err := luavalue.FromLuaWith(small, luavalue.Options{MaxNodes: 1000}); err != luavalue.ErrTooMany {
		t.Errorf("FromLuaWith MaxNodes 1000: %v, want %v", err, luavalue.ErrTooMany)
	}
	if _, err := luavalue.AppendJSONWith(nil, small, luavalue.Options{MaxNodes: 1000}); err != luavalue.ErrTooMany {
		t.Errorf("AppendJSONWith MaxNodes 1000: %v, want %v", err, luavalue.ErrTooMany)
	}
	if _, err := luavalue.FromLua(small); err != nil {
		t.Errorf("FromLua within DefaultMaxNodes: %v", err)
	}
	// Without a size bound, DefaultMaxNodes applies.
	big := doubling(t, L, 20) // 2^21-1 values
	if _, err := luavalue.FromLua(big); err != luavalue.ErrTooMany {
		t.Errorf("FromLua: %v, want %v", err, luavalue.ErrTooMany)
	}
	if _, err := luavalue.AppendJSON(nil, big, luavalue.DefaultMaxDepth, 0); err != luavalue.ErrTooMany {
		t.Errorf("AppendJSON without maxLen: %v, want %v", err, luavalue.ErrTooMany)
	}
	// Cycles are still cycles.
	cyc := eval(t, L, `(function() local t = {1} t[2] = {t} return t end)()`)
	if _, err := luavalue.FromLuaWith(cyc, luavalue.Options{MaxSize: 1000}); !errors.Is(err, luavalue.ErrCycle) {
		t.Errorf("cycle: %v", err)
	}
}

// TestWalkStopsWhenCancelled: a long walk polls its context, so a handler
// timeout ends it midway with the context's error, named without a path.
func TestWalkStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	L := newState(t)
	v := doubling(t, L, 16)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := luavalue.FromLuaWith(v, luavalue.Options{Context: ctx}); err != context.Canceled {
		t.Errorf("FromLuaWith: %v, want %v", err, context.Canceled)
	}
	if _, err := luavalue.AppendJSONWith(nil, v, luavalue.Options{Context: ctx}); err != context.Canceled {
		t.Errorf("AppendJSONWith: %v, want %v", err, context.Canceled)
	}
	// A live context changes nothing.
	if _, err := luavalue.AppendJSONWith(nil, v, luavalue.Options{Context: context.Background()}); err != nil {
		t.Errorf("AppendJSONWith under a live context: %v", err)
	}
}

package json

import (
	"context"
	stdjson "encoding/json"
	"fmt"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

const prelude = luatest.Asserts + `
local json = require "json"
`

func runLua(t *testing.T, m *Module, code string) {
	t.Helper()
	luatest.Run(t, luatest.NewState(t, m), prelude, code)
}

func TestLua(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		code string
	}{
		{"encode object and array", `eq(json.encode({a = 1, b = {1, 2, 3}}), '{"a":1,"b":[1,2,3]}')`},
		{"encode scalars", `
			eq(json.encode(nil), "null")
			eq(json.encode(json.null), "null")
			eq(json.encode(true), "true")
			eq(json.encode(3), "3")
			eq(json.encode(-2.5), "-2.5")
			eq(json.encode(2^53), "9007199254740992")
			eq(json.encode(0.1), "0.1")
			eq(json.encode("x"), '"x"')`},
		{"sorted keys", `eq(json.encode({b = 1, a = 2, c = {z = 1, y = 2}}), '{"a":2,"b":1,"c":{"y":2,"z":1}}')`},
		{"no html escaping", `eq(json.encode("<a href='x'>&</a>"), [["<a href='x'>&</a>"]])`},
		{"escapes", `eq(json.encode("q\"\\\n\t\0"), [["q\"\\\n\t\u0000"]])`},
		{"empty tables", `
			eq(json.encode({}), "{}")
			eq(json.encode(json.array()), "[]")
			eq(json.encode(json.array({})), "[]")
			eq(json.encode({list = json.array(), obj = {}}), '{"list":[],"obj":{}}')`},
		{"array returns its argument", `
			local t = {1, 2}
			eq(json.array(t), t)
			eq(json.array(t), t, "marking twice")
			eq(json.encode(t), "[1,2]")
			eq(json.encode(json.array(setmetatable({}, {__jsontype = "array"}))), "[]")`},
		{"array refuses foreign metatable", `
			local ok, err = pcall(json.array, setmetatable({}, {__index = {}}))
			assert(not ok and err:find("table already has a metatable", 1, true), err)`},
		{"array rejects non-table", `
			local ok, err = pcall(json.array, 5)
			assert(not ok and err:find("table expected, got number", 1, true), err)`},
		{"marked array with string key fails", `fails('json: unsupported table key: array has key "x"', json.encode(json.array({1, x = 2})))`},
		{"decode object", `
			local v = json.decode('{"a": [1, 2, {"b": "c"}], "d": true, "e": 1.5e2}')
			eq(#v.a, 3)
			eq(v.a[3].b, "c")
			eq(v.d, true)
			eq(v.e, 150)`},
		{"decode scalars", `
			eq(json.decode("12"), 12)
			eq(json.decode(" -0.5 "), -0.5)
			eq(json.decode('"s"'), "s")
			eq(json.decode("false"), false)
			eq(json.decode("1e-400"), 0)
			eq(json.decode("12345678901234567890"), 12345678901234567890)`},
		{"round trip", `
			local s = [[{"a":[1,null,{"b":[]}],"c":"\u00e9","d":{}}]]
			eq(json.encode(json.decode(s)), '{"a":[1,null,{"b":[]}],"c":"é","d":{}}')`},
		{"null in array keeps position", `
			local t = json.decode("[1,null,3]")
			eq(#t, 3)
			eq(t[2], json.null)
			eq(json.encode(t), "[1,null,3]")`},
		{"null in object is absent", `
			local t = json.decode('{"a":null,"b":1}')
			eq(t.a, nil)
			eq(json.encode(t), '{"b":1}')
			eq(json.decode('{"a":1,"a":null}').a, nil, "later null wins")
			eq(json.decode('{"a":1,"a":2}').a, 2, "later value wins")`},
		{"top-level null", `
			eq(json.decode("null"), json.null)
			eq(tostring(json.null), "null")
			eq(type(json.null), "userdata")`},
		{"decoded arrays are marked", `
			eq(json.encode(json.decode("[]")), "[]")
			eq(json.encode(json.decode("{}")), "{}")
			eq(getmetatable(json.decode("[1]")).__jsontype, "array")
			eq(getmetatable(json.decode("{}")), nil)`},
		{"unicode", `
			eq(json.decode('"\\u00e9\\ud83d\\ude00"'), "é😀")
			eq(json.decode('"é😀"'), "é😀")
			eq(json.encode("é😀"), '"é😀"')
			eq(json.encode("bad\255"), '"bad\\ufffd"')
			eq(json.decode('"\\ud800"'), "\239\191\189", "lone surrogate")
			eq(json.encode({["ключ"] = "значение"}), '{"ключ":"значение"}')`},
		{"cycles", `
			local t = {}
			t.self = t
			fails("json: table contains a cycle at $.self", json.encode(t))
			local a = {}
			a[1] = {a}
			fails("json: table contains a cycle at $[1][1]", json.encode(a))
			local shared = {1}
			eq(json.encode({x = shared, y = shared}), '{"x":[1],"y":[1]}')`},
		{"unencodable values", `
			fails("json: unsupported value type: function", json.encode(print))
			fails("json: unsupported value type: function at $.cb", json.encode({cb = print}))
			fails("json: unsupported value type: userdata at $[1]", json.encode({newproxy()}))
			fails("json: unsupported number: NaN at $.x", json.encode({x = 0/0}))
			fails("json: unsupported number: +Inf", json.encode(1/0))
			fails("json: unsupported table key: table mixes array indices and string keys", json.encode({1, x = 2}))
			fails("json: unsupported table key: boolean boolean (object keys must be strings)", json.encode({[true] = 1}))`},
		{"bad input", `
			fails("json: unexpected end of input", json.decode(""))
			fails("json: unexpected end of input", json.decode("   "))
			fails("json: unexpected end of input", json.decode("{"))
			fails("json: unexpected end of input", json.decode('"abc'))
			fails("json: invalid character ']' looking for beginning of value near byte 4", json.decode("[1,]"))
			fails("json: invalid character '1' after object key near byte 6", json.decode('{"a" 1}'))
			fails("json: invalid character 'N' looking for beginning of value near byte 1", json.decode("NaN"))
			fails("json: invalid character '\\'' looking for beginning of value near byte 1", json.decode("'x'"))
			fails("json: invalid character 'x' in literal null (expecting 'u') near byte 2", json.decode("nx"))
			fails("json: trailing data after value near byte 3", json.decode("1 2"))
			fails("json: trailing data after value near byte 4", json.decode("[1]]"))
			fails("json: trailing data after value near byte 4", json.decode("{} x"))
			fails("json: number out of range: 1e400", json.decode("1e400"))
			fails("json: number out of range: -1e400", json.decode("[-1e400]"))
			local v, err = json.decode('"\1"')
			assert(v == nil and err:find("^json: invalid character"), err)`},
		{"wrong argument types raise", `
			local ok, err = pcall(json.decode)
			assert(not ok and err:find("bad argument #1", 1, true), err)
			ok, err = pcall(json.decode, {})
			assert(not ok and err:find("string expected, got table", 1, true), err)
			ok, err = pcall(json.encode)
			assert(not ok and err:find("value expected", 1, true), err)
			eq(json.decode(5), 5, "numbers coerce to strings like everywhere in Lua")`},
		{"default depth", `
			local deep = string.rep("[", 128) .. string.rep("]", 128)
			eq(json.encode(json.decode(deep)), deep)
			fails("json: nesting deeper than 128", json.decode("[" .. deep .. "]"))
			local t = {}
			for i = 1, 129 do t = {t} end
			fails("json: nesting deeper than 128", json.encode(t))`},
	}
	m := New(Limits{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			runLua(t, m, tt.code)
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limits Limits
		code   string
	}{
		{"depth 4", Limits{MaxDepth: 4}, `
			eq(json.encode(json.decode("[[[[1]]]]")), "[[[[1]]]]")
			eq(json.encode(json.decode('{"a":{"b":{"c":[]}}}')), '{"a":{"b":{"c":[]}}}')
			fails("json: nesting deeper than 4", json.decode("[[[[[1]]]]]"))
			fails("json: nesting deeper than 4", json.decode('{"a":{"b":{"c":{"d":{}}}}}'))
			fails("json: nesting deeper than 4", json.encode({{{{{}}}}}))
			eq(json.encode({{{{}}}}), "[[[{}]]]")`},
		{"input 10 bytes", Limits{MaxInput: 10}, `
			eq(json.decode("[1,2,3,44]")[4], 44)
			fails("json: input too large (11 bytes, limit 10)", json.decode("[1,2,3,444]"))
			fails("json: input too large (11 bytes, limit 10)", json.decode(string.rep(" ", 11)))
			eq(#json.encode(string.rep("x", 100)), 102, "encode is not bounded by MaxInput")`},
		{"output 20 bytes", Limits{MaxOutput: 20}, `
			eq(json.encode({"abc", "abc"}), '["abc","abc"]')
			local s = string.rep("x", 8)
			fails("json: encoding too large", json.encode({s, s, s}))
			fails("json: encoding too large", json.encode(string.rep("x", 21)))
			fails("json: encoding too large", json.encode(string.rep("\1", 5)))`},
		{"depth ceiling", Limits{MaxDepth: 1 << 30}, `
			local deep = string.rep("[", 10001) .. string.rep("]", 10001)
			fails("json: nesting deeper than 10000", json.decode(deep))`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			runLua(t, New(tt.limits), tt.code)
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	m := New(Limits{})
	if m.Name() != "json" || m.limits.MaxDepth != DefaultMaxDepth || m.limits.MaxInput != DefaultMaxInput {
		t.Fatalf("New(Limits{}) = %+v", m.limits)
	}
	// The module table is per state, but null is per state too: each VM
	// compares against its own sentinel.
	L := luatest.NewState(t, m)
	if err := L.DoString(`local a = require "json"; local b = require "json"; assert(a == b and a.null == b.null)`); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecode checks that decode never panics or raises on any string, agrees
// with encoding/json about validity, and that whatever it accepts encodes
// and then round-trips to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a":[1,null,{"b":[]}],"c":"é"}`, `[]`, `null`, `"\ud800"`, `[[[[[[]]]]]]`, `1e400`, `{"a":1,"a":null}`} {
		f.Add(s)
	}
	m := New(Limits{MaxDepth: 32, MaxInput: 1 << 16})
	L := luatest.NewState(f, m)
	if err := L.DoString(`json = require "json"`); err != nil {
		f.Fatal(err)
	}
	mod := L.GetGlobal("json").(*lua.LTable)
	decode, encode := mod.RawGetString("decode"), mod.RawGetString("encode")
	call := func(fn lua.LValue, arg lua.LValue) (lua.LValue, lua.LValue) {
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 2, Protect: true}, arg); err != nil {
			f.Fatalf("raised: %v", err)
		}
		v, e := L.Get(-2), L.Get(-1)
		L.Pop(2)
		return v, e
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, errv := call(decode, lua.LString(s))
		if v == lua.LNil {
			msg := errv.String()
			if !strings.HasPrefix(msg, "json: ") {
				t.Fatalf("decode(%q) error %q lacks prefix", s, msg)
			}
			if stdjson.Valid([]byte(s)) && len(s) <= m.limits.MaxInput &&
				!strings.Contains(msg, "nesting deeper") && !strings.Contains(msg, "out of range") {
				t.Fatalf("decode(%q) rejected valid JSON: %s", s, msg)
			}
			return
		}
		if !stdjson.Valid([]byte(s)) {
			t.Fatalf("decode(%q) accepted invalid JSON", s)
		}
		out, errv := call(encode, v)
		if out == lua.LNil {
			t.Fatalf("encode(decode(%q)) failed: %v", s, errv)
		}
		v2, errv := call(decode, out)
		if v2 == lua.LNil {
			t.Fatalf("decode(%q) failed: %v", out, errv)
		}
		out2, _ := call(encode, v2)
		if out2 != out {
			t.Fatalf("not stable: %q -> %q -> %q", s, out, out2)
		}
	})
}

const benchObject = `{"id":"c-42","kind":"text","n":3,"ok":true,"tags":["a","b"]}`

func benchCall(b *testing.B, fn string, arg func(L *lua.LState) lua.LValue) {
	L := luatest.NewState(b, New(Limits{}))
	if err := L.DoString(`json = require "json"`); err != nil {
		b.Fatal(err)
	}
	f := L.GetGlobal("json").(*lua.LTable).RawGetString(fn)
	a := arg(L)
	p := lua.P{Fn: f, NRet: 1, Protect: true}
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(p, a); err != nil {
			b.Fatal(err)
		}
		L.Pop(1)
	}
}

func BenchmarkEncode(b *testing.B) {
	benchCall(b, "encode", func(L *lua.LState) lua.LValue {
		if err := L.DoString(`return json.decode('` + benchObject + `')`); err != nil {
			b.Fatal(err)
		}
		return L.Get(-1)
	})
}

func BenchmarkDecode(b *testing.B) {
	benchCall(b, "decode", func(*lua.LState) lua.LValue { return lua.LString(benchObject) })
}

func Example() {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, open := range []lua.LGFunction{lua.OpenPackage, lua.OpenBase} {
		L.Push(L.NewFunction(open))
		L.Call(0, 0)
	}
	m := New(Limits{})
	L.PreloadModule(m.Name(), m.Open)
	err := L.DoString(`
		local json = require "json"
		local msg = json.decode('{"type":"join","rooms":["a",null],"extra":null}')
		msg.seen = true
		print(json.encode(msg))
		print(json.decode("{bad"))
	`)
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"rooms":["a",null],"seen":true,"type":"join"}
	// nil	json: invalid character 'b' looking for beginning of object key string near byte 2
}

// TestDecodeStopsWhenCancelled: building the Lua values of a large input
// takes long enough that a handler timeout must be able to end it midway;
// the converter looks at the state's context as it goes.
func TestDecodeStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	L := luatest.NewState(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	L.SetContext(ctx)
	src := "[" + strings.Repeat("1,", 100000) + "1]"
	if _, err := New(Limits{}).decodeString(L, src); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("decode under a cancelled context: %v", err)
	}
	L.SetContext(context.Background())
	if v, err := New(Limits{}).decodeString(L, src); err != nil || v.(*lua.LTable).Len() != 100001 {
		t.Fatalf("decode: %v", err)
	}
}

// TestEncodeLimitAsItGrows: MaxOutput holds for output without strings too
// (it was checked only at strings, so 200 references to an array of 100k
// numbers encoded 240 MB, with any limit).
func TestEncodeLimitAsItGrows(t *testing.T) {
	t.Parallel()
	runLua(t, New(Limits{MaxOutput: 1 << 20}), `
		local a = {} for i = 1, 100000 do a[i] = i end
		local t = {} for i = 1, 200 do t[i] = a end
		fails("json: encoding too large", json.encode(t))
		local o = {} for i = 1, 100 do o["k" .. i] = a end
		fails("json: encoding too large", json.encode(o))
		local d = {} for i = 1, 22 do d = {d, d} end
		fails("json: encoding too large", json.encode(d))
		eq(#json.encode(a), 588896, "one reference fits")`)
}

// callCancelled calls the builtin fn with args under an already cancelled
// context and returns its two results. The call is made from Go because the
// VM itself would stop at its first instruction under that context; inside a
// builtin, only the builtin can notice.
func callCancelled(t *testing.T, L *lua.LState, fn lua.LValue, args ...lua.LValue) (lua.LValue, lua.LValue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	L.SetContext(ctx)
	defer L.RemoveContext()
	if err := L.CallByParam(lua.P{Fn: fn, NRet: 2, Protect: true}, args...); err != nil {
		t.Fatal(err)
	}
	defer L.Pop(2)
	return L.Get(-2), L.Get(-1)
}

// TestEncodeStopsWhenCancelled: a table reached by many paths takes long to
// encode even within MaxOutput, so encode polls the state's context, like
// decode, and a handler timeout ends it midway.
func TestEncodeStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	L := luatest.NewState(t, New(Limits{}))
	if err := L.DoString(`json = require "json"
		doubling = {} for i = 1, 20 do doubling = {doubling, doubling} end`); err != nil {
		t.Fatal(err)
	}
	// 20 levels of t = {t, t}: 21 tables, 2^20 paths.
	v, err := callCancelled(t, L, L.GetField(L.GetGlobal("json"), "encode"), L.GetGlobal("doubling"))
	if v != lua.LNil || err.String() != "json: context canceled" {
		t.Fatalf("encode under a cancelled context: %v, %v", v, err)
	}
}

package lua

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/scripts"
)

// newTestVM returns the VM of a route whose script does nothing: a
// sandbox to run chunks in, with the engine's watchdog enforcing timeout.
func newTestVM(t testing.TB, opts Options, timeout time.Duration) *vm {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := New(opts)
	t.Cleanup(e.Close)
	r, err := e.NewRoute(RouteConfig{Pattern: "/t", FS: fstest.MapFS{"t.lua": {Data: []byte("return {}")}},
		Script: "t.lua", HandlerTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	return r.vms[0]
}

// runLua runs src as a callback would run (under the handler timeout)
// with args as its varargs, and returns its results.
func runLua(v *vm, src string, args ...glua.LValue) ([]glua.LValue, error) {
	L := v.L
	fn, err := L.LoadString(src)
	if err != nil {
		return nil, err
	}
	top := L.GetTop()
	L.Push(fn)
	for _, a := range args {
		L.Push(a)
	}
	if err := v.pcall(len(args), glua.MultRet); err != nil {
		return nil, err
	}
	var out []glua.LValue
	for i := top + 1; i <= L.GetTop(); i++ {
		out = append(out, L.Get(i))
	}
	L.SetTop(top)
	return out, nil
}

// TestReferenceSuites runs the string and pattern-matching tests of the
// Lua 5.1 test suite against the sandbox's string library.
func TestReferenceSuites(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"testdata/pm.lua", "testdata/strings.lua"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		v := newTestVM(t, Options{}, time.Minute)
		if _, err := runLua(v, string(src)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// luaAsserts are the helpers the Lua chunks below share.
const luaAsserts = `
local function eq(got, want, what)
  if got ~= want then
    error(string.format("%s: got %s, want %s", what or "value", tostring(got), tostring(want)), 2)
  end
end
local function raises(want, f, ...)
  local ok, err = pcall(f, ...)
  if ok or not string.find(tostring(err), want, 1, true) then
    error(string.format("want an error containing %q, got %s, %s", want, tostring(ok), tostring(err):sub(1, 200)), 2)
  end
end
`

// TestStringFunctions pins the behaviour of the replaced builtins where
// the reference suites do not look: Lua 5.1's semantics, gopher-lua's
// where it differs harmlessly, and errors that name the function.
func TestStringFunctions(t *testing.T) {
	t.Parallel()
	v := newTestVM(t, Options{}, time.Minute)
	_, err := runLua(v, luaAsserts+`
-- find and match
eq(select('#', string.find("abc", "x")), 1, "find: no match is one nil")
eq(string.find("abc", "b", 10), nil, "find past the end")
eq(select(2, string.find("abc", "", 10)), 3, "Lua 5.1: init is clamped to the end")
local a, b, c = string.find("key=val", "(%w+)=")
eq(a, 1) eq(b, 4) eq(c, "key")
eq(string.find("a.b", ".", 1, true), 2, "plain")
eq(string.find("a+b", "+", 1, true), 2, "plain +")
eq(string.find("a+b", "a+"), 1)
eq(string.find("abc", "c", -1), 3)
eq(string.find("abc", "a", -10), 1)
eq(string.find("a(b", "(", 1, true), 2, "plain (")
eq(select('#', string.match("abc", "x")), 1, "match: no match is one nil")
eq(string.match("  x  ", "^%s*(.-)%s*$"), "x")
eq(string.match("hello", "()ll"), 3)
eq(string.match("hello", "l+", 4), "l")
eq(string.match("hello", ".", -1), "o")
raises("string.find: malformed pattern (ends with '%')", string.find, "x", "x%")
raises("string.match: malformed pattern (missing ']')", string.match, "x", "[x")
raises("string.find: pattern too complex", string.find, string.rep("a", 300), string.rep("a?", 250))
raises("string.match: unfinished capture", string.match, "x", "(x")

-- gmatch
local out = {}
for k, v in ("a=1&b=2"):gmatch("(%w+)=(%w+)") do out[#out+1] = k .. v end
eq(table.concat(out, ","), "a1,b2")
eq(string.gfind, string.gmatch, "gfind")
eq(select('#', ("x"):gmatch("x")), 1, "gmatch returns the iterator")
local it = ("ab"):gmatch(".")
eq(it(), "a") eq(it(), "b") eq(it(), nil) eq(it(), nil)
raises("string.gmatch: unfinished capture", function() for w in ("x"):gmatch("(x") do end end)
-- an iterator made in one coroutine and called in another
local it2 = ("a b c"):gmatch("%a")
eq(coroutine.wrap(function() return it2() end)(), "a")
eq(it2(), "b")

-- gsub
eq(select('#', ("abc"):gsub("b", "x")), 2)
local s, n = ("hello world"):gsub("o", {o = "0"})
eq(s, "hell0 w0rld") eq(n, 2)
s, n = ("hello"):gsub("l", function(c) return nil end)
eq(s, "hello") eq(n, 2)
eq((("hello"):gsub("l", {l = false})), "hello")
eq((("a b"):gsub("%w", function(c) return 1 end)), "1 1")
eq((("abc"):gsub("%w", "%0%0", 2)), "aabbc")
eq((("abc"):gsub("", "-")), "-a-b-c-")
eq((("x"):gsub("x", 5)), "5")
eq(type((string.gsub(12, "x", "y"))), "string", "a number subject gives a string")
eq((("x y"):gsub("(%w)", "<%1>")), "<x> <y>")
eq((("ab"):gsub(".", function(c) return (c:rep(2):gsub(".", "%0.")) end)), "a.a.b.b.", "gsub inside gsub")
raises("string.gsub: invalid replacement value (a table)", string.gsub, "x", "x", function() return {} end)
raises("string.gsub: invalid replacement value (a boolean)", string.gsub, "x", "x", {x = true})
raises("string/function/table expected", string.gsub, "x", "x", true)
raises("string.gsub: invalid capture index %2", string.gsub, "x", "(x)", "%2")
raises("string.gsub: invalid use of '%' in replacement string", string.gsub, "x", "x", "%")

-- the other bounded builtins keep their behaviour
eq(("abc"):upper(), "ABC")
eq(("ÀB"):lower(), "àb", "Unicode case mapping, as gopher-lua has it")
eq(select('#', string.byte("abc")), 1, "byte: j defaults to i")
eq(select('#', string.byte("abc", 1, -1)), 3)
eq(string.byte("abc", -1), 99)
eq(select('#', string.byte("abc", 10)), 0)
eq(select('#', unpack({1, 2, 3})), 3)
eq(select('#', unpack({1, 2, 3}, 2)), 2)
eq(select('#', unpack({}, 1, 3)), 3)
eq(select('#', unpack({}, 3, 1)), 0)
eq(table.concat({1, 2.5, "x", -0.0, 1e100, 1/0}, ","), "1,2.5,x,0,1e+100,+Inf")
eq(table.concat({"a", "b", "c"}, ",", 2), "b,c")
eq(table.concat({"a", "b"}, ",", 1, 5), "a,b", "gopher-lua clamps j")
eq(table.concat({"a", "b"}, ",", 3), "")
raises("invalid value (table) at index 2 in table for concat", table.concat, {"a", {}})
eq(string.format("%5.2s|%d|%s|%%", "abc", 42, "x"), "   ab|42|x|%")
eq(string.format("%q", "a\0"), '"a\\x00"', "Go's %q, as before")
eq(string.format("%[1]s%[1]s", "ab"), "abab", "Go's argument indexes, as before")
raises("format width or precision larger than 1000", string.format, "%1001d", 1)

-- loadstring and load
eq(loadstring("return 1 + 1")(), 2)
local parts = {"return ", "4", "2"}
eq(load(function() return table.remove(parts, 1) end)(), 42)
local fn, err = loadstring("x = ")
eq(fn, nil) eq(type(err), "string")
fn, err = load(function() return {} end)
eq(fn, nil) eq(err, "reader function must return a string")
`)
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutputBounds: each builtin whose result size the script controls
// refuses a result past the string limit (1 MiB here) before building
// it, with an error naming it; results up to the limit are fine.
func TestOutputBounds(t *testing.T) {
	t.Parallel()
	v := newTestVM(t, Options{MaxStringSize: 1 << 20}, time.Minute)
	_, err := runLua(v, luaAsserts+`
local MiB = 1024 * 1024
local k = string.rep("x", 1024)
raises("string.gsub: result of", string.gsub, k .. "x", "x", k)
eq(#string.gsub(k, "x", string.rep("y", 1024)), MiB, "gsub up to the limit")
raises("string.gsub: result of", string.gsub, k .. "x", "x", function() return k end)
raises("string.gsub: result of", string.gsub, k .. "x", "x", {x = k})
local t = {}
for i = 1, 1025 do t[i] = k end
raises("table.concat: result of 1049600 bytes exceeds the limit of 1048576", table.concat, t)
t[1025] = nil
eq(#table.concat(t), MiB, "concat up to the limit")
raises("table.concat: result of", table.concat, {k, k}, string.rep(",", MiB))
raises("string.format: result of", string.format, "%s%s", string.rep("x", MiB), "y")
raises("string.format: result of", string.format, "%q", string.rep("\0", MiB / 2))
raises("string.format: result of", string.format, "%[1]s%[1]s", string.rep("x", MiB / 2 + 1))
eq(#string.format("%s", string.rep("x", MiB - 500)), MiB - 500, "format near the limit")
raises("string.upper: result of", string.upper, string.rep("\255", MiB / 2))
raises("string.rep: result of", string.rep, "x", MiB + 1)
raises("too many results to unpack", unpack, {}, 1, 1e9)
raises("too many results to unpack", unpack, {}, -2^60, 2^60)
raises("string slice too long", string.byte, string.rep("x", 300000), 1, -1)

local fn, err = loadstring(string.rep(" ", 256 * 1024 + 1))
eq(fn, nil) eq(err, "loadstring: chunk of 262145 bytes exceeds the limit of 262144 bytes")
local n = 0
fn, err = load(function() n = n + 1 return string.rep(" ", 1000) end)
eq(fn, nil) eq(err, "load: chunk of at least 263000 bytes exceeds the limit of 262144 bytes")
eq(n, 263, "load stops reading at the limit")
fn, err = loadstring("return " .. string.rep("(", 300) .. "1" .. string.rep(")", 300))
eq(fn, nil) eq(err, "loadstring: chunk has too many syntax levels (more than 200 nested brackets, blocks or operators)")
fn, err = loadstring("return " .. string.rep("- ", 100000) .. "1")
eq(fn, nil)
n = 0
fn, err = load(function() n = n + 1 if n > 300 then return nil end return "do " end)
eq(fn, nil) eq(err, "load: chunk has too many syntax levels (more than 200 nested brackets, blocks or operators)")
eq(loadstring("return " .. string.rep("(", 150) .. "1" .. string.rep(")", 150))(), 1)
`)
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutputBoundsDoNotOverflow: a size the bound is checked against is
// computed without overflow. string.rep("abc", 2^62+1024, ",") once came
// to 2^64+4095 bytes, wrapped around to 4095, passed the check, and ran the
// process out of memory; a precision after Go's explicit argument index
// ("%.[1]1000000f") escaped the width check and the estimate.
func TestOutputBoundsDoNotOverflow(t *testing.T) {
	t.Parallel()
	v := newTestVM(t, Options{MaxStringSize: 1 << 20}, time.Minute)
	_, err := runLua(v, luaAsserts+`
raises("string.rep: result of more than", string.rep, "abc", 2^62 + 1024, ",")
raises("string.rep: result of more than", string.rep, "abcd", 2^62)
raises("string.rep: result of more than", string.rep, "ab", 2^62 + 1)
raises("string.rep: result of 4611686018427387903 bytes exceeds", string.rep, "", 2^62, ",")
eq(string.rep("", 2^62), "", "nothing repeated")
eq(string.rep("ab", 3, ","), "ab,ab,ab")
raises("format width or precision larger than 1000", string.format, "%.[1]1000000f", 1)
raises("format width or precision larger than 1000", string.format, "%-[1].[1]5000d", 1)
eq(#string.format("%.[1]999d", 1), 999, "precision after an index")
eq(string.format("%[2]s %[1]s", "a", "b"), "b a")
raises("string.format: result of", string.format, string.rep("%.[1]900f", 1200), 1)
`)
	if err != nil {
		t.Fatal(err)
	}
	// Module plugins charge through the same account: a size that
	// overflowed to a negative number is refused, not credited.
	if err := (vmCharger{v}).Charge("plugin.op", -1); err == nil {
		t.Error("a negative charge was accepted")
	}
}

// TestPatternsStopAtTheDeadline: a backtracking pattern in any of the
// pattern functions, wherever it is called from, ends with the handler
// timeout, and the VM serves the next call.
func TestPatternsStopAtTheDeadline(t *testing.T) {
	t.Parallel()
	v := newTestVM(t, Options{}, 100*time.Millisecond)
	subject := glua.LString("x" + strings.Repeat(" ", 30000) + "x")
	for _, src := range []string{
		`local s = ... return s:gsub("^%s*(.-)%s*$", "%1")`,
		`local s = ... return s:find("%s*%s*y")`,
		`local s = ... return s:match(".-.-.-y")`,
		`local s = ... for w in s:gmatch("%s*%s*y") do end`,
		`local s = ... return s:gsub("x", function() return s:find("%s*%s*y") end)`,
		`local s = ... return coroutine.wrap(function() return s:find("%s*%s*y") end)()`,
		`local s = ... while true do pcall(string.find, s, "%s*%s*y") end`,
		`local s = ... local it = s:gmatch("%s*%s*y") return coroutine.wrap(function() return it() end)()`,
		// Quadratic in a set's length: each test scans the whole set.
		`local s = ... local n = 2 * #s return (("a"):rep(n)):find("[" .. ("b"):rep(n) .. "a]*$")`,
	} {
		_, err := runLua(v, src, subject)
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("%s: %v", src, err)
		}
		if out, err := runLua(v, `return ("  ok  "):match("^%s*(.-)%s*$")`); err != nil || len(out) != 1 || out[0].String() != "ok" {
			t.Errorf("after %s: %v %v", src, out, err)
		}
	}
}

// TestGmatchIsLazy: gmatch finds one match per call, so a loop that
// stops early costs what it used, not what the whole subject holds.
func TestGmatchIsLazy(t *testing.T) {
	v := newTestVM(t, Options{}, time.Minute)
	fn, err := v.L.LoadString(`local s = ... for w in s:gmatch("%a+") do return w end`)
	if err != nil {
		t.Fatal(err)
	}
	big := glua.LString(strings.Repeat("word ", 1<<20))
	allocs := testing.AllocsPerRun(10, func() {
		v.L.Push(fn)
		v.L.Push(big)
		v.L.Call(1, 1)
		if got := v.L.Get(-1).String(); got != "word" {
			t.Fatalf("first word %q", got)
		}
		v.L.Pop(1)
	})
	if allocs > 50 {
		t.Errorf("%v allocations for the first of a million matches", allocs)
	}
}

// TestGsubIsLinear: gsub allocates in proportion to its result (gopher-
// lua's copied the whole string for each replacement).
func TestGsubIsLinear(t *testing.T) {
	v := newTestVM(t, Options{}, time.Minute)
	subject := glua.LString(strings.Repeat("a b ", 1<<18)) // 1 MiB, half a million matches
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err := runLua(v, `local s = ... local r, n = s:gsub(" ", "--") return #r, n`, subject)
	runtime.ReadMemStats(&after)
	if err != nil || len(out) != 2 || out[0].String() != "1572864" || out[1].String() != "524288" {
		t.Fatalf("gsub: %v %v", out, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("gsub to 1.5 MiB allocated %d MiB", alloc>>20)
	}
}

// TestCheckNesting: the pre-scan accepts real scripts and refuses what
// nests past the limit, whatever does the nesting.
func TestCheckNesting(t *testing.T) {
	t.Parallel()
	var sources []string
	err := fs.WalkDir(scripts.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".lua") {
			b, err := fs.ReadFile(scripts.FS, p)
			sources = append(sources, string(b))
			return err
		}
		return err
	})
	if err != nil || len(sources) == 0 {
		t.Fatalf("scripts: %d, %v", len(sources), err)
	}
	for _, f := range []string{"testdata/pm.lua", "testdata/strings.lua"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, string(b))
	}
	for _, src := range sources {
		if err := checkNesting(src, maxNesting); err != nil {
			t.Errorf("refused a real script: %v\n%.200s", err, src)
		}
	}
	r := strings.Repeat
	for _, tc := range []struct {
		src string
		ok  bool
	}{
		{"return " + r("(", 199) + "1" + r(")", 199), true},
		{"return " + r("(", 201) + "1" + r(")", 201), false},
		{"return " + r("{", 201) + r("}", 201), false},
		{"x = t" + r("[ ", 201) + "1" + r("]", 201), false}, // "[[" would open a long string
		{r("do ", 201) + r("end ", 201), false},
		{r("if x then ", 201) + r("end ", 201), false},
		{r("while x do ", 201) + r("end ", 201), false},
		{r("repeat ", 201) + r("until x ", 201), false},
		{"return " + r("function() return ", 201) + "1" + r(" end", 201), false},
		{"return " + r("- ", 201) + "1", false},
		{"return " + r("not ", 201) + "x", false},
		{"return " + r("#", 201) + "x", false},
		{"return " + r("a .. ", 201) + "a", false},
		{"return " + r("a ^ ", 201) + "a", false},
		{"return " + r("a .. b + ", 201) + "a", false},
		// Sequences are not nesting.
		{r("do end ", 10000), true},
		{r("x = (1) ", 10000), true},
		{"return " + r("a + ", 201) + "a", false},
		{"return " + r("a - ", 201) + "a", false},
		{"return " + r("a * ", 201) + "a", false},
		{"return " + r("a + ", 199) + "a", true},
		{r("x = "+r("a + ", 199)+"a\n", 100), true},
		{"return " + r("a .. b == ", 10000) + "a", true},
		{"return " + r("a .. b, ", 10000) + "a", true},
		{"return " + r("a and b or ", 10000) + "a", true},
		{"return a" + r(".b", 10000), true},
		{"return f" + r("()", 10000), true},
		{"return {" + r("1, ", 10000) + "}", true},
		{"x = 1e-5 - 2 - -3 " + r("- 1", 190), true},
		{"x = 1e-5 - 2 - -3 " + r("- 1", 200), false},
		// Brackets in strings and comments do not count.
		{"return '" + r("(", 500) + "'", true},
		{"return \"" + r("(", 500) + "\\\"\"", true},
		{"return [[" + r("(", 500) + "]]", true},
		{"return [==[" + r("(", 500) + "]]]=]]==]", true},
		{"-- " + r("(", 500) + "\nreturn 1", true},
		{"--[[" + r("(", 500) + "]] return 1", true},
		{"--[=[" + r("(", 500) + "]]]=] return 1", true},
		{"return t[ [[x]] ]" + r("[1]", 500), true},
		// An unterminated long string or comment hides the rest.
		{"return [[" + r("(", 500), true},
	} {
		if err := checkNesting(tc.src, maxNesting); (err == nil) != tc.ok {
			t.Errorf("%.60q...: %v", tc.src, err)
		}
	}
}

// gopherStrlib puts gopher-lua's own pattern functions back in v's
// string table, for the benchmarks' comparison.
func gopherStrlib(tb testing.TB, v *vm) {
	fresh := glua.NewState(glua.Options{SkipOpenLibs: true})
	tb.Cleanup(fresh.Close)
	fresh.Push(fresh.NewFunction(glua.OpenString))
	fresh.Push(glua.LString(glua.StringLibName))
	fresh.Call(1, 0)
	from := fresh.GetGlobal("string").(*glua.LTable)
	to := v.L.GetGlobal("string").(*glua.LTable)
	for _, name := range []string{"find", "match", "gmatch", "gfind", "gsub"} {
		to.RawSetString(name, from.RawGetString(name)) // Go functions: any state may call them
	}
}

// BenchmarkPatterns compares the sandbox's pattern functions with
// gopher-lua's on common patterns, each called from Lua in a sandbox VM
// (so that both pay the same call and context costs):
//
//	go test -run '^$' -bench Patterns -benchmem ./plugins/lua/
func BenchmarkPatterns(b *testing.B) {
	text := strings.Repeat("The quick  brown fox\tjumps over the lazy dog;  then   it rests.\n", 16)[:1024]
	for _, tc := range []struct{ name, src, arg string }{
		{"find_digits", `local s = ... return string.find(s, "%d+")`, "order 12345 shipped"},
		{"match_trim", `local s = ... return s:match("^%s*(.-)%s*$")`, "   hello world   "},
		{"gmatch_query", `local s = ... local n = 0 for k, v in s:gmatch("(%w+)=(%w+)") do n = n + #k + #v end return n`,
			"a=1&bb=22&ccc=333&name=value&x=y&page=10&sort=desc&q=lua"},
		{"gsub_1k_spaces", `local s = ... return s:gsub("%s+", " ")`, text},
		{"gsub_1k_func", `local s = ... return s:gsub("%a+", function(w) if #w > 4 then return w:upper() end end)`, text},
		{"gsub_1k_plain", `local s = ... return s:gsub(";", ",")`, text},
	} {
		var want string
		for _, impl := range []string{"luapat", "gopher-lua"} {
			b.Run(tc.name+"/"+impl, func(b *testing.B) {
				v := newTestVM(b, Options{}, time.Hour)
				if impl == "gopher-lua" {
					gopherStrlib(b, v)
				}
				L := v.L
				fn, err := L.LoadString(tc.src)
				if err != nil {
					b.Fatal(err)
				}
				arg := glua.LString(tc.arg)
				call := func() {
					L.Push(fn)
					L.Push(arg)
					L.Call(1, glua.MultRet)
				}
				// Both give the same results.
				call()
				var got []string
				for i := 1; i <= L.GetTop(); i++ {
					got = append(got, L.Get(i).String())
				}
				L.SetTop(0)
				if want == "" {
					want = strings.Join(got, "|")
				} else if g := strings.Join(got, "|"); g != want {
					b.Fatalf("%s gives %q, luapat %q", impl, g, want)
				}
				b.ReportAllocs()
				for b.Loop() {
					call()
					L.SetTop(0)
				}
			})
		}
	}
}

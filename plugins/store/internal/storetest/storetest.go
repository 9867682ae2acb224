// Package storetest is the conformance suite of the store's backends: one
// table of Lua cases, run through the store Module in a real sandbox
// LState against every backend (memory, Redis, NATS), so that "every
// function has the same meaning on every backend" is a test, not a claim.
// It also holds the tests that need several nodes (backends opened on one
// namespace): counters, capped lists and compare-and-set loops hammered
// from three of them, and expiry seen across them; and the TCP proxy the
// network backends' tests cut to simulate an outage.
//
// It is imported by tests only, and knows the store's API, not any
// backend's.
package storetest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
	"github.com/moonwire/moonwire/plugins/json"
	"github.com/moonwire/moonwire/plugins/store"
)

// Harness is one backend under test.
type Harness struct {
	// Open returns a backend on namespace ns, closed when t ends. When
	// Shared, backends opened on one ns are nodes sharing one store.
	Open func(t *testing.T, ns string) store.Backend
	// Advance lets at least d pass for the expiry of the backends on ns:
	// it moves a fake clock, or sleeps past d (a TTL that has passed has
	// expired on every backend, so that wait is a bound, not a guess).
	Advance func(t *testing.T, ns string, d time.Duration)
	// Shared says that separate Opens on one namespace share their data
	// (a network backend); the multi-node tests need it.
	Shared bool
}

// Namespace returns a random namespace, so that tests sharing a server do
// not see each other's keys.
func Namespace() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// Prelude is prepended to every case: the assertions, the modules, a
// helper that joins a list, and T, the TTL the cases use.
const Prelude = luatest.Asserts + `
local store = require "store"
local json = require "json"
local function list(t) return table.concat(t, ",") end
local T = 1 -- the TTL of the cases, in seconds
`

// Case is one conformance case: Lua code run with opts's limits.
type Case struct {
	Name string
	Opts store.Options
	Code string
}

// NewState returns a sandbox LState with m and the json module, and a
// global advance(seconds) that calls advance.
func NewState(t testing.TB, m *store.Module, advance func(time.Duration)) *glua.LState {
	t.Helper()
	L := luatest.NewState(t, m, json.New(json.Limits{}))
	L.SetGlobal("advance", L.NewFunction(func(L *glua.LState) int {
		advance(time.Duration(float64(L.CheckNumber(1)) * float64(time.Second)))
		return 0
	}))
	return L
}

// Cases are the conformance cases. Their TTLs are T seconds (Prelude): long
// enough that a check that a key is still there, made right after writing
// it, holds on a loaded machine, and short enough that a real server's
// cases wait a few seconds in all (they run in parallel).
var Cases = []Case{
	{"scalars keep their type", store.Options{}, `
		eq(store.get("missing"), nil)
		eq(store.set("s", "text"), true)
		eq(store.get("s"), "text")
		store.set("one", "1")
		eq(type(store.get("one")), "string", "the string 1")
		eq(store.get("one"), "1")
		store.set("n1", 1)
		eq(type(store.get("n1")), "number", "the number 1")
		eq(store.get("n1"), 1)
		store.set("strue", "true")
		eq(store.get("strue"), "true")
		store.set("b", true)
		eq(store.get("b"), true)
		store.set("f", false)
		eq(store.get("f"), false)
		store.set("zero", 0)
		eq(store.get("zero"), 0)
		store.set("empty", "")
		eq(store.get("empty"), "")
		store.set("bin", "\0\255\254;:,a1,1:")
		eq(store.get("bin"), "\0\255\254;:,a1,1:", "bytes that are not UTF-8 or look like syntax")
		for i, x in ipairs({0.1, 1/3, -2.5, 1e300, -1e-300, 2^53, 2^53 + 2, 5e-324, 1e21, 1e6, 123456789012345678, math.huge, -math.huge}) do
			store.set("x" .. i, x)
			eq(store.get("x" .. i), x, "number " .. i)
		end
		store.set("nan", 0/0)
		local v = store.get("nan")
		assert(v ~= v, "NaN")
		store.set(42, "numeric key")
		eq(store.get("42"), "numeric key", "keys are strings")
		store.set("", "empty key")
		eq(store.get(""), "empty key")
		local long = string.rep("k", 3000)
		store.set(long, 1)
		eq(store.get(long), 1, "a long key")
		for _, k in ipairs({"a*", "a?", "[x]", "back\\slash", "sp ace", "dot.ted", "ünï", "\0nul", "colon:key", "x.>", "*"}) do
			store.set(k, k)
			eq(store.get(k), k, k)
		end`},
	{"tables keep their shape", store.Options{}, `
		local t = {n = 1, list = {1, 2}, nested = {deep = {x = "y"}}, s = "\0\255", f = false,
			e = json.array(), o = {}, str1 = "1", num1 = 1, nul = {1, json.null, 3},
			["a;b"] = 1, ["1"] = "x", [":"] = {["s3:"] = "n1;"}, [""] = "empty key"}
		store.set("t", t)
		t.n = 2
		t.list[1] = 99
		local g = store.get("t")
		eq(g.n, 1, "mutating the original")
		eq(g.list[1], 1)
		eq(g.list[2], 2)
		eq(getmetatable(g.list).__jsontype, "array")
		eq(g.nested.deep.x, "y")
		eq(g.s, "\0\255")
		eq(g.f, false)
		eq(getmetatable(g.e).__jsontype, "array", "an empty array stays an array")
		eq(#g.e, 0)
		eq(getmetatable(g.o), nil, "an empty object stays an object")
		eq(next(g.o), nil)
		eq(type(g.str1), "string")
		eq(type(g.num1), "number")
		eq(#g.nul, 3)
		eq(g.nul[2], json.null, "null keeps its place in an array")
		eq(g["a;b"], 1)
		eq(g["1"], "x", "a string key that looks like an index")
		eq(g[1], nil)
		eq(g[":"]["s3:"], "n1;")
		eq(g[""], "empty key")
		g.n = 3
		g.nested.deep.x = "z"
		eq(store.get("t").n, 1, "mutating a copy")
		eq(store.get("t").nested.deep.x, "y")
		assert(store.get("t") ~= store.get("t"), "fresh table each get")
		store.set("mn", {a = json.null, b = 1})
		eq(store.get("mn").a, nil)
		eq(store.get("mn").b, 1)
		local d = {}
		local cur = d
		for i = 1, 60 do cur.x = {i = i} cur = cur.x end
		store.set("deep", d)
		local g = store.get("deep")
		for i = 1, 60 do g = g.x eq(g.i, i) end
		local big = {}
		for i = 1, 1000 do big[i] = {i, tostring(i)} end
		store.set("big", big)
		local g = store.get("big")
		eq(#g, 1000)
		eq(g[1000][1], 1000)
		eq(g[1000][2], "1000")`},
	{"set nil deletes", store.Options{}, `
		store.set("k", 1)
		eq(store.set("k", nil), true)
		eq(store.get("k"), nil)
		store.set("k", 1)
		store.set("k")
		eq(store.get("k"), nil)
		store.set("k", 1)
		eq(store.set("k", json.null), true)
		eq(store.get("k"), nil, "null deletes")
		eq(store.set("never", nil), true, "deleting nothing")`},
	{"set rejects what cannot be stored", store.Options{}, `
		raises("string, number, boolean, table or nil expected, got function", store.set, "k", print)
		raises("got userdata", store.set, "k", newproxy())
		raises("unsupported value type: function at $.f", store.set, "k", {f = print})
		local c = {}
		c.c = c
		raises("table contains a cycle", store.set, "k", c)
		raises("bad argument #1", store.set, nil, 1)
		raises("ttl must be a non-negative number", store.set, "k", 1, -1)
		raises("ttl must be a non-negative number", store.set, "k", 1, 0/0)
		raises("number expected", store.set, "k", 1, "soon")
		eq(store.get("k"), nil, "nothing stored by failed sets")`},
	{"ttl", store.Options{}, `
		store.set("s", "v", T)
		eq(store.get("s"), "v")
		store.set("forever", 1, 0)
		store.set("reset", 1, T)
		store.set("reset", 2)
		store.set("longer", 1, T)
		store.set("longer", 2, 60)
		store.set("shorter", 1, 60)
		store.set("shorter", 2, T)
		store.set("huge", 1, 1e300)
		store.set("tiny", 1, 1e-9)
		store.set("t", {1, 2}, T)
		advance(T)
		eq(store.get("s"), nil, "expired after ttl")
		eq(store.get("forever"), 1, "ttl 0 means no expiry")
		eq(store.get("reset"), 2, "set without ttl clears the ttl")
		eq(store.get("longer"), 2, "a new ttl replaces the old")
		eq(store.get("shorter"), nil, "a shorter one too")
		eq(store.get("huge"), 1)
		eq(store.get("tiny"), nil, "a ttl under a millisecond still expires")
		eq(store.get("t"), nil)
		eq(store.set("s", "again"), true)
		eq(store.get("s"), "again", "an expired key can be set again")`},
	{"incr", store.Options{}, `
		eq(store.incr("c"), 1, "missing key counts from 0")
		eq(store.incr("c"), 2)
		eq(store.incr("c", 5), 7)
		eq(store.incr("c", -2.5), 4.5)
		eq(store.get("c"), 4.5)
		eq(store.incr("c", 0), 4.5)
		store.set("n", 1.5)
		eq(store.incr("n"), 2.5, "a number set by set")
		eq(store.incr("f", 0.1), 0.1)
		eq(store.incr("f", 0.2), 0.1 + 0.2, "float addition, exactly")
		eq(store.get("f"), 0.1 + 0.2)
		eq(store.incr("third", 1/3), 1/3)
		eq(store.get("third"), 1/3)
		store.set("big", 2^53)
		eq(store.incr("big"), 2^53, "float64 precision, as in Lua")
		eq(store.incr("h", math.huge), math.huge)
		eq(store.get("h"), math.huge)
		local nan = store.incr("h", -math.huge)
		assert(nan ~= nan, "inf - inf")
		eq(store.incr("neg", -1e300), -1e300)
		store.set("s", "x")
		raises('store: value is not a number: "s" holds a string', store.incr, "s")
		store.set("snum", "1")
		raises('store: value is not a number: "snum" holds a string', store.incr, "snum")
		store.set("t", {})
		raises('store: value is not a number: "t" holds a table', store.incr, "t")
		store.set("a", {1})
		raises('"a" holds a table', store.incr, "a")
		store.set("b", true)
		raises('store: value is not a number: "b" holds a boolean', store.incr, "b")
		raises("number expected", store.incr, "c", "many")
		eq(store.get("s"), "x", "failed incr leaves the value")
		eq(store.get("snum"), "1")`},
	{"incr ttl", store.Options{}, `
		store.set("w", 1, T)
		eq(store.incr("w"), 2)
		eq(store.incr("fresh", 1, T), 1)
		eq(store.incr("plain"), 1)
		eq(store.incr("plain", 1, T), 2, "a ttl on an existing key")
		eq(store.incr("keep", 1, 60), 1)
		eq(store.incr("keep"), 2)
		eq(store.incr("shorter", 1, 60), 1)
		eq(store.incr("shorter", 1, T), 2, "a new ttl replaces the old")
		advance(T)
		eq(store.get("w"), nil, "the original ttl still applies")
		eq(store.get("fresh"), nil)
		eq(store.get("plain"), nil)
		eq(store.get("shorter"), nil)
		eq(store.get("keep"), 2)
		eq(store.incr("w"), 1, "expired key counts from 0 again")
		advance(T)
		eq(store.get("w"), 1, "and has no ttl")`},
	{"push keeps the last max", store.Options{}, `
		eq(store.push("l", "a", 3), 1)
		eq(store.push("l", {n = 2}, 3), 2)
		eq(store.push("l", "c", 3), 3)
		eq(store.push("l", "d", 3), 3)
		local l = store.get("l")
		eq(#l, 3)
		eq(l[1].n, 2)
		eq(l[3], "d")
		eq(getmetatable(l).__jsontype, "array")
		eq(store.push("l", "e", 1), 1, "a smaller max trims at once")
		eq(store.get("l")[1], "e")
		for i = 1, 30 do store.push("many", i, 7) end
		eq(list(store.get("many")), "24,25,26,27,28,29,30")
		eq(store.push("many", 31, 10000), 8, "a larger max keeps what is there")
		store.set("arr", {1, 2})
		eq(store.push("arr", 3, 10), 3, "a list set by set")
		eq(list(store.get("arr")), "1,2,3")
		store.set("ea", json.array())
		eq(store.push("ea", "x", 5), 1, "an empty array")
		eq(store.get("ea")[1], "x")
		eq(store.push("mix", {k = "\0;", l = {1, {2}}, e = json.array()}, 5), 1)
		eq(store.push("mix", json.null, 5), 2)
		eq(store.push("mix", "1", 5), 3)
		eq(store.push("mix", 1, 5), 4)
		eq(store.push("mix", false, 5), 5)
		local g = store.get("mix")
		eq(#g, 5)
		eq(g[1].k, "\0;")
		eq(g[1].l[2][1], 2)
		eq(getmetatable(g[1].e).__jsontype, "array")
		eq(g[2], json.null)
		eq(type(g[3]), "string")
		eq(type(g[4]), "number")
		eq(g[5], false)
		eq(store.push("mix", "last", 2), 2)
		eq(g[5], false, "the copy is not changed")
		eq(store.get("mix")[1], false)
		eq(store.get("mix")[2], "last")
		store.set("s", "x")
		raises('store: value is not a list: "s" holds a string', store.push, "s", 1, 5)
		store.set("n", 1)
		raises('store: value is not a list: "n" holds a float64', store.push, "n", 1, 5)
		store.set("m", {a = 1})
		raises('store: value is not a list: "m" holds a table', store.push, "m", 1, 5)
		store.set("bool", true)
		raises('store: value is not a list: "bool" holds a boolean', store.push, "bool", 1, 5)
		eq(store.get("s"), "x", "failed push leaves the value")
		raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 0)
		raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 10001)
		raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 1.5)
		raises("a value to push expected", store.push, "l", nil, 5)
		raises("got function", store.push, "l", print, 5)
		raises("ttl must be a non-negative number", store.push, "l", 1, 5, -1)`},
	{"push ttl", store.Options{}, `
		eq(store.push("p", 1, 10, T), 1)
		eq(store.push("p", 2, 10), 2, "keeps its ttl")
		eq(store.push("q", 1, 10), 1)
		eq(store.push("q", 2, 10, T), 2, "a ttl on an existing list")
		eq(store.push("r", 1, 10, 60), 1)
		eq(store.push("r", 2, 10), 2)
		eq(store.push("shorter", 1, 10, 60), 1)
		eq(store.push("shorter", 2, 10, T), 2)
		advance(T)
		eq(store.get("p"), nil)
		eq(store.get("q"), nil)
		eq(store.get("shorter"), nil)
		eq(list(store.get("r")), "1,2")
		eq(store.push("p", 3, 10), 1, "expired list starts again")
		advance(T)
		eq(list(store.get("p")), "3", "with no ttl")`},
	{"push limits", store.Options{MaxValueBytes: 16}, `
		-- ["abc","abc"]: 2 + 2 * (1 + 3) = 10, plus the key's 1
		eq(store.push("k", "abc", 5), 1)
		eq(store.push("k", "abc", 5), 2)
		eq(select(2, store.push("k", "abcdefg", 5)), "store: value too large")
		eq(#store.get("k"), 2, "list kept")
		eq(store.push("k", "abcdefg", 1), 1, "the trim comes before the measure")
		eq(store.get("k")[1], "abcdefg")
		eq(select(2, store.push("k", string.rep("x", 20), 5)), "store: value too large")
		eq(select(2, store.push("new", string.rep("x", 11), 5)), "store: value too large", "3 + 2 + 1 + 11 for a new list")
		eq(store.push("new", string.rep("x", 10), 5), 1, "3 + 2 + 1 + 10 fit")`},
	{"cas", store.Options{}, `
		eq(store.cas("c", nil, "one"), true, "absent: set")
		eq(store.cas("c", nil, "two"), false, "present: not set")
		eq(store.cas("c", "zero", "two"), false)
		eq(store.get("c"), "one")
		eq(store.cas("c", "one", 2), true)
		eq(store.cas("c", 2, {t = true}), true)
		eq(store.cas("c", 2, 3), false, "a table equals nothing")
		eq(store.get("c").t, true)
		store.set("n", 1)
		eq(store.cas("n", "1", 5), false, "no conversion")
		eq(store.cas("n", true, 5), false)
		eq(store.cas("n", 1, nil), true, "nil deletes")
		eq(store.get("n"), nil)
		eq(store.cas("n", 1, 2), false, "absent equals no value")
		store.set("s1", "1")
		eq(store.cas("s1", 1, 5), false, "the string 1 is not the number 1")
		eq(store.cas("s1", "1", 5), true)
		store.set("bt", true)
		eq(store.cas("bt", "true", 1), false)
		eq(store.cas("bt", false, 1), false)
		eq(store.cas("bt", true, 1), true)
		store.set("nan", 0/0)
		eq(store.cas("nan", 0/0, 1), false, "NaN equals nothing")
		store.set("arr", {1})
		eq(store.cas("arr", 1, 2), false)
		store.set("str", "abc")
		eq(store.cas("str", "abd", 1), false)
		eq(store.cas("str", "ab", 1), false)
		eq(store.cas("str", "abcd", 1), false)
		eq(store.cas("absent", nil, nil), true, "absent stays absent")
		eq(store.get("absent"), nil)
		eq(store.cas("bin", nil, "\0\255"), true)
		eq(store.cas("bin", "\0\255", "ok"), true)
		eq(store.incr("x", 0.1), 0.1)
		eq(store.incr("x", 0.2), 0.1 + 0.2)
		eq(store.cas("x", 0.1 + 0.2, "y"), true, "a number incr wrote compares as a number")
		store.set("big", 2^53 + 2)
		eq(store.cas("big", 2^53, 1), false)
		eq(store.cas("big", 2^53 + 2, 1), true)
		eq(store.cas("b", nil, false), true)
		eq(store.cas("b", false, true, T), true)
		store.set("ct", 1, T)
		eq(store.cas("ct", 1, 2), true)
		advance(T)
		eq(store.get("b"), nil, "ttl applied")
		eq(store.get("ct"), 2, "without a ttl, no expiry")
		store.set("exp", 1, T)
		advance(T)
		eq(store.cas("exp", 1, 2), false, "an expired key is absent")
		eq(store.cas("exp", nil, 2), true)
		raises("string, number, boolean or nil expected, got table", store.cas, "c", {}, 1)
		raises("got function", store.cas, "c", nil, print)
		raises("ttl must be a non-negative number", store.cas, "c", nil, 1, -1)`},
	{"cas limits", store.Options{MaxValueBytes: 16}, `
		eq(store.cas("k", nil, "x"), true)
		eq(select(2, store.cas("k", "nomatch", string.rep("x", 20))), "store: value too large", "checked before comparing")
		eq(store.get("k"), "x")
		eq(store.cas("k", "x", nil), true, "deleting needs no room")`},
	{"delete", store.Options{}, `
		store.set("a", 1)
		eq(store.delete("a"), true)
		eq(store.delete("a"), false)
		eq(store.delete("never"), false)
		store.set("t", {1, {2}})
		eq(store.delete("t"), true)
		store.push("l", 1, 5)
		eq(store.delete("l"), true)
		eq(store.push("l", 2, 5), 1, "a deleted list starts again")
		store.set("x", 1, T)
		advance(T)
		eq(store.delete("x"), false, "expired key did not exist")
		eq(store.get("x"), nil)`},
	{"keys", store.Options{}, `
		eq(list(store.keys()), "")
		eq(getmetatable(store.keys()).__jsontype, "array")
		for _, k in ipairs({"b2", "a1", "b1", "c", "b10"}) do store.set(k, true) end
		eq(list(store.keys()), "a1,b1,b10,b2,c")
		eq(list(store.keys("b")), "b1,b10,b2")
		eq(list(store.keys("b1")), "b1,b10")
		eq(list(store.keys("zzz")), "")
		eq(getmetatable(store.keys("zzz")).__jsontype, "array")
		store.set("b3", 1, T)
		eq(list(store.keys("b")), "b1,b10,b2,b3")
		store.delete("b2")
		eq(list(store.keys("b")), "b1,b10,b3", "deleted keys are not listed")
		advance(T)
		eq(list(store.keys("b")), "b1,b10", "expired keys are not listed")`},
	{"keys with any bytes", store.Options{}, `
		local ks = {"*", "a*", "a*b", "a?", "a[b]", "a\\", "a\\*", "[", "]", "x:y", "", "\0", "\255", "ü", "a.b", string.rep("L", 3000)}
		for _, k in ipairs(ks) do eq(store.set(k, 1), true, k) end
		eq(#store.keys(), #ks)
		eq(#store.keys(""), #ks)
		eq(list(store.keys("a*")), "a*,a*b", "* is not a wildcard")
		eq(list(store.keys("a?")), "a?", "? is not a wildcard")
		eq(list(store.keys("a[")), "a[b]", "[ is not a class")
		eq(list(store.keys("a\\")), "a\\,a\\*", "\\ escapes nothing")
		eq(list(store.keys("*")), "*")
		eq(list(store.keys("[")), "[")
		eq(list(store.keys("a.")), "a.b")
		eq(list(store.keys("\0")), "\0")
		eq(list(store.keys("\255")), "\255")
		eq(list(store.keys("ü")), "ü")
		eq(store.keys("L")[1], string.rep("L", 3000))
		local all = store.keys()
		for i = 2, #all do assert(all[i - 1] < all[i], "sorted by bytes") end
		for _, k in ipairs(ks) do eq(store.delete(k), true, k) end
		eq(#store.keys(), 0)`},
	{"max value bytes", store.Options{MaxValueBytes: 16}, `
		eq(store.set("k", string.rep("x", 15)), true, "1 + 15 bytes fit")
		local ok, err = store.set("k", string.rep("x", 16))
		eq(ok, nil)
		eq(err, "store: value too large")
		eq(store.get("k"), string.rep("x", 15), "old value kept")
		eq(store.set(string.rep("k", 8), 1), true, "8 + 8 bytes fit")
		eq(select(2, store.set(string.rep("k", 9), 1)), "store: value too large")
		eq(select(2, store.incr(string.rep("k", 9))), "store: value too large")
		eq(store.incr(string.rep("k", 8)), 2)
		-- {"ab", "cd"}: 2 + (1 + 2) + (1 + 2) = 8, plus the key's 1
		eq(store.set("t", {"ab", "cd"}), true)
		eq(select(2, store.set("t", {"ab", "cd", "efghijk"})), "store: value too large")
		-- {a = "xx..."}: 2 + 1 + 1 + #x, plus the key's 1
		eq(store.set("m", {a = string.rep("x", 11)}), true)
		eq(select(2, store.set("m", {a = string.rep("x", 12)})), "store: value too large")
		eq(store.set(string.rep("k", 20), nil), true, "deleting needs no room")
		local big = {}
		for i = 1, 18 do big = {big, big} end
		eq(select(2, store.set("d", big)), "store: value too large", "a table shared by many paths")`},
}

// Run runs the conformance cases against h, in parallel.
func Run(t *testing.T, h Harness) {
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			ns := Namespace()
			m := store.NewModule(h.Open(t, ns), c.Opts)
			L := NewState(t, m, func(d time.Duration) { h.Advance(t, ns, d) })
			luatest.Run(t, L, Prelude, c.Code)
		})
	}
}

// node is one backend of a multi-node test, with its module.
type node struct {
	b store.Backend
	m *store.Module
}

func openNodes(t *testing.T, h Harness, ns string, n int) []node {
	t.Helper()
	out := make([]node, n)
	for i := range out {
		b := h.Open(t, ns)
		out[i] = node{b, store.NewModule(b, store.Options{})}
	}
	return out
}

// workers runs code(w) for perNode workers on each node, all at once, each
// in its own LState as the engine's VMs have, and returns what each worker
// passed to the global record(v), in order. Any error fails t.
func workers(t *testing.T, ns []node, perNode int, code func(w int) string) [][]any {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(ns)*perNode)
	out := make([][]any, len(ns)*perNode)
	start := make(chan struct{})
	w := 0
	for _, n := range ns {
		for range perNode {
			L := NewState(t, n.m, func(time.Duration) {})
			rec := &out[w]
			L.SetGlobal("record", L.NewFunction(func(L *glua.LState) int {
				switch v := L.CheckAny(1).(type) {
				case glua.LNumber:
					*rec = append(*rec, float64(v))
				default:
					*rec = append(*rec, v.String())
				}
				return 0
			}))
			src := Prelude + code(w)
			w++
			wg.Go(func() {
				<-start
				if err := L.DoString(src); err != nil {
					errs <- err
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// share is worker w's part of total spread over n workers.
func share(total, n, w int) int {
	s := total / n
	if w < total%n {
		s++
	}
	return s
}

// RunNodes runs the tests that need several nodes sharing one store: the
// atomic operations hammered from three backends at once, and expiry as
// the other nodes see it. h must be Shared.
func RunNodes(t *testing.T, h Harness) {
	if !h.Shared {
		t.Fatal("RunNodes needs a Shared harness")
	}
	const nodeCount, perNode = 3, 4
	const workerCount = nodeCount * perNode

	t.Run("incr", func(t *testing.T) {
		t.Parallel()
		const total = 1000
		ns := openNodes(t, h, Namespace(), nodeCount)
		res := workers(t, ns, perNode, func(w int) string {
			return fmt.Sprintf(`
				for i = 1, %d do
					local n, err = store.incr("hits")
					assert(n, err)
					record(n)
				end`, share(total, workerCount, w))
		})
		// Each incr returns the count after it: 1..total, each once, or
		// an increment was lost or counted twice.
		var got []float64
		for _, r := range res {
			for _, v := range r {
				got = append(got, v.(float64))
			}
		}
		slices.Sort(got)
		for i, v := range got {
			if v != float64(i+1) {
				t.Fatalf("the %dth smallest count returned is %v: increments were lost or doubled", i+1, v)
			}
		}
		if len(got) != total {
			t.Fatalf("%d increments returned, want %d", len(got), total)
		}
		for i, n := range ns {
			if v, ok, err := n.b.Get("hits"); err != nil || !ok || v != float64(total) {
				t.Fatalf("node %d: hits = %v, %v, %v; want %d", i, v, ok, err, total)
			}
		}
	})

	t.Run("push", func(t *testing.T) {
		t.Parallel()
		const total, capped = 300, 25
		ns := openNodes(t, h, Namespace(), nodeCount)
		res := workers(t, ns, perNode, func(w int) string {
			return fmt.Sprintf(`
				for i = 1, %d do
					local item = string.format("%%02d:%%03d", %d, i)
					local n, err = store.push("all", item, 10000)
					assert(n, err)
					record(n)
					n, err = store.push("capped", {item = item}, %d)
					assert(n, err)
					record(-n)
				end`, share(total, workerCount, w), w, capped)
		})
		// Lengths returned by the uncapped pushes are 1..total, each once;
		// by the capped ones 1..capped-1 once each, then capped.
		var all, cut []int
		for _, r := range res {
			for _, v := range r {
				if n := int(v.(float64)); n > 0 {
					all = append(all, n)
				} else {
					cut = append(cut, -n)
				}
			}
		}
		slices.Sort(all)
		slices.Sort(cut)
		for i, n := range all {
			if n != i+1 {
				t.Fatalf("uncapped push lengths: the %dth is %d: a push was lost or two saw one list", i+1, n)
			}
		}
		for i, n := range cut {
			if want := min(i+1, capped); n != want {
				t.Fatalf("capped push lengths: the %dth is %d, want %d", i+1, n, want)
			}
		}
		if len(all) != total || len(cut) != total {
			t.Fatalf("%d and %d pushes returned, want %d", len(all), len(cut), total)
		}
		// Every item is in the list once, and each worker's in its order.
		checkItems := func(name string, list []any, want int, item func(any) string) {
			t.Helper()
			if len(list) != want {
				t.Fatalf("%s holds %d items, want %d", name, len(list), want)
			}
			seen := map[string]bool{}
			last := map[string]string{}
			for _, e := range list {
				it := item(e)
				if seen[it] {
					t.Fatalf("%s holds %q twice", name, it)
				}
				seen[it] = true
				w, _, _ := strings.Cut(it, ":")
				if it < last[w] {
					t.Fatalf("%s: %q after %q: a worker's pushes out of order", name, it, last[w])
				}
				last[w] = it
			}
		}
		v, _, err := ns[1].b.Get("all")
		if err != nil {
			t.Fatal(err)
		}
		checkItems("all", v.([]any), total, func(e any) string { return e.(string) })
		v, _, err = ns[2].b.Get("capped")
		if err != nil {
			t.Fatal(err)
		}
		checkItems("capped", v.([]any), capped, func(e any) string { return e.(map[string]any)["item"].(string) })
	})

	t.Run("cas", func(t *testing.T) {
		t.Parallel()
		const total = 300
		ns := openNodes(t, h, Namespace(), nodeCount)
		res := workers(t, ns, perNode, func(w int) string {
			return fmt.Sprintf(`
				for i = 1, %d do
					local tries = 0
					repeat
						tries = tries + 1
						assert(tries < 10000, "no progress")
						local v, err = store.get("n")
						assert(err == nil, err)
						local ok, err = store.cas("n", v, (v or 0) + 1)
						assert(ok ~= nil, err)
						if ok then record((v or 0) + 1) end
					until ok
				end`, share(total, workerCount, w))
		})
		var got []float64
		for _, r := range res {
			for _, v := range r {
				got = append(got, v.(float64))
			}
		}
		slices.Sort(got)
		for i, v := range got {
			if v != float64(i+1) {
				t.Fatalf("the %dth smallest value written is %v: a compare-and-set was lost", i+1, v)
			}
		}
		if v, _, err := ns[0].b.Get("n"); err != nil || v != float64(total) {
			t.Fatalf("n = %v, %v; want %d", v, err, total)
		}
	})

	t.Run("expiry seen by every node", func(t *testing.T) {
		t.Parallel()
		ns := openNodes(t, h, Namespace(), nodeCount)
		const ttl = 400 * time.Millisecond
		start := time.Now()
		if err := ns[0].b.Set("k", "v", ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := ns[0].b.Incr("c", 1, ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := ns[1].b.Incr("c", 1, 0); err != nil { // keeps the TTL
			t.Fatal(err)
		}
		if _, err := ns[2].b.Push("l", 1.0, 5, ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := ns[0].b.Push("l", 2.0, 5, 0); err != nil {
			t.Fatal(err)
		}
		if err := ns[1].b.Set("keep", true, 0); err != nil {
			t.Fatal(err)
		}
		// Before the TTL every node sees the keys; the check is skipped
		// if the machine was so slow that the TTL passed already.
		for i, n := range ns {
			v, ok, err := n.b.Get("k")
			if time.Since(start) >= ttl {
				break
			}
			if err != nil || !ok || v != "v" {
				t.Fatalf("node %d before the TTL: %v, %v, %v", i, v, ok, err)
			}
		}
		gone := func(n node) bool {
			for _, k := range []string{"k", "c", "l"} {
				if _, ok, err := n.b.Get(k); err != nil || ok {
					return false
				}
			}
			return true
		}
		deadline := time.Now().Add(10 * time.Second)
		for i, n := range ns {
			for !gone(n) {
				if time.Now().After(deadline) {
					t.Fatalf("node %d: keys still there %v after their TTL of %v", i, time.Since(start), ttl)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if took := time.Since(start); took < ttl {
				t.Fatalf("node %d: keys gone after %v, before their TTL of %v", i, took, ttl)
			}
			keys, err := n.b.Keys("")
			if err != nil || !slices.Equal(keys, []string{"keep"}) {
				t.Fatalf("node %d: Keys = %q, %v; want only keep", i, keys, err)
			}
		}
	})
}

// Proxy is a TCP proxy in front of a server, which a test can cut to
// simulate an outage the client did not cause.
type Proxy struct {
	ln     net.Listener
	target string
	hole   atomic.Bool // blackholed: accept, read, never answer
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

// NewProxy listens on a free local port and forwards to target until
// Kill or the end of t.
func NewProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept(ln)
	t.Cleanup(p.Kill)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if p.hole.Load() {
				_, _ = io.Copy(io.Discard, c)
				return
			}
			s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
			if err != nil {
				_ = c.Close()
				return
			}
			if !p.track(s) {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(s, c)
			}()
			p.pipe(c, s)
		}()
	}
}

// pipe copies from src to dst until either fails, dropping what src
// sends while the proxy is blackholed.
func (p *Proxy) pipe(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.hole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

// track records c to be closed by Kill; false if the proxy is dead.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil && p.ln == nil {
		_ = c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// Blackhole stops forwarding: connections stay open and what clients send
// is read and dropped, so that a client waits for answers that never come
// (a partition, a hung server).
func (p *Proxy) Blackhole() { p.hole.Store(true) }

// Kill closes the listener and every connection: the port refuses
// connections from now on (a server that went down).
func (p *Proxy) Kill() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	if ln == nil {
		return
	}
	_ = ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}

// RunOutage checks what a script sees when the server goes away under
// a working backend b (reaching it through p, with a timeout of timeout):
// every function returns nil and a "store: " error, within the timeout
// and without raising. It kills p, then does the same for a blackholed
// connection.
func RunOutage(t *testing.T, p *Proxy, b store.Backend, timeout time.Duration) {
	t.Helper()
	m := store.NewModule(b, store.Options{})
	L := NewState(t, m, func(time.Duration) {})
	luatest.Run(t, L, Prelude, `
		eq(store.set("k", 1), true, "the backend works before the outage")
		eq(store.get("k"), 1)`)
	calls := `
		local calls = {
			get = function() return store.get("k") end,
			set = function() return store.set("k", 2) end,
			set_ttl = function() return store.set("k", 2, 10) end,
			set_nil = function() return store.set("k", nil) end,
			incr = function() return store.incr("c") end,
			push = function() return store.push("l", 1, 5) end,
			cas = function() return store.cas("k", 1, 2) end,
			delete = function() return store.delete("k") end,
			keys = function() return store.keys() end,
		}
		for name, f in pairs(calls) do
			local start = time.monotonic()
			local ok, v, err = pcall(f)
			assert(ok, name .. " raised: " .. tostring(v))
			eq(v, nil, name .. " value")
			assert(type(err) == "string" and err:find("store: ", 1, true) == 1, name .. " error: " .. tostring(err))
			local took = time.monotonic() - start
			assert(took < LIMIT, string.format("%s took %.3f s", name, took))
		end`
	limit := (timeout + time.Second).Seconds() // the slack is for a loaded machine
	calls = strings.ReplaceAll(calls, "LIMIT", fmt.Sprint(limit))

	p.Blackhole()
	luatest.Run(t, L, Prelude, calls)
	p.Kill()
	luatest.Run(t, L, Prelude, calls)
}

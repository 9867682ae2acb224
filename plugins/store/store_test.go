package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/luatest"
)

// clock is a settable time source; Lua advances it with advance(seconds).
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time             { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration)    { c.ns.Add(int64(d)) }
func (c *clock) AdvanceSeconds(sec float64) { c.Advance(time.Duration(sec * float64(time.Second))) }

func newState(t testing.TB, s *Store, c *clock) *lua.LState {
	t.Helper()
	L := luatest.NewState(t, s)
	if c != nil {
		L.SetGlobal("advance", L.NewFunction(func(L *lua.LState) int {
			c.AdvanceSeconds(float64(L.CheckNumber(1)))
			return 0
		}))
	}
	return L
}

// newStore returns a store on a fake clock, closed when the test ends.
func newStore(t testing.TB, opts Options) (*Store, *clock) {
	t.Helper()
	c := newClock()
	if opts.Now == nil {
		opts.Now = c.Now
	}
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s, c
}

const prelude = luatest.Asserts + `
local store = require "store"
local function list(t) return table.concat(t, ",") end
`

func TestLua(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		code string
	}{
		{"get and set scalars", Options{}, `
			eq(store.get("missing"), nil)
			eq(store.set("s", "text"), true)
			eq(store.get("s"), "text")
			store.set("n", 1.5)
			eq(store.get("n"), 1.5)
			store.set("b", false)
			eq(store.get("b"), false)
			store.set("bin", "\0\255")
			eq(store.get("bin"), "\0\255")
			store.set(42, "numeric key")
			eq(store.get("42"), "numeric key", "keys are strings")`},
		{"tables are copied both ways", Options{}, `
			local t = {n = 1, list = {1, 2}, nested = {deep = {x = "y"}}}
			store.set("t", t)
			t.n = 2
			t.list[1] = 99
			eq(store.get("t").n, 1, "mutating the original")
			local g = store.get("t")
			g.n = 3
			g.nested.deep.x = "z"
			eq(store.get("t").n, 1, "mutating a copy")
			eq(store.get("t").nested.deep.x, "y")
			assert(store.get("t") ~= store.get("t"), "fresh table each get")
			eq(store.get("t").list[1], 1)
			eq(getmetatable(store.get("t").list).__jsontype, "array")`},
		{"empty array keeps its marker", Options{}, `
			store.set("e", setmetatable({}, {__jsontype = "array"}))
			eq(getmetatable(store.get("e")).__jsontype, "array")
			store.set("o", {})
			eq(getmetatable(store.get("o")), nil)`},
		{"set nil deletes", Options{}, `
			store.set("k", 1)
			eq(store.set("k", nil), true)
			eq(store.get("k"), nil)
			store.set("k", 1)
			store.set("k")
			eq(store.get("k"), nil)`},
		{"set rejects what cannot be stored", Options{}, `
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
		{"ttl", Options{}, `
			store.set("s", "v", 10)
			advance(9.9)
			eq(store.get("s"), "v")
			advance(0.1)
			eq(store.get("s"), nil, "expired at exactly ttl")
			store.set("f", 1, 0.5)
			advance(0.4)
			eq(store.get("f"), 1, "fractional ttl")
			advance(0.1)
			eq(store.get("f"), nil)
			store.set("forever", 1, 0)
			advance(1e9)
			eq(store.get("forever"), 1, "ttl 0 means no expiry")
			store.set("reset", 1, 5)
			store.set("reset", 2)
			advance(10)
			eq(store.get("reset"), 2, "set without ttl clears the ttl")
			store.set("huge", 1, 1e300)
			advance(1e6)
			eq(store.get("huge"), 1)`},
		{"incr", Options{}, `
			eq(store.incr("c"), 1, "missing key counts from 0")
			eq(store.incr("c"), 2)
			eq(store.incr("c", 5), 7)
			eq(store.incr("c", -2.5), 4.5)
			eq(store.get("c"), 4.5)
			store.set("s", "x")
			raises('store: value is not a number: "s" holds a string', store.incr, "s")
			store.set("t", {})
			raises('holds a table', store.incr, "t")
			raises("number expected", store.incr, "c", "many")
			eq(store.get("s"), "x", "failed incr leaves the value")`},
		{"incr keeps ttl", Options{}, `
			store.set("w", 1, 10)
			advance(5)
			eq(store.incr("w"), 2)
			advance(5)
			eq(store.get("w"), nil, "the original ttl still applies")
			eq(store.incr("w"), 1, "expired key counts from 0 again")
			advance(100)
			eq(store.get("w"), 1, "and has no ttl")`},
		{"push keeps the last max", Options{}, `
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
			store.set("s", "x")
			raises('store: value is not a list: "s" holds a string', store.push, "s", 1, 5)
			raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 0)
			raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 10001)
			raises("max must be a whole number from 1 to 10000", store.push, "l", 1, 1.5)
			raises("a value to push expected", store.push, "l", nil, 5)
			raises("got function", store.push, "l", print, 5)
			raises("ttl must be a non-negative number", store.push, "l", 1, 5, -1)`},
		{"push ttl", Options{}, `
			eq(store.push("p", 1, 10, 10), 1)
			advance(5)
			eq(store.push("p", 2, 10), 2, "keeps its ttl")
			advance(5)
			eq(store.get("p"), nil)
			eq(store.push("p", 3, 10), 1, "expired list starts again")`},
		{"push limits", Options{MaxValueBytes: 16, MaxKeys: 1}, `
			-- ["abc","abc"]: 2 + 2 * (1 + 3) = 10, plus the key's 1
			eq(store.push("k", "abc", 5), 1)
			eq(store.push("k", "abc", 5), 2)
			eq(select(2, store.push("k", "abcdefg", 5)), "store: value too large")
			eq(#store.get("k"), 2, "list kept")
			eq(select(2, store.push("other", 1, 5)), "store: too many keys")`},
		{"cas", Options{}, `
			eq(store.cas("c", nil, "one"), true, "absent: set")
			eq(store.cas("c", nil, "two"), false, "present: not set")
			eq(store.cas("c", "zero", "two"), false)
			eq(store.get("c"), "one")
			eq(store.cas("c", "one", 2), true)
			eq(store.cas("c", 2, {t = true}), true)
			eq(store.cas("c", 2, 3), false, "a table equals nothing")
			store.set("n", 1)
			eq(store.cas("n", "1", 5), false, "no conversion")
			eq(store.cas("n", 1, nil), true, "nil deletes")
			eq(store.get("n"), nil)
			eq(store.cas("b", nil, false), true)
			eq(store.cas("b", false, true, 5), true)
			advance(5)
			eq(store.get("b"), nil, "ttl applied")
			raises("string, number, boolean or nil expected, got table", store.cas, "c", {}, 1)
			raises("got function", store.cas, "c", nil, print)`},
		{"delete", Options{}, `
			store.set("a", 1)
			eq(store.delete("a"), true)
			eq(store.delete("a"), false)
			eq(store.delete("never"), false)
			store.set("x", 1, 1)
			advance(1)
			eq(store.delete("x"), false, "expired key did not exist")`},
		{"keys", Options{}, `
			eq(list(store.keys()), "")
			eq(getmetatable(store.keys()).__jsontype, "array")
			for _, k in ipairs({"b2", "a1", "b1", "c", "b10"}) do store.set(k, true) end
			eq(list(store.keys()), "a1,b1,b10,b2,c")
			eq(list(store.keys("b")), "b1,b10,b2")
			eq(list(store.keys("b1")), "b1,b10")
			eq(list(store.keys("zzz")), "")
			store.set("b3", 1, 1)
			eq(list(store.keys("b")), "b1,b10,b2,b3")
			advance(1)
			eq(list(store.keys("b")), "b1,b10,b2", "expired keys are not listed")`},
		{"max keys", Options{MaxKeys: 2}, `
			eq(store.set("a", 1), true)
			eq(store.set("b", 1), true)
			local ok, err = store.set("c", 1)
			eq(ok, nil)
			eq(err, "store: too many keys")
			eq(store.set("a", 2), true, "overwriting needs no room")
			local n, err = store.incr("c")
			eq(n, nil)
			eq(err, "store: too many keys")
			eq(store.incr("a"), 3, "incr of an existing key needs no room")
			store.delete("a")
			eq(store.set("c", 1), true, "room after delete")
			store.set("c", 1, 1)
			advance(1)
			eq(store.set("d", 1), true, "expired keys make room")
			eq(list(store.keys()), "b,d")`},
		{"max value bytes", Options{MaxValueBytes: 16}, `
			eq(store.set("k", string.rep("x", 15)), true, "1 + 15 bytes fit")
			local ok, err = store.set("k", string.rep("x", 16))
			eq(ok, nil)
			eq(err, "store: value too large")
			eq(store.get("k"), string.rep("x", 15), "old value kept")
			eq(store.set(string.rep("k", 8), 1), true, "8 + 8 bytes fit")
			eq(select(2, store.set(string.rep("k", 9), 1)), "store: value too large")
			eq(select(2, store.incr(string.rep("k", 9))), "store: value too large")
			-- {"ab", "cd"}: 2 + (1 + 2) + (1 + 2) = 8, plus the key's 1
			eq(store.set("t", {"ab", "cd"}), true)
			eq(select(2, store.set("t", {"ab", "cd", "efghijk"})), "store: value too large")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, c := newStore(t, tt.opts)
			luatest.Run(t, newState(t, s, c), prelude, tt.code)
		})
	}
}

// TestSharedAcrossStates is the reason the store exists: two VMs, and a VM
// built after a "reload", see the same data.
func TestSharedAcrossStates(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Options{})
	a := newState(t, s, nil)
	luatest.Run(t, a, prelude, `store.set("shared", {from = "a"}); store.incr("n")`)
	a.Close() // a reload throws the old VM away
	b := newState(t, s, nil)
	luatest.Run(t, b, prelude, `eq(store.get("shared").from, "a"); eq(store.incr("n"), 2)`)
	if v, ok := s.Get("shared"); !ok || !reflect.DeepEqual(v, map[string]any{"from": "a"}) {
		t.Fatalf("Get(shared) = %#v, %v", v, ok)
	}
}

func TestGoAPI(t *testing.T) {
	t.Parallel()
	s, c := newStore(t, Options{MaxKeys: 3, SweepInterval: -1})
	if err := s.Set("a", "x", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("b", 1.0, time.Second); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Incr("b", 2, 0); err != nil || n != 3 {
		t.Fatalf("Incr = %v, %v", n, err)
	}
	if _, err := s.Incr("a", 1, 0); !errors.Is(err, ErrNotNumber) {
		t.Fatalf("Incr on a string: %v", err)
	}
	if got := s.Keys(""); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("Keys = %v", got)
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d", s.Len())
	}
	c.Advance(time.Second)
	if s.Len() != 1 {
		t.Fatalf("Len after expiry = %d", s.Len())
	}
	if n := s.Sweep(); n != 1 {
		t.Fatalf("Sweep removed %d, want 1", n)
	}
	if n := s.Sweep(); n != 0 {
		t.Fatalf("second Sweep removed %d", n)
	}
	if err := s.Set("a", nil, 0); err != nil || s.Len() != 0 {
		t.Fatalf("Set nil: %v, Len %d", err, s.Len())
	}
	s.mu.Lock()
	janitor := s.stop != nil
	s.mu.Unlock()
	if janitor {
		t.Fatal("janitor started although SweepInterval < 0")
	}
	if New(Options{}).maxKeys != DefaultMaxKeys {
		t.Fatal("default MaxKeys not applied")
	}
}

// waitFor polls cond until it holds or a generous deadline passes, instead
// of sleeping for a guessed duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestJanitor(t *testing.T) {
	t.Parallel()
	s, c := newStore(t, Options{SweepInterval: time.Millisecond})
	if err := s.Set("keep", 1.0, 0); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	started := s.stop != nil
	s.mu.Unlock()
	if started {
		t.Fatal("janitor started before any TTL")
	}
	for i := range 100 {
		if err := s.Set(fmt.Sprint("k", i), 1.0, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	c.Advance(time.Minute)
	// Nobody reads the keys: only the janitor can remove them.
	waitFor(t, "the janitor to sweep", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.items) == 1
	})
	// Close is idempotent, heard by concurrent callers, and leaves the
	// data usable.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	select {
	case <-done:
	default:
		t.Fatal("Close returned before the janitor exited")
	}
	if err := s.Set("after", 1.0, time.Second); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Get("after"); !ok || v != 1.0 {
		t.Fatalf("Get after Close = %v, %v", v, ok)
	}
	if s.Close() != nil {
		t.Fatal("second Close failed")
	}
}

func TestCloseWithoutJanitor(t *testing.T) {
	t.Parallel()
	s := New(Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("k", 1.0, time.Hour); err != nil { // must not start a janitor
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		t.Fatal("janitor started after Close")
	}
}

// TestConcurrency runs many goroutines, each with its own LState as the
// engine's VMs have, against one Store; run it with -race.
func TestConcurrency(t *testing.T) {
	t.Parallel()
	const workers, rounds = 8, 300
	s, c := newStore(t, Options{SweepInterval: time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		L := newState(t, s, nil)
		wg.Go(func() {
			err := L.DoString(fmt.Sprintf(`
				local store = require "store"
				local me = "w%d"
				for i = 1, %d do
					store.incr("hits")
					store.push("log", me, 10000)
					repeat local v = store.get("cas") until store.cas("cas", v, (v or 0) + 1)
					store.set(me .. ":" .. i, {i = i, tags = {me}}, 1)
					local v = store.get(me .. ":" .. i)
					assert(v == nil or v.i == i)
					if i %% 10 == 0 then
						assert(#store.keys(me .. ":") >= 0)
						store.delete(me .. ":" .. (i - 1))
					end
					store.set("last", me)
				end
			`, w, rounds))
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() { // expiry racing with the writers
		for range 50 {
			c.Advance(100 * time.Millisecond)
			s.Sweep()
			time.Sleep(100 * time.Microsecond)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if v, _ := s.Get("hits"); v != float64(workers*rounds) {
		t.Fatalf("hits = %v, want %d", v, workers*rounds)
	}
	if v, _ := s.Get("cas"); v != float64(workers*rounds) {
		t.Fatalf("cas counter = %v, want %d: a compare-and-set was lost", v, workers*rounds)
	}
	if v, _ := s.Get("log"); len(v.([]any)) != workers*rounds {
		t.Fatalf("log holds %d, want %d: a push was lost", len(v.([]any)), workers*rounds)
	}
}

func BenchmarkLuaIncrGet(b *testing.B) {
	s := New(Options{})
	defer s.Close()
	L := newState(b, s, nil)
	if err := L.DoString(`store = require "store"`); err != nil {
		b.Fatal(err)
	}
	mod := L.GetGlobal("store").(*lua.LTable)
	incr, get := mod.RawGetString("incr"), mod.RawGetString("get")
	key := lua.LString("counter")
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(lua.P{Fn: incr, NRet: 1, Protect: true}, key); err != nil {
			b.Fatal(err)
		}
		if err := L.CallByParam(lua.P{Fn: get, NRet: 1, Protect: true}, key); err != nil {
			b.Fatal(err)
		}
		L.Pop(2)
	}
}

// TestByteBudget: the store refuses writes past MaxBytes (approximate heap
// bytes) and frees the budget as keys are deleted, expire or shrink, so
// scripts cannot fill the process's memory with values nobody reads. A
// chat of 120 rooms x 20 messages of 1 MB used to leave 2.1 GB here.
func TestByteBudget(t *testing.T) {
	t.Parallel()
	s, c := newStore(t, Options{MaxBytes: 1 << 20, SweepInterval: -1})
	v := string(make([]byte, 100<<10))
	var stored int
	for i := range 100 {
		err := s.Set(fmt.Sprint("k", i), v, time.Minute)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		stored++
	}
	if stored < 9 || stored > 10 {
		t.Fatalf("stored %d values of 100 KiB in a 1 MiB store", stored)
	}
	if b := s.Bytes(); b > 1<<20 || b < int64(stored)*100<<10 {
		t.Fatalf("Bytes = %d for %d values of 100 KiB", b, stored)
	}
	// Overwriting a key with a smaller value, or deleting one, makes room.
	if err := s.Set("k0", "small", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("new", v, 0); err != nil {
		t.Fatalf("after shrinking a value: %v", err)
	}
	if err := s.Set("more", v, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("past the budget: %v, want ErrFull", err)
	}
	s.Delete("new")
	if err := s.Set("more", v, 0); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
	// Expired keys are swept to make room.
	c.Advance(time.Minute)
	if err := s.Set("later", v, 0); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if _, err := s.Incr("count", 1, 0); err != nil {
		t.Fatal(err)
	}
	// A value too big for the whole store is refused as too large.
	small, _ := newStore(t, Options{MaxBytes: 1000})
	if err := small.Set("big", string(make([]byte, 2000)), 0); !errors.Is(err, ErrValueTooLarge) {
		t.Fatalf("a value larger than the store: %v", err)
	}
	// A table counts its heap, not its JSON length.
	tbl := make([]any, 1000)
	for i := range tbl {
		tbl[i] = float64(i)
	}
	if c := costOf("t", tbl); c < 16*1000 {
		t.Fatalf("a table of 1000 numbers costs %d", c)
	}
}

// TestIncrTTL: incr with a TTL (re)starts the key's expiry; without one, a
// key keeps its own.
func TestIncrTTL(t *testing.T) {
	t.Parallel()
	s, c := newStore(t, Options{SweepInterval: -1})
	if n, err := s.Incr("seq", 1, time.Minute); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	c.Advance(50 * time.Second)
	if n, _ := s.Incr("seq", 1, time.Minute); n != 2 {
		t.Fatal(n)
	}
	c.Advance(50 * time.Second) // 100 s after the first, 50 after the second
	if n, _ := s.Incr("seq", 1, 0); n != 3 {
		t.Fatalf("the TTL was not restarted: %v", n)
	}
	c.Advance(11 * time.Second)
	if _, ok := s.Get("seq"); ok {
		t.Fatal("incr without a TTL removed the key's TTL")
	}
}

// TestSetSharedTablesBounded: store.set converted its whole value before
// judging its size, and converts a table once per path that reaches it, so
// 22 levels of t = {t, t} (23 tables) cost 2^22 conversions and seconds
// before "value too large". The conversion now stops once past
// MaxValueBytes. Not parallel: it counts the process's allocations.
func TestSetSharedTablesBounded(t *testing.T) {
	s, c := newStore(t, Options{MaxValueBytes: 1000})
	L := newState(t, s, c)
	luatest.Run(t, L, prelude, `
		set, d = store.set, {} for i = 1, 18 do d = {d, d} end
		local small = {} for i = 1, 6 do small = {small, small} end
		eq(store.set("small", small), true, "6 levels fit in 1000 bytes")`)
	set := L.GetGlobal("set")
	allocs := testing.AllocsPerRun(1, func() {
		if err := L.CallByParam(lua.P{Fn: set, NRet: 2, Protect: true}, lua.LString("k"), L.GetGlobal("d")); err != nil {
			t.Fatal(err)
		}
		if err := L.Get(-1); err.String() != "store: value too large" {
			t.Fatalf("store.set: %v", err)
		}
		L.Pop(2)
	})
	// Converting all 2^19 values would take a million allocations; the
	// bound stops after a few hundred.
	if allocs > 20000 {
		t.Fatalf("store.set of a 1000-byte-bounded value made %.0f allocations", allocs)
	}
}

// TestSetStopsWhenCancelled: the conversion polls the state's context, so a
// handler timeout ends it midway. The call is made from Go because the VM
// would stop at its first instruction under a cancelled context; inside a
// builtin, only the builtin can notice.
func TestSetStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	s, c := newStore(t, Options{})
	L := newState(t, s, c)
	luatest.Run(t, L, prelude, `set, d = store.set, {} for i = 1, 18 do d = {d, d} end`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	L.SetContext(ctx)
	defer L.RemoveContext()
	set := L.GetGlobal("set")
	if err := L.CallByParam(lua.P{Fn: set, NRet: 2, Protect: true}, lua.LString("k"), L.GetGlobal("d")); err != nil {
		t.Fatal(err)
	}
	if ok, err := L.Get(-2), L.Get(-1); ok != lua.LNil || err.String() != "store: context canceled" {
		t.Fatalf("store.set under a cancelled context: %v, %v", ok, err)
	}
	if _, ok := s.Get("k"); ok {
		t.Fatal("value stored")
	}
}

package luatest_test

import (
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire/plugins/internal/budget"
	"github.com/moonwire/moonwire/plugins/internal/luatest"
	"github.com/moonwire/moonwire/plugins/lua"
)

// grab is a module that remembers the state it was opened in: the way to
// reach a route VM's state from outside plugins/lua.
type grab struct{ L *glua.LState }

func (*grab) Name() string { return "grab" }

func (g *grab) Open(L *glua.LState) int {
	g.L = L
	L.Push(L.SetFuncs(L.NewTable(), map[string]glua.LGFunction{"f": func(*glua.LState) int { return 0 }}))
	return 1
}

// TestStateIsTheSandbox: a luatest state is what a route's VM is. Both
// are described (every global, library and metatable reachable from the
// globals, the string metatable and the registry, each function by its Go
// implementation or its Lua definition; the state's options and context)
// and probed (a few builtins whose sandbox versions differ from
// gopher-lua's), and the descriptions must be equal.
func TestStateIsTheSandbox(t *testing.T) {
	t.Parallel()
	route := &grab{}
	eng := lua.New(lua.Options{Logger: slog.New(slog.DiscardHandler), Modules: []lua.Module{route}})
	t.Cleanup(eng.Close)
	// The pattern is "" because a luatest state stands for no route, and
	// ws.route is part of the description.
	r, err := eng.NewRoute(lua.RouteConfig{Pattern: "", FS: fstest.MapFS{"t.lua": {Data: []byte("return {}")}}, Script: "t.lua"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Release)
	want := describe(t, route.L)

	got := describe(t, luatest.NewState(t, &grab{}))
	// Process-wide, so the same for both: what the moonwire command sets.
	if glua.MaxArrayIndex != 1<<20 {
		t.Errorf("lua.MaxArrayIndex = %d under luatest, want 2^20 (lua.LimitArrays)", glua.MaxArrayIndex)
	}
	if diff := diffLines(want, got); diff != "" {
		t.Fatalf("a luatest state differs from a route's VM (- route VM, + luatest state):\n%s", diff)
	}
}

// describe lists what scripts meet in L, one line per value.
func describe(t *testing.T, L *glua.LState) []string {
	t.Helper()
	var out []string
	seen := map[*glua.LTable]string{}
	var walk func(path string, v glua.LValue)
	walk = func(path string, v glua.LValue) {
		switch v := v.(type) {
		case *glua.LFunction:
			if v.IsG {
				out = append(out, path+" = go "+runtime.FuncForPC(reflect.ValueOf(v.GFunction).Pointer()).Name())
			} else {
				out = append(out, fmt.Sprintf("%s = lua %s:%d", path, v.Proto.SourceName, v.Proto.LineDefined))
			}
		case *glua.LTable:
			if p, ok := seen[v]; ok {
				out = append(out, path+" = "+p)
				return
			}
			seen[v] = path
			out = append(out, path+" = table")
			var keys []glua.LValue
			v.ForEach(func(k, _ glua.LValue) { keys = append(keys, k) })
			sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
			for _, k := range keys {
				walk(fmt.Sprintf("%s[%q]", path, k.String()), v.RawGet(k))
			}
			if v.Metatable != glua.LNil {
				walk(path+"<metatable>", v.Metatable)
			}
		case glua.LString, glua.LNumber, glua.LBool:
			out = append(out, fmt.Sprintf("%s = %s %q", path, v.Type(), v.String()))
		default:
			out = append(out, path+" = "+v.Type().String())
		}
	}
	walk("_G", L.G.Global)
	for _, f := range []string{"__index", "__metatable"} {
		// GetMetaField reads the metatable itself, past its __metatable.
		walk("<string metatable>."+f, L.GetMetaField(glua.LString(""), f))
	}
	walk("<registry>", L.Get(glua.RegistryIndex))
	out = append(out, fmt.Sprintf("options %+v", L.Options))

	// What module plugins find in the state's context.
	ctx := L.Context()
	out = append(out, fmt.Sprintf("context %T", ctx))
	if ctx != nil {
		if c, ok := ctx.Value(budget.Key{}).(budget.Charger); ok {
			out = append(out, fmt.Sprintf("charge 64 MiB: %v; charge 64 MiB + 1: %v", c.Charge("x", 64<<20), c.Charge("x", 64<<20+1)))
		}
	}

	// Behaviour the walk cannot see, each probe run on its own (an error
	// is its result).
	for _, probe := range []string{
		`select("#", ("abc"):byte())`,
		`math.huge == 1/0`,
		`getmetatable("")`,
		// One byte past the limit: a state without it builds 64 MiB, not more.
		`(function() local ok, err = pcall(string.rep, "x", 2^26 + 1) return ok and "built" or err end)()`,
		`select(2, pcall(require, "nosuch"))`,
		`select(2, pcall(function() string.upper = nil end))`,
		`select(3, coroutine.resume(coroutine.create(function() return pcall(coroutine.yield) end)))`,
		`collectgarbage("count")`,
		`select(2, loadstring(string.rep("(", 300)))`,
		`select(2, pcall(ws.send, "id", "x"))`,
		`select(2, pcall(timer.after, 1, print))`,
	} {
		res := "error"
		if err := L.DoString("return tostring((" + probe + "))"); err != nil {
			res += " " + err.Error()
		} else {
			res = L.Get(-1).String()
			L.Pop(1)
		}
		out = append(out, "probe "+probe+": "+res)
	}
	return out
}

// diffLines lists the lines only in a (-) and only in b (+).
func diffLines(a, b []string) string {
	in := func(l []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range l {
			m[s] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var d strings.Builder
	for _, s := range a {
		if !inb[s] {
			d.WriteString("- " + s + "\n")
		}
	}
	for _, s := range b {
		if !ina[s] {
			d.WriteString("+ " + s + "\n")
		}
	}
	return d.String()
}

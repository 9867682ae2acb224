package scripttest

import (
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// eval runs a Lua expression and returns its value.
func eval(t *testing.T, L *lua.LState, expr string) lua.LValue {
	t.Helper()
	if err := L.DoString("return " + expr); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	v := L.Get(-1)
	L.Pop(1)
	return v
}

func TestEqualContainsShow(t *testing.T) {
	t.Parallel()
	L := lua.NewState()
	defer L.Close()
	for _, tc := range []struct {
		a, b           string
		equal, contain bool
		show           string
	}{
		{`1`, `1`, true, true, `1`},
		{`"a"`, `"a"`, true, true, `"a"`},
		{`"1"`, `1`, false, false, `"1"`},
		{`{1, {x = "y"}}`, `{1, {x = "y"}}`, true, true, `{1, {x = "y"}}`},
		{`{1, {x = "y", z = 2}}`, `{1, {x = "y"}}`, false, true, `{1, {x = "y", z = 2}}`},
		{`{1}`, `{1, 2}`, false, false, `{1}`},
		{`{["a b"] = true, [false] = 1}`, `{["a b"] = true}`, false, true, `{["a b"] = true, [false] = 1}`},
		{`nil`, `false`, false, false, `nil`},
	} {
		a, b := eval(t, L, tc.a), eval(t, L, tc.b)
		if got := equal(a, b, 0); got != tc.equal {
			t.Errorf("equal(%s, %s) = %v", tc.a, tc.b, got)
		}
		if got := contains(a, b, 0); got != tc.contain {
			t.Errorf("contains(%s, %s) = %v", tc.a, tc.b, got)
		}
		if got := show(a); got != tc.show {
			t.Errorf("show(%s) = %s, want %s", tc.a, got, tc.show)
		}
	}
}

// TestValueBounds: a cyclic table or a huge one neither hangs nor floods
// a failure message, and settings nest at most maxValueDepth deep.
func TestValueBounds(t *testing.T) {
	t.Parallel()
	L := lua.NewState()
	defer L.Close()
	cyc := eval(t, L, `(function() local a = {} a.self = a return a end)()`)
	cyc2 := eval(t, L, `(function() local a = {} a.self = a return a end)()`)
	_ = equal(cyc, cyc2, 0) // must return
	wide := eval(t, L, `(function() local a = {} for i = 1, 8 do a[i] = a end return a end)()`)
	wide2 := eval(t, L, `(function() local a = {} for i = 1, 8 do a[i] = a end return a end)()`)
	_ = equal(wide, wide2, 0) // 8^32 paths: must return within the budget
	_ = contains(wide, wide2, 0)
	if s := show(cyc); !strings.Contains(s, "{...}") {
		t.Errorf("cyclic table shown as %s", s)
	}
	big := eval(t, L, `(function() local t = {} for i = 1, 1000000 do t[i] = "xxxxxxxx" end return t end)()`)
	if s := show(big); len(s) > maxShownLength+100 || !strings.Contains(s, "bytes)") {
		t.Errorf("big table shown in %d bytes", len(s))
	}
	deep := eval(t, L, `(function() local s = {} local x = s for i = 1, 40 do x.n = {} x = x.n end return s end)()`)
	if _, err := tableMap(deep.(*lua.LTable), maxValueDepth); err == nil || !strings.Contains(err.Error(), "nested too deep") {
		t.Errorf("deep settings: %v", err)
	}
	if _, err := tableMap(eval(t, L, `{ [1] = 1, x = 2 }`).(*lua.LTable), maxValueDepth); err == nil {
		t.Error("a number key was accepted in a settings table")
	}
	m, err := tableMap(eval(t, L, `{ list = { 1, "a" }, n = 1.5, empty = {} }`).(*lua.LTable), maxValueDepth)
	if err != nil || len(m["list"].([]any)) != 2 || m["n"] != 1.5 {
		t.Errorf("tableMap = %v, %v", m, err)
	}
}

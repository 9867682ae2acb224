package luavalue

// The package's other tests are in luavalue_test: they build their states
// with luatest, which imports plugins/lua, which imports this package.

import (
	"encoding/json"
	"math"
	"testing"
)

// TestAppendJSONMatchesEncodingJSON guards the claim that Lua and Go peers
// print numbers the same way.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, f := range []float64{0, 1, -1, 0.1, 1.0 / 3, 1e-6, 1e-7, 123456789, 1 << 53, 1e20, 1e21, 5e-324, math.MaxFloat64, -1.5e300} {
		want, _ := json.Marshal(f)
		got, err := appendNumber(nil, f)
		if err != nil || string(got) != string(want) {
			t.Errorf("appendNumber(%v) = %s, %v; encoding/json says %s", f, got, err, want)
		}
	}
}

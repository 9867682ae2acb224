package lua_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeResults evaluates every `expression  --> result` line of the
// Lua API reference, so the results it shows cannot drift from what the
// code does. A result is either a Lua literal or a condition on names the
// line's statement defines.
func TestReadmeResults(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../scripts/README.md")
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^(.*?)\s+--> (.*)$`)
	var checks []string
	inLua := false
	for _, l := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(l, "```lua"):
			inLua = true
			continue
		case strings.HasPrefix(l, "```"):
			inLua = false
			continue
		}
		m := line.FindStringSubmatch(l)
		if !inLua || m == nil {
			continue
		}
		code, want := m[1], m[2]
		if strings.HasPrefix(code, "conn:") || strings.Contains(code, "conn:") && strings.HasPrefix(code, "local") {
			// Needs a live connection; covered by the API tests.
			if strings.HasPrefix(code, "conn:send(") {
				// conn:send(X) --> raw text: check X's value instead.
				arg := strings.TrimSuffix(strings.TrimPrefix(code, "conn:send("), ")")
				checks = append(checks, "assert(("+arg+") == [=["+want+"]=], "+quote(l)+")")
			}
			continue
		}
		if strings.HasPrefix(code, "local ") {
			checks = append(checks, "do "+code+"; assert("+want+", "+quote(l)+") end")
			continue
		}
		checks = append(checks, "assert(("+code+") == "+want+", "+quote(l)+")")
	}
	if len(checks) < 6 {
		t.Fatalf("found only %d checks; did the README change shape?", len(checks))
	}
	_, err = startErr(t, strings.Join(checks, "\n")+"\nreturn {}")
	if err != nil {
		t.Fatal(err)
	}
}

func quote(s string) string { return "[==[" + s + "]==]" }

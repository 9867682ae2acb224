package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/moonwire/moonwire"

// rule: packages matching from must not depend on anything matching one of
// banned (prefix match; a trailing "/" matches only subpackages).
type rule struct {
	why    string
	from   func(pkg string) bool
	banned []string
}

func under(prefix string) func(string) bool {
	return func(p string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
}

func is(names ...string) func(string) bool {
	return func(p string) bool {
		for _, n := range names {
			if p == n {
				return true
			}
		}
		return false
	}
}

func TestImportRules(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		deps[f[0]] = f[1:]
	}
	rules := []rule{
		{
			"router must not know Lua, TOML or plugins (only router/config reads TOML)",
			func(p string) bool { return under(mod+"/router")(p) && p != mod+"/router/config" },
			[]string{mod + "/plugins", "github.com/yuin/gopher-lua", "github.com/BurntSushi/toml"},
		},
		{
			"router/config knows TOML and the schema, not the router or plugins",
			is(mod + "/router/config"),
			[]string{mod + "/router", mod + "/plugins", "github.com/yuin/gopher-lua"},
		},
		{
			"leaves must not import the router",
			func(p string) bool {
				return under(mod+"/router/poll")(p) || under(mod+"/router/wsconn")(p) ||
					under(mod+"/router/internal")(p) || under(mod+"/router/broker")(p)
			},
			[]string{mod + "/router"},
		},
		{
			"module plugins depend on gopher-lua only, never on each other or the router",
			is(mod+"/plugins/json", mod+"/plugins/crypto", mod+"/plugins/store", mod+"/plugins/http"),
			[]string{mod + "/router", mod + "/plugins/lua", mod + "/plugins/json", mod + "/plugins/crypto", mod + "/plugins/store", mod + "/plugins/http"},
		},
		{
			"the Lua pattern matcher knows nothing of gopher-lua or moonwire",
			is(mod + "/plugins/lua/internal/luapat"),
			[]string{mod, "github.com/yuin/gopher-lua"},
		},
		{
			"the moonwire package assembles the rest: nothing below it imports it (moontest runs it for tests)",
			func(p string) bool {
				return under(mod+"/router")(p) || under(mod+"/plugins")(p) || under(mod+"/scripts")(p) ||
					(under(mod+"/internal")(p) && p != mod+"/internal/moontest")
			},
			[]string{mod + "$"},
		},
		{
			"the command line sits on the moonwire package, not under it",
			func(p string) bool { return p != mod+"/cli" && !under(mod+"/cmd")(p) && !under(mod+"/examples")(p) },
			[]string{mod + "/cli"},
		},
		{
			"nothing imports cmd",
			func(p string) bool { return !under(mod + "/cmd")(p) },
			[]string{mod + "/cmd"},
		},
	}
	checked := 0
	for pkg, ds := range deps {
		for _, r := range rules {
			if !r.from(pkg) {
				continue
			}
			checked++
			for _, d := range ds {
				for _, b := range r.banned {
					if d == pkg {
						continue
					}
					exact, isExact := strings.CutSuffix(b, "$") // "$": that package only
					if (isExact && d == exact) || (!isExact && (d == b || strings.HasPrefix(d, b+"/"))) {
						// router itself is banned for leaves, but a leaf may
						// import a sibling leaf (router/wsconn -> router/internal/...).
						if b == mod+"/router" && strings.HasPrefix(d, mod+"/router/") {
							continue
						}
						t.Errorf("%s imports %s: %s", pkg, d, r.why)
					}
				}
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d package/rule pairs checked; is go list output as expected?", checked)
	}
}

package moonwire_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router/broker"
)

// fixedModule is a module that takes its table only at start: it is no
// Reconfigurer, so a reload that changes [plugins.fixed] is refused.
type fixedModule struct{ value string }

func (m *fixedModule) Name() string { return "fixed" }

func (m *fixedModule) Open(L *glua.LState) int {
	t := L.NewTable()
	t.RawSetString("value", glua.LString(m.value))
	L.Push(t)
	return 1
}

func init() {
	moonwire.RegisterModule(moonwire.ModuleInfo{
		Name:     "fixed",
		Optional: true,
		New: func(mc moonwire.ModuleContext) (lua.Module, error) {
			var c struct{ Value string }
			if err := mc.Config.Decode(&c); err != nil {
				return nil, err
			}
			return &fixedModule{value: c.Value}, nil
		},
	})
}

// TestReloadRefusesAPluginTableItCannotTake: a module that is not a
// Reconfigurer keeps its table until a restart; a reload that changes it
// fails with the usual message, and the running module stays.
func TestReloadRefusesAPluginTableItCannotTake(t *testing.T) {
	t.Parallel()
	conf := func(v string) string {
		return "[plugins.fixed]\nvalue = \"" + v + "\"\n[[routes]]\npath = \"/f\"\nscript = \"f.lua\"\nmodules = [\"fixed\"]\n"
	}
	s := moontest.Start(t, map[string]string{
		"moonwire.toml": conf("one"),
		"scripts/f.lua": `return { on_message = function(conn, m) conn:send(fixed.value .. " " .. m) end }`,
	})
	c := moontest.Dial(t, s.URL("/f"))
	c.Send("a")
	c.Expect("one a")
	s.WriteFile(t, "moonwire.toml", conf("two"))
	err := s.Reload()
	if err == nil || !strings.Contains(err.Error(), "reload not supported for plugins.fixed: the fixed module takes its table only at start") {
		t.Fatalf("reload: %v", err)
	}
	c.Send("b")
	c.Expect("one b")
	// A route that does not list the module does not see it.
	s.WriteFile(t, "moonwire.toml", conf("one")+"[[routes]]\npath = \"/g\"\nscript = \"g.lua\"\n")
	s.WriteFile(t, "scripts/g.lua", `return { on_message = function(conn, m) conn:send(tostring(fixed)) end }`)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	g := moontest.Dial(t, s.URL("/g"))
	g.Send("x")
	g.Expect("nil")

	// No route lists it and no table names it: the instance goes idle,
	// and comes back when a route lists it again with the table it runs
	// with; another table is refused as before, since it is the same
	// instance.
	s.WriteFile(t, "moonwire.toml", "[[routes]]\npath = \"/g\"\nscript = \"g.lua\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	s.WriteFile(t, "moonwire.toml", conf("two"))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "reload not supported for plugins.fixed") {
		t.Fatalf("relisted with another table: %v", err)
	}
	s.WriteFile(t, "moonwire.toml", conf("one"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	f := moontest.Dial(t, s.URL("/f"))
	f.Send("c")
	f.Expect("one c")
}

// TestRegistryRefusesBadRegistrations: a duplicate name, a reserved one,
// one that is no Lua identifier and a registration without New each make
// New and Check fail with an error naming where it was registered. The
// registry is process-wide, so the registrations are made in a child
// process: this one's other tests must not see them.
func TestRegistryRefusesBadRegistrations(t *testing.T) {
	if os.Getenv("MOONWIRE_REGISTRY_CHILD") == "" {
		t.Parallel()
		cmd := exec.Command(os.Args[0], "-test.run=^TestRegistryRefusesBadRegistrations$", "-test.v")
		cmd.Env = append(os.Environ(), "MOONWIRE_REGISTRY_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestRegistryRefusesBadRegistrations") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	newModule := func(moonwire.ModuleContext) (lua.Module, error) { return &fixedModule{}, nil }
	moonwire.RegisterModule(moonwire.ModuleInfo{Name: "fixed", New: newModule})
	moonwire.RegisterModule(moonwire.ModuleInfo{Name: "string", New: newModule})
	moonwire.RegisterModule(moonwire.ModuleInfo{Name: "my-module", New: newModule})
	moonwire.RegisterModule(moonwire.ModuleInfo{Name: "nothing"})
	moonwire.RegisterBroker(moonwire.BrokerInfo{Name: "json", New: func(moonwire.BrokerContext) (broker.Broker, error) { return nil, nil }})
	wants := []string{
		`module "fixed" is registered twice: at `, "registry_test.go:",
		`module "string" (registered at `, "the name is a Lua keyword or a global every script has",
		`module "my-module" (registered at `, "a plugin name is a Lua identifier",
		`module "nothing" (registered at `, "has no New function",
		`broker "json" is registered twice`, "and as a module at ",
	}
	cfg, err := moonwire.DefaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	_, err = moonwire.New(moonwire.Options{Config: cfg})
	if err == nil {
		t.Fatal("New succeeded with bad registrations")
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("New's error lacks %q:\n%v", w, err)
		}
	}
	errs := moonwire.Check(cfg)
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	if !strings.Contains(strings.Join(all, "\n"), `module "fixed" is registered twice`) {
		t.Errorf("Check: %q", all)
	}
}

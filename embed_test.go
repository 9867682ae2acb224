package moonwire_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	glua "github.com/yuin/gopher-lua"

	"github.com/moonwire/moonwire"
	_ "github.com/moonwire/moonwire/examples/plugin/greet"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router/config"
)

// embedded builds a server as a host program would (no OwnProcess) from
// files, on 127.0.0.1:0.
func embedded(t *testing.T, files map[string]string) *moonwire.Server {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, "moonwire.toml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := moonwire.New(moonwire.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

const storeScript = `return { on_message = function(conn, msg)
  if msg == "get" then conn:send(tostring(store.get("k"))) else store.set("k", msg) conn:send("ok") end
end }`

// TestTwoServersInOneProcess: two embedded servers keep their own store,
// routes and shutdown, and neither changes process-wide state.
func TestTwoServersInOneProcess(t *testing.T) {
	if os.Getenv("MOONWIRE_EMBED_CHILD") == "" {
		// A process of its own: other tests run servers with OwnProcess,
		// which caps gopher-lua's arrays for the whole process.
		cmd := exec.Command(os.Args[0], "-test.run=^TestTwoServersInOneProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "MOONWIRE_EMBED_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestTwoServersInOneProcess") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	files := map[string]string{
		"moonwire.toml": "[[routes]]\npath = \"/s\"\nscript = \"s.lua\"\n",
		"scripts/s.lua": storeScript,
	}
	a, b := embedded(t, files), embedded(t, files)
	if glua.MaxArrayIndex != 67108864 {
		t.Errorf("MaxArrayIndex = %d: an embedded server changed gopher-lua's global", glua.MaxArrayIndex)
	}
	if a.Engine.MemoryLimit() != 0 {
		t.Errorf("memory limit %d without OwnProcess or a configured limit", a.Engine.MemoryLimit())
	}
	ca, cb := moontest.Dial(t, "ws://"+a.Addr()+"/s"), moontest.Dial(t, "ws://"+b.Addr()+"/s")
	ca.Send("from a")
	ca.Expect("ok")
	cb.Send("get")
	cb.Expect("nil")
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	cb.Send("from b")
	cb.Expect("ok")
	cb.Send("get")
	cb.Expect("from b")
}

// TestReloadReconfiguresAPlugin: a changed [plugins.NAME] reaches the
// running module at the swap; a table the plugin refuses fails the reload
// and the running configuration stays.
func TestReloadReconfiguresAPlugin(t *testing.T) {
	t.Parallel()
	conf := func(greeting string) string {
		return "[plugins.greet]\ngreeting = \"" + greeting + "\"\n[[routes]]\npath = \"/g\"\nscript = \"g.lua\"\nmodules = [\"greet\"]\n"
	}
	s := moontest.Start(t, map[string]string{
		"moonwire.toml": conf("Hello"),
		"scripts/g.lua": `return { on_message = function(conn, m) conn:send(greet.hello(m)) end }`,
	})
	c := moontest.Dial(t, s.URL("/g"))
	c.Send("Ada")
	c.Expect("Hello, Ada!")
	s.WriteFile(t, "moonwire.toml", conf("Hi"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c.Send("Ada")
	c.Expect("Hi, Ada!")
	if st := s.Status(); strings.Join(st.Server, ",") != "plugins.greet" {
		t.Errorf("reload says %q changed, want plugins.greet", st.Server)
	}
	s.WriteFile(t, "moonwire.toml", conf(""))
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "plugins.greet.greeting: required") {
		t.Fatalf("reload with an empty greeting: %v", err)
	}
	c.Send("Ada")
	c.Expect("Hi, Ada!")
}

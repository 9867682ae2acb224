package cli

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/moonwire/moonwire/internal/moontest"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut moontest.Logs
	code := run(args, &out, &errOut, nil, nil)
	return code, out.String(), errOut.String()
}

func writeFiles(t *testing.T, files map[string]string) string {
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
	return dir
}

// serving is the command running in the background as a server.
type serving struct {
	addr        string
	out, errOut moontest.Logs
	sigs        chan os.Signal
	exit        chan int
}

// startServing runs the command with args and waits until it serves.
func startServing(t *testing.T, args ...string) *serving {
	t.Helper()
	s := &serving{sigs: make(chan os.Signal, 2), exit: make(chan int, 1)}
	ready := make(chan string, 1)
	go func() { s.exit <- run(args, &s.out, &s.errOut, s.sigs, ready) }()
	select {
	case s.addr = <-ready:
	case code := <-s.exit:
		t.Fatalf("exited %d before serving\n%s", code, s.errOut.String())
	case <-time.After(moontest.Timeout):
		t.Fatal("no ready signal")
	}
	return s
}

// wait returns the command's exit code, failing the test if it does not
// exit in time; what says what was meant to end it.
func (s *serving) wait(t *testing.T, what string) int {
	t.Helper()
	select {
	case code := <-s.exit:
		return code
	case <-time.After(moontest.Timeout):
		t.Fatalf("%s did not end the command", what)
		return 0
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "moonwire ") {
		t.Fatalf("version: %d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"frobnicate"}, {"-nope"}, {"check", "-nope"}, {"-log-level", "loud"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestCheckShippedConfigs(t *testing.T) {
	t.Parallel()
	configs := []string{""} // the embedded default
	found, _ := filepath.Glob("../examples/*/moonwire.toml")
	configs = append(configs, found...)
	if len(found) == 0 {
		t.Fatal("no example configs found")
	}
	for _, cfg := range configs {
		args := []string{"check"}
		if cfg != "" {
			args = append(args, "-config", cfg)
		}
		code, out, errOut := runCmd(t, args...)
		if filepath.Base(filepath.Dir(cfg)) == "plugin" {
			// The custom build's config needs its plugin, which the stock
			// command does not have: it says so.
			want := `plugins.greet: no plugin of that name is registered (registered: crypto, http, json, memory, metrics, nats, redis, store)`
			if code != 1 || !strings.Contains(out, want) {
				t.Errorf("check %q: exit %d, want 1 and %q\n%s%s", cfg, code, want, out, errOut)
			}
			continue
		}
		if code != 0 || !strings.Contains(out, ": ok (") {
			t.Errorf("check %q: exit %d\n%s%s", cfg, code, out, errOut)
		}
	}
}

func TestCheckReportsFileAndLine(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": `
[[routes]]
path = "/a"
script = "syntax.lua"

[[routes]]
path = "/b"
script = "runtime.lua"

[[routes]]
path = "/c"
script = "fine.lua"
`,
		"scripts/syntax.lua":  "local M = {}\n\nfunction M.on_message(conn, data)\n  conn:send(data\nend\nreturn M\n",
		"scripts/runtime.lua": "local M = {}\nlocal x = nil\nprint(x.field)\nreturn M\n",
		"scripts/fine.lua":    "return {}\n",
	})
	code, out, _ := runCmd(t, "check", "-config", filepath.Join(dir, "moonwire.toml"))
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per broken script, got:\n%s", out)
	}
	wantPrefix := []string{
		filepath.Join(dir, "scripts", "syntax.lua") + ":5: ",
		filepath.Join(dir, "scripts", "runtime.lua") + ":3: ",
	}
	for i, p := range wantPrefix {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d: %q, want prefix %q", i, lines[i], p)
		}
	}
}

func TestCheckReportsConfigKeys(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": `
[server]
max_message_size = "12XB"
listne = "x"

[[routes]]
path = "/a"
script = "missing.lua"
`,
		"scripts/other.lua": "return {}\n",
	})
	file := filepath.Join(dir, "moonwire.toml")
	code, out, _ := runCmd(t, "check", "-config", file)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		file + ": server.listne: unknown key",
		file + ": server.max_message_size: invalid size",
		file + ": routes[0].script: \"missing.lua\" not found",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The server refuses to start on the same file, with the same words.
	code, _, errOut := runCmd(t, "-config", file)
	if code != 1 || !strings.Contains(errOut, "server.listne: unknown key") {
		t.Fatalf("serve: exit %d\n%s", code, errOut)
	}
}

func TestUnreachableBrokerFailsTheStart(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a port nothing listens on
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": "[broker]\nkind = \"redis\"\nurl = \"redis://:secret@" + addr + "/0\"\ntimeout = \"1s\"\n\n[[routes]]\npath = \"/a\"\nscript = \"a.lua\"\n",
		"scripts/a.lua": "return {}\n",
	})
	code, _, errOut := runCmd(t, "-config", filepath.Join(dir, "moonwire.toml"), "-listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "moonwire.toml: broker.url: broker redis: redis: connect redis://:xxxxx@"+addr) || strings.Contains(errOut, "secret") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
}

// TestServeAndDrain runs the command as a user would and stops it with
// SIGTERM: every client gets 1001, every on_close runs, the command exits 0.
func TestServeAndDrain(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": `
[server]
listen = "127.0.0.1:0"
drain_timeout = "10s"

[[routes]]
path = "/echo"
script = "echo.lua"
`,
		"scripts/echo.lua": `
return {
  on_message = function(conn, data) conn:send(data) end,
  on_close = function(conn, code, reason) log.info("on_close ran", { code = code, reason = reason }) end,
}`,
	})
	s := startServing(t, "-config", filepath.Join(dir, "moonwire.toml"))
	if !strings.Contains(s.out.String(), "ws://"+s.addr+"/echo") {
		t.Fatalf("startup output lacks the URL:\n%s", s.out.String())
	}
	var clients []*moontest.Client
	for range 3 {
		c := moontest.Dial(t, "ws://"+s.addr+"/echo")
		c.Send("hi")
		c.Expect("hi")
		clients = append(clients, c)
	}
	s.sigs <- syscall.SIGHUP // not a stop
	s.sigs <- syscall.SIGTERM
	for _, c := range clients {
		c.ExpectClose(1001, "going away")
	}
	if code := s.wait(t, "draining"); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.errOut.String())
	}
	if n := strings.Count(s.errOut.String(), "on_close ran"); n != 3 {
		t.Fatalf("on_close ran %d times, want 3\n%s", n, s.errOut.String())
	}
	if !strings.Contains(s.errOut.String(), "code=1001") {
		t.Fatalf("on_close did not see 1001:\n%s", s.errOut.String())
	}
}

// TestSecondSignalCutsTheDrainShort: a client that never answers the close
// keeps a drain waiting; a second signal ends it at once.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml":    "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1h\"\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n",
		"scripts/echo.lua": "return {}\n",
	})
	s := startServing(t, "-config", filepath.Join(dir, "moonwire.toml"))
	c := moontest.Dial(t, "ws://"+s.addr+"/echo")
	s.sigs <- syscall.SIGINT
	// Read the close frame but do not answer it.
	f, err := c.ReadFrame(0)
	if err != nil || f.Op != ws.OpClose {
		t.Fatalf("want a close frame, got %v %v", f.Op, err)
	}
	s.sigs <- syscall.SIGINT
	if code := s.wait(t, "a second signal"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(s.errOut.String(), "second signal") {
		t.Fatalf("log:\n%s", s.errOut.String())
	}
}

// TestDrainEndsWhateverTheScriptsDo: a callback that never returns (here a
// loop under a handler timeout of an hour) cannot stop a drain: the
// command exits within drain_timeout plus the router's abandon grace,
// with exit code 1 and a log line naming the stuck route.
func TestDrainEndsWhateverTheScriptsDo(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"300ms\"\n\n" +
			"[scripts]\nhandler_timeout = \"1h\"\n\n[[routes]]\npath = \"/spin\"\nscript = \"spin.lua\"\n",
		"scripts/spin.lua": "return { on_message = function() log.info('spinning') while true do end end }\n",
	})
	s := startServing(t, "-config", filepath.Join(dir, "moonwire.toml"))
	c := moontest.Dial(t, "ws://"+s.addr+"/spin")
	c.Send("go")
	moontest.WaitFor(t, "the callback to spin", func() bool { return strings.Contains(s.errOut.String(), "spinning") })
	start := time.Now()
	s.sigs <- syscall.SIGTERM
	if code := s.wait(t, "SIGTERM with a stuck script"); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, s.errOut.String())
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if log := s.errOut.String(); !strings.Contains(log, "stuck in a handler") || !strings.Contains(log, "route=/spin") {
		t.Fatalf("no log line names the stuck route:\n%s", log)
	}
}

// TestSIGTERMDuringASlowReload: a SIGHUP reload whose new script's top
// level runs on (up to its handler timeout of an hour) must not hold up a
// SIGTERM: the reload runs beside the signal loop, and the drain cuts its
// build short. It used to be read only once the reload had finished.
func TestSIGTERMDuringASlowReload(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml": "[server]\nlisten = \"127.0.0.1:0\"\n\n[scripts]\nreload = false\nhandler_timeout = \"1h\"\n\n" +
			"[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n",
		"scripts/echo.lua": `return { on_message = function(conn, data) conn:send(data) end }`,
	})
	s := startServing(t, "-config", filepath.Join(dir, "moonwire.toml"))
	if err := os.WriteFile(filepath.Join(dir, "scripts", "echo.lua"), []byte(`log.info("loading slowly") while true do end`), 0o644); err != nil {
		t.Fatal(err)
	}
	s.sigs <- syscall.SIGHUP
	moontest.WaitFor(t, "the slow top level", func() bool { return strings.Contains(s.errOut.String(), "loading slowly") })
	s.sigs <- syscall.SIGTERM
	defer func() {
		if t.Failed() {
			t.Log(s.errOut.String())
		}
	}()
	if code := s.wait(t, "SIGTERM during a reload"); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.errOut.String())
	}
}

// TestSIGHUPReloadsAndLogsAreJSON: with -log-format json every line is a
// JSON object; SIGHUP applies an edited script to the open connection; the
// access log line names the route, the connection and how it ended.
func TestSIGHUPReloadsAndLogsAreJSON(t *testing.T) {
	t.Parallel()
	dir := writeFiles(t, map[string]string{
		"moonwire.toml":    "[server]\nlisten = \"127.0.0.1:0\"\n\n[scripts]\nreload = false\n\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n",
		"scripts/echo.lua": `return { on_message = function(conn, data) conn:send("v1 " .. data) end }`,
	})
	s := startServing(t, "-config", filepath.Join(dir, "moonwire.toml"), "-log-format", "json", "-log-level", "debug")
	c := moontest.Dial(t, "ws://"+s.addr+"/echo")
	c.Send("a")
	c.Expect("v1 a")
	if err := os.WriteFile(filepath.Join(dir, "scripts", "echo.lua"), []byte(`return { on_message = function(conn, data) conn:send("v2 " .. data) end }`), 0o644); err != nil {
		t.Fatal(err)
	}
	s.sigs <- syscall.SIGHUP
	moontest.WaitFor(t, "the reload", func() bool { return strings.Contains(s.errOut.String(), `"msg":"reloaded"`) })
	c.Send("b")
	c.Expect("v2 b")
	c.Close(4000)
	moontest.WaitFor(t, "the access log line", func() bool { return strings.Contains(s.errOut.String(), `"msg":"connection closed"`) })
	s.sigs <- syscall.SIGTERM
	if code := s.wait(t, "SIGTERM"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(s.errOut.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		if m["msg"] == "connection closed" {
			if m["route"] != "/echo" || m["conn"] == nil || m["code"] != 4000.0 || m["messages_in"] != 2.0 || m["messages_out"] != 2.0 || m["duration"] == nil {
				t.Fatalf("access log line: %s", line)
			}
		}
	}
}

// TestHelpListsCommands: -h shows the commands, not only the flags.
func TestHelpListsCommands(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCmd(t, "-h")
	if code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	for _, want := range []string{"moonwire check", "moonwire version", "-log-level"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("-h does not mention %q:\n%s", want, errOut)
		}
	}
}

// TestCheckWarnsOfAPublicAdminListener: an admin listener other hosts can
// reach, without a token, is a warning (exit 0); pprof there is an error.
func TestCheckWarnsOfAPublicAdminListener(t *testing.T) {
	t.Parallel()
	routes := "\n[[routes]]\npath = \"/echo\"\nscript = \"echo.lua\"\n"
	dir := writeFiles(t, map[string]string{
		"warn.toml":        "[admin]\nlisten = \"0.0.0.0:0\"\n" + routes,
		"pprof.toml":       "[admin]\nlisten = \"0.0.0.0:0\"\npprof = true\n" + routes,
		"scripts/echo.lua": "return {}\n",
	})
	code, out, _ := runCmd(t, "check", "-config", filepath.Join(dir, "warn.toml"))
	if code != 0 || !strings.Contains(out, "warning: admin.listen: \"0.0.0.0:0\" is not a loopback address") {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "check", "-config", filepath.Join(dir, "pprof.toml"))
	if code != 1 || !strings.Contains(out, "admin.pprof: refused on \"0.0.0.0:0\"") {
		t.Fatalf("check with pprof: exit %d\n%s", code, out)
	}
}

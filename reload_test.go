package moonwire_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/router/config"
	"github.com/moonwire/moonwire/scripts"
)

const reloadConfig = `
[[routes]]
path = "/v"
script = "v.lua"
vms = 2
`

// versioned is a script that answers with its version and keeps state in
// the places that survive a reload (attributes, rooms, store) and one that
// does not (a per-VM table).
func versioned(v string) string {
	return fmt.Sprintf(`
local M = {}
local pervm = {}
function M.on_start()
  store.incr("starts")
  timer.every(0.01, function() store.set("ticker", %q) end)
end
function M.on_open(conn)
  conn:set("user", "ann")
  conn:join("room")
  pervm[conn.id] = true
end
function M.on_message(conn, data)
  conn:send(%q .. " " .. data .. " user=" .. tostring(conn:get("user")) ..
    " rooms=" .. table.concat(conn:rooms(), ",") .. " members=" .. ws.room_size("room") ..
    " pervm=" .. tostring(pervm[conn.id] == true))
end
return M
`, v, v)
}

func TestReloadChangedScriptServesOpenConnections(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(reloadConfig, "scripts/v.lua", versioned("v1")))
	c := moontest.Dial(t, s.URL("/v"))
	c.Send("a")
	c.Expect("v1 a user=ann rooms=room members=1 pervm=true")
	moontest.WaitFor(t, "v1's timer", func() bool { v, _ := s.Store.Get("ticker"); return v == "v1" })

	s.WriteFile(t, "scripts/v.lua", versioned("v2"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	// The same connection, new code; attributes, rooms and store survived,
	// per-VM tables did not.
	c.Send("b")
	c.Expect("v2 b user=ann rooms=room members=1 pervm=false")
	if st := s.Status(); !st.OK || st.Reloads != 1 || len(st.Changed) != 1 || st.Changed[0] != "/v" {
		t.Fatalf("status %+v", st)
	}
	// on_start ran again and the old timer is gone: the ticker settles on v2.
	moontest.WaitFor(t, "on_start to run again", func() bool { v, _ := s.Store.Get("starts"); return v == 2.0 })
	moontest.WaitFor(t, "v2's timer", func() bool { v, _ := s.Store.Get("ticker"); return v == "v2" })
	for range 20 {
		if v, _ := s.Store.Get("ticker"); v != "v2" {
			t.Fatal("the old version's timer still runs")
		}
		c.Send("x")
		c.Next()
	}

	// Reloading an unchanged script keeps the running handler.
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); len(st.Changed) != 0 {
		t.Fatalf("an unchanged script was swapped: %+v", st)
	}
	c.Send("c")
	c.Expect("v2 c user=ann rooms=room members=1 pervm=false")
}

func TestReloadBrokenScriptKeepsTheOldVersion(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(reloadConfig, "scripts/v.lua", versioned("v1")))
	c := moontest.Dial(t, s.URL("/v"))
	for _, broken := range []string{
		"local M = {\nfunction M.on_message(conn) end\nreturn M\n", // syntax
		"local x = nil\nreturn x.y\n",                              // runtime, top level
		"return 42\n",                                              // not a table
	} {
		s.WriteFile(t, "scripts/v.lua", broken)
		err := s.Reload()
		if err == nil || !strings.Contains(err.Error(), "v.lua:") && !strings.Contains(err.Error(), "v.lua: ") {
			t.Fatalf("reload of %q: %v", broken, err)
		}
		st := s.Status()
		if st.OK || st.Err != err.Error() {
			t.Fatalf("status %+v", st)
		}
		c.Send("still")
		c.Expect("v1 still user=ann rooms=room members=1 pervm=true")
	}
	// A broken config is refused the same way, naming the key.
	s.WriteFile(t, "moonwire.toml", reloadConfig+"\n[server]\nmax_message_size = \"lots\"\n")
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "server.max_message_size") {
		t.Fatalf("broken config: %v", err)
	}
	c.Send("still")
	c.Expect("v1 still user=ann rooms=room members=1 pervm=true")
}

func TestReloadRoutesAddedRemovedAndMoved(t *testing.T) {
	t.Parallel()
	echo := `return { on_message = function(conn, data) conn:send(ws.route .. " " .. data) end,
  on_close = function(conn, code, reason) log.info("closed", { route = ws.route, code = code, reason = reason }) end }`
	s := moontest.Start(t, moontest.Files(`
[[routes]]
path = "/a"
script = "a.lua"

[[routes]]
path = "/b"
script = "a.lua"
`, "scripts/a.lua", echo, "scripts/b.lua", echo))
	a := moontest.Dial(t, s.URL("/a"))
	b := moontest.Dial(t, s.URL("/b"))

	// /b moves to another script (remove + add), /c appears, /a stays.
	s.WriteFile(t, "moonwire.toml", `
[[routes]]
path = "/a"
script = "a.lua"

[[routes]]
path = "/b"
script = "b.lua"

[[routes]]
path = "/c"
script = "a.lua"
`)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	b.ExpectClose(1001, "route removed")
	a.Send("kept")
	a.Expect("/a kept")
	c := moontest.Dial(t, s.URL("/c"))
	c.Send("new")
	c.Expect("/c new")
	b2 := moontest.Dial(t, s.URL("/b"))
	b2.Send("moved")
	b2.Expect("/b moved")

	// /c goes away: its connection is told, new ones get 404.
	s.WriteFile(t, "moonwire.toml", "[[routes]]\npath = \"/a\"\nscript = \"a.lua\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	c.ExpectClose(1001, "route removed")
	b2.ExpectClose(1001, "route removed")
	if _, err := moontest.TryDial(t, s.URL("/c")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("removed route: %v", err)
	}
	s.WaitLog(t, "closed", "route=/c", "code=1001", `reason="route removed"`)
	a.Send("still")
	a.Expect("/a still")
}

func TestReloadRefusesWhatCannotChangeLive(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(reloadConfig, "scripts/v.lua", versioned("v1")))
	cases := []struct{ config, want string }{
		{"[server]\nlisten = \"127.0.0.1:1\"\n" + reloadConfig, "reload not supported for server.listen: old=127.0.0.1:8765, new=127.0.0.1:1"},
		{strings.Replace(reloadConfig, "vms = 2", "vms = 3", 1), "reload not supported for routes[0].vms: old=2, new=3"},
		{"[broker]\nkind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n" + reloadConfig, "reload not supported for broker.kind"},
	}
	c := moontest.Dial(t, s.URL("/v"))
	for _, tc := range cases {
		s.WriteFile(t, "moonwire.toml", tc.config)
		err := s.Reload()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("got %v, want %q", err, tc.want)
		}
		c.Send("x")
		c.Expect("v1 x user=ann rooms=room members=1 pervm=true")
	}
}

func TestWatchReloadsOnSave(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(reloadConfig, "scripts/v.lua", versioned("v1"), "scripts/lib/util.lua", "return {}"))
	ctx, cancel := context.WithCancel(context.Background())
	done, err := s.Watch(ctx, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()

	c := moontest.Dial(t, s.URL("/v"))
	// Editing a module the script requires counts too.
	s.WriteFile(t, "scripts/v.lua", strings.Replace(versioned("v2"), "local M = {}", "local util = require 'lib.util'\nlocal M = {}", 1))
	moontest.WaitFor(t, "the watcher to reload", func() bool { return s.Status().Reloads >= 1 })
	c.Send("a")
	c.Expect("v2 a user=ann rooms=room members=1 pervm=false")
	s.WriteFile(t, "scripts/lib/util.lua", "return { changed = true }")
	moontest.WaitFor(t, "a module edit to reload", func() bool { return s.Status().Reloads >= 2 && len(s.Status().Changed) == 1 })
	s.WriteFile(t, "scripts/v.lua", "syntax error here")
	moontest.WaitFor(t, "a failed reload", func() bool { return s.Status().Failures >= 1 })
	if st := s.Status(); !strings.Contains(st.Err, "v.lua:1:") {
		t.Fatalf("status %+v", st)
	}
	c.Send("b")
	c.Expect("v2 b user=ann rooms=room members=1 pervm=false")
}

// TestWatchIgnoresOtherFiles: with the scripts folder the config's own,
// a log written beside the config, an editor's swap file or a .git folder
// reload nothing. A log there reloaded every VM without end: each reload
// logs a line.
func TestWatchIgnoresOtherFiles(t *testing.T) {
	t.Parallel()
	const debounce = 20 * time.Millisecond
	s := moontest.Start(t, moontest.Files("[scripts]\ndir = \".\"\n"+reloadConfig, "v.lua", versioned("v1")))
	ctx, cancel := context.WithCancel(context.Background())
	done, err := s.Watch(ctx, debounce)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); <-done }()

	log, err := os.OpenFile(filepath.Join(s.Dir, "moonwire.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for i := range 5 {
		if _, err := fmt.Fprintf(log, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
		s.WriteFile(t, ".v.lua.swp", "swap")
		s.WriteFile(t, ".git/index", fmt.Sprint(i))
		s.WriteFile(t, "notes.txt", fmt.Sprint(i))
	}
	// What is checked is that nothing happens: a reload would come within
	// one debounce of the last write; this gives it ten, then reloads by
	// hand, which must be the first reload.
	time.Sleep(10 * debounce)
	if err := s.ReloadBy("test"); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Reloads != 1 {
		t.Fatalf("%d reloads, want 1 (ours): %+v", st.Reloads, st)
	}
	s.WriteFile(t, "v.lua", versioned("v2"))
	moontest.WaitFor(t, "a script's change to reload", func() bool { return s.Status().Reloads >= 2 })
}

func TestEmbeddedConfigIsNotReloadable(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadFS(scripts.FS, scripts.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	s := moontest.StartConfig(t, cfg)
	if err := s.Reload(); !errors.Is(err, moonwire.ErrNotReloadable) {
		t.Fatalf("got %v", err)
	}
	if _, err := s.Watch(context.Background(), 0); !errors.Is(err, moonwire.ErrNotReloadable) {
		t.Fatalf("watch: %v", err)
	}
}

// TestReloadRacingShutdown: reloads (asked for directly and by the file
// watcher, on a script rewritten in a loop) while the node shuts down.
// Shutdown must end every time: a reload in progress finishes first,
// later ones are refused with ErrClosing, and the watcher is stopped and
// joined.
func TestReloadRacingShutdown(t *testing.T) {
	t.Parallel()
	for round := range 8 {
		s := moontest.Start(t, moontest.Files(reloadConfig, "scripts/v.lua", versioned("v0")))
		if _, err := s.Watch(context.Background(), 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{}, 2)
		go func() { // an editor saving in a loop
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.WriteFile(t, "scripts/v.lua", versioned(fmt.Sprint("v", i)))
				time.Sleep(time.Millisecond)
			}
		}()
		go func() { // SIGHUPs
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.Reload(); errors.Is(err, moonwire.ErrClosing) {
					return
				}
			}
		}()
		moontest.WaitFor(t, "a few reloads", func() bool { return s.Status().Reloads >= 3 })
		ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
		shut := make(chan error, 1)
		go func() { shut <- s.Shutdown(ctx) }()
		select {
		case err := <-shut:
			if err != nil {
				t.Fatalf("round %d: shutdown: %v", round, err)
			}
		case <-time.After(2 * moontest.Timeout):
			t.Fatalf("round %d: Shutdown hung while reloads ran", round)
		}
		cancel()
		if err := s.Reload(); !errors.Is(err, moonwire.ErrClosing) {
			t.Fatalf("a reload after shutdown: %v, want ErrClosing", err)
		}
		close(stop)
		<-done
		<-done
	}
}

// TestReloadSaysWhatChanged: the reload's status and log name a route
// whose limits changed (its script did not), routes added and removed, and
// server settings, instead of "changed=[]".
func TestReloadSaysWhatChanged(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(reloadConfig+"\n[[routes]]\npath = \"/w\"\nscript = \"v.lua\"\n",
		"scripts/v.lua", versioned("v1")))
	s.WriteFile(t, "moonwire.toml", "[server]\nmax_connections = 50\n"+reloadConfig+
		"rate_limit = { messages = 5, per = \"1s\" }\n\n[[routes]]\npath = \"/x\"\nscript = \"v.lua\"\n")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if fmt.Sprint(st.Changed, st.Removed, st.Server) != "[/v /x] [/w] [server.max_connections]" {
		t.Fatalf("changed %v, removed %v, settings %v", st.Changed, st.Removed, st.Server)
	}
	s.WaitLog(t, "reloaded", "changed=\"[/v /x]\"", "removed=[/w]", "settings=[server.max_connections]")
}

// TestReloadRearmsConnectionTimers: a reload cancels the old version's
// timers, per-connection ones included; on_reload(conn) runs for every
// open connection under the new version, before its next event, so a
// script can re-arm them.
func TestReloadRearmsConnectionTimers(t *testing.T) {
	t.Parallel()
	script := func(v string) string {
		return fmt.Sprintf(`
local M = {}
local function arm(conn)
  timer.every(0.02, function() if not conn.closed then conn:send(%q .. " tick") end end)
end
M.on_open = arm
M.on_reload = function(conn) conn:send(%q .. " resumed") arm(conn) end
return M
`, v, v)
	}
	s := moontest.Start(t, moontest.Files("[[routes]]\npath = \"/p\"\nscript = \"p.lua\"\nvms = 2\n", "scripts/p.lua", script("v1")))
	conns := []*moontest.Client{moontest.Dial(t, s.URL("/p")), moontest.Dial(t, s.URL("/p"))}
	for _, c := range conns {
		c.Expect("v1 tick")
	}
	s.WriteFile(t, "scripts/p.lua", script("v2"))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		for {
			got := c.Next().Text()
			if got == "v2 resumed" {
				break
			}
			if got != "v1 tick" {
				t.Fatalf("before the resume: %q", got)
			}
		}
		c.Expect("v2 tick")
		for range 5 {
			if got := c.Next().Text(); got != "v2 tick" {
				t.Fatalf("after the resume: %q (the old version's timer still runs?)", got)
			}
		}
	}
}

// TestShutdownCutsASlowReloadShort: a reload builds every changed script,
// and each top level may run up to its handler timeout on every VM; a
// shutdown meanwhile must not wait for that (it stops the build within a
// watchdog tick), and neither must the reload status /healthz reports.
func TestShutdownCutsASlowReloadShort(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(`
[scripts]
handler_timeout = "10m"

[[routes]]
path = "/v"
script = "v.lua"
`, "scripts/v.lua", versioned("v0")))
	s.WriteFile(t, "scripts/v.lua", `log.info("slow top level") while true do end`)
	reloaded := make(chan error, 1)
	go func() { reloaded <- s.Reload() }()
	s.WaitLog(t, "slow top level")

	status := make(chan moonwire.ReloadStatus, 1)
	go func() { status <- s.Status() }()
	select {
	case <-status:
	case <-time.After(moontest.Timeout):
		t.Fatal("Status waited for the reload in progress")
	}

	ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(2 * moontest.Timeout):
		t.Fatal("Shutdown waited for the reload's top level (handler_timeout 10m)")
	}
	if err := <-reloaded; !errors.Is(err, moonwire.ErrClosing) {
		t.Fatalf("the reload cut short: %v, want ErrClosing", err)
	}
}

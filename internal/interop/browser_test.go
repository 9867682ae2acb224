//go:build unix

package interop

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
	"github.com/moonwire/moonwire/scripts"
)

// TestBrowser opens a page in headless Chromium that drives the built-in
// echo, chat and auth scripts through the browser's own WebSocket API and
// reports its verdict over one more WebSocket, which a script logs.
func TestBrowser(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed")
	}
	page, err := os.ReadFile("testdata/browser.html")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"moonwire.toml": `
[server]
static_dir = "public"
compression = true   # browsers offer permessage-deflate; exercise it

[[routes]]
path = "/echo"
script = "echo.lua"

[[routes]]
path = "/chat/{room}"
script = "chat.lua"

[[routes]]
path = "/auth"
script = "auth.lua"
settings = { tokens = ["dev-token"] }

[[routes]]
path = "/result"
script = "result.lua"
`,
		"public/browser.html": string(page),
		"scripts/result.lua": `
return { on_message = function(conn, data)
  log.info("browser result", { result = data })
  conn:close(1000)
end }`,
	}
	for _, name := range []string{"echo.lua", "chat.lua", "auth.lua"} {
		b, err := fs.ReadFile(scripts.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		files["scripts/"+name] = string(b)
	}
	s := moontest.Start(t, files)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Not t.TempDir: Chromium's helper processes may still be writing to
	// the profile while the test's cleanup removes it, which fails the
	// test. The profile is removed here, after the whole process group.
	profile, err := os.MkdirTemp("", "moonwire-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+profile, "--remote-debugging-port=0",
		s.HTTPURL("/browser.html"))
	// Its own process group, so that the renderer and the other helpers
	// go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(profile)
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		removeAllEventually(t, profile)
	}()
	line := s.WaitLog(t, "browser result")
	if !strings.Contains(line, "result=ok") {
		t.Fatalf("the page reported: %s", line)
	}
}

// removeAllEventually removes dir, retrying while processes that were just
// killed may still be leaving files in it. What is left after a few
// seconds is logged, not failed on: it is the browser's, not moonwire's.
func removeAllEventually(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.RemoveAll(dir)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("leaving the browser profile behind: %v", err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

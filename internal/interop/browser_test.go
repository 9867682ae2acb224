package interop

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"strings"
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
	cmd := exec.CommandContext(ctx, chromium,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-dev-shm-usage", "--no-first-run", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-port=0",
		s.HTTPURL("/browser.html"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	line := s.WaitLog(t, "browser result")
	if !strings.Contains(line, "result=ok") {
		t.Fatalf("the page reported: %s", line)
	}
}

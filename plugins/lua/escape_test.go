package lua_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestRequireStaysInTheScriptsFolder: require does not follow a symlink
// out of the scripts folder (a link inside it is fine).
func TestRequireStaysInTheScriptsFolder(t *testing.T) {
	t.Parallel()
	outside := filepath.Join(t.TempDir(), "secret.lua")
	if err := os.WriteFile(outside, []byte(`return "the secret"`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := route(t, `
local M = {}
function M.on_message(conn, name)
  local ok, v = pcall(require, name)
  conn:send(name .. " " .. tostring(ok) .. " " .. tostring(v))
end
return M
`, "", "scripts/inner.lua", `return "inner"`)
	for link, target := range map[string]string{"leak.lua": outside, "alias.lua": "inner.lua"} {
		if err := os.Symlink(target, filepath.Join(s.Dir, "scripts", link)); err != nil {
			t.Fatal(err)
		}
	}
	c := moontest.Dial(t, s.URL("/t"))
	c.Send("alias")
	c.Expect("alias true inner")
	c.Send("leak")
	if got := c.Next().Text(); got == "leak true the secret" {
		t.Fatalf("require followed a symlink out of the scripts folder: %q", got)
	}
}

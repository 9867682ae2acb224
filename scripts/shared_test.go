package scripts_test

import (
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/moonwire/moonwire/scripts"
)

// TestWithShared: a config's scripts folder gets the shared modules it
// lacks, keeps its own file of the same name, and nothing else is added.
func TestWithShared(t *testing.T) {
	own := fstest.MapFS{"app.lua": {Data: []byte("return 1")}}
	fsys := scripts.WithShared(own)
	builtin, err := fs.ReadFile(scripts.FS, "monitor_page.lua")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := fs.ReadFile(fsys, "monitor_page.lua"); err != nil || string(b) != string(builtin) {
		t.Fatalf("the shared page: %v (%d bytes)", err, len(b))
	}
	if b, err := fs.ReadFile(fsys, "app.lua"); err != nil || string(b) != "return 1" {
		t.Fatalf("the folder's own file: %q, %v", b, err)
	}
	for _, name := range []string{"echo.lua", "default.toml", "missing.lua"} {
		if _, err := fsys.Open(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want not found (only the shared modules are added)", name, err)
		}
	}
	mine := fstest.MapFS{"monitor_page.lua": {Data: []byte("return {}")}}
	if b, _ := fs.ReadFile(scripts.WithShared(mine), "monitor_page.lua"); string(b) != "return {}" {
		t.Fatalf("a folder's own monitor_page.lua must win, got %d bytes", len(b))
	}
	if scripts.WithShared(nil) != nil {
		t.Fatal("WithShared(nil) is not nil")
	}
}

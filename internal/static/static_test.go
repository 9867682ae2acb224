package static_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/moonwire/moonwire/internal/static"
	"github.com/moonwire/moonwire/router/config"
)

// TestHandler: files and index pages are served; directories are not
// listed; dotfiles and dot-folders are not served, however the path is
// spelled; only GET and HEAD.
func TestHandler(t *testing.T) {
	t.Parallel()
	h := static.Handler(fstest.MapFS{
		"index.html":       {Data: []byte("home")},
		"app.js":           {Data: []byte("js")},
		"docs/index.html":  {Data: []byte("docs")},
		"assets/logo.svg":  {Data: []byte("<svg/>")},
		".env":             {Data: []byte("SECRET=1")},
		".git/config":      {Data: []byte("[core]")},
		"assets/.htpasswd": {Data: []byte("admin:x")},
	})
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, "home"},
		{"GET", "/app.js", 200, "js"},
		{"HEAD", "/app.js", 200, ""},
		{"GET", "/docs/", 200, "docs"},
		{"GET", "/assets/logo.svg", 200, "<svg/>"},
		{"GET", "/assets/", 404, ""},
		{"GET", "/assets", 404, ""},
		{"GET", "/.env", 404, ""},
		{"GET", "/.git/config", 404, ""},
		{"GET", "/assets/.htpasswd", 404, ""},
		{"GET", "/assets/../.env", 404, ""},
		{"GET", "/nope", 404, ""},
		{"POST", "/app.js", 405, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.status || (tc.body != "" && string(body) != tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, rec.Code, body, tc.status, tc.body)
		}
	}
}

// TestSymlinkOutOfTheFolder: a static folder on disk, loaded through the
// config, does not follow a symlink to a file outside it.
func TestSymlinkOutOfTheFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.txt")
	must(t, os.WriteFile(secret, []byte("secret"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "www"), 0o755))
	must(t, os.MkdirAll(filepath.Join(dir, "scripts"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "www", "ok.txt"), []byte("ok"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "www", "inner.txt"), []byte("inner"), 0o644))
	must(t, os.Symlink(secret, filepath.Join(dir, "www", "leak.txt")))
	must(t, os.Symlink("inner.txt", filepath.Join(dir, "www", "alias.txt")))
	must(t, os.WriteFile(filepath.Join(dir, "scripts", "e.lua"), []byte("return {}"), 0o644))
	file := filepath.Join(dir, "moonwire.toml")
	must(t, os.WriteFile(file, []byte("[server]\nstatic_dir = \"www\"\n\n[[routes]]\npath = \"/e\"\nscript = \"e.lua\"\n"), 0o644))
	cfg, err := config.Load(file)
	must(t, err)
	h := static.Handler(cfg.Server.StaticFS)
	for path, want := range map[string]int{"/ok.txt": 200, "/alias.txt": 200, "/leak.txt": 404} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("GET %s: %d, want %d (%q)", path, rec.Code, want, rec.Body.String())
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

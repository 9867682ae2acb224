// Package static serves a folder of files over plain HTTP, the way a
// WebSocket server's example pages want it and no further: files and
// index.html only. It does not list directories, does not serve dotfiles
// (.git, .env) and serves only what an fs.FS hands it, so a folder on disk
// must come as a filesystem that refuses symlinks leading out of it (the
// config package's does).
//
// It knows nothing of WebSocket, routes or configuration.
package static

import (
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// Handler serves fsys: GET and HEAD of a file, or of a directory that
// holds an index.html; 404 for everything else, including directories
// without one and any path with a segment that starts with a dot.
func Handler(fsys fs.FS) http.Handler {
	files := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		clean := path.Clean("/" + r.URL.Path)
		for _, seg := range strings.Split(clean, "/") {
			if strings.HasPrefix(seg, ".") {
				http.NotFound(w, r)
				return
			}
		}
		name := strings.TrimPrefix(clean, "/")
		if name == "" {
			name = "."
		}
		fi, err := fs.Stat(fsys, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if fi.IsDir() {
			if ix, err := fs.Stat(fsys, path.Join(name, "index.html")); err != nil || ix.IsDir() {
				http.NotFound(w, r) // no listing
				return
			}
		}
		files.ServeHTTP(w, r)
	})
}

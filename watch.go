package moonwire

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long Watch waits for a burst of file events to end
// before reloading: editors save with a write, a rename and a chmod in quick
// succession, and a reload per event would compile half-written files.
const DefaultDebounce = 200 * time.Millisecond

// Watch reloads the node whenever its config file or a file under its
// scripts folder changes, until ctx ends. It returns once the watches are
// in place (so no change made after it returns is missed); done is closed
// when the watcher has stopped. Reload errors are logged and recorded (see
// Status); the running version keeps serving. The embedded config cannot
// be watched: ErrNotReloadable.
func (s *Server) Watch(ctx context.Context, debounce time.Duration) (done <-chan struct{}, err error) {
	cfg := s.Config()
	if cfg.Dir == "" {
		return nil, ErrNotReloadable
	}
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	watched := map[string]bool{}
	watchTree := func(cfgFile, scriptsDir string) {
		want := map[string]bool{filepath.Dir(cfgFile): true}
		_ = filepath.WalkDir(scriptsDir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				want[p] = true
			}
			return nil
		})
		for dir := range watched {
			if !want[dir] {
				_ = w.Remove(dir)
				delete(watched, dir)
			}
		}
		for dir := range want {
			if !watched[dir] {
				if err := w.Add(dir); err != nil {
					s.log.Warn("cannot watch folder; its changes need SIGHUP", "dir", dir, "err", err)
					continue
				}
				watched[dir] = true
			}
		}
	}
	abs, _ := filepath.Abs(cfg.File)
	watchTree(abs, cfg.Scripts.Dir)

	relevant := func(name string) bool {
		c := s.Config()
		return watchRelevant(name, abs, c.Scripts.Dir, c.Server.TLSCert, c.Server.TLSKey)
	}

	// Shutdown stops the watcher too, and waits for it.
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cancel()
		_ = w.Close()
		return nil, ErrClosing
	}
	s.unwatch = append(s.unwatch, cancel)
	s.watchers.Add(1)
	s.mu.Unlock()
	stopped := make(chan struct{})
	go func() {
		defer s.watchers.Done()
		defer close(stopped)
		defer cancel()
		defer w.Close()
		s.watchLoop(ctx, w, debounce, abs, relevant, watchTree)
	}()
	return stopped, nil
}

func (s *Server) watchLoop(ctx context.Context, w *fsnotify.Watcher, debounce time.Duration, abs string,
	relevant func(string) bool, watchTree func(string, string)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("file watcher error", "err", err)
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				// A new folder under scripts: watch it too.
				watchTree(abs, s.Config().Scripts.Dir)
			}
			timer.Reset(debounce)
		case <-timer.C:
			_ = s.ReloadBy("watch")
			// The scripts folder may have moved.
			watchTree(abs, s.Config().Scripts.Dir)
		}
	}
}

// watchRelevant reports whether a change to name calls for a reload: the
// config file, the TLS certificate or key (a renewal applies on reload),
// or under the scripts folder a script (.lua) or a folder (files without
// an extension: a folder of modules moved or removed). Other files there,
// a log written beside the config when the scripts folder is the config's
// own, an editor's swap file, a .git folder, reloaded every VM on each
// change; a log did so without end, as each reload logs a line.
func watchRelevant(name, cfgFile, scriptsDir string, certs ...string) bool {
	name = filepath.Clean(name)
	if name == cfgFile {
		return true
	}
	for _, c := range certs {
		if c != "" && filepath.Clean(c) == name {
			return true
		}
	}
	rel, err := filepath.Rel(scriptsDir, name)
	if err != nil || rel == ".." || filepath.IsAbs(rel) || strings.HasPrefix(rel, "../") {
		return false
	}
	for _, part := range strings.Split(filepath.ToSlash(rel), "/") {
		if strings.HasPrefix(part, ".") && part != "." {
			return false // a hidden file or folder (.git, .swp files)
		}
	}
	ext := filepath.Ext(name)
	return ext == ".lua" || ext == ""
}

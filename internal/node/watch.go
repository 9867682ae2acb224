package node

import (
	"context"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long Watch waits for a burst of file events to end
// before reloading: editors save with a write, a rename and a chmod in quick
// succession, and a reload per event would compile half-written files.
const DefaultDebounce = 200 * time.Millisecond

// Watch reloads the node whenever its config file or a file under its
// scripts folder changes, until ctx ends. Reload errors are logged and
// recorded (see Status); the running version keeps serving. It returns at
// once for the embedded config.
func (n *Node) Watch(ctx context.Context, debounce time.Duration) error {
	cfg := n.Config()
	if cfg.Dir == "" {
		return ErrNotReloadable
	}
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
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
					n.log.Warn("cannot watch folder; its changes need SIGHUP", "dir", dir, "err", err)
					continue
				}
				watched[dir] = true
			}
		}
	}
	abs, _ := filepath.Abs(cfg.File)
	watchTree(abs, cfg.Scripts.Dir)

	relevant := func(name string) bool {
		if filepath.Clean(name) == abs {
			return true
		}
		sd := n.Config().Scripts.Dir
		rel, err := filepath.Rel(sd, name)
		return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			n.log.Warn("file watcher error", "err", err)
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				// A new folder under scripts: watch it too.
				watchTree(abs, n.Config().Scripts.Dir)
			}
			timer.Reset(debounce)
		case <-timer.C:
			_ = n.Reload()
			// The scripts folder may have moved.
			watchTree(abs, n.Config().Scripts.Dir)
		}
	}
}

package scripts

import (
	"errors"
	"io/fs"
)

// Shared are the built-in modules every config's scripts may require
// although they are not in its scripts folder: the monitor page, so that
// the tutorial's /monitor serves the same page as the built-in one.
var Shared = []string{"monitor_page.lua"}

// WithShared returns fsys with the Shared modules of FS added where fsys
// has no file of that name (a config's own file wins). nil stays nil.
func WithShared(fsys fs.FS) fs.FS {
	if fsys == nil {
		return nil
	}
	return sharedFS{fsys}
}

type sharedFS struct{ fs.FS }

// Open opens name in the scripts folder, else a Shared module of FS.
func (s sharedFS) Open(name string) (fs.File, error) {
	f, err := s.FS.Open(name)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	for _, m := range Shared {
		if name == m {
			return FS.Open(name)
		}
	}
	return nil, err
}

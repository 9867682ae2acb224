package moonwire

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moonwire/moonwire/plugins/lua"
	"github.com/moonwire/moonwire/router/config"
)

// lintRoute lints route i of cfg (built as r), and points each unread
// setting at the line of the config file that sets it: that is where the
// typo or the leftover is.
func lintRoute(cfg *config.Config, i int, r *lua.Route) []lua.Diagnostic {
	ds := r.Lint()
	var src []byte
	for j := range ds {
		if ds[j].Setting == "" {
			continue
		}
		if src == nil {
			src = configSource(cfg)
		}
		ds[j].File, ds[j].Line = cfg.File, settingLine(src, i, ds[j].Setting)
	}
	return ds
}

// appendNew appends the diagnostics not already in ds: routes that share a
// script would otherwise repeat its warnings.
func appendNew(ds []lua.Diagnostic, more ...lua.Diagnostic) []lua.Diagnostic {
	for _, d := range more {
		if !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	return ds
}

// configSource is the text of cfg's file, nil if it cannot be read: an
// embedded config is read from the embedded scripts folder it came with.
func configSource(cfg *config.Config) []byte {
	if cfg.Dir != "" {
		if b, err := os.ReadFile(cfg.File); err == nil {
			return b
		}
		return []byte{}
	}
	if cfg.Scripts.FS != nil {
		if b, err := fs.ReadFile(cfg.Scripts.FS, path.Base(cfg.File)); err == nil {
			return b
		}
	}
	return []byte{}
}

// settingLine finds the line of src where the route'th [[routes]] table
// sets key (settings = { key = ... }, or key = ... under
// [routes.settings]); 0 when it cannot tell. It is a text search, not a
// TOML parse: good enough to point a reader at the line, and it needs no
// positions the TOML decoder does not keep.
func settingLine(src []byte, route int, key string) int {
	keyRE := regexp.MustCompile(`(^|[\s{,.])("` + regexp.QuoteMeta(key) + `"|'` + regexp.QuoteMeta(key) + `'|` + regexp.QuoteMeta(key) + `)\s*=`)
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(nil, 1<<20)
	n, routes := 0, -1
	inSettings := false
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			header := strings.Join(strings.Fields(line), "")
			switch {
			case strings.HasPrefix(header, "[[routes]]"):
				routes++
				inSettings = false
			case strings.HasPrefix(header, "[routes.settings"):
				inSettings = routes == route
			default:
				inSettings = false
				if routes == route {
					return 0 // past the route's own table
				}
			}
			continue
		}
		if routes != route {
			continue
		}
		if inSettings && keyRE.MatchString(line) {
			return n
		}
		if strings.HasPrefix(line, "settings") && keyRE.MatchString(strings.TrimPrefix(line, "settings")) {
			return n
		}
	}
	return 0
}

package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Plugin is one [plugins.NAME] table, undecoded: the schema belongs to the
// plugin registered under NAME, which decodes and validates it itself
// (Decode, Errorf), so that its mistakes read like the rest of the
// config's. The loader only checks that it is a table.
type Plugin struct {
	// Name is NAME in [plugins.NAME].
	Name string
	// Raw is the table exactly as TOML decoded it (see Route.Settings);
	// treat it as read-only.
	Raw map[string]any

	file string
	text string // the whole file: Decode parses it again for line numbers
}

// typeErrorPattern takes apart the decoder's type errors:
// `toml: line 4 (last key "plugins.x.n"): incompatible types: ...`.
var typeErrorPattern = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

// namePattern is what a plugin or module name may be: a Lua identifier
// (it becomes a global) that is also a bare TOML key.
var namePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidName reports whether name can name a plugin or a module: a Lua
// identifier, so that scripts reach it as a global.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// Key returns the dotted key of a field of the table, for messages:
// "plugins.NAME.field".
func (p Plugin) Key(field string) string {
	if field == "" {
		return "plugins." + p.Name
	}
	return "plugins." + p.Name + "." + field
}

// Decode decodes the table into v, a pointer to a struct with toml tags
// (or a map). Keys that v does not have and values of the wrong type are
// errors; every error is an Errors value naming the file, the key and,
// where TOML knows it, the line. An absent table decodes as empty.
func (p Plugin) Decode(v any) error {
	if p.text == "" {
		return nil
	}
	// A fresh parse per call: MetaData records what was decoded, and the
	// same Config may be decoded by several plugins or servers at once.
	var file struct {
		Plugins map[string]toml.Primitive `toml:"plugins"`
	}
	md, err := toml.Decode(p.text, &file)
	if err != nil {
		return Errors{syntaxError(p.file, err)}
	}
	if err := md.PrimitiveDecode(file.Plugins[p.Name], v); err != nil {
		e := &Error{File: p.file, Key: p.Key(""), Msg: err.Error(), err: err}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line, e.Msg = pe.Position.Line, pe.Message
			if pe.LastKey != "" {
				e.Key = pe.LastKey
			}
		} else if m := typeErrorPattern.FindStringSubmatch(err.Error()); m != nil {
			// A type mismatch is a plain error whose text carries the
			// line and key.
			e.Line, _ = strconv.Atoi(m[1])
			e.Key, e.Msg = m[2], m[3]
		}
		return Errors{e}
	}
	if reflect.TypeOf(v).Elem().Kind() == reflect.Map {
		return nil // a map takes every key
	}
	var errs Errors
	for _, k := range md.Undecoded() {
		if len(k) > 2 && k[0] == "plugins" && k[1] == p.Name {
			errs = append(errs, &Error{File: p.file, Key: k.String(), Msg: "unknown key"})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// Errorf returns an error about the table's field (the table itself when
// field is ""), shaped like the config's own: "FILE: plugins.NAME.field:
// message". A plugin returns it from validation.
func (p Plugin) Errorf(field, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return Errors{{File: p.file, Key: p.Key(field), Msg: err.Error(), err: errors.Unwrap(err)}}
}

// Equal reports whether two tables hold the same values: a reload
// re-applies a plugin's table only when it changed.
func (p Plugin) Equal(q Plugin) bool {
	return p.Name == q.Name && reflect.DeepEqual(p.Raw, q.Raw)
}

// Plugin returns the [plugins.NAME] table; an absent one is empty, bound
// to the file so that its errors still name it.
func (c *Config) Plugin(name string) Plugin {
	if p, ok := c.Plugins[name]; ok {
		return p
	}
	return Plugin{Name: name, Raw: map[string]any{}, file: c.File}
}

// plugins checks [plugins]: a table of tables, one per plugin, whose
// names could be Lua globals.
func (l *loader) plugins(c *Config, r value, text string) {
	if !r.set {
		return
	}
	tables, ok := r.v.(map[string]any)
	if !ok {
		l.errorf("plugins", "must be a table of [plugins.NAME] tables, not %s", typeName(r.v))
		return
	}
	names := make([]string, 0, len(tables))
	for name := range tables {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		key := "plugins." + name
		if strings.Contains(name, ".") || !ValidName(name) {
			key = "plugins." + toml.Key{name}.String()
			l.errorf(key, "a plugin name is a Lua identifier (letters, digits, _; not starting with a digit)")
			continue
		}
		t, ok := tables[name].(map[string]any)
		if !ok {
			l.errorf(key, "must be a table, not %s", typeName(tables[name]))
			continue
		}
		if c.Plugins == nil {
			c.Plugins = map[string]Plugin{}
		}
		c.Plugins[name] = Plugin{Name: name, Raw: t, file: l.src.file, text: text}
	}
}

// modules checks a route's modules list: names, each once.
func (l *loader) modules(key string, x value) []string {
	if !x.set {
		return nil
	}
	items, ok := x.v.([]any)
	if !ok {
		l.errorf(key, "must be an array of module names, not %s", typeName(x.v))
		return nil
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		s, ok := it.(string)
		switch {
		case !ok:
			l.errorf(fmt.Sprintf("%s[%d]", key, i), "must be a string, not %s", typeName(it))
		case !ValidName(s):
			l.errorf(fmt.Sprintf("%s[%d]", key, i), "%q is not a module name (a Lua identifier)", s)
		case slices.Contains(out, s):
			l.errorf(fmt.Sprintf("%s[%d]", key, i), "%q is listed twice", s)
		default:
			out = append(out, s)
		}
	}
	return out
}

package config

import (
	"strconv"
	"strings"
)

// Error is one problem found in a config file. It is a value rather than a
// formatted string so that callers (tests, `moonwire check`, an editor
// integration) can tell which key is wrong without parsing text.
type Error struct {
	File string // the config file, as given to Load (or "<embedded>/NAME" for LoadFS)
	Line int    // 1-based line; 0 when unknown, which is the case for everything but TOML syntax errors
	Key  string // dotted key with route indexes, e.g. "routes[2].heartbeat.timeout"; "" when the problem is the file itself
	Msg  string // what is wrong, without the file or key

	err error // underlying cause, if any, for errors.Is/As
}

// Error formats the problem as "FILE[:LINE]: [KEY: ]MSG", the shape compilers
// use, so editors and terminals can jump to it.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap exposes the cause (an *fs.PathError, a toml.ParseError, a
// net.AddrError ...) so callers can use errors.Is and errors.As on it.
func (e *Error) Unwrap() error { return e.err }

// Errors is every problem found in one config file, in a stable order (file
// problems, unknown keys in document order, then the schema order of
// SPEC.md). Load and LoadFS return all of them at once so that one edit can
// fix them all.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find an individual *Error (the first one) and
// errors.Is look through every cause.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

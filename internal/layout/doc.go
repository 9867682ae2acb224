// Package layout holds the test that enforces the project's import rules
// (see the README's "Layout" section): the router knows nothing of Lua or
// TOML, leaves do not import their parents, module plugins stand alone.
package layout
